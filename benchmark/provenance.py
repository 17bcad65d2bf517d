"""What a run record says about where it ran: package versions, the machine, what decides its
float results there (:func:`numerics`), and the process's peak memory."""

from __future__ import annotations

import os
import platform
import resource
import sys

import numpy as np
import torch


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import avalanche

    try:
        own = version("clbench")
    except PackageNotFoundError:
        own = "unknown"
    return {"clbench": own, "python": platform.python_version(), "torch": torch.__version__,
            "avalanche": getattr(avalanche, "__version__", "unknown"), "numpy": np.__version__}


def machine() -> dict[str, object]:
    """Where a run ran: CPU model, cores, torch threads, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "platform": platform.platform(terse=True)}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# Environment variables that choose CPU kernels, and so how float results round: torch's
# vectorised kernels, MKL's code path (conditional numerical reproducibility), numba's target.
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE",
                   "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT")
# The vector instruction sets the kernels of torch, MKL and numba choose between.
VECTOR_ISA = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "amx_tile")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(name)), None)
    except OSError:
        return None


def numerics() -> dict[str, object]:
    """What decides the float results of a run besides the code, the config and the seed: the
    CPU's vendor and vector instruction sets, the kernels torch dispatches to on it (its CPU
    capability), the BLAS torch was built with, numba's version and target CPU, the torch threads,
    and the environment variables that override those choices. Two runs of one spec with equal
    ``numerics`` (and versions) give the same numbers bit for bit; with different ones, a
    different run of the same seed (a ReLU input within rounding of zero goes to the other side
    in one and not the other, and the runs part)."""
    import numba
    from llvmlite import binding

    flags = set((_cpuinfo_field("flags") or "").split())
    blas = next((line.strip().lstrip("- ") for line in torch.__config__.show().splitlines()
                 if "Math Kernel Library" in line or "OpenBLAS" in line), None)
    info: dict[str, object] = {
        "cpu_vendor": _cpuinfo_field("vendor_id") or platform.machine(),
        "vector_isa": [f for f in VECTOR_ISA if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas or "unknown",
        "numba": numba.__version__,
        "numba_cpu": numba.config.CPU_NAME or binding.get_host_cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "settings": {k: os.environ[k] for k in KERNEL_SETTINGS if k in os.environ},
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
    return info


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20
