"""``scratchgpt weights``: download OpenAI's GPT-2 checkpoints, convert them or Hugging Face
folders into model directories, export a model directory to Hugging Face's layout."""

from __future__ import annotations

import argparse

from scratchgpt.cli.common import fail
from scratchgpt.errors import PipelineError
from scratchgpt.formats.convert import convert
from scratchgpt.formats.finetuned import load_finetuned
from scratchgpt.formats.hf import export_hf
from scratchgpt.formats.openai_download import OPENAI_BASE_URLS, download_openai
from scratchgpt.plumbing import logs
from scratchgpt.plumbing.download import mirror_from_env


def run(args: argparse.Namespace) -> int:
    logs.configure()
    try:
        if args.action == "convert":
            out = convert(args.src, args.out, bpe_dir=args.bpe_dir, with_tokenizer=not args.no_tokenizer)
        elif args.action == "export-hf":
            out = export_hf(args.model, args.out, load=load_finetuned)
        else:
            mirror = args.mirror or mirror_from_env()
            out = download_openai(args.size, args.out, mirror=mirror, base_urls=args.base_urls or OPENAI_BASE_URLS)
    except (PipelineError, OSError) as e:
        return fail(args, str(e))
    print(out)
    return 0
