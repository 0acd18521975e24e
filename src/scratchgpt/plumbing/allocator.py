"""The process's memory allocator, tuned once by each entry point (stages, the generation CLI,
the benchmarks). Kept apart from scratchgpt.device so that stages without torch do not import it."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc only; a no-op elsewhere). Returns whether it applied.

    Training allocates and frees the same large tensors (logits, activations, gradients) every
    step. By default glibc serves blocks over 128 KiB-32 MiB with fresh mmap()s and gives them back
    on free, so every step pays page faults on hundreds of megabytes: measured here, a third of
    the time of a 124M training step went to the kernel. With mmap off for allocations and a high
    trim threshold, the heap keeps those pages and reuses them. Peak memory stays what the step
    needs; the process just does not return it between steps.
    """
    global _tuned
    if _tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    _tuned = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    return _tuned
