"""``python -m scratchgpt``: the same as the ``scratchgpt`` command."""

import sys

from scratchgpt.cli import main

sys.exit(main())
