"""The three ways an aligned example can be used (data.aligned_as): golden ids on a hand-made example,
and through the Grain pipeline (separate documents stay in separate segments)."""

import numpy as np
import pytest

from spiritlm_jax.data.batch import LOSS_GROUP_IDS
from spiritlm_jax.data.interleave import encode_documents, encode_example
from spiritlm_jax.data.pipeline import DataConfig, example_dataset
from spiritlm_jax.data.sources import write_jsonl
from spiritlm_jax.tokens import SpiritTokenizer

WORDS = [["hello", 0.0, 0.18], ["big", 0.2, 0.38], ["wide", 0.4, 0.58], ["world", 0.6, 0.78]]
HUBERT = [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 8]
EX = {"kind": "aligned", "words": WORDS, "hubert": HUBERT}


class FirstDraw:
    def __init__(self, first):
        self.first = first

    def random(self):
        return self.first


@pytest.fixture(scope="module")
def tok(sp_model):
    return SpiritTokenizer(sp_model)


def _parts(tok):
    lay = tok.layout
    units = [lay.hubert_offset + u for u in (1, 2, 3, 4, 5, 6, 7, 8)]  # merged: duplicates removed
    return [lay.speech_marker_id] + units, [lay.text_marker_id] + tok.encode_after_marker("hello big wide world")


@pytest.mark.parametrize("first,speech_first", [(0.1, True), (0.9, False)])
def test_pairs_is_one_document_speech_then_text_or_reverse(tok, first, speech_first):
    speech, text = _parts(tok)
    (doc,) = encode_documents(EX, tok, FirstDraw(first), aligned_as="pairs")
    body = speech + text if speech_first else text + speech
    assert doc.enc.tokens.tolist() == [tok.bos_id, *tok.lead_ids, *body, tok.eos_id]
    assert not doc.speech_only
    assert set(doc.enc.loss_groups.tolist()) == {LOSS_GROUP_IDS["aligned"]}


def test_separate_is_two_documents_with_the_same_audio_and_text(tok):
    speech, text = _parts(tok)
    docs = encode_documents(EX, tok, FirstDraw(0.5), aligned_as="separate")
    assert [d.enc.tokens.tolist() for d in docs] == [
        [tok.bos_id, *tok.lead_ids, *speech, tok.eos_id],
        [tok.bos_id, *tok.lead_ids, *text, tok.eos_id],
    ]
    assert [d.speech_only for d in docs] == [True, False]
    assert all(set(d.enc.loss_groups.tolist()) == {LOSS_GROUP_IDS["aligned"]} for d in docs)


def test_interleaved_is_the_default_recipe(tok):
    a = encode_documents(EX, tok, np.random.default_rng(3))
    b = encode_example(EX, tok, np.random.default_rng(3))
    assert len(a) == 1 and a[0].enc.tokens.tolist() == b.tokens.tolist()
    # text and speech examples are one document whatever aligned_as says
    for mode in ("pairs", "separate"):
        (d,) = encode_documents({"kind": "speech", "hubert": HUBERT}, tok, np.random.default_rng(0), aligned_as=mode)
        p = 1 + len(tok.lead_ids)
        assert d.speech_only and d.enc.tokens.tolist()[p] == tok.layout.speech_marker_id


def test_variants_see_the_same_units_and_words(tok):
    """Every variant carries all of the example's text ids and (merged per document) units."""
    speech, text = _parts(tok)
    for mode in ("pairs", "separate"):
        ids = [t for d in encode_documents(EX, tok, FirstDraw(0.3), aligned_as=mode) for t in d.enc.tokens.tolist()]
        assert sorted(t for t in ids if t not in (tok.bos_id, tok.eos_id, *tok.lead_ids)) == sorted(speech + text)


def test_bad_mode_and_bad_example_errors(tok):
    with pytest.raises(ValueError, match="aligned_as must be one of"):
        encode_documents(EX, tok, FirstDraw(0.3), aligned_as="both")
    with pytest.raises(ValueError, match="not sorted"):
        encode_documents({**EX, "words": WORDS[::-1]}, tok, FirstDraw(0.3), aligned_as="pairs")
    with pytest.raises(ValueError, match="no 'hubert' units"):
        encode_documents({"kind": "aligned", "words": WORDS}, tok, FirstDraw(0.3), aligned_as="separate")


def test_pipeline_windows_separate_documents_apart(tmp_path, sp_model):
    import shutil

    write_jsonl(tmp_path / "train" / "aligned.jsonl", [dict(EX, id="a0")])
    shutil.copy(sp_model, tmp_path / "tokenizer.model")
    tok = SpiritTokenizer(sp_model)
    speech, text = _parts(tok)
    cfg = DataConfig(corpus=str(tmp_path), weights=(0, 0, 1), seq_len=64, aligned_as="separate", shuffle=False)
    wins = example_dataset(cfg)[0]["windows"]
    assert [w.tokens.tolist() for w in wins] == [
        [tok.bos_id, *tok.lead_ids, *speech, tok.eos_id],
        [tok.bos_id, *tok.lead_ids, *text, tok.eos_id],
    ]
    # a speech document longer than seq_len is windowed behind BOS [Speech], like speech-only examples
    cfg = DataConfig(corpus=str(tmp_path), weights=(0, 0, 1), seq_len=8, aligned_as="separate", shuffle=False)
    wins = example_dataset(cfg)[0]["windows"]
    prefix = [tok.bos_id, *tok.lead_ids, tok.layout.speech_marker_id]
    speech_wins = [w.tokens.tolist() for w in wins if w.tokens.tolist()[: len(prefix)] == prefix]
    assert len(speech_wins) == 2
