import numpy as np
import pytest
import torch

import scenarios
from scenarios.streams import rotation_angles


def _tensors(stream, which="train"):
    s = stream.benchmark.train_stream if which == "train" else stream.benchmark.test_stream
    out = []
    for exp in s:
        ds = exp.dataset
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        ys = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
        out.append((xs, ys, exp.task_label))
    return out


@pytest.fixture(scope="module")
def position_npz(tmp_path_factory):
    """Images whose pixel at position j holds (j + 1) / 785: a transform's pixel map is readable."""
    path = tmp_path_factory.mktemp("npz") / "positions.npz"
    x = np.tile(((np.arange(784) + 1) / 785.0).astype(np.float32).reshape(1, 28, 28), (40, 1, 1))
    np.savez(path, x=x, y=np.arange(40) % 10, x_test=x[:10], y_test=np.arange(10))
    return str(path)


def test_available_lists_streams_with_defaults():
    avail = scenarios.available()
    for name in ("permuted-mnist", "many-permutations", "rotated-mnist", "split-mnist"):
        assert name in avail
    assert avail["permuted-mnist"]["n_tasks"] == 20 and avail["permuted-mnist"]["per_task"] == 1000
    assert avail["many-permutations"]["n_tasks"] == 100 and avail["many-permutations"]["per_task"] == 200
    assert avail["split-mnist"]["n_tasks"] == 5 and avail["split-mnist"]["task_incremental"] is False
    assert all(p["source"] for p in avail.values())


def test_permuted_shapes_counts_and_labels():
    s = scenarios.build("permuted-mnist", seed=0, n_tasks=4, per_task=300)
    assert s.name == "permuted-mnist" and s.n_tasks == 4
    assert s.input_shape == (1, 28, 28) and s.n_classes == 10 and s.task_labels is False
    assert s.params["n_tasks"] == 4 and s.params["source"] == "mnist5k" and s.params["identity_first"] is False
    assert len(s.benchmark.train_stream) == len(s.benchmark.test_stream) == 4
    for x, y, t in _tensors(s):
        assert x.shape == (300, 1, 28, 28) and t == 0
        assert 0 <= int(y.min()) and int(y.max()) <= 9
    for x, _, _ in _tensors(s, "test"):
        assert x.shape == (1000, 1, 28, 28)


def test_names_are_normalised():
    s = scenarios.build("Permuted_MNIST", n_tasks=1, per_task=10)
    assert s.name == "permuted-mnist"


def test_permuted_train_and_test_share_one_permutation_per_task(position_npz):
    s = scenarios.build("permuted-mnist", source="npz", path=position_npz, n_tasks=3, per_task=20, identity_first=True)
    perms = []
    for (xtr, _, _), (xte, _, _) in zip(_tensors(s), _tensors(s, "test")):
        src_tr = (xtr.flatten(1) * 785).round().long() - 1
        src_te = (xte.flatten(1) * 785).round().long() - 1
        assert (src_tr == src_tr[0]).all() and (src_te == src_tr[0]).all()
        assert sorted(src_tr[0].tolist()) == list(range(784))
        perms.append(src_tr[0])
    assert torch.equal(perms[0], torch.arange(784))
    assert not torch.equal(perms[1], perms[2]) and not torch.equal(perms[1], perms[0])


def test_rotated_train_and_test_share_the_angle():
    s = scenarios.build("rotated-mnist", seed=3, angles=[0.0, 90.0], per_task=50)
    assert s.n_tasks == 2 and s.params["n_tasks"] == 2
    src = scenarios.load_source("mnist5k")
    (x0, _, _), (x1, _, _) = _tensors(s, "test")
    assert torch.equal(x0, src.x_test)
    assert torch.equal(x1, torch.rot90(src.x_test, 1, dims=(2, 3)))


def test_progressive_angles_grow_task_by_task_as_gem_draws_them():
    """GEM's data/mnist_rotations.py: task t of T in [t*(max-min)/T + min, (t+1)*(max-min)/T + min)."""
    for n_tasks, lo, hi in ((20, 0.0, 180.0), (7, 10.0, 50.0)):
        angles = rotation_angles(seed=0, n_tasks=n_tasks, min_angle=lo, max_angle=hi)
        width = (hi - lo) / n_tasks
        for t, a in enumerate(angles):
            assert lo + t * width <= a < lo + (t + 1) * width, (t, a)
    assert rotation_angles(seed=0, n_tasks=20) != rotation_angles(seed=1, n_tasks=20)


def test_uniform_angles_are_independent_draws_in_the_range():
    angles = rotation_angles(seed=0, n_tasks=200, mode="uniform")
    assert min(angles) >= 0.0 and max(angles) < 180.0
    assert np.histogram(angles, bins=4, range=(0, 180))[0].min() > 30  # spread over the whole range
    assert sorted(angles) != angles  # not growing
    # each task's draw is its own: 10 tasks are the prefix of 20
    assert rotation_angles(seed=0, n_tasks=10, mode="uniform") == angles[:10]


def test_rotated_stream_is_gems_pil_rotation_of_the_same_digits():
    """Task images equal GEM's rotate_dataset: uint8 'L' image, PIL Image.rotate (nearest), / 255."""
    from PIL import Image

    s = scenarios.build("rotated-mnist", seed=0, n_tasks=3, per_task=10, test_per_task=40)
    assert s.params["angles"] == "progressive" and s.params["interpolation"] == "nearest"
    angles = rotation_angles(seed=0, n_tasks=3)
    src = scenarios.load_source("mnist5k")
    x_test = src.x_test[torch.randperm(len(src.y_test), generator=scenarios.transforms.task_generator(0, 5, 0))[:40].sort()[0]]
    for (x, _, _), angle in zip(_tensors(s, "test"), angles):
        digits = (x_test[:, 0] * 255).round().to(torch.uint8).numpy()
        gem = np.stack([np.asarray(Image.fromarray(d).rotate(angle)) for d in digits]).astype(np.float32) / 255
        assert np.allclose(x[:, 0].numpy(), gem, atol=1e-6)
        assert not torch.equal(x, x_test)  # rotated: the angles here are not multiples of 90
    uniform = scenarios.build("rotated-mnist", seed=0, n_tasks=3, per_task=10, test_per_task=40, angles="uniform")
    assert not torch.equal(_tensors(uniform, "test")[2][0], _tensors(s, "test")[2][0])


def test_bilinear_rotation_differs_from_nearest():
    s_n = scenarios.build("rotated-mnist", seed=0, n_tasks=2, per_task=10, test_per_task=20)
    s_b = scenarios.build("rotated-mnist", seed=0, n_tasks=2, per_task=10, test_per_task=20, interpolation="bilinear")
    xn, xb = _tensors(s_n, "test")[1][0], _tensors(s_b, "test")[1][0]
    assert not torch.equal(xn, xb)
    assert abs(float(xn.sum()) - float(xb.sum())) / float(xn.sum()) < 0.05  # the same digits, smoothed


def test_split_class_incremental_and_task_incremental():
    ci = scenarios.build("split-mnist", seed=0)
    assert ci.n_tasks == 5 and ci.task_labels is False
    assert ci.classes_per_task == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    for (x, y, t), cls in zip(_tensors(ci), ci.classes_per_task):
        assert t == 0 and set(y.tolist()) == set(cls) and len(y) == 800
    ti = scenarios.build("split-mnist", seed=0, task_incremental=True, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert ti.task_labels is True
    assert ti.classes_per_task[0] == (9, 8)
    for k, ((_, y, t), (_, yte, tte)) in enumerate(zip(_tensors(ti), _tensors(ti, "test"))):
        assert t == tte == k
        assert set(y.tolist()) == set(yte.tolist()) == set(ti.classes_per_task[k])


def test_split_shuffle_and_caps():
    a = scenarios.build("split-mnist", seed=1, shuffle_classes=True, n_tasks=2, per_task=100, test_per_task=300)
    b = scenarios.build("split-mnist", seed=2, shuffle_classes=True, n_tasks=2, per_task=100, test_per_task=300)
    assert sorted(sum(a.classes_per_task, ())) == list(range(10))
    assert a.classes_per_task != b.classes_per_task
    assert all(len(exp.dataset) == 100 for exp in a.benchmark.train_stream)
    assert sum(len(exp.dataset) for exp in a.benchmark.test_stream) == 300


def test_same_seed_identical_other_seed_differs():
    for name in ("permuted-mnist", "rotated-mnist", "split-mnist"):
        kw = {"n_tasks": 2, "per_task": 50} if name != "split-mnist" else {"per_task": 50, "shuffle_classes": True}
        a, b, c = (scenarios.build(name, seed=s, **kw) for s in (5, 5, 6))
        ta, tb, tc = _tensors(a), _tensors(b), _tensors(c)
        for (xa, ya, _), (xb, yb, _) in zip(ta, tb):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert any(not torch.equal(xa, xc) for (xa, _, _), (xc, _, _) in zip(ta, tc)), name


def test_shorter_stream_is_a_prefix_of_the_longer():
    short = _tensors(scenarios.build("permuted-mnist", seed=0, n_tasks=2, per_task=30))
    long = _tensors(scenarios.build("permuted-mnist", seed=0, n_tasks=3, per_task=30))
    for (xa, ya, _), (xb, yb, _) in zip(short, long):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_streams_apply_to_images_of_any_size(tmp_path):
    x = np.random.default_rng(0).random((30, 3, 12, 10)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(30) % 3)
    p = scenarios.build("permuted-mnist", source="npz", path=str(tmp_path / "c.npz"), n_tasks=2, per_task=10)
    assert p.input_shape == (3, 12, 10) and p.n_classes == 3
    r = scenarios.build("rotated-mnist", source="npz", path=str(tmp_path / "c.npz"), n_tasks=2, per_task=10)
    (xr, _, _), _ = _tensors(r)
    assert xr.shape == (10, 3, 12, 10)
    d = scenarios.build("rotated-mnist", source="digits", angles=[45.0], per_task=100)
    assert d.input_shape == (1, 8, 8)


def test_mnist_source_from_disk_through_a_stream(mnist_root):
    root, _ = mnist_root
    s = scenarios.build("split-mnist", source="mnist", data_root=str(root), download=False, n_tasks=2)
    assert [len(e.dataset) for e in s.benchmark.train_stream] == [30, 30]


def test_default_backbone_follows_the_data(tmp_path):
    assert scenarios.build("split-mnist", n_tasks=1, per_task=10).default_backbone == "mlp"
