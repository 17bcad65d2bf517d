"""Shared test helpers: small real-format data files written into temporary folders."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

@pytest.fixture(autouse=True)
def isolated_strategy_registry():
    """Strategies that a test registers in the suite's registry (``strategies.REGISTRY``), say
    plugin files loaded in this process by ``clbench run --plugin``, are gone after it: the
    registry's tables are put back as they were before the test (a registry first imported
    during the test is put back to its initial, empty state), and the modules of plugin files
    loaded during the test are dropped."""
    registry = sys.modules["strategies"].REGISTRY if "strategies" in sys.modules else None
    saved = None if registry is None else registry.snapshot()
    streams = sys.modules.get("scenarios.registry")  # plugin streams too (scenarios.register)
    saved_streams = None if streams is None else streams.snapshot()
    modules = set(sys.modules)
    yield
    if "scenarios.registry" in sys.modules:
        sys.modules["scenarios.registry"].restore(saved_streams)
    if "strategies" not in sys.modules:
        return
    sys.modules["strategies"].REGISTRY.restore(saved)  # None: imported during the test, a new registry's state
    for name in set(sys.modules) - modules:
        if name.startswith("clbench_plugin_"):
            del sys.modules[name]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format of the MNIST files (big-endian header)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.tobytes())


def write_mnist_folder(root: Path, *, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, seed: int = 0):
    """A tiny dataset in torchvision's on-disk MNIST layout (``root/<folder>/raw``)."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        arrays[prefix] = (x, y)
    return arrays


@pytest.fixture
def mnist_root(tmp_path):
    """A data root holding a tiny MNIST in torchvision's format, and the arrays written."""
    arrays = write_mnist_folder(tmp_path)
    return tmp_path, arrays
