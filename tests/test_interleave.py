"""Word-level interleaving (SPEC.md §6): golden cases and properties (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spiritlm_jax.data.interleave import encode_example, interleave_spans, plan_spans, word_regions
from spiritlm_jax.tokens import RATES, string_to_units, units_to_string


class FixedRng:
    """Stands in for numpy's Generator with scripted draws: random() then integers() per span."""

    def __init__(self, first: float, sizes):
        self.first, self.sizes = first, list(sizes)

    def random(self):
        return self.first

    def integers(self, lo, hi):
        n = self.sizes.pop(0)
        assert lo <= n < hi
        return n


def _example():
    # 4 words; HuBERT at 25 Hz: frames 0-4 (0-0.2 s) "hello", 5-9 "big", 10-14 "wide", 15-19 "world"
    words = [["hello", 0.0, 0.18], ["big", 0.2, 0.38], ["wide", 0.4, 0.58], ["world", 0.6, 0.78]]
    hubert = [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 8]
    return {"kind": "aligned", "words": words, "hubert": hubert}


def test_golden_speech_first():
    spans = interleave_spans(_example(), FixedRng(0.1, [1, 2, 1]), text_span=(1, 3), speech_span=(1, 2))
    # speech "hello" = frames whose time < 0.2 s (t = i / 24.99: frames 0..4), text "big wide", speech "world"
    assert spans == [("s", "[Hu1][Hu2]"), ("t", "big wide"), ("s", "[Hu7][Hu8]")]


def test_golden_text_first_and_pause_goes_left():
    ex = _example()
    ex["words"][1][1] = 0.28  # "big" starts later: frames in 0.2-0.28 s (pause) belong to "hello"
    spans = interleave_spans(ex, FixedRng(0.9, [1, 2, 1]), text_span=(1, 3), speech_span=(1, 2))
    assert spans == [("t", "hello"), ("s", "[Hu4][Hu5][Hu6]"), ("t", "world")]
    # frame 5 (0.2 s) is in "hello"'s region now, so the speech span starts at frame 7 (0.28 s): [Hu4]...


def test_dedup_restarts_per_span():
    ex = {"kind": "aligned", "words": [["a", 0, 0.1], ["b", 0.2, 0.3]], "hubert": [9] * 10}
    spans = interleave_spans(ex, FixedRng(0.1, [1, 1]), text_span=(1, 1), speech_span=(1, 1))
    assert spans == [("s", "[Hu9]"), ("t", "b")]
    spans = interleave_spans({**ex, "words": ex["words"] + [["c", 0.3, 0.35]]}, FixedRng(0.1, [1, 1, 1]),
                             text_span=(1, 1), speech_span=(1, 1))
    assert spans[0] == ("s", "[Hu9]") and spans[2] == ("s", "[Hu9]")  # a new span repeats the unit


@st.composite
def aligned_examples(draw):
    n_words = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n_words, max_size=n_words))
    durs = draw(st.lists(st.floats(0.05, 0.6), min_size=n_words, max_size=n_words))
    words, t = [], 0.0
    for i, (g, d) in enumerate(zip(gaps, durs)):
        t += g
        words.append([f"w{i}", round(t, 3), round(t + d, 3)])
        t += d
    n_frames = int(np.ceil((t + 0.2) * 25))
    hubert = draw(st.lists(st.integers(0, 20), min_size=n_frames, max_size=n_frames))
    return {"kind": "aligned", "words": words, "hubert": hubert}


@settings(max_examples=80, deadline=None)
@given(aligned_examples(), st.integers(0, 2**31 - 1))
def test_properties(ex, seed):
    """Spans alternate and stay within bounds; every word lands in exactly one span, in order; every
    frame falls in exactly one word region; each speech span holds exactly its regions' units."""
    words = ex["words"]
    plan = plan_spans(len(words), np.random.default_rng(seed), (2, 5), (1, 3))
    spans = interleave_spans(ex, np.random.default_rng(seed), (2, 5), (1, 3))
    assert [m for m, _, _ in plan] == [m for m, _ in spans]
    assert all(a[0] != b[0] for a, b in zip(plan, plan[1:]))  # markers only at switches
    assert plan[0][1] == 0 and plan[-1][2] == len(words)
    assert all(a[2] == b[1] for a, b in zip(plan, plan[1:]))  # contiguous: no word lost or doubled
    for k, (m, i, j) in enumerate(plan):
        lo, hi = (2, 5) if m == "t" else (1, 3)
        assert lo <= j - i <= hi or (k == len(plan) - 1 and j - i < lo)
    bounds = word_regions(words)
    times = np.arange(len(ex["hubert"])) / RATES["hubert"]
    region = np.searchsorted(np.asarray(bounds[1:-1]), times, side="right")  # word owning each frame
    assert region.min() >= 0 and region.max() < len(words)
    hubert = np.asarray(ex["hubert"])
    for (m, i, j), (_, content) in zip(plan, spans):
        if m == "t":
            assert content.split() == [w[0] for w in words[i:j]]
        else:
            assert content == units_to_string(hubert[(region >= i) & (region < j)])


def test_unimodal_examples_get_their_marker(sp_model):
    from spiritlm_jax.tokens import SpiritTokenizer

    tok = SpiritTokenizer(sp_model)
    rng = np.random.default_rng(0)
    ids, kind = encode_example({"kind": "text", "text": "hello world"}, tok, rng)
    assert kind == 0 and ids[0] == tok.bos_id and ids[1] == tok.layout.text_marker_id and ids[-1] == tok.eos_id
    ids, kind = encode_example({"kind": "speech", "hubert": [3, 3, 4]}, tok, rng)
    assert kind == 1 and ids[1] == tok.layout.speech_marker_id
    assert tok.decode(ids) == "[Speech][Hu3][Hu4]"
    ids, kind = encode_example(_example(), tok, np.random.default_rng(1), text_span=(1, 2), speech_span=(1, 2))
    s = tok.decode(ids)
    assert kind == 2 and s.startswith(("[Text]", "[Speech]"))
    assert string_to_units(s)["hubert"].size > 0 or "[Speech]" not in s
    with pytest.raises(ValueError, match="not one of"):
        encode_example({"kind": "video"}, tok, rng)
