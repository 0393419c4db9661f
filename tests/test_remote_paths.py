"""gs:// / s3:// paths through one path type (spiritlm_jax/paths.py, etils.epath) against moto's S3
server on 127.0.0.1 (tests/s3_server.py): prepare from an s3:// manifest (relative audio paths
resolved against its folder) to an s3:// corpus gives the local preparation's examples and summary;
on Beam (when installed) the same bytes as the local runner; training reads the s3:// corpus and
keeps its run directory on the bucket through a kill and an exact resume, and generate reads it;
the lock object of a run directory on a bucket refuses a second job with the local lock's message."""

import dataclasses
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax import paths
from spiritlm_jax.data.prepare import prepare
from spiritlm_jax.data.sources import read_examples
from spiritlm_jax.generate import main as generate_main
from spiritlm_jax.locking import DirLocked, lock_dir
from tests.object_stores import bucket, gcs_bucket, gcs_endpoint, s3_endpoint  # noqa: F401 (fixtures)
from tests.test_prepare import _cfg
from tests.test_train import SMALL, _losses, _losses_in, _train

KINDS = ("speech", "aligned", "text")


def _upload_inputs(tmp_path: Path, dest: str) -> tuple[str, str, str]:
    """The test manifest (its audio copied beside it, referenced by relative paths), the text file
    and the SentencePiece model, uploaded to `dest`; returns their s3:// paths."""
    cfg = _cfg(tmp_path, out="unused")
    src = Path(cfg.manifest[0])
    lines = []
    for line in src.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            lines.append(line)
            continue
        if isinstance(e, dict) and isinstance(e.get("audio"), str) and Path(e["audio"]).is_absolute():
            name = Path(e["audio"]).name
            shutil.copy(e["audio"], tmp_path / name)
            e["audio"] = name
        lines.append(json.dumps(e))
    for p in tmp_path.glob("*.wav"):
        paths.upload(p, f"{dest}/in/{p.name}")
    paths.write_file(f"{dest}/in/manifest.jsonl", "\n".join(lines) + "\n")
    paths.upload(Path(cfg.text[0]), f"{dest}/in/text.txt")
    paths.upload(Path(cfg.sp_model), f"{dest}/in/tokenizer.model")
    return f"{dest}/in/manifest.jsonl", f"{dest}/in/text.txt", f"{dest}/in/tokenizer.model"


def _s3_cfg(tmp_path, out: str, manifest: str, text: str, sp: str, **kw):
    """The test preparation's settings with s3:// inputs and output."""
    return dataclasses.replace(_cfg(tmp_path, manifest=(manifest,), text=(text,), sp_model=sp, **kw), out=out)


def _examples(root) -> dict[str, list[dict]]:
    local = paths.local_dir(root)
    return {k: [ex for p in sorted((local / k).glob("*.array_record")) for ex in read_examples(p)] for k in KINDS}


@pytest.mark.parametrize("store", ["bucket", "gcs_bucket"])
def test_prepare_from_bucket_manifest_to_bucket_corpus(tmp_path, store, request):
    """s3:// on moto's server; gs:// on the GCS emulator where gcp-storage-emulator is installed."""
    bucket = request.getfixturevalue(store)  # noqa: F811
    manifest, text, sp = _upload_inputs(tmp_path, bucket)
    local = prepare(_cfg(tmp_path, out="local"))
    remote = prepare(_s3_cfg(tmp_path, f"{bucket}/corpus", manifest, text, sp))
    same = ("counts", "hours", "tokens", "words", "frames", "bad_files", "shards", "units", "layout", "format")
    assert {k: remote[k] for k in same} == {k: local[k] for k in same}
    got, want = _examples(f"{bucket}/corpus"), _examples(tmp_path / "local")
    for kind in KINDS:
        assert len(got[kind]) == len(want[kind]) > 0
        for g, w in zip(got[kind], want[kind]):
            if "audio" in w:  # the recording's place: on the bucket, beside the manifest
                assert g.pop("audio") == f"{bucket}/in/{Path(w.pop('audio')).name}"
            if g.get("id", "").startswith(bucket):
                g["id"], w["id"] = Path(g["id"]).name, Path(w["id"]).name
            assert g == w
    bad = [json.loads(x) for x in paths.path(f"{bucket}/corpus/bad_files.jsonl").read_text().splitlines()]
    assert len(bad) == local["bad_files"] and any(b["path"] == f"{bucket}/in/missing.wav" for b in bad)
    assert paths.path(f"{bucket}/corpus/tokenizer.model").read_bytes() == Path(_cfg(tmp_path).sp_model).read_bytes()
    # a rerun resumes: every unit is done (done markers on the bucket)
    again = prepare(_s3_cfg(tmp_path, f"{bucket}/corpus", manifest, text, sp))
    assert again["_run"]["units_done_now"] == 0 and not list(paths.path(f"{bucket}/corpus").glob("*/.*.partial"))


@pytest.mark.slow
def test_prepare_on_beam_from_s3_to_s3_gives_the_local_runners_bytes(tmp_path, bucket):  # noqa: F811
    pytest.importorskip("apache_beam")
    manifest, text, sp = _upload_inputs(tmp_path, bucket)
    for out, runner in (("corpus", "local"), ("beam", "beam")):
        prepare(_s3_cfg(tmp_path, f"{bucket}/{out}", manifest, text, sp, runner=runner, workers=2 * (runner == "beam")))
    a, b = paths.list_files(f"{bucket}/corpus"), paths.list_files(f"{bucket}/beam")
    outputs = [f for f in a if not f.startswith(".")]
    assert outputs == [f for f in b if not f.startswith(".")] and "corpus.json" in outputs
    for f in outputs:
        assert paths.path(f"{bucket}/corpus/{f}").read_bytes() == paths.path(f"{bucket}/beam/{f}").read_bytes(), f


def test_bucket_lock_refuses_a_second_job_and_takes_over_a_dead_one(bucket, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr("spiritlm_jax.locking.CONFIRM_S", 0.05)
    run = f"{bucket}/runs/demo"
    with lock_dir(run, "run directory"):
        rec = json.loads(paths.path(f"{run}/.lock").read_text())
        with pytest.raises(DirLocked, match=r"run directory s3://.*/runs/demo is in use by pid \d+ on .*; wait for it"):
            with lock_dir(run, "run directory"):
                pass
    assert not paths.path(f"{run}/.lock").exists()  # a clean exit removes the lock object
    # a job that died: its record stays, its heartbeat ages past the lease -> taken over, with a note
    paths.write_file(f"{run}/.lock", json.dumps({**rec, "pid": 4242, "heartbeat": rec["heartbeat"] - 1000}))
    with lock_dir(run, "run directory"):
        pass
    assert "was last held by pid 4242" in capsys.readouterr().err


def _remote_losses(run: str) -> dict[int, float]:
    return _losses_in(paths.path(f"{run}/metrics.jsonl").read_text())


@pytest.mark.slow
def test_train_from_s3_corpus_to_s3_run_kill_resume_exactly_then_generate(tmp_path, bucket, capsys):  # noqa: F811
    """Prepare from the s3:// manifest to an s3:// corpus; train on it with the run directory on the
    bucket, killed (SIGKILL) after its step-2 checkpoint reached the bucket; the rerun resumes
    there and its losses equal those of an uninterrupted run to 1e-6; generate reads the s3:// run."""
    manifest, text, sp = _upload_inputs(tmp_path, bucket)
    corpus, run = f"{bucket}/corpus", f"{bucket}/runs/demo"
    prepare(_s3_cfg(tmp_path, corpus, manifest, text, sp))
    common = SMALL + [f"data.corpus={corpus}", "steps=4", "eval_every=0", "checkpoint.every=1",
                      "checkpoint.async_save=false"]  # fmt: skip
    ref = _train(common + [f"out_dir={tmp_path / 'ref'}"])
    victim = _train(common + [f"out_dir={run}"])
    marker = paths.path(f"{run}/checkpoints/2/commit_success.txt")
    deadline = time.time() + 400
    while not marker.exists():
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[0]
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(_remote_losses(run)) < 4  # it really was cut short
    out, _ = _train(common + [f"out_dir={run}"]).communicate(timeout=600)
    assert "resumed from" in out, out
    assert ref.wait(timeout=600) == 0, ref.communicate()[0]
    a, b = _losses(tmp_path / "ref"), _remote_losses(run)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-6, atol=0)
    assert sorted(p.name for p in paths.path(f"{run}/checkpoints").iterdir()) == ["2", "3", "4"]  # keep=3

    capsys.readouterr()
    assert (
        generate_main(
            ["--checkpoint", run, "--text", "the first", "--max-new-tokens", "4", "--output-modality", "text"]
        )
        == 0
    )
    assert capsys.readouterr().out.strip()


def test_staged_dir_mirrors_and_uploads_even_after_an_error(bucket, tmp_path, monkeypatch):  # noqa: F811
    """A folder written with local-file APIs (appends): its bucket copy is downloaded, and uploaded on
    exit (an error too), deletions included; what `skip` names is neither downloaded nor uploaded."""
    monkeypatch.setenv("SPIRITLM_CACHE", str(tmp_path / "cache"))
    out = f"{bucket}/eval"
    paths.write_file(f"{out}/old.txt", "old")
    paths.write_file(f"{out}/scores.jsonl", "1\n")
    paths.write_file(f"{out}/tmp/x.partial", "cut")
    with pytest.raises(RuntimeError):
        with paths.staged_dir(out, skip=lambda rel: rel.endswith(".partial")) as local:
            assert sorted(p.name for p in local.rglob("*") if p.is_file()) == ["old.txt", "scores.jsonl"]
            with open(local / "scores.jsonl", "a") as f:
                f.write("2\n")
            (local / "old.txt").unlink()
            (local / "report.json").write_text("{}")
            raise RuntimeError("stopped")
    assert paths.list_files(out) == ["report.json", "scores.jsonl"]
    assert paths.path(f"{out}/scores.jsonl").read_text() == "1\n2\n"


def test_align_from_an_s3_manifest_to_an_s3_output_and_resume(tmp_path, bucket, capsys):  # noqa: F811
    """align reads an s3:// manifest (relative audio beside it, written back as full URLs) and its
    output and bad_files.jsonl go to the bucket; the words equal a local run's; a rerun aligns nothing."""
    from spiritlm_jax.align import main as align_main
    from tests.test_align_cli import DATA, PROMPTS

    lines = [json.dumps({"audio": f"{n}.wav", "text": t, "id": n}) for n, t in PROMPTS.items()]
    lines.append(json.dumps({"audio": "missing.wav", "text": "hello"}))
    for n in PROMPTS:
        paths.upload(DATA / f"{n}.wav", f"{bucket}/in/{n}.wav")
        shutil.copy(DATA / f"{n}.wav", tmp_path / f"{n}.wav")
    paths.write_file(f"{bucket}/in/m.jsonl", "\n".join(lines) + "\n")
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert (
        align_main(["--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "a.jsonl"), "--no-progress"]) == 3
    )
    out = f"{bucket}/out/aligned.jsonl"
    assert align_main(["--manifest", f"{bucket}/in/m.jsonl", "--out", out, "--no-progress"]) == 3
    got = [json.loads(x) for x in paths.path(out).read_text().splitlines()]
    want = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [g["audio"] for g in got] == [f"{bucket}/in/{n}.wav" for n in PROMPTS]
    assert [g["words"] for g in got] == [w["words"] for w in want]
    bad = [json.loads(x) for x in paths.path(f"{bucket}/out/bad_files.jsonl").read_text().splitlines()]
    assert [b["path"] for b in bad] == [f"{bucket}/in/missing.wav"]
    capsys.readouterr()
    assert align_main(["--manifest", f"{bucket}/in/m.jsonl", "--out", out, "--no-progress"]) == 3
    assert "0 aligned now" in capsys.readouterr().out
    assert len(paths.path(out).read_text().splitlines()) == 3
