"""What a record says decides its float results (benchmark.provenance.numerics)."""

import torch

from benchmark.provenance import KERNEL_SETTINGS, numerics


def test_numerics_name_what_chooses_the_kernels(monkeypatch):
    for name in KERNEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    plain = numerics()
    assert plain["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert plain["torch_threads"] == torch.get_num_threads() and plain["settings"] == {}
    assert plain["numba_cpu"] and plain["blas"] and isinstance(plain["vector_isa"], list)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.setenv("NUMBA_CPU_NAME", "generic")
    changed = numerics()
    assert changed["settings"] == {"MKL_CBWR": "AVX2", "NUMBA_CPU_NAME": "generic"} and changed != plain
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert numerics()["torch_threads"] == threads + 1
    finally:
        torch.set_num_threads(threads)
