"""``scratchgpt classify``: label texts (or each line of stdin) with the classifier."""

from __future__ import annotations

import argparse
import sys

from scratchgpt.book.classify import classify
from scratchgpt.cli.common import fail, stdin_lines
from scratchgpt.cli.generation import device_for, in_precision
from scratchgpt.errors import PipelineError
from scratchgpt.formats.classifier import load_classifier

NAMES = {"ham": "not spam"}  # labels as printed


def run(args: argparse.Namespace) -> int:
    if not args.texts and sys.stdin.isatty():
        args.parser.error("give the texts as arguments, or one per line on stdin")
    where = device_for(args)
    try:
        model, tokenizer, head = load_classifier(args.model, where)
    except (OSError, ValueError, PipelineError) as e:
        return fail(args, str(e))
    model = in_precision(model, args.precision)
    width = max(len(NAMES.get(label, label)) for label in head.labels)
    texts = args.texts or (line.rstrip("\n") for line in stdin_lines(args.parser.prog) if line.strip())
    for text in texts:
        label, prob = classify(text, model, tokenizer, head)
        print(f"{NAMES.get(label, label):<{width}}  {prob:.3f}  {text}", flush=True)
    return 0
