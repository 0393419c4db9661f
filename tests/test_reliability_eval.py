"""Evaluation under mistakes (docs/reliability.md): score caches pinned to the checkpoint and items,
duplicate item ids rejected, file names from manifest ids never leave --out."""

import json
from pathlib import Path

import pytest

from spiritlm_jax.evaluate import main
from spiritlm_jax.evaluation import fewshot as fe
from spiritlm_jax.evaluation.names import checkpoint_fingerprint, inside, safe_file_name
from spiritlm_jax.inference.spiritlm import SpiritLM
from tests.test_stsp import tiny_lm

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


@pytest.fixture
def stub_checkpoint(monkeypatch, lm):
    monkeypatch.setattr(SpiritLM, "from_checkpoint", classmethod(lambda cls, path, **kw: lm))


def _items(path: Path, ids=("1", "2")) -> Path:
    rows = [
        {
            "id": i,
            "context": None,
            "candidates": [{"text": "please enter your password"}, {"text": "pound key"}],
            "label": 0,
        }
        for i in ids
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ckpt(d: Path, content: str) -> Path:
    d.mkdir()
    (d / "config.yaml").write_text(content)
    return d


def test_scores_of_another_checkpoint_are_not_reused(tmp_path, stub_checkpoint, capsys):
    items = _items(tmp_path / "items.jsonl")
    a, b = _ckpt(tmp_path / "a", "a"), _ckpt(tmp_path / "b", "b: 1")
    out = tmp_path / "out"
    args = ["likelihood", "--items", str(items), "--setting", "T", "--out", str(out)]
    assert main([*args, "--checkpoint", str(a)]) == 0
    assert main([*args, "--checkpoint", str(a)]) == 0  # the same checkpoint resumes from its cache
    capsys.readouterr()
    assert main([*args, "--checkpoint", str(b)]) == 2  # before: exit 0 with a's scores
    assert "holds scores of another checkpoint" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(a), "--items", str(_items(tmp_path / "other.jsonl", ("1", "3")))]) == 2
    assert "holds scores of another items" in capsys.readouterr().err
    (a / "config.yaml").write_text("a, converted again")
    assert checkpoint_fingerprint(a) != json.loads((out / "cache_key.json").read_text())["checkpoint"]


def test_duplicate_item_ids_are_rejected(tmp_path, stub_checkpoint, capsys):
    items = _items(tmp_path / "items.jsonl", ("1", "2", "1"))
    rc = main(
        ["likelihood", "--items", str(items), "--setting", "T", "--out", str(tmp_path / "o"), "--checkpoint", "x"]
    )
    assert rc == 2 and "item id '1' appears twice (items 1 and 3)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../escape", "/abs/escape", "..", ".hidden", "a/b", "ok-1.2_x"])
def test_safe_file_names_stay_inside(tmp_path, name):
    p = inside(tmp_path / "audio", name, ".wav")
    assert p.parent == tmp_path / "audio" and "/" not in safe_file_name(name) and not p.name.startswith(".")
    assert (safe_file_name(name) == name) == (name == "ok-1.2_x")


def test_names_stay_unique():
    assert len({safe_file_name(n) for n in ("a/b", "a_b", "a b", "a?b")}) == 4


def test_fewshot_tts_ids_cannot_write_outside_out(lm, tmp_path):
    shots = [("p", "agent-pass.wav", "password"), ("l", "agent-loginok.wav", "agent logged in")]
    pool = [fe.Example(k, str(DATA / f), text=t) for k, f, t in shots]
    escape_abs = tmp_path / "abs_escape"
    items = [fe.Example("../../escape", None, text="hello"), fe.Example(str(escape_abs), None, text="bye")]
    out = tmp_path / "deep" / "out"
    cfg = fe.FewShotConfig(task="tts", shots=1, max_new_tokens=8)
    fe.run_fewshot(lm, items, pool, out, cfg, transcriber=lambda a: "hello", log=lambda *_: None)
    written = sorted(p for p in tmp_path.rglob("*.wav"))
    assert len(written) == 2 and all(out / "audio" in p.parents for p in written), written
    assert not escape_abs.with_suffix(".wav").exists() and not (tmp_path / "escape.wav").exists()
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["id"] for r in recs} == {"../../escape", str(escape_abs)}  # ids themselves are kept
