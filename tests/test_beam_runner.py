"""`prepare --runner beam` and `align --runner beam` (spiritlm_jax/beam_runner.py) on Beam's
DirectRunner with 2 worker processes (multi_processing mode): the shards, bad_files.jsonl and
corpus.json are byte-identical to the local runner's (the same UnitWorker and shard writer run on
the same units, and ArrayRecord embeds nothing that depends on the process); align writes the same
lines (words and times) and bad_files.jsonl byte for byte. A failing unit is one line naming the
unit and input; a rerun resumes from the units that finished. Needs the [beam] extra."""

import filecmp
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("apache_beam")

from spiritlm_jax.align import main as align_main  # noqa: E402
from spiritlm_jax.data.prepare import plan_units, prepare  # noqa: E402
from spiritlm_jax.data.prepare.plan import start_state  # noqa: E402
from spiritlm_jax.data.prepare.run import PrepareFailed  # noqa: E402
from tests.test_align_cli import DATA, PROMPTS, write_manifest  # noqa: E402
from tests.test_prepare import _cfg  # noqa: E402

BEAM2 = dict(runner="beam", workers=2)


def _files(root: Path) -> dict[str, Path]:
    """The outputs of a preparation (not its .prepare/ state or lock)."""
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and ".prepare" not in p.parts and p.name != ".lock"
    }


def _assert_same(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert filecmp.cmp(fa[name], fb[name], shallow=False), name


@pytest.mark.slow
def test_prepare_on_beam_in_two_processes_is_byte_identical(tmp_path):
    local = prepare(_cfg(tmp_path, out="local"))
    assert local["bad_files"] == 7 and all(local["counts"].values())
    beam = prepare(_cfg(tmp_path, out="beam", **BEAM2))
    _assert_same(tmp_path / "local", tmp_path / "beam")
    assert {k: v for k, v in beam.items() if k != "_run"} == {k: v for k, v in local.items() if k != "_run"}
    assert beam["_run"]["units_done_now"] == 5


def test_a_failing_unit_is_one_line_and_a_rerun_resumes(tmp_path):
    """Text units on Beam's in-process runner (quick): a unit whose shard cannot be written (a folder
    stands at its final name) stops the run with one line naming the unit and input; the units that
    finished keep their shards and done markers, no temporary file is left, and the rerun does only
    the rest and gives the local runner's outputs."""
    text_only = dict(manifest=(), text_shard_size=1)
    local = prepare(_cfg(tmp_path, out="local", **text_only))
    cfg = _cfg(tmp_path, out="beam", runner="beam", **text_only)
    out = Path(cfg.out)
    units, _, plan = plan_units(cfg)
    start_state(cfg, out, plan)
    blocker = out / "text" / "text-00001.array_record"
    blocker.mkdir()
    with pytest.raises(PrepareFailed) as err:
        prepare(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and "rerun" in msg, msg
    assert "unit text-00001, at writing the shards of text-00001: IsADirectoryError" in msg, msg
    assert not list(out.rglob("*.partial"))  # no half-written file under any name
    finished = {p.stem for p in (out / ".prepare" / "done").glob("*.json")}
    assert "text-00001" not in finished and len(units) == 3

    blocker.rmdir()
    beam = prepare(cfg)
    assert beam["_run"]["units_done_now"] == len(units) - len(finished)
    _assert_same(tmp_path / "local", out)
    assert {k: v for k, v in beam.items() if k != "_run"} == {k: v for k, v in local.items() if k != "_run"}


@pytest.mark.slow
def test_align_on_beam_gives_the_same_lines_and_bad_files(tmp_path):
    manifest = tmp_path / "in.jsonl"
    shutil.copy(DATA / "agent-loginok.wav", tmp_path / "rel.wav")
    write_manifest(
        manifest,
        [
            "not json",
            json.dumps({"audio": "missing.wav", "text": "hello"}),
            json.dumps({"audio": str(DATA / "agent-pass.wav")}),  # no text: copied unchanged
            json.dumps({"audio": "rel.wav", "text": PROMPTS["agent-loginok"]}),
        ],
    )
    a, b = tmp_path / "a" / "out.jsonl", tmp_path / "b" / "out.jsonl"
    common = ["--manifest", str(manifest), "--no-progress", "--batch-size", "2"]
    assert align_main([*common, "--out", str(a)]) == 3
    assert align_main([*common, "--out", str(b), "--runner", "beam", "--workers", "2"]) == 3
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "bad_files.jsonl").read_bytes() == (b.parent / "bad_files.jsonl").read_bytes()
    assert len(a.read_text().splitlines()) == 5 and not (b.parent / ".out.jsonl.parts").exists()


def test_align_on_beam_resumes_from_the_part_files_of_a_killed_run(tmp_path):
    """A batch whose part file a killed run left is not aligned again: its results (here made up, so
    the reuse shows) go to the output in input order; the part files are removed at the end."""
    from spiritlm_jax.alignment.run import AlignConfig, _batch_name, _parts_dir, align_manifest, read_inputs

    manifest, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_manifest(manifest)
    cfg = AlignConfig(out=str(out), manifest=(str(manifest),), batch_size=2, runner="beam", progress=False)
    entries, _ = read_inputs(cfg, tmp_path)
    first = entries[:2]
    parts = _parts_dir(out)
    parts.mkdir()
    made_up = [{"line": {**e["line"], "words": [["made", 0.0, 0.1]]}, "seconds": 1.0} for e in first]
    (parts / f"{_batch_name(0, first)}.json").write_text(json.dumps(made_up))
    s = align_manifest(cfg)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == list(PROMPTS)
    assert [x["words"] for x in lines[:2]] == [[["made", 0.0, 0.1]]] * 2 and lines[2]["words"][0][0] == "Please"
    assert s["aligned"] == 3 and not parts.exists()
