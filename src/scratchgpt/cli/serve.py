"""``scratchgpt serve``: a model folder behind an OpenAI-compatible HTTP API (scratchgpt.serve)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from scratchgpt.cli.common import fail
from scratchgpt.cli.generation import device_for
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.allocator import tune_cpu_allocator
from scratchgpt.serve.api import create_app
from scratchgpt.serve.models import open_model
from scratchgpt.serve.server import make_server


def run(args: argparse.Namespace) -> int:
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            args.parser.error(f"argument --api-key-env: environment variable {args.api_key_env} is not set or empty")
    tune_cpu_allocator()
    where = device_for(args)
    try:
        served = open_model(
            args.model,
            where,
            args.precision,
            name=args.name,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            max_tokens=args.max_tokens,
            api_key=key,
        )
    except (OSError, ValueError, PipelineError) as e:
        return fail(args, str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    server = make_server(create_app(served), args.host, args.port, header_timeout=args.timeout)
    what = "classifier" if served.engine is None else ("instruction model" if served.instruct else "language model")
    routes = "POST /v1/classify" if served.engine is None else "POST /v1/chat/completions, /v1/completions"
    print(
        f"serving {args.model} as model {served.name!r} ({what}, {served.context_length}-token context, {where}, "
        f"{args.precision}): {routes}; {'API key required' if key else 'no API key'}. Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    if not key and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host} with no API key: anyone who reaches this machine can use the model "
            "(--api-key-env NAME requires one)",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.run()
    finally:
        if served.engine is not None:
            served.engine.stop()
    return 0
