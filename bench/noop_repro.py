"""`dvc repro` with nothing changed: the time DVC takes to see that every stage is up to date.

python bench/noop_repro.py      (in a repository where `dvc repro` has run)
"""

from __future__ import annotations

import subprocess
import sys
import time


def main() -> None:
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], capture_output=True, text=True).stdout
    if "Data and pipelines are up to date." not in status:
        sys.exit("dvc status shows changes: run `dvc repro` first (this measures a repro that has nothing to do)")
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "dvc", "repro"], capture_output=True, text=True, check=True).stdout
        runs.append(time.perf_counter() - start)
        if "Running stage" in out:
            print("a stage ran: this measures a no-op repro only when everything is up to date", file=sys.stderr)
            sys.exit(1)
    print(f"dvc repro, nothing changed: best {min(runs):.2f} s of {len(runs)} ({', '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
