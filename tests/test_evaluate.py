"""Likelihood-pair evaluation: accuracy arithmetic on hand-made scores, scoring against a direct
computation, manifest/reader validation, and the CLI end to end on a tiny trained-format checkpoint
with real recordings (tests/data) and synthetic text."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.evaluation.likelihood import Encoder, Item, accuracy, load_items, read_zerospeech_gold, score_items
from spiritlm_jax.model import Llama, LlamaConfig, init_params
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.tokens import SpiritTokenizer

DATA = Path(__file__).parent / "data"
WAVS = sorted(str(p) for p in DATA.glob("*.wav"))


def test_accuracy_arithmetic():
    items = [Item(str(i), None, [{"text": "a"}, {"text": "b"}], label) for i, label in enumerate([0, 1, 0, 1])]
    results = {
        "0": ([-1.0, -2.0], [1, 1]),  # raw right, normalised right
        "1": ([-6.0, -4.0], [2, 1]),  # raw right (-4 > -6); normalised: -3 vs -4 -> wrong
        "2": ([-9.0, -3.0], [9, 1]),  # raw wrong; normalised -1 vs -3 -> right
        "3": "ValueError: bad audio",  # counted as bad, not fatal
    }
    r = accuracy(results, items, n_boot=200)
    assert (r["n"], r["bad"]) == (3, 1) and r["bad_items"][0]["id"] == "3"
    assert r["accuracy"] == pytest.approx(2 / 3) and r["accuracy_normalized"] == pytest.approx(2 / 3)
    lo, hi = r["accuracy_ci95"]
    assert 0 <= lo <= 2 / 3 <= hi <= 1


@pytest.fixture(scope="module")
def tiny():
    tok = SpiritTokenizer(DEMO_CORPUS / "tokenizer.model")
    cfg = LlamaConfig(
        vocab_size=1024, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=512, dtype="float32"
    )
    return (
        Llama(cfg),
        init_params(cfg, jax.random.PRNGKey(0)),
        Encoder(tok, MelUnitTokenizer(DEMO_CORPUS / "quantizer")),
    )


def test_scores_equal_direct_computation(tiny):
    model, params, enc = tiny
    item = Item("x", {"text": "please enter"}, [{"text": "your password", "audio": WAVS[0]}, {"text": "the key"}], 0)
    r = score_items(model, params, [item], enc, "T")["x"]
    ctx = [enc.tok.bos_id] + enc.tok.lead_ids + enc.tokens(item.context, "text")
    for k, cand in enumerate(item.candidates):
        ids = enc.continuation(item.context, cand)  # same modality: the ending continues the span's text
        seq = ctx + ids
        logp = jax.nn.log_softmax(model.apply({"params": params}, np.asarray([seq]))[0], -1)
        direct = sum(float(logp[len(ctx) + j - 1, seq[len(ctx) + j]]) for j in range(len(ids)))
        assert abs(r[0][k] - direct) < 1e-4 and r[1][k] == len(ids)
    item = Item("z", {"text": "please enter", "audio": WAVS[1]}, item.candidates, 0)
    r = score_items(model, params, [item], enc, "S2T")["z"]  # modality switch: [Text] is given, not scored
    ctx = [enc.tok.bos_id] + enc.tok.lead_ids + enc.tokens(item.context, "audio")
    ids = enc.tokens(item.candidates[0], "text")
    seq = ctx + ids
    logp = jax.nn.log_softmax(model.apply({"params": params}, np.asarray([seq]))[0], -1)
    direct = sum(float(logp[len(ctx) + j - 1, seq[len(ctx) + j]]) for j in range(1, len(ids)))
    assert abs(r[0][0] - direct) < 1e-4 and r[1][0] == len(ids) - 1
    bad = score_items(model, params, [Item("y", None, [{"text": "a"}, {"text": "b"}], 0)], enc, "S")
    assert "no 'audio' form" in bad["y"]


def test_text_ending_has_the_ids_of_a_training_document(tiny):
    """In T the context + ending are scored with the ids a training document of the whole story holds.
    The ablation's T gap came from the ending encoded on its own: the tokenizer's lead '▁' was taken for
    the marker, so a [Text] marker was scored inside the text span and the ending's first word lost its
    '▁' ('password.[Text]Then'), tokens no text training document holds."""
    from spiritlm_jax.data.interleave import encode_documents

    _, _, enc = tiny
    ctx, ending = "please enter your password.", "Then press the pound key."
    (doc,) = encode_documents({"kind": "text", "text": ctx + " " + ending}, enc.tok, np.random.default_rng(0))
    prefix = [enc.tok.bos_id] + enc.tok.lead_ids + enc.tokens({"text": ctx}, "text")
    cont = enc.continuation({"text": ctx}, {"text": ending})
    assert prefix + cont + [enc.tok.eos_id] == doc.enc.tokens.tolist()
    assert enc.tok.id_to_token(cont[0]).startswith("\u2581")


@pytest.mark.parametrize("setting", ["T", "S", "T2S", "S2T"])
def test_scored_sequences_look_like_training_documents(tiny, monkeypatch, setting):
    """Every setting: the sequence starts as a training document (BOS, lead ids, marker), a marker
    stands only where the modality switches, and no marker or lead id is ever scored."""
    import spiritlm_jax.evaluation.likelihood as lik

    model, params, enc = tiny
    seen = []
    monkeypatch.setattr(
        lik,
        "score",
        lambda m, p, prompts, conts, bs: (
            seen.append((prompts, conts)) or (np.zeros(len(prompts)), np.asarray([len(c) for c in conts]))
        ),
    )
    ctx = {"text": "please enter", "audio": WAVS[1]}
    item = Item("x", ctx, [{"text": "your password", "audio": WAVS[0]}, {"text": "the key", "audio": WAVS[2]}], 0)
    lik.score_items(model, params, [item], enc, setting)
    ((prompts, conts),) = seen
    layout, start = enc.tok.layout, [enc.tok.bos_id] + enc.tok.lead_ids
    for prompt, cont in zip(prompts, conts):
        assert prompt[: len(start)] == start and layout.is_marker_id(prompt[len(start)])
        markers = [i for i in prompt + cont if layout.is_marker_id(i)]
        assert len(markers) == (2 if setting in ("T2S", "S2T") else 1)
        assert not any(layout.is_marker_id(i) or i in enc.tok.lead_ids for i in cont)


def _manifest(tmp_path):
    rows = [
        {
            "id": "1",
            "context": None,
            "candidates": [
                {"audio": WAVS[0], "text": "please enter your password"},
                {"audio": WAVS[1], "text": "agent logged in"},
            ],
            "label": 0,
        },
        {
            "id": "2",
            "context": {"text": "the agent", "audio": WAVS[1]},
            "candidates": [{"text": "logged in", "audio": WAVS[2]}, {"text": "pound key", "audio": WAVS[0]}],
            "label": 1,
        },
        {
            "id": "3",
            "context": None,
            "candidates": [{"audio": "missing.wav", "text": "x"}, {"audio": WAVS[2], "text": "y"}],
            "label": 0,
        },
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_manifest_validation(tmp_path):
    items = load_items(_manifest(tmp_path))
    assert len(items) == 3 and items[2].candidates[0]["audio"] == str(tmp_path / "missing.wav")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "candidates": [{"text": "a"}, {"text": "b"}], "label": 0, "lable": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: unknown field\(s\) \['lable'\]"):
        load_items(bad)
    bad.write_text(json.dumps({"id": "1", "candidates": [{"text": "a"}, {"text": "b"}], "label": 2}) + "\n")
    with pytest.raises(ValueError, match="'label' must index a candidate"):
        load_items(bad)
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "none.jsonl")


def test_zerospeech_reader(tmp_path):
    (tmp_path / "gold.csv").write_text(
        "filename,voice,frequency,word,phones,id,correct\n"
        "a1,Alex,3,brick,b r ih k,7,1\na2,Alex,3,brack,b r ae k,7,0\n"
        "b1,Alex,2,plant,p l ae n t,8,0\nb2,Alex,2,plont,x,8,1\n"
    )
    items = read_zerospeech_gold(tmp_path)
    assert [it.label for it in items] == [0, 0]
    assert items[0].candidates[0] == {"audio": str(tmp_path / "a1.wav"), "text": "brick"}
    assert items[1].candidates[0]["text"] == "plont"  # the row marked correct comes first


def test_cli_end_to_end_with_resume(tmp_path, tiny):
    """A training-run-format checkpoint (written by a 2-step run of the trainer), then the CLI over
    T and S settings; a second run reuses the cached scores."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spiritlm_jax.train",
            "steps=2",
            "eval_every=0",
            "progress=false",
            "model.n_layers=1",
            "data.seq_len=64",
            "model.max_seq_len=512",
            f"out_dir={run}",
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    from spiritlm_jax.evaluate import main

    manifest = _manifest(tmp_path)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "likelihood",
                "--checkpoint",
                str(run),
                "--items",
                str(manifest),
                "--setting",
                "T",
                "--setting",
                "S",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["T"]["n"] == 3 and report["settings"]["S"]["bad"] == 1  # missing.wav counted
    assert (out / "report.md").read_text().count("|") > 10
    cached = json.loads((out / "scores_S.json").read_text())
    assert set(cached) == {"1", "2", "3"}
    assert (
        main(["likelihood", "--checkpoint", str(run), "--items", str(manifest), "--setting", "S", "--out", str(out)])
        == 0
    )
    assert json.loads((out / "scores_S.json").read_text()) == cached
    assert (
        main(
            [
                "likelihood",
                "--checkpoint",
                str(run),
                "--items",
                str(tmp_path / "nope.jsonl"),
                "--setting",
                "T",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    shutil.rmtree(run)
