"""What ``generate`` and ``chat`` share: loading a language model with its tokenizer on a
device, the sampling options and the decoded text as it streams."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import torch

from scratchgpt.book.generate import stream
from scratchgpt.cli.common import fail
from scratchgpt.device import PrecisionUnsupported, check_precision, pick_device
from scratchgpt.errors import PipelineError
from scratchgpt.formats.finetuned import load_finetuned
from scratchgpt.formats.modeldir import load_tokenizer
from scratchgpt.plumbing.allocator import tune_cpu_allocator


def load_language_model(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, device and sampling generator, or SystemExit with one line."""
    tune_cpu_allocator()
    where = device_for(args)
    try:
        model = in_precision(load_finetuned(args.model, device=where), args.precision)
        tokenizer = load_tokenizer(args.model)
    except (OSError, ValueError, PipelineError) as e:
        raise SystemExit(fail(args, str(e))) from None
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=where)
        generator.manual_seed(args.seed)
    return model, tokenizer, where, generator


def device_for(args: argparse.Namespace) -> Any:
    """The device of --device that can run --precision, or SystemExit with one line."""
    try:
        where = pick_device(args.device)
    except (ValueError, RuntimeError) as e:
        args.parser.error(f"argument --device: {e}")
    try:
        check_precision(args.precision, where)
    except PrecisionUnsupported as e:
        raise SystemExit(fail(args, str(e))) from None
    return where


def in_precision(model: Any, precision: str) -> Any:
    """The model for inference in ``precision``: bf16 holds bf16 weights (a decoding step reads
    every weight once, so half the bytes; autocast would cast each weight at every step)."""
    return model.to(torch.bfloat16) if precision == "bf16" else model


def sampling(args: argparse.Namespace, tokenizer: Any, generator: Any) -> dict[str, Any]:
    """The generation options of the command line: chapter 5's sampling unless --greedy."""
    greedy = getattr(args, "greedy", False) or args.temperature == 0
    return dict(
        temperature=0.0 if greedy else args.temperature,
        top_k=None if greedy else args.top_k,
        top_p=None if greedy else args.top_p,
        use_cache=not getattr(args, "no_cache", False),
        eos_id=None if getattr(args, "no_eos", False) else tokenizer.eot_id,
        generator=generator,
    )


def new_text(
    model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int, with_prompt: bool = False, **options: Any
) -> Iterator[str]:
    """The decoded continuation of ``ids`` (after the prompt's own text with ``with_prompt``) after
    each new token; end-of-text left out, half a UTF-8 character held back."""
    new: list[int] = []
    for next_ids, _ in stream(model, [ids], max_new_tokens, **options):
        token = int(next_ids[0])
        if token == options.get("eos_id"):
            break
        new.append(token)
        yield tokenizer.decode(ids + new if with_prompt else new).rstrip("\ufffd")


def context_note(ids: list[int], context_length: int) -> None:
    if len(ids) > context_length:
        print(f"note: the prompt has {len(ids)} tokens; the model sees the last {context_length}", file=sys.stderr)
