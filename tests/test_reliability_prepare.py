"""Fault injection for `prepare` (docs/reliability.md): a directory in use, --overwrite next to the
user's own files, changed or truncated audio, a worker killed (no hang) and a killed parent (workers
stop), inputs that used to abort the run (huge numbers, invalid UTF-8, truncated .gz, a bad --sp-model)."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.data.prepare import PrepareConfig, prepare
from spiritlm_jax.data.sources import read_examples
from spiritlm_jax.locking import lock_dir
from spiritlm_jax.prepare import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
QUANT = DEMO_CORPUS / "quantizer"
SP = DEMO_CORPUS / "tokenizer.model"


def _manifest(path: Path, audios) -> Path:
    path.write_text("".join(json.dumps({"audio": str(a)}) + "\n" for a in audios))
    return path


def _cfg(tmp_path, manifest, **kw) -> PrepareConfig:
    base = dict(out=str(tmp_path / "out"), manifest=(str(manifest),), tokenizer=f"mel:{QUANT}", progress=False)
    return PrepareConfig(**{**base, **kw})


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_prepare_refuses_an_output_directory_in_use(tmp_path, capsys):
    out = tmp_path / "out"
    text = tmp_path / "t.txt"
    text.write_text("one line\n")
    with lock_dir(out, "prepared corpus"):
        assert main(["--text", str(text), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"prepared corpus {out} is in use by pid {os.getpid()}" in err, err
    assert _files(out) == {}
    assert main(["--text", str(text), "--out", str(out), "--no-progress"]) == 0  # free again


def test_overwrite_removes_only_what_prepare_wrote(tmp_path):
    """The user's recordings live under --out/speech/ (and a note under --out/aligned/): before the
    fix, --overwrite rmtree'd those folders."""
    out = tmp_path / "out"
    (out / "speech").mkdir(parents=True)
    (out / "aligned").mkdir()
    mine = [out / "speech" / "mine-1.wav", out / "speech" / "mine-2.wav"]
    for a, src in zip(mine, ("agent-pass.wav", "vm-intro.wav")):
        a.write_bytes((DATA / src).read_bytes())
    (out / "aligned" / "notes.txt").write_text("my notes")
    m = _manifest(tmp_path / "m.jsonl", mine)
    prepare(_cfg(tmp_path, m, shard_size=1, sp_model=str(SP)))
    assert sorted(p.name for p in (out / "speech").glob("audio-*")) == [
        "audio-00000.array_record",
        "audio-00001.array_record",
    ]
    prepare(_cfg(tmp_path, m, shard_size=2, overwrite=True))  # other settings, start over
    assert all(a.read_bytes() == (DATA / s).read_bytes() for a, s in zip(mine, ("agent-pass.wav", "vm-intro.wav")))
    assert (out / "aligned" / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in (out / "speech").glob("audio-*")) == ["audio-00000.array_record"]
    assert not (out / "tokenizer.model").exists()  # the copy of the first run's sp_model went too


def test_shards_without_a_plan_are_not_deleted(tmp_path):
    out = tmp_path / "out"
    (out / "text").mkdir(parents=True)
    (out / "text" / "text-00000.jsonl").write_text('{"kind": "text", "text": "someone else\'s"}\n')
    text = tmp_path / "t.txt"
    text.write_text("a line\n")
    assert main(["--text", str(text), "--out", str(out), "--overwrite", "--no-progress"]) == 2
    assert (out / "text" / "text-00000.jsonl").is_file()


def test_changed_audio_is_prepared_again_and_truncated_wav_is_named(tmp_path, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes((DATA / "agent-pass.wav").read_bytes())
    b.write_bytes((DATA / "vm-intro.wav").read_bytes())
    full = (DATA / "agent-loginok.wav").read_bytes()
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(full[: len(full) // 2])  # header declares more data than the file holds
    m = _manifest(tmp_path / "m.jsonl", [a, b, trunc])
    cfg = _cfg(tmp_path, m, shard_size=1)
    s = prepare(cfg)
    out = Path(cfg.out)
    bad = [json.loads(ln) for ln in (out / "bad_files.jsonl").read_text().splitlines()]
    assert len(bad) == 1 and bad[0]["path"] == str(trunc) and "truncated WAV" in bad[0]["reason"], bad
    before = read_examples(out / "speech" / "audio-00001.array_record")[0]["hubert"]
    stamp0 = (out / "speech" / "audio-00000.array_record").stat().st_mtime_ns
    b.write_bytes((DATA / "agent-loginok.wav").read_bytes())  # same name, other content
    capsys.readouterr()
    s2 = prepare(cfg)
    assert "audio-00001: " in capsys.readouterr().out
    after = read_examples(out / "speech" / "audio-00001.array_record")[0]["hubert"]
    assert after != before and s2["_run"]["units_done_now"] == 1
    assert (out / "speech" / "audio-00000.array_record").stat().st_mtime_ns == stamp0  # untouched unit
    assert s2["frames"] != s["frames"]


def test_inputs_that_used_to_abort_are_reported_and_skipped(tmp_path, capsys):
    good = DATA / "agent-pass.wav"
    m = tmp_path / "m.jsonl"
    huge = "1" + "0" * 400  # an integer json reads, too large for a float
    m.write_bytes(
        (json.dumps({"audio": str(good)}) + "\n").encode()
        + b'{"audio": "'
        + str(good).encode()
        + b'", "words": [["a", 0, '
        + huge.encode()
        + b"]]}\n"
        + b'{"audio": "x\xff.wav"}\n'
    )
    t = tmp_path / "t.txt"
    t.write_bytes(b"fine line\nbad \xc3\x28 byte\nlast line\n")
    gz = tmp_path / "cut.txt.gz"
    data = gzip.compress(("".join(f"line {i} of a long file\n" for i in range(2000))).encode())
    gz.write_bytes(data[: len(data) // 2])
    rc = main(["--manifest", str(m), "--text", str(t), "--text", str(gz), "--out", str(tmp_path / "out"),
               "--tokenizer", f"mel:{QUANT}", "--no-progress"])  # fmt: skip
    assert rc == 3, capsys.readouterr()
    bad = [json.loads(ln) for ln in (tmp_path / "out" / "bad_files.jsonl").read_text().splitlines()]
    reasons = {b["entry"]: b["reason"] for b in bad}
    assert "too large" in reasons[f"{m}:2"]
    assert "not valid UTF-8" in reasons[f"{m}:3"]
    assert "not valid UTF-8" in reasons[f"{t}:2"]
    cut = [b for b in bad if b["path"] == str(gz)]
    assert len(cut) == 1 and "truncated or corrupt" in cut[0]["reason"]
    summary = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert summary["counts"]["speech"] == 1 and summary["counts"]["text"] > 2  # lines before the damage kept


def test_bad_sp_model_is_one_clear_line(tmp_path, capsys):
    t = tmp_path / "t.txt"
    t.write_text("a line\n")
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a sentencepiece model")
    assert main(["--text", str(t), "--out", str(tmp_path / "out"), "--sp-model", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"sp_model {bad} is not a SentencePiece model" in err[0]


# ----- worker processes ----------------------------------------------------------------------------


def _env():
    e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    e.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return e


def _long_manifest(tmp_path, n: int) -> Path:
    wav = tmp_path / "long.wav"
    sf.write(wav, (np.random.default_rng(0).standard_normal(16000 * 20) * 0.1).astype(np.float32), 16000)
    return _manifest(tmp_path / "m.jsonl", [wav] * n)


def _workers(proc) -> list[int]:
    """The pids of the spawned worker processes of `proc` (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        try:
            pids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.append(pid)
    return out


def _wait_working(out: Path, proc, timeout=180) -> int:
    """A worker's pid once at least one unit is done (the workers are busy with the next ones)."""
    done = out / ".prepare" / "done.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        pids = _workers(proc)
        if pids and done.is_file() and done.read_text().strip():
            return pids[0]
        time.sleep(0.01)
    raise AssertionError("the workers did not start")


def _stop(proc) -> None:
    for pid in _workers(proc):
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait()


def _prepare_proc(tmp_path, m, workers):
    cmd = [sys.executable, "-m", "spiritlm_jax.prepare", "--manifest", str(m), "--out", str(tmp_path / "out"),
           "--tokenizer", f"mel:{QUANT}", "--shard-size", "1", "--workers", str(workers), "--no-progress"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_is_an_error_naming_its_unit_not_a_hang(tmp_path):
    m = _long_manifest(tmp_path, 40)
    p = _prepare_proc(tmp_path, m, workers=2)
    os.kill(_wait_working(tmp_path / "out", p), signal.SIGKILL)  # as the out-of-memory killer does
    try:
        out, err = p.communicate(timeout=120)  # before the fix: waited forever at 39/40
    except subprocess.TimeoutExpired:
        _stop(p)
        raise AssertionError("prepare hung after a worker died") from None
    assert p.returncode == 1, out + err
    assert "a worker process died" in err and "audio-000" in err and "rerun the same command" in err, err
    assert len(err.strip().splitlines()) == 1
    done = (tmp_path / "out" / ".prepare" / "done.jsonl").read_text().splitlines()
    assert 1 <= len(done) < 40
    assert not (tmp_path / "out" / ".prepare" / "running").exists()


def test_workers_stop_when_the_parent_is_killed(tmp_path):
    m = _long_manifest(tmp_path, 200)
    p = _prepare_proc(tmp_path, m, workers=1)
    pid = _wait_working(tmp_path / "out", p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    n_done = len((tmp_path / "out" / ".prepare" / "done.jsonl").read_text().splitlines())
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":  # a zombie has stopped already
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the worker kept running after its parent was killed")
    shards = list((tmp_path / "out" / "speech").glob("audio-*"))
    assert len(shards) <= n_done + 20 < 200  # it stopped within a second, not after the remaining units
