import numpy as np
import torch

from strategies import ReservoirMemory


def _fill(size, n, seed, batch=10):
    mem = ReservoirMemory(size=size, seed=seed)
    ids = torch.arange(n)
    for s in range(0, n, batch):
        x = ids[s:s + batch].float().unsqueeze(1)
        mem.add(x, ids[s:s + batch], torch.zeros(len(x[:, 0]), dtype=torch.long))
    return mem


def test_reservoir_is_a_uniform_sample_of_the_stream():
    size, n, trials = 50, 1000, 200
    counts = np.zeros(n)
    for seed in range(trials):
        mem = _fill(size, n, seed)
        kept = mem.y[: len(mem)].numpy()
        assert len(set(kept.tolist())) == size  # no duplicates
        assert np.array_equal(mem.x[: len(mem), 0].long().numpy(), kept)  # x and y stay paired
        counts[kept] += 1
    expected = trials * size / n  # 10 per example
    # each tenth of the stream holds a tenth of the memory; "keep the first/last N" puts it all in one
    deciles = counts.reshape(10, -1).sum(axis=1) / (trials * size)
    assert np.all(np.abs(deciles - 0.1) < 0.02), deciles
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < n * 1.25, chi2  # chi-square with n-1 dof: mean n-1, sd about sqrt(2n)


def test_memory_fills_before_it_replaces():
    mem = _fill(size=30, n=20, seed=0)
    assert len(mem) == 20 and mem.seen == 20
    assert sorted(mem.y[:20].tolist()) == list(range(20))


def test_sample_draws_distinct_stored_examples():
    mem = _fill(size=30, n=300, seed=1)
    x, y, t = mem.sample(10)
    assert len(set(y.tolist())) == 10
    assert set(y.tolist()) <= set(mem.y.tolist())
    x, y, t = _fill(size=30, n=4, seed=1).sample(10)
    assert len(y) == 4
