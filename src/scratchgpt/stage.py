"""What every script in stages/ shares: logging, picking its foreach item, and clean errors.

Expected failures (scratchgpt.errors.PipelineError: bad params, a download that failed from
every source, a corrupt shard, a diverged run) and missing files print their message without a
traceback and exit with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Mapping, TypeVar

from .errors import PipelineError

T = TypeVar("T")


class UsageError(PipelineError, ValueError):
    pass


def pick(items: Mapping[str, T], key: str, where: str) -> T:
    """``items[key]``, or an error naming the params key and what exists."""
    if key not in items:
        raise UsageError(f"{where}.{key}: not in params.yaml; expected one of: {', '.join(items)}")
    return items[key]


def one_arg(args: list[str], what: str) -> str:
    if len(args) != 1:
        raise UsageError(f"usage: {sys.argv[0]} <{what}>")
    return args[0]


def no_args(args: list[str]) -> None:
    if args:
        raise UsageError(f"usage: {sys.argv[0]} (takes no arguments; settings come from params.yaml)")


def run(main: Callable[[list[str]], None]) -> None:
    from .allocator import tune_cpu_allocator

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tune_cpu_allocator()  # see its docstring: large tensors reused, not re-faulted every step
    try:
        main(sys.argv[1:])
    except (PipelineError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        dist = sys.modules.get("torch.distributed")  # only when this stage used torch
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
