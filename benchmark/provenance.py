"""What a run record says about where it ran: package versions, the machine, and the
process's peak memory."""

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


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20
