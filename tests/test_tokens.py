"""Token layout, unit strings (reference semantics, SPEC.md §3) and the text+speech tokenizer."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spiritlm_jax.tokens import (
    SpiritTokenizer, TokenLayout, merge_units, string_to_units, units_to_string,
)

DATA = Path(__file__).parent / "data"


def test_layout_matches_release():
    base, expr = TokenLayout(32000, False), TokenLayout(32000, True)
    assert (base.text_marker_id, base.speech_marker_id, base.hubert_offset) == (32000, 32001, 32002)
    assert base.unit_id("hubert", 500) == 32502
    assert expr.pitch_offset == 32503 and expr.unit_id("pitch", 63) == 32566
    assert expr.style_offset == 32567 and expr.unit_id("style", 99) == 32666
    assert base.vocab_size == 32512 and expr.vocab_size == 32768
    assert expr.token_to_id("[St81]") == 32567 + 81 and expr.id_to_token(32567 + 81) == "[St81]"
    with pytest.raises(ValueError, match="not part of this layout"):
        base.unit_id("pitch", 3)
    with pytest.raises(ValueError, match="out of range"):
        base.token_to_id("[Hu501]")


def test_golden_string_from_spec():
    s = units_to_string(hubert=[78, 42, 81, 159, 316, 259], pitch=[13, 13, 13, 13, 13, 3], style=[81])
    assert s == "[St81][Pi13][Hu78][Hu42][Hu81][Hu159][Hu316][Hu259][Pi3]"
    s6 = units_to_string(hubert=[78, 42, 81, 159, 316, 259], pitch=[13, 13, 13, 13, 13, 3], style=[81] * 6)
    assert s6 == "[St81][Pi13][Hu78][Hu42][Hu81][Hu159][Hu316][Hu259][Pi3]" + "[St81]" * 5


def test_dedup_rules_and_empty_streams():
    assert units_to_string(hubert=[5, 5, 5, 6, 6, 5]) == "[Hu5][Hu6][Hu5]"
    assert units_to_string(hubert=[], pitch=None, style=None) == ""
    assert units_to_string() == ""
    # style is never deduplicated, pitch is
    assert units_to_string(pitch=[1, 1], style=[2, 2]) == "[St2][Pi1][St2]"
    merged = merge_units(hubert=[1, 2], pitch=[3], style=[4])
    assert [k for _, k, _ in merged] == ["style", "pitch", "hubert", "hubert"]


def test_decode_repeats_and_backfills():
    u = string_to_units("[Hu1][Pi5][Hu2][Hu3][St7][Pi6][Hu4]")
    np.testing.assert_array_equal(u["hubert"], [1, 2, 3, 4])
    np.testing.assert_array_equal(u["pitch"], [5, 5, 5, 6])  # leading gap back-filled with the first pitch
    np.testing.assert_array_equal(u["style"], [7, 7, 7, 7])
    u = string_to_units("[Pi5][Hu1][Hu2]")
    assert u["style"][0] in (71, 68, 98) and len(set(u["style"])) == 1  # no style generated
    assert (string_to_units("[Pi5][Hu1]")["style"] == u["style"][0]).all()  # deterministic by default
    u = string_to_units("[Text]hello[Speech][Hu9]")
    assert u["pitch"] is None and u["style"] is None and u["hubert"].tolist() == [9]


def test_style_changes_and_long_runs():
    hubert = [3] * 100 + [4] * 100  # 8 s at 25 Hz, one change
    style = [1, 1, 2, 2, 2, 3, 3, 3]
    s = units_to_string(hubert=hubert, style=style)
    assert s.count("[Hu") == 2 and s.count("[St") == 8
    back = string_to_units(s)
    assert back["hubert"].tolist() == [3, 4]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=200), st.data())
def test_round_trip_at_real_rates(hubert, data):
    """Per-frame streams at 25 / 12.5 / 1 Hz -> string -> units: the deduplicated HuBERT sequence comes
    back, and every HuBERT token's pitch/style is the latest one at or before its time."""
    n = len(hubert)
    pitch = data.draw(st.lists(st.integers(0, 63), min_size=(n + 1) // 2, max_size=(n + 1) // 2))
    style = data.draw(st.lists(st.integers(0, 99), min_size=n // 25 + 1, max_size=n // 25 + 1))
    s = units_to_string(hubert, pitch, style)
    back = string_to_units(s)
    dedup = [h for i, h in enumerate(hubert) if i == 0 or hubert[i - 1] != h]
    assert back["hubert"].tolist() == dedup
    assert len(back["pitch"]) == len(back["style"]) == len(dedup)
    assert set(back["pitch"].tolist()) <= set(pitch)
    assert units_to_string(back["hubert"]) == units_to_string(dedup)


def test_mixed_encode_decode(sp_model):
    tok = SpiritTokenizer(sp_model)
    assert tok.layout.text_vocab_size == 200 and tok.vocab_size == 768
    ids = tok.encode("[Text]hello there[Speech][Hu3][Hu7]")
    assert ids[0] == tok.bos_id and tok.eos_id not in ids
    assert ids[1] == tok.layout.text_marker_id
    assert ids[-3:] == [tok.layout.speech_marker_id, tok.layout.hubert_offset + 3, tok.layout.hubert_offset + 7]
    assert tok.decode(ids) == "[Text]hello there[Speech][Hu3][Hu7]"
    assert tok.encode("hi", bos=False, eos=True)[-1] == tok.eos_id
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([10_000])
    with pytest.raises(ValueError, match="out of range"):
        tok.encode("[Hu9999]")
    with pytest.raises(ValueError, match="not part of this layout"):
        tok.encode("[Pi3]")  # BASE layout has no pitch tokens


def test_tokenizer_files_must_agree_with_layout(sp_model, tmp_path):
    import json
    import shutil

    shutil.copy(sp_model, tmp_path / "tokenizer.model")
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[Text]": 200, "[Speech]": 201, "[Hu0]": 202}))
    assert SpiritTokenizer.from_dir(tmp_path).layout.hubert_offset == 202
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[Hu0]": 999}))
    with pytest.raises(ValueError, match=r"\[Hu0\] has id 999"):
        SpiritTokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        SpiritTokenizer.from_dir(tmp_path / "nope")
