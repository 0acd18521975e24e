"""Whether DVC is at work in a repository, from its lock files alone (no DVC import: the CLI asks
this while parsing its arguments)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command(pid: int) -> str:
    """The command line of process ``pid`` where /proc shows it, else "dvc"."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip() or "dvc"
    except OSError:
        return "dvc"


def dvc_running(root: Path = Path(".")) -> str | None:
    """The DVC process at work in the repository ``root`` ("process PID: COMMAND"), or None.

    DVC holds ``.dvc/tmp/lock`` while it reads or writes the repository, but lets it go while a
    stage's command runs (so that the command may call DVC); then ``.dvc/tmp/rwlock`` names the
    running process against the stage's deps and outputs."""
    tmp = root / ".dvc" / "tmp"
    try:
        table = json.loads((tmp / "rwlock").read_text(encoding="utf-8"))
    except FileNotFoundError:
        table = {}
    except (OSError, ValueError):
        return "a DVC process (it is writing .dvc/tmp/rwlock)"
    for mode in ("write", "read"):
        paths = table.get(mode) if isinstance(table, dict) else None
        for infos in paths.values() if isinstance(paths, dict) else []:
            for info in infos if isinstance(infos, list) else [infos]:
                pid = info.get("pid") if isinstance(info, dict) else None
                if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
                    return f"process {pid}: {info.get('cmd', 'dvc')}"
    lock = tmp / "lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_nlink > 1:  # core.hardlink_lock: the lock is linked to its holder's claim file
            return "a DVC process (it holds .dvc/tmp/lock)"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # DVC's zc.lockfile: flock on .dvc/tmp/lock
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()  # zc.lockfile writes its pid there
            if not holder.isdigit():
                return "a DVC process (it holds .dvc/tmp/lock)"
            return f"process {holder}: {_command(int(holder))}"
        return None
    finally:
        os.close(fd)  # also lets go of the lock if it was taken
