"""Fault injection for training (docs/reliability.md): two jobs on one run directory, resume=false into
an existing run, config changes on resume, non-finite updates, metrics after a resume, corrupt
checkpoints, a full disk, bad numbers in the config. Each runs `python -m spiritlm_jax.train` in a
subprocess (1 CPU device, a tiny model, one compilation cache for the module so a run takes seconds)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.n_layers=1",
    "model.d_model=64",
    "model.d_ff=128",
    "model.n_heads=2",
    "model.n_kv_heads=1",
    "model.max_seq_len=32",
    "data.seq_len=32",
    "data.batch_size=2",
    "data.read_threads=0",
    "log_every=1",
    "eval_every=0",
    "progress=false",
    "checkpoint.async_save=false",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    e.update(
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return e


def train(env, *args, script=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", script, *TINY, *args] if script else [sys.executable, "-m", "spiritlm_jax.train"]
    if not script:
        cmd += [*TINY, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def snapshot(d: Path) -> dict[str, str]:
    """Path -> content hash of every file under d (the lock record excepted)."""
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def metrics(d: Path) -> list[dict]:
    return [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def base_run(env, tmp_path_factory):
    """A finished 4-step run with a checkpoint at every step (sync saves)."""
    d = tmp_path_factory.mktemp("base") / "run"
    p = train(env, "steps=4", "checkpoint.every=1", "checkpoint.keep=4", f"out_dir={d}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(os.listdir(d / "checkpoints")) == ["1", "2", "3", "4"]
    return d


@pytest.fixture
def run_copy(base_run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(base_run, d)
    return d


# ----- 1. two jobs, one run directory ------------------------------------------------------------


def test_second_training_on_a_run_in_use_is_refused_and_changes_nothing(env, run_copy):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom spiritlm_jax.locking import lock_dir\n"
            "with lock_dir(sys.argv[1], 'run directory'):\n    print('held', flush=True)\n    time.sleep(600)\n",
            str(run_copy),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run_copy)
        p = train(env, "steps=6", "checkpoint.every=1", f"out_dir={run_copy}")
        assert p.returncode == 2, p.stdout + p.stderr
        assert f"in use by pid {holder.pid}" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert snapshot(run_copy) == before
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_trainings_second_refused(env, tmp_path):
    """Two real `train` commands started together on one new out_dir: exactly one trains."""
    d = tmp_path / "run"
    cmd = [sys.executable, "-m", "spiritlm_jax.train", *TINY, "steps=30", "checkpoint.every=10", f"out_dir={d}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(0.5)
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)]
    assert "is in use by pid" in loser[1]
    assert [r["step"] for r in metrics(d)] == list(range(1, 31))  # one run's records, once each


# ----- 2. resume=false into an existing run; 3. keep=0 and friends ------------------------------------


def test_resume_false_into_an_existing_run_is_refused_fresh_clears_only_its_files(env, run_copy):
    (run_copy / "my_notes.txt").write_text("mine")
    before = snapshot(run_copy)
    p = train(env, "steps=2", "checkpoint.resume=false", f"out_dir={run_copy}")
    assert p.returncode == 2 and "already holds a run (checkpoints up to step 4)" in p.stderr, p.stderr
    assert "checkpoint.fresh=true" in p.stderr
    assert snapshot(run_copy) == before
    p = train(env, "steps=2", "checkpoint.every=1", "checkpoint.fresh=true", f"out_dir={run_copy}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["1", "2"]
    assert [r["step"] for r in metrics(run_copy)] == [1, 2]
    assert (run_copy / "my_notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, message",
    [
        (["checkpoint.keep=0"], "checkpoint.keep must be >= 1"),
        (["checkpoint.every=0"], "checkpoint.every must be >= 1"),
        (["--checkpoint.every", "-1"], "checkpoint.every must be >= 1"),
        (["log_every=0"], "log_every must be >= 1"),
        (["--log-every", "0"], "--log-every must be >= 1"),
        (["eval_every=-1"], "eval_every must be >= 0"),
        (["optim.grad_clip=-1"], "optim.grad_clip must be >= 0"),
        (["data.batch_size=0"], "data.batch_size must be >= 1"),
        (["data.text_span=[5,2]"], "data.text_span must satisfy"),
    ],
)
def test_bad_numbers_are_config_errors_naming_the_key_as_typed(tmp_path, capsys, args, message):
    """Nothing is created, and the one line names the key as the user typed it (not 'checkpoint: every')."""
    from spiritlm_jax.train import main

    assert main([f"out_dir={tmp_path / 'run'}", *args]) == 2
    assert not (tmp_path / "run").exists()
    assert capsys.readouterr().err.strip().startswith(f"config error: {message}")


# ----- 5. a non-finite update is never saved ------------------------------------------------------


def test_update_that_makes_parameters_non_finite_is_not_saved(env, tmp_path):
    """lr 1e39 is inf in float32: the step-1 loss (computed before the update) is finite, the updated
    parameters are not. Before the fix checkpoint 1 held them and was named "the last good one"."""
    d = tmp_path / "run"
    p = train(
        env,
        "steps=3",
        "checkpoint.every=1",
        "optim.lr=1e39",
        "optim.warmup_steps=0",
        "optim.grad_clip=0",
        "optim.schedule=constant",
        f"out_dir={d}",
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "the updated parameters are not finite at step 1" in p.stderr and "Last good checkpoint: none" in p.stderr
    assert not list((d / "checkpoints").iterdir())


# ----- 9. a changed config on resume ----------------------------------------------------------------


def test_changed_config_on_resume_is_checked_before_anything_is_touched(env, run_copy):
    before = snapshot(run_copy)
    p = train(env, "steps=6", "model.d_model=32", f"out_dir={run_copy}")
    assert p.returncode == 2 and "another shape: model.d_model 64 -> 32" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = train(env, "steps=6", "optim.lr=0.1", f"out_dir={run_copy}")
    assert p.returncode == 2 and "optim.lr 0.003 -> 0.1" in p.stderr and "allow_changes" in p.stderr, p.stderr
    p = train(env, "steps=6", "data.seq_len=16", "model.max_seq_len=32", f"out_dir={run_copy}")
    assert p.returncode == 2 and "data.seq_len 32 -> 16" in p.stderr, p.stderr
    assert snapshot(run_copy) == before
    # with the flag: resumed and recorded (steps may grow while the lr of the steps to come is unchanged)
    p = train(env, "steps=6", "data.seed=1", "checkpoint.allow_changes=true", f"out_dir={run_copy}")
    assert p.returncode == 0 and "resumed from" in p.stdout, p.stdout + p.stderr
    assert "config changes accepted (checkpoint.allow_changes): data.seed 0 -> 1" in p.stdout
    rec = json.loads((run_copy / "config_changes.jsonl").read_text())
    assert rec["step"] == 4 and rec["changes"] == {"data.seed": {"old": 0, "new": 1}}
    from spiritlm_jax.config import load_config
    from spiritlm_jax.training.config import TrainConfig

    assert load_config(TrainConfig, run_copy / "config.yaml").data.seed == 1


def test_steps_change_that_changes_the_schedule_needs_the_flag(env, run_copy):
    p = train(env, "steps=40", f"out_dir={run_copy}")  # cosine over the run's length: steps 31..40 change
    assert p.returncode == 2 and "steps 4 -> 40" in p.stderr, p.stderr


# ----- 10. metrics after a resume -------------------------------------------------------------------


def test_metrics_after_resume_hold_each_step_once_and_first_loss_is_kept(env, run_copy, base_run):
    first = json.loads((base_run / "summary.json").read_text())["first_loss"]
    with open(run_copy / "metrics.jsonl", "a") as f:  # what a run killed after step 6 leaves
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + json.dumps({"step": 6, "loss": 1.0}) + "\n{cut")
    p = train(env, "steps=6", "checkpoint.every=1", "checkpoint.keep=4", f"out_dir={run_copy}")
    assert p.returncode == 0 and "resumed from" in p.stdout, p.stdout + p.stderr
    recs = metrics(run_copy)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6] and recs[4]["loss"] != 1.0
    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["first_loss"] == first and summary["final"]["loss"] == recs[-1]["loss"]
    text = (run_copy / "summary.json").read_text()
    p = train(env, "steps=6", "checkpoint.every=1", "checkpoint.keep=4", f"out_dir={run_copy}")
    assert p.returncode == 0 and "already finished at step 6" in p.stdout, p.stdout + p.stderr
    assert (run_copy / "summary.json").read_text() == text
    assert len(metrics(run_copy)) == 6


# ----- 15. corrupt checkpoints ---------------------------------------------------------------------


def _largest_file(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_corrupt_latest_checkpoints_are_named_and_the_previous_good_one_resumes(env, run_copy, base_run):
    ck = run_copy / "checkpoints"
    f = _largest_file(ck / "4" / "state")  # truncated array data
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    (ck / "3" / "meta" / "metadata").unlink()  # missing metadata
    f = _largest_file(ck / "2" / "state")  # flipped bytes
    data = bytearray(f.read_bytes())
    for i in range(0, len(data), 7):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))
    p = train(env, "steps=4", "checkpoint.every=1", "checkpoint.keep=4", f"out_dir={run_copy}")
    assert p.returncode == 0, p.stdout + p.stderr
    for step in (4, 3, 2):
        assert f"checkpoint {ck / str(step)} cannot be restored" in p.stdout, p.stdout
        assert (run_copy / "broken_checkpoints" / str(step)).is_dir()
    assert "resumed from" in p.stdout and "at step 1" in p.stdout
    assert len(p.stdout.splitlines()) < 15 and "Traceback" not in p.stdout + p.stderr
    ref = {r["step"]: r["loss"] for r in metrics(base_run)}
    got = {r["step"]: r["loss"] for r in metrics(run_copy)}
    assert sorted(got) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in (2, 3, 4)], [ref[s] for s in (2, 3, 4)], rtol=1e-6)


def test_readers_skip_a_broken_latest_checkpoint_and_say_so(run_copy, base_run, capsys):
    """generate / export read a run without changing it: a broken newest checkpoint is named and the
    one before it is used; none readable is one error line."""
    from spiritlm_jax.bundle.train_layout import restore_params

    ck = run_copy / "checkpoints"
    f = _largest_file(ck / "4" / "state")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    params, meta = restore_params(ck)
    err = capsys.readouterr().err
    assert f"checkpoint {ck / '4'} cannot be read" in err and "using checkpoint step 3" in err
    ref, _ = restore_params(base_run / "checkpoints", step=3)
    np.testing.assert_array_equal(params["embed"]["embedding"], ref["embed"]["embedding"])
    assert (ck / "4").is_dir() and not (run_copy / "broken_checkpoints").exists()  # nothing moved
    for s in ("1", "2", "3"):
        (ck / s / "meta" / "metadata").write_text("{not json")
    with pytest.raises(ValueError, match=r"no readable checkpoint in .*steps \[4, 3, 2, 1\] are all broken"):
        restore_params(ck)


def test_no_readable_checkpoint_is_one_line_with_the_way_out(env, run_copy):
    for s in ("1", "2", "3", "4"):
        (run_copy / "checkpoints" / s / "meta" / "metadata").write_text("{not json")
    p = train(env, "steps=4", f"out_dir={run_copy}")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no checkpoint of" in p.stderr and "checkpoint.fresh=true" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


# ----- 16. a full disk -----------------------------------------------------------------------------

DISK_FULL = """
import errno, sys
from orbax.checkpoint._src.handlers import json_checkpoint_handler as h
orig = h.JsonCheckpointHandler._save_fn
async def full(self, x, directory):
    if isinstance(x, dict) and x.get("step") == 4:
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await orig(self, x, directory)
h.JsonCheckpointHandler._save_fn = full
from spiritlm_jax.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_fails_at_the_failing_save_in_one_line(env, tmp_path):
    """ENOSPC injected into the background write of checkpoint 4 (async saves)."""
    d = tmp_path / "run"
    p = train(env, "steps=8", "checkpoint.every=2", "checkpoint.async_save=true", f"out_dir={d}", script=DISK_FULL)
    assert p.returncode == 1, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"saving checkpoint {d / 'checkpoints' / '4'} failed: No space left on device" in err[0], err
    assert f"Last good checkpoint: {d / 'checkpoints' / '2'}" in err[0]
    assert max(r["step"] for r in metrics(d)) < 6  # stopped before the next save
    from spiritlm_jax.bundle import load_pretrained

    _, params = load_pretrained(d)  # the last good checkpoint is intact and is what a reader gets
    assert np.isfinite(np.asarray(params["embed"]["embedding"])).all()


# ----- 17. truncated or malformed training shards --------------------------------------------------


def test_truncated_or_malformed_shards_are_named_in_one_line(env, tmp_path):
    import gzip

    from spiritlm_jax.data.pipeline import DEMO_CORPUS
    from spiritlm_jax.data.sources import read_examples, write_array_record

    cases = {}
    for name in ("gz", "array_record", "json"):
        c = tmp_path / name
        shutil.copytree(DEMO_CORPUS, c)
        cases[name] = c
    speech = cases["gz"] / "train" / "speech.jsonl.gz"
    speech.write_bytes(speech.read_bytes()[: speech.stat().st_size // 2])
    text = cases["array_record"] / "train" / "text.jsonl.gz"
    rec = cases["array_record"] / "train" / "text.array_record"
    write_array_record(rec, read_examples(text))
    text.unlink()
    rec.write_bytes(rec.read_bytes()[: rec.stat().st_size // 2])
    bad_line = cases["json"] / "train" / "aligned.jsonl.gz"
    lines = gzip.decompress(bad_line.read_bytes()).decode().splitlines()
    lines[6] = '{"kind": "aligned", '
    bad_line.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    expect = {
        "gz": f"shard {speech} cannot be read: truncated or corrupt (EOFError",
        "array_record": f"shard {rec} cannot be read: truncated or corrupt",
        "json": f"{bad_line}:7: not valid JSON",
    }
    for name, c in cases.items():
        p = train(env, "steps=2", "data.read_threads=2", f"data.corpus={c}", f"out_dir={tmp_path / ('run_' + name)}")
        assert p.returncode == 2, p.stdout + p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and expect[name] in err[0], p.stderr
        assert "cannot schedule new futures" not in p.stderr


def test_disk_full_writing_the_run_directory_is_one_line(tmp_path, monkeypatch, capsys):
    from spiritlm_jax.train import main
    from spiritlm_jax.training import loop

    def full(cfg, out_dir):
        raise OSError(28, "No space left on device", str(out_dir / "config.yaml"))

    monkeypatch.setattr(loop, "write_run_dir", full)
    assert main([f"out_dir={tmp_path / 'run'}", "steps=2", "progress=false"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"training stopped: No space left on device ({tmp_path / 'run' / 'config.yaml'})"]


def test_guard_out_of_memory_is_not_a_broken_checkpoint(tmp_path):
    from spiritlm_jax import run_guard as guard
    from spiritlm_jax.training.run_dir import RUN_POLICY

    ck = tmp_path / "checkpoints"
    for s in ("1", "2"):
        (ck / s).mkdir(parents=True)

    def oom(step):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3.2GiB")

    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        guard.restore_with_fallback(ck, [1, 2], oom, RUN_POLICY, log=lambda m: None)
    assert sorted(os.listdir(ck)) == ["1", "2"] and not (tmp_path / "broken_checkpoints").exists()
    seen = []

    def broken_then_good(step):
        seen.append(step)
        if step == 2:
            raise ValueError("bad bytes")
        return "state"

    assert guard.restore_with_fallback(ck, [1, 2], broken_then_good, RUN_POLICY, log=seen.append)[0] == 1
    assert (tmp_path / "broken_checkpoints" / "2").is_dir() and "cannot be restored (ValueError: bad bytes)" in seen[1]
