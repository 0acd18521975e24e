"""``scratchgpt params``: check the whole of params.yaml, as ``make repro`` does before ``dvc repro``.

Each stage validates only the sections it reads, so that a change to another section's schema
does not rerun it; this names a problem anywhere in the file before any stage runs.
"""

from __future__ import annotations

import argparse
import sys

from scratchgpt.cli.common import fail
from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.params import SECTIONS, ParamsError, load_params


def run(args: argparse.Namespace) -> int:
    try:
        load_params(args.file)
    except ParamsError as e:  # every problem on its own line, as a stage prints them
        print(f"{args.parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except (PipelineError, OSError) as e:
        return fail(args, str(e))
    print(f"{args.file}: valid ({len(SECTIONS)} sections)")
    return 0
