"""One owner per output directory: an advisory `flock` on `<dir>/.lock`, held for the life of a job.

Two jobs writing one run (or prepared-corpus) directory silently mix their files; the second job
must be refused instead. The kernel drops a `flock` when its process dies, so a lock left by a
killed job never blocks a rerun; its record (pid, host, start time, command) is still on disk and
is reported when the next job takes over. Only process 0 of a multi-host job takes the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"


class DirLocked(ValueError):
    """Another live process owns the directory."""


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _describe(rec: dict) -> str:
    if not rec:
        return "an unknown process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.get("started", 0)))
    return f"pid {rec.get('pid', '?')} on {rec.get('host', '?')} (started {started}: {rec.get('command', '?')})"


@contextlib.contextmanager
def lock_dir(
    path: str | Path, what: str = "directory", lock_name: str = LOCK_FILE, shown: str | Path | None = None
) -> Iterator[Path]:
    """Hold `<path>/<lock_name>` exclusively while the block runs; `DirLocked` if a live process holds it.

    Messages say `<what> <shown>` ("run directory runs/demo"; `shown` defaults to `path`). A job whose
    output is one file locks that file's folder under a lock name of its own (`.<file>.lock`).
    """
    path = Path(path)
    shown = path if shown is None else shown
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / lock_name
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirLocked(
                f"{what} {shown} is in use by {_describe(_read_record(lock_path))}; "
                "wait for it to finish, or choose another directory"
            ) from None
        stale = _read_record(lock_path)
        if stale:
            print(
                f"note: {what} {shown} was last held by {_describe(stale)}, which did not exit cleanly; taking over",
                file=sys.stderr,
            )
        rec = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(rec).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves an empty record: nothing to report next time
    finally:
        os.close(fd)  # closing releases the flock
