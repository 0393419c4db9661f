"""One owner per output directory: a second live job is refused, a dead job's lock is taken over."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from spiritlm_jax.locking import LOCK_FILE, DirLocked, lock_dir

HOLD = textwrap.dedent(
    """
    import sys, time
    from spiritlm_jax.locking import lock_dir
    with lock_dir(sys.argv[1], "run directory"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_second_owner_is_refused_while_first_lives(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(DirLocked, match=rf"run directory {tmp_path} is in use by pid {p.pid}"):
            with lock_dir(tmp_path, "run directory"):
                pass
    finally:
        p.kill()
        p.wait()
    # The holder died (SIGKILL): the kernel dropped its flock; the next owner reports and takes over.
    with lock_dir(tmp_path, "run directory"):
        rec = json.loads((tmp_path / LOCK_FILE).read_text())
        assert rec["pid"] == os.getpid()


def test_stale_record_is_reported(tmp_path, capsys):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "h", "started": 0, "command": "x"}))
    with lock_dir(tmp_path, "run directory"):
        pass
    assert "pid 999999 on h" in capsys.readouterr().err
    assert (tmp_path / LOCK_FILE).read_text() == ""  # clean exit: nothing to report next time
    with lock_dir(tmp_path, "run directory"):
        pass
    assert "did not exit cleanly" not in capsys.readouterr().err


def test_same_process_cannot_take_it_twice(tmp_path):
    with lock_dir(tmp_path):
        with pytest.raises(DirLocked):
            with lock_dir(tmp_path):
                pass
