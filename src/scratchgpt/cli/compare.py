"""``scratchgpt compare``: the workspace's metrics against the committed ones, within float noise.

fp32 kernels differ in their last bits between CPUs with other SIMD units (AVX2, AVX-512, AMX), and
training amplifies that: the same commit gives the same bytes on the same machine, and metrics
that differ by about 1e-7 relative before training and up to about 1e-4 after it on another CPU.
This names each number that moved, says whether it is within ``--rtol`` of the committed one, and
prints the CPU's name and SIMD flags; it exits 1 when a number differs by more.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

from scratchgpt.cli.common import fail

SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu() -> str:
    """The CPU's model name and which of SIMD_FLAGS it has (Linux: /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    have = [flag for flag in SIMD_FLAGS if flag in flags]
    return f"{fields.get('model name', platform.machine())} ({' '.join(have) or 'no AVX2'})"


def numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON value by its dotted path (lists by index)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found: dict[str, float] = {}
    for key, item in items:
        found |= numbers(item, f"{prefix}.{key}" if prefix else str(key))
    return found


def committed_files(rev: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "--", "metrics"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [name for name in listed if name.endswith(".json") and not name.startswith("metrics/experiments/")]


def committed_json(rev: str, name: str) -> Any:
    shown = subprocess.run(["git", "show", f"{rev}:{name}"], capture_output=True, check=True).stdout
    return json.loads(shown)


def relative(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def run(args: argparse.Namespace) -> int:
    try:
        files = committed_files(args.rev)
    except (OSError, subprocess.CalledProcessError) as e:
        return fail(args, f"cannot read the metrics of {args.rev} from git: {e}")
    print(f"CPU: {cpu()}")
    equal = noise = differ = 0
    for name in files:
        try:
            now = numbers(json.loads(Path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            print(f"{name}: not in the workspace ({e.__class__.__name__}): run make repro")
            differ += 1
            continue
        then = numbers(committed_json(args.rev, name))
        lines = []
        for key in sorted(set(then) | set(now)):
            a, b = then.get(key, math.nan), now.get(key, math.nan)
            if a == b:
                equal += 1
                continue
            rel = relative(a, b)
            if rel <= args.rtol:
                noise += 1
                verdict = "float noise"
            else:
                differ += 1
                verdict = "DIFFERS"
            lines.append(f"  {key}: {a:.10g} → {b:.10g} ({rel:.1e} relative: {verdict})")
        if lines:
            print(name)
            print("\n".join(lines))
    print(
        f"{equal} numbers equal, {noise} within {args.rtol:g} relative (float noise: another CPU's SIMD units), "
        f"{differ} differ from {args.rev}"
    )
    return 1 if differ else 0
