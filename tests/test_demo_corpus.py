"""The embedded demo corpus (spiritlm_jax/data/demo/) and the script that builds it
(tools/build_demo_corpus.py), run here on a small subset."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.data.prepare import check_words
from spiritlm_jax.data.sources import KINDS, read_examples
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.speech.quantizer import load_kmeans
from spiritlm_jax.tokens import N_UNITS, SpiritTokenizer, TokenLayout

DATA = Path(__file__).parent / "data"


def _examples(split, kind):
    return read_examples(DEMO_CORPUS / split / f"{kind}.jsonl.gz")


def test_shipped_corpus_loads_with_all_kinds_and_ids_in_range():
    summary = json.loads((DEMO_CORPUS / "corpus.json").read_text())
    tok = SpiritTokenizer(DEMO_CORPUS / "tokenizer.model")
    assert tok.layout == TokenLayout(summary["layout"]["text_vocab_size"], expressive=False)
    assert tok.layout.vocab_size == 1024  # the tiny demo model's vocab_size (configs/tiny_demo.yaml)
    centroids, meta = load_kmeans(DEMO_CORPUS / "quantizer")
    k = len(centroids)
    assert k <= N_UNITS["hubert"] and meta.features["type"] == "log_mel"
    for split in ("train", "eval"):
        for kind in KINDS:
            exs = _examples(split, kind)
            assert len(exs) == summary["counts"][kind][split] > 0
            assert all(ex["kind"] == kind for ex in exs)
            for ex in exs:
                if kind != "speech":
                    text = ex["text"] if kind == "text" else " ".join(w[0] for w in ex["words"])
                    ids = tok.encode(text, bos=False)
                    assert ids and max(ids) < tok.layout.text_vocab_size and tok.sp.unk_id() not in ids
                if kind != "text":
                    h = np.asarray(ex["hubert"])
                    assert len(h) > 0 and h.min() >= 0 and h.max() < k
                if kind == "aligned":
                    assert check_words(ex["words"], len(ex["hubert"]) / 25, tolerance=0.1) is None
    # the corpus proper (the shipped demo vocoder/ is checked in tests/test_vocoder_training.py)
    size = sum(p.stat().st_size for p in DEMO_CORPUS.rglob("*") if p.is_file() and "vocoder" not in p.parts)
    assert size < 3_000_000


def test_shipped_units_are_what_the_shipped_quantizer_gives():
    """A recording of the corpus (tests/data/agent-pass.wav is the Asterisk prompt agent-pass),
    re-tokenized with the shipped quantizer and the library's feature defaults, gives the shipped units."""
    speech = {ex["id"]: ex for split in ("train", "eval") for ex in _examples(split, "speech")}
    units = MelUnitTokenizer(DEMO_CORPUS / "quantizer").encode_units(DATA / "agent-pass.wav")["hubert"]
    assert speech["agent-pass"]["hubert"] == units.tolist()


def test_card_says_what_the_units_are():
    card = (DEMO_CORPUS / "CORPUS.md").read_text()
    assert "NOT HuBERT" in card and "CC-BY-SA-3.0" in card and "spiritlm_jax.prepare" in card


PROMPTS = {  # tests/data/README.md
    "agent-pass": "Please enter your password followed by the pound key.",
    "agent-loginok": "Agent logged in.",
    "vm-intro": "Please leave your message after the tone. When done hang up or press the pound key.",
}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the build script needs espeak-ng (Debian espeak-ng)")
def test_build_script_on_a_small_subset_is_deterministic(tmp_path):
    from tools import build_demo_corpus as b

    prompts = [(n, DATA / f"{n}.wav", t) for n, t in sorted(PROMPTS.items())]
    own = [ln.strip() for ln in (DATA / "english.txt").read_text().splitlines() if ln.strip()]
    outs = []
    for run in ("a", "b"):
        corpus = b.build(
            tmp_path / run,
            prompts,
            own,
            max_aligned=2,
            k=8,
            vocab=120,
            kmeans_steps=5,
            voices_per_prompt=1,
            progress=False,
        )
        outs.append(corpus)
    assert outs[0] == outs[1]
    for rel in [
        "train/speech.jsonl.gz",
        "train/aligned.jsonl.gz",
        "train/text.jsonl.gz",
        "eval/text.jsonl.gz",
        "quantizer/kmeans.yaml",
        "tokenizer.model",
    ]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # the centroids bit for bit (params/ itself holds Orbax's save timestamps)
    np.testing.assert_array_equal(
        load_kmeans(tmp_path / "a" / "quantizer")[0], load_kmeans(tmp_path / "b" / "quantizer")[0]
    )
    d = tmp_path / "a"
    speech = read_examples(d / "train" / "speech.jsonl.gz")
    aligned = read_examples(d / "train" / "aligned.jsonl.gz")
    assert [e["id"] for e in speech] == sorted(PROMPTS) and len(aligned) == 2
    for ex in aligned:  # exact word times from synthesis: words in order, inside the audio
        assert check_words(ex["words"], len(ex["hubert"]) / 25, tolerance=0.05) is None
        assert ex["text"] in {" ".join(t.replace(".", "").split()) for t in PROMPTS.values()}
    n_text = outs[0]["counts"]["text"]["train"] + outs[0]["counts"]["text"]["eval"]
    assert n_text == len(set(own) | set(PROMPTS.values()))
    assert SpiritTokenizer(d / "tokenizer.model").layout.text_vocab_size == 120
    with gzip.open(d / "train" / "speech.jsonl.gz") as f:
        assert f.read().count(b"\n") == 3
