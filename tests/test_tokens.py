"""Token layout, unit strings (reference semantics, docs/reference.md) and the text+speech tokenizer."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiritlm_jax.tokens import (
    MOST_COMMON_STYLES,
    RATES,
    SpiritTokenizer,
    TokenLayout,
    merge_units,
    parse_token,
    read_added_tokens,
    string_to_units,
    units_to_string,
)

DATA = Path(__file__).parent / "data"
GOLDEN = "[St81][Pi13][Hu78][Hu42][Hu81][Hu159][Hu316][Hu259][Pi3]"


# ----- layout ----------------------------------------------------------------------------------
def test_layout_matches_release():
    base, expr = TokenLayout(32000, False), TokenLayout(32000, True)
    assert (base.text_marker_id, base.speech_marker_id, base.hubert_offset) == (32000, 32001, 32002)
    assert base.unit_id("hubert", 0) == 32002 and base.unit_id("hubert", 500) == 32502
    assert expr.pitch_offset == 32503 and expr.unit_id("pitch", 63) == 32566
    assert expr.style_offset == 32567 and expr.unit_id("style", 99) == 32666
    assert base.vocab_size == 32512 and expr.vocab_size == 32768
    assert base.num_real_tokens == 32503 and expr.num_real_tokens == 32667
    assert expr.token_to_id("[St81]") == 32567 + 81 and expr.id_to_token(32567 + 81) == "[St81]"
    assert base.token_to_id("[Text]") == 32000 and base.id_to_token(32001) == "[Speech]"
    assert len(expr.special_tokens()) == 2 + 501 + 64 + 100
    assert base.is_text_id(31999) and not base.is_text_id(32000)
    assert not base.is_speech_id(32001) and base.is_speech_id(32002) and base.is_speech_id(32502)
    assert not base.is_speech_id(32503) and expr.is_speech_id(32666) and not expr.is_speech_id(32667)


def test_layout_errors():
    base = TokenLayout(32000, False)
    with pytest.raises(ValueError, match="not part of this layout"):
        base.unit_id("pitch", 3)
    with pytest.raises(ValueError, match="out of range"):
        base.token_to_id("[Hu501]")
    with pytest.raises(ValueError, match="leading zeros"):
        parse_token("[Hu07]")
    with pytest.raises(ValueError, match="not a Spirit LM token"):
        parse_token("[Foo1]")
    with pytest.raises(ValueError, match="padding|not a Spirit LM special token id"):
        base.id_to_token(32503)
    with pytest.raises(ValueError, match="positive integer"):
        TokenLayout(0)


# ----- units -> string ---------------------------------------------------------------------------
def test_golden_string_from_spec():
    """docs/reference.md, speech unit streams: Pi3 (5 / 12.5 = 0.4 s) comes after Hu259 (5 / 24.99 = 0.2 s)."""
    hubert, pitch = [78, 42, 81, 159, 316, 259], [13, 13, 13, 13, 13, 3]
    assert units_to_string(hubert=hubert, pitch=pitch, style=[81]) == GOLDEN
    # style is not deduplicated: one [St81] a second, at 1..5 s, all after the last HuBERT/pitch token
    assert units_to_string(hubert=hubert, pitch=pitch, style=[81] * 6) == GOLDEN + "[St81]" * 5
    # the reference's string format and numpy arrays give the same result
    assert units_to_string("78 42 81 159 316 259", "13 13 13 13 13 3", "81") == GOLDEN
    assert units_to_string(np.array(hubert, np.int32), np.array(pitch, np.uint8), np.array([81])) == GOLDEN


def test_merge_times_and_tie_order():
    merged = merge_units(hubert=[1, 2], pitch=[3], style=[4])
    assert merged == [(0.0, "style", 4), (0.0, "pitch", 3), (0.0, "hubert", 1), (1 / 24.99, "hubert", 2)]
    # 2 s: pitch frame 25 and style frame 2 are both at exactly 2.0; style first (concatenation order),
    # HuBERT frame 50 is at 50 / 24.99 > 2.0 so it follows both
    m = merge_units(hubert=list(range(51)), pitch=list(range(26)), style=[0, 1, 2])
    at_two = [(k, u) for t, k, u in m if 1.99 < t < 2.01]
    assert at_two == [("style", 2), ("pitch", 25), ("hubert", 50)]
    assert [t for t, _, _ in m] == sorted(t for t, _, _ in m)


def test_dedup_rules_and_empty_streams():
    assert units_to_string(hubert=[5, 5, 5, 6, 6, 5]) == "[Hu5][Hu6][Hu5]"
    assert units_to_string(hubert=[], pitch=None, style=None) == ""
    assert units_to_string(hubert=[], pitch=[], style=[]) == ""
    assert units_to_string() == ""
    assert merge_units(hubert=np.zeros(0, np.int64)) == []
    assert units_to_string(pitch=[1, 1], style=[2, 2]) == "[St2][Pi1][St2]"  # style never deduplicated
    assert units_to_string(pitch=[4, 4, 4, 9, 9]) == "[Pi4][Pi9]"
    assert units_to_string(style=[7]) == "[St7]"


def test_style_changes_and_long_runs():
    hubert = [3] * 100 + [4] * 100  # 8 s at 25 Hz, one change at 4 s
    style = [1, 1, 2, 2, 2, 3, 3, 3]
    s = units_to_string(hubert=hubert, style=style)
    assert s == "[St1][Hu3][St1][St2][St2][St2][Hu4][St3][St3][St3]"
    back = string_to_units(s)
    assert back["hubert"].tolist() == [3, 4]
    assert back["style"].tolist() == [1, 2]  # the latest style before each HuBERT token
    long = units_to_string(hubert=[7] * 25_000)  # 1000 s of one unit: a single token
    assert long == "[Hu7]"


def test_bad_unit_streams_are_clear_errors():
    with pytest.raises(ValueError, match="hubert unit 501 out of range"):
        units_to_string(hubert=[1, 501])
    with pytest.raises(ValueError, match="pitch unit -1 out of range"):
        units_to_string(hubert=[1], pitch=[-1])
    with pytest.raises(ValueError, match="style unit 100"):
        merge_units(style=[100])
    with pytest.raises(ValueError, match="1-D"):
        units_to_string(hubert=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="integers"):
        units_to_string(hubert=[1.5, 2.0])
    with pytest.raises(ValueError, match="space-separated integers"):
        units_to_string(hubert="1 2 x")


# ----- string -> units ---------------------------------------------------------------------------
def test_golden_decode():
    u = string_to_units(GOLDEN)
    assert u["hubert"].tolist() == [78, 42, 81, 159, 316, 259]
    assert u["pitch"].tolist() == [13] * 6  # Pi3 comes after the last HuBERT token: no HuBERT takes it
    assert u["style"].tolist() == [81] * 6
    assert all(v.dtype == np.int64 for v in u.values())


def test_decode_repeats_and_backfills():
    u = string_to_units("[Hu1][Pi5][Hu2][Hu3][St7][Pi6][Hu4]")
    np.testing.assert_array_equal(u["hubert"], [1, 2, 3, 4])
    np.testing.assert_array_equal(u["pitch"], [5, 5, 5, 6])  # leading gap takes the first pitch
    np.testing.assert_array_equal(u["style"], [7, 7, 7, 7])  # leading gap takes the first style
    u = string_to_units("[Text]hello[Speech][Hu9]")
    assert u["pitch"] is None and u["style"] is None and u["hubert"].tolist() == [9]
    u = string_to_units("[St4][Hu1][Hu2]")  # style without pitch: style kept, no pitch
    assert u["pitch"] is None and u["style"].tolist() == [4, 4]
    empty = string_to_units("")
    assert empty["hubert"].shape == (0,) and empty["pitch"] is None and empty["style"] is None


def test_missing_style_pick_is_deterministic():
    u = string_to_units("[Pi5][Hu1][Hu2]")
    assert u["style"].tolist() == [MOST_COMMON_STYLES[0]] * 2 == [71, 71]  # rng=None: always 71
    picks = {int(string_to_units("[Pi5][Hu1]", rng=seed)["style"][0]) for seed in range(40)}
    assert picks == {71, 68, 98}  # a seed draws uniformly from the reference's three
    for seed in range(5):  # same seed, same pick; a Generator works too
        a = string_to_units("[Pi5][Hu1]", rng=seed)["style"]
        b = string_to_units("[Pi5][Hu1]", rng=np.random.default_rng(seed))["style"]
        assert a.tolist() == string_to_units("[Pi5][Hu1]", rng=seed)["style"].tolist() == b.tolist()


def test_duplicate_hubert_for_multiple_pitch():
    s = "[St2][Pi1][Hu7][Pi2][Pi3][Hu8]"
    plain = string_to_units(s)
    assert plain["hubert"].tolist() == [7, 8] and plain["pitch"].tolist() == [1, 3]
    dup = string_to_units(s, duplicate_hubert_for_multiple_pitch=True)
    assert dup["hubert"].tolist() == [7, 7, 8] and dup["pitch"].tolist() == [1, 3, 3]
    assert dup["style"].tolist() == [2, 2, 2]


def test_decode_rejects_bad_tokens():
    with pytest.raises(ValueError, match="out of range"):
        string_to_units("[Hu1][Hu9999]")
    with pytest.raises(ValueError, match="pitch unit 64"):
        string_to_units("[Pi64][Hu1]")
    with pytest.raises(ValueError, match="leading zeros"):
        string_to_units("[Hu01]")
    with pytest.raises(ValueError, match="expects a str"):
        string_to_units([1, 2])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=300), st.data())
def test_round_trip_at_real_rates(hubert, data):
    """Per-frame streams at 25 / 12.5 / 1 Hz (the lengths real audio gives) -> string -> units: the
    deduplicated HuBERT sequence comes back, and every HuBERT token's pitch and style are the latest
    ones at or before its time (back-filled with the first one before any was seen)."""
    n = len(hubert)
    n_pitch, n_style = n // 2 + 1, max(1, round(n / 25))
    pitch = data.draw(st.lists(st.integers(0, 5), min_size=n_pitch, max_size=n_pitch))
    style = data.draw(st.lists(st.integers(0, 3), min_size=n_style, max_size=n_style))
    back = string_to_units(units_to_string(hubert, pitch, style))

    keep = [i for i in range(n) if i == 0 or hubert[i - 1] != hubert[i]]
    assert back["hubert"].tolist() == [hubert[i] for i in keep]

    def latest(stream, rate, t):  # the last frame at or before time t
        frames = [j for j in range(len(stream)) if j / rate <= t]
        return stream[frames[-1]] if frames else stream[0]

    want_pitch = [latest(pitch, RATES["pitch"], i / RATES["hubert"]) for i in keep]
    want_style = [latest(style, RATES["style"], i / RATES["hubert"]) for i in keep]
    assert back["pitch"].tolist() == want_pitch
    assert back["style"].tolist() == want_style
    assert units_to_string(back["hubert"]) == units_to_string(hubert)


# ----- the text + speech tokenizer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_like_sp(tmp_path_factory):
    """A 300-piece BPE model trained here on tests/data/english.txt with LLaMA-2's normaliser settings
    (dummy prefix, no whitespace folding, byte fallback, split digits; BOS 1, EOS 2, no pad)."""
    from tests.release_tokenizer import train_llama_like

    return train_llama_like(tmp_path_factory.mktemp("llama_like"), vocab_size=300)


def _hf_dir(d: Path, sp_model: Path, tokens: dict, config: bool = True) -> Path:
    """A Hugging Face Llama tokenizer directory: tokenizer.model + added tokens in tokenizer_config.json."""
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(sp_model, d / "tokenizer.model")
    if config:
        decoder = {
            str(i): {
                "content": t,
                "special": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for t, i in tokens.items()
        }
        (d / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "LlamaTokenizer",
                    "add_bos_token": True,
                    "add_eos_token": False,
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "unk_token": "<unk>",
                    "legacy": True,
                    "added_tokens_decoder": decoder,
                }
            )
        )
    return d


def test_vocab_sizes_for_llama2():
    assert TokenLayout(32000).vocab_size == 32512 and TokenLayout(32000, expressive=True).vocab_size == 32768


def test_mixed_encode_decode(llama_like_sp):
    tok = SpiritTokenizer(llama_like_sp)
    assert tok.layout == TokenLayout(300, False) and tok.vocab_size == 1024
    ids = tok.encode("[Text]hello there[Speech][Hu3][Hu7]")
    assert ids[0] == tok.bos_id == 1 and tok.eos_id not in ids
    # one SentencePiece pass over the whole string, the special tokens atomic: the dummy prefix "▁" comes
    # before [Text], and the text after it has none (the release tokenizer's `▁ [Text] hello`)
    assert tok.lead_ids == [tok.sp.piece_to_id("\u2581")] and ids[1:2] == tok.lead_ids
    assert ids[2] == tok.layout.text_marker_id == 300
    assert ids[3:-3] == tok.encode_after_marker("hello there") != tok.sp.encode("hello there")
    assert ids[-3:] == [301, 302 + 3, 302 + 7]
    assert tok.decode(ids) == "[Text]hello there[Speech][Hu3][Hu7]"
    assert tok.encode("hi", bos=False, eos=True)[-1] == tok.eos_id
    assert tok.encode("", bos=False) == [] and tok.encode("") == [1]
    # the reference's string (transformers 4.46 legacy LlamaTokenizer puts a space before a special token)
    assert tok.decode(tok.encode("x", eos=True), skip_special_tokens=False) == "<s> x</s>"
    assert tok.decode(np.array([[300, 302]])) == "[Text][Hu0]"


def test_tokenizer_errors(llama_like_sp):
    tok = SpiritTokenizer(llama_like_sp)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([10_000])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="padding"):
        tok.decode([tok.layout.num_real_tokens])  # a padding row has no token
    with pytest.raises(ValueError, match=r"\[Hu9999\].*out of range"):
        tok.encode("[Speech][Hu9999]")
    with pytest.raises(ValueError, match="EXPRESSIVE"):
        tok.encode("[Pi3]")  # the BASE layout has no pitch tokens
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpiritTokenizer(llama_like_sp.parent / "missing.model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        SpiritTokenizer(DATA / "english.txt")
    with pytest.raises(ValueError, match="expects a str"):
        tok.encode(None)


def test_expressive_layout_encode(llama_like_sp):
    tok = SpiritTokenizer(llama_like_sp, expressive=True)
    lay = tok.layout
    ids = tok.encode(GOLDEN, bos=False)[len(tok.lead_ids) :]
    assert ids[:3] == [lay.unit_id("style", 81), lay.unit_id("pitch", 13), lay.unit_id("hubert", 78)]
    assert tok.decode(ids) == GOLDEN


def test_ids_come_from_the_tokenizer_files(llama_like_sp, tmp_path):
    full = TokenLayout(300, True).special_tokens()
    d = _hf_dir(tmp_path / "expr", llama_like_sp, full)
    tok = SpiritTokenizer.from_dir(d)  # expressive inferred from the [Pi*]/[St*] tokens in the files
    assert tok.layout == TokenLayout(300, True) and tok.vocab_size == 1024
    assert tok.encode("[St3]", bos=False) == [full["[St3]"]]
    assert read_added_tokens(d) == full
    base = SpiritTokenizer.from_dir(d, expressive=False)  # only the BASE tokens of the files
    assert base.layout == TokenLayout(300, False)
    # plain tokenizer.model, no HF files: the layout table
    assert SpiritTokenizer.from_dir(_hf_dir(tmp_path / "plain", llama_like_sp, {}, config=False)).layout == TokenLayout(
        300, False
    )
    # an extra added token (a <pad> at 300) shifts the Spirit LM tokens by one: ids follow the files
    shifted = {"<pad>": 300, **{t: i + 1 for t, i in TokenLayout(300, False).special_tokens().items()}}
    tok = SpiritTokenizer.from_dir(_hf_dir(tmp_path / "shifted", llama_like_sp, shifted))
    assert tok.layout.text_marker_id == 301 and tok.layout.hubert_offset == 303
    assert tok.encode("<pad>[Text]a[Speech][Hu0]", bos=False)[:2] == [300, 301]
    assert tok.decode([300, 303]) == "<pad>[Hu0]"


def test_tokenizer_files_that_disagree_are_errors(llama_like_sp, tmp_path):
    table = TokenLayout(300, False).special_tokens()
    swapped = {**table, "[Hu0]": table["[Hu1]"], "[Hu1]": table["[Hu0]"]}
    with pytest.raises(ValueError, match=r"\[Hu0\] has id 303 in the tokenizer \(added_tokens\) but 302"):
        SpiritTokenizer.from_dir(_hf_dir(tmp_path / "swapped", llama_like_sp, swapped))
    partial = {t: i for t, i in table.items() if t != "[Hu500]"}
    with pytest.raises(ValueError, match=r"lacks 1 token.*\[Hu500\]"):
        SpiritTokenizer.from_dir(_hf_dir(tmp_path / "partial", llama_like_sp, partial))
    with pytest.raises(ValueError, match="lack"):
        SpiritTokenizer.from_dir(_hf_dir(tmp_path / "base", llama_like_sp, table), expressive=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
        SpiritTokenizer.from_dir(tmp_path / "nope")
    bad = _hf_dir(tmp_path / "badjson", llama_like_sp, table)
    (bad / "added_tokens.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SpiritTokenizer.from_dir(bad)


def test_encode_matches_transformers_llama_tokenizer(llama_like_sp, tmp_path):
    """Parity with transformers' LlamaTokenizer loading the same files. The reference encodes prompts
    with it (slow, legacy: each text segment between special tokens is SentencePiece-encoded on its
    own, with its dummy prefix). transformers 5 only has the fast tokenizer, which agrees with that
    except for a segment that starts with a space (the fast one does not add a second '▁'; see
    docs/tokens.md), so segments here do not start with one."""
    transformers = pytest.importorskip("transformers")
    d = _hf_dir(tmp_path / "hf", llama_like_sp, TokenLayout(300, True).special_tokens())
    hf = transformers.AutoTokenizer.from_pretrained(str(d))
    ours = SpiritTokenizer.from_dir(d)
    cases = [
        "[Text]hello there[Speech][Hu3][Hu7][Text]the fox",
        "[Speech]" + GOLDEN + "[Text]Please enter your password.",
        "digits 12345 and unicode é ü 😀",
        "x[Text]y",
        "two  spaces\nnew line",
        "",
        "[St0][Pi63][Hu500]",
        "[Text]The quick brown fox[Speech][Hu1][Hu2][Text]jumps over the lazy dog.",
    ]
    for s in cases:
        assert ours.encode(s) == hf(s)["input_ids"], s
        assert ours.encode(s, bos=False, eos=True) == hf(s, add_special_tokens=False)["input_ids"] + [2], s
