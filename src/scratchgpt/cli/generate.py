"""``scratchgpt generate``: continue a prompt with a language model, streaming the text."""

from __future__ import annotations

import argparse
import sys

from scratchgpt.cli.generation import context_note, load_language_model, new_text, sampling


def run(args: argparse.Namespace) -> int:
    model, tokenizer, _, generator = load_language_model(args)
    ids = tokenizer.encode(args.prompt)
    context_note(ids, model.config.context_length)
    shown = tokenizer.decode(ids)
    sys.stdout.write(shown)
    sys.stdout.flush()
    options = sampling(args, tokenizer, generator)
    for text in new_text(model, tokenizer, ids, args.max_new_tokens, with_prompt=True, **options):
        if text.startswith(shown) and len(text) > len(shown):
            sys.stdout.write(text[len(shown) :])
            sys.stdout.flush()
            shown = text
    sys.stdout.write("\n")
    return 0
