"""Where tensors live and in which precision the model computes.

``auto`` picks CUDA, then Apple's ``mps``, then the CPU, as the book does. The precision is
``fp32`` (the default: the book's numbers, byte for byte on one machine) or ``bf16``: autocast
with fp32 master weights, optimizer state and loss, allowed only where bf16 is fast (a CUDA card
with bf16, ``mps`` on macOS 14 or later, a CPU with AMX or AVX-512 BF16); elsewhere it is refused
with one line instead of crawling through emulated bf16.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource

import torch

from scratchgpt.errors import PipelineError

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 (/proc/cpuinfo flags); "bf16" on Arm (Features)


class PrecisionUnsupported(PipelineError, ValueError):
    """bf16 asked for on a device that would emulate it."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the current CUDA device, else ``mps``, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but Apple's mps is not available")
    return device


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_problem(device: torch.device) -> str | None:
    """Why bf16 would be slow on ``device`` (one line naming it), or None where it is fast."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"{torch.cuda.get_device_name(device)} has no native bf16"
    if device.type == "mps":
        if torch.backends.mps.is_macos_or_newer(14, 0):
            return None
        return "mps has bf16 from macOS 14 on"
    if device.type == "cpu":
        flags = cpu_flags()
        if any(f in flags for f in CPU_BF16_FLAGS) or (platform.machine() in ("aarch64", "arm64") and "bf16" in flags):
            return None
        return f"this CPU ({cpu_name()}) has neither AMX nor AVX-512 BF16"
    return f"bf16 is not supported on {device.type}"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse ``precision`` (fp32 or bf16, as params and the command line validate it) where the
    device would emulate it: a :class:`PrecisionUnsupported` naming the device and saying that
    fp32 is the choice there."""
    if precision == "bf16" and (problem := bf16_problem(device)) is not None:
        raise PrecisionUnsupported(f"precision bf16: {problem}, so it would crawl; use fp32 on this device")


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """The model's forward passes in ``precision``: bf16 autocast (weights stay fp32 and their
    casts are cached within the outermost region), or nothing at all for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    """The most memory this process has held: on CUDA the allocator's peak, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def available_memory(device: torch.device) -> int:
    """Bytes a new model may take: on CUDA the device's free memory, else the memory the kernel
    reports available (/proc/meminfo's MemAvailable; where there is none, the physical memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
