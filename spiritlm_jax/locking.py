"""One owner per output directory: an advisory `flock` on `<dir>/.lock`, held for the life of a job.

Two jobs writing one run (or prepared-corpus) directory silently mix their files; the second job
must be refused instead. The kernel drops a `flock` when its process dies, so a lock left by a
killed job never blocks a rerun; its record (pid, host, start time, command) is still on disk and
is reported when the next job takes over. Only process 0 of a multi-host job takes the lock.

A directory on a bucket (gs://, s3://) has no flock: its lock is an object, `<dir>/.lock`, holding
the same record plus a heartbeat the holder rewrites every LEASE_S / 4 seconds. A job that finds a
record with a heartbeat younger than LEASE_S is refused with the same message; an older one, or one
of this host whose process is gone, is a job that died (taken over, with the same note); a clean
exit deletes the object. The job writes its
record, waits CONFIRM_S and reads it back: of two jobs starting together the later writer wins and
the other is refused. What an object store cannot guarantee (no compare-and-swap used here): two
jobs whose check and write are more than CONFIRM_S apart (a process paused in between) can both
believe they hold the lock; and a holder paused longer than LEASE_S loses it to a newcomer. The
trainer and prepare write nothing in the directory before the lock is taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from spiritlm_jax import paths

LOCK_FILE = ".lock"
LEASE_S = 120.0  # a bucket lock whose heartbeat is older than this belongs to a dead job
CONFIRM_S = 1.0  # a bucket lock is read back this long after it is written


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
    if paths.is_remote(path):
        with _lock_object(paths.path(path), what, lock_name, path if shown is None else shown):
            yield paths.path(path)
        return
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
        rec = _record()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(rec).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves an empty record: nothing to report next time
    finally:
        os.close(fd)  # closing releases the flock


def _record() -> dict:
    cmd = " ".join(sys.argv)[:500]
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": cmd}


def _read_object(obj) -> dict:
    try:
        rec = json.loads(obj.read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _gone(rec: dict) -> bool:
    """A holder on this host whose process no longer exists (killed): no need to wait for its lease."""
    if rec.get("host") != socket.gethostname() or not isinstance(rec.get("pid"), int):
        return False
    try:
        os.kill(rec["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def _lock_object(directory, what: str, lock_name: str, shown) -> Iterator[None]:
    """The bucket lock (module docstring): a record object with a heartbeat."""
    obj = directory / lock_name
    held = _read_object(obj) if obj.exists() else {}
    if held and time.time() - held.get("heartbeat", 0) < LEASE_S and not _gone(held):
        raise DirLocked(
            f"{what} {shown} is in use by {_describe(held)}; wait for it to finish, or choose another directory"
        )
    if held:
        print(f"note: {what} {shown} was last held by {_describe(held)}, which did not exit cleanly; taking over",
              file=sys.stderr)  # fmt: skip
    mine = {**_record(), "token": os.urandom(8).hex()}
    paths.write_file(obj, json.dumps({**mine, "heartbeat": time.time()}))
    time.sleep(CONFIRM_S)
    now = _read_object(obj)
    if now.get("token") != mine["token"]:
        raise DirLocked(
            f"{what} {shown} is in use by {_describe(now)}; wait for it to finish, or choose another directory"
        )
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(LEASE_S / 4):
            with contextlib.suppress(OSError):
                paths.write_file(obj, json.dumps({**mine, "heartbeat": time.time()}))

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        with contextlib.suppress(OSError):
            obj.unlink()
