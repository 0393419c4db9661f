"""Word-level interleaving (docs/reference.md, training recipe): golden cases, properties, windows, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiritlm_jax.data.batch import LOSS_GROUP_IDS
from spiritlm_jax.data.interleave import (
    Encoded,
    encode_example,
    example_rng,
    interleave,
    plan_spans,
    windows,
)
from spiritlm_jax.tokens import RATES, SpiritTokenizer, TokenLayout, merge_units


class FixedRng:
    """Stands in for numpy's Generator with scripted draws: random() once, then integers() per span."""

    def __init__(self, first: float, sizes):
        self.first, self.sizes = first, list(sizes)

    def random(self):
        return self.first

    def integers(self, lo, hi):
        n = self.sizes.pop(0)
        assert lo <= n < hi, (lo, n, hi)
        return n


SPEECH_FIRST, TEXT_FIRST = 0.1, 0.9


def _example():
    # HuBERT frame i is at i / 24.99 s: frames 0-4 lie before 0.2 s, 5-9 before 0.4 s, and so on.
    words = [["hello", 0.0, 0.18], ["big", 0.2, 0.38], ["wide", 0.4, 0.58], ["world", 0.6, 0.78]]
    hubert = [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 8]
    return {"kind": "aligned", "words": words, "hubert": hubert}


def _render(spans):
    """[(modality, text or unit string)] for readable goldens."""
    return [
        (s.modality, c if s.modality == "text" else "".join(f"[{k[:2].title()}{u}]" for _, k, u in c)) for s, c in spans
    ]


def test_golden_speech_first():
    spans = interleave(_example(), FixedRng(SPEECH_FIRST, [1, 2, 1]), text_span=(1, 3), speech_span=(1, 2))
    # speech "hello" owns frames 0-4 ([1 1 2 2 2] -> Hu1 Hu2); text "big wide"; speech "world" frames 15-19
    assert _render(spans) == [("speech", "[Hu1][Hu2]"), ("text", "big wide"), ("speech", "[Hu7][Hu8]")]


def test_golden_text_first_pause_goes_left():
    ex = _example()
    ex["words"][1][1] = 0.28  # "big" now starts at 0.28 s: frames 5-6 (0.20-0.24 s) are the pause after "hello"
    spans = interleave(ex, FixedRng(TEXT_FIRST, [1, 2, 1]), text_span=(1, 3), speech_span=(1, 2))
    # speech "big wide" = frames 7-14 (0.28 s to 0.6 s): 4 4 4 5 5 5 6 6; the pause went to "hello"
    assert _render(spans) == [("text", "hello"), ("speech", "[Hu4][Hu5][Hu6]"), ("text", "world")]
    # leading silence belongs to the first word, trailing frames to the last
    ex["words"][0][1] = 0.1
    spans = interleave(ex, FixedRng(SPEECH_FIRST, [1, 2, 1]), text_span=(1, 3), speech_span=(1, 2))
    assert _render(spans)[0] == ("speech", "[Hu1][Hu2][Hu3]")


def test_golden_encoded_ids(sp_model):
    tok = SpiritTokenizer(sp_model)
    lay = tok.layout
    enc = encode_example(_example(), tok, FixedRng(SPEECH_FIRST, [1, 2, 1]), text_span=(1, 3), speech_span=(1, 2))
    hu = lambda u: lay.hubert_offset + u  # noqa: E731
    text_ids = tok.encode_after_marker("big wide")
    assert enc.tokens.tolist() == [
        tok.bos_id,
        *tok.lead_ids,
        lay.speech_marker_id,
        hu(1),
        hu(2),
        lay.text_marker_id,
        *text_ids,
        lay.speech_marker_id,
        hu(7),
        hu(8),
        tok.eos_id,
    ]
    assert enc.loss_groups.tolist() == [LOSS_GROUP_IDS["aligned"]] * len(enc.tokens)
    assert tok.decode(enc.tokens) == "[Speech][Hu1][Hu2][Text]big wide[Speech][Hu7][Hu8]"
    # the sequence is the tokenizer's encoding of its whole string (what a prompt gets)
    assert enc.tokens.tolist() == tok.encode(tok.decode(enc.tokens), eos=True)


def test_dedup_restarts_per_span():
    ex = {"kind": "aligned", "words": [["a", 0, 0.1], ["b", 0.2, 0.3], ["c", 0.4, 0.5]], "hubert": [9] * 15}
    spans = interleave(ex, FixedRng(SPEECH_FIRST, [1, 1, 1]), text_span=(1, 1), speech_span=(1, 1))
    assert _render(spans) == [("speech", "[Hu9]"), ("text", "b"), ("speech", "[Hu9]")]  # repeated in a new span


def test_golden_expressive_span():
    """Pitch (12.5 Hz) and style (1 Hz) frames are cut by their own times and merged by time."""
    words = [["one", 0.0, 0.5], ["two", 1.0, 1.5], ["three", 2.0, 2.5]]
    hubert = [10] * 25 + [11] * 25 + [12] * 25  # 3 s
    pitch = [1] * 12 + [2] * 13 + [3] * 13 + [3] * 12  # frame 12 at 0.96 s (word "one"), frame 13 at 1.04 s
    style = [70, 71, 72]
    ex = {"kind": "aligned", "words": words, "hubert": hubert, "pitch": pitch, "style": style}
    spans = interleave(ex, FixedRng(TEXT_FIRST, [1, 2]), (1, 1), (2, 2), streams=("hubert", "pitch", "style"))
    # words two+three own [1.0 s, end): style frames 1, 2; pitch frames 13.. (2 2 ... 3 3 ...);
    # HuBERT 25.. (at 1.0004 s)
    assert _render(spans) == [("text", "one"), ("speech", "[St71][Pi2][Hu11][Pi3][St72][Hu12]")]
    # BASE layout: pitch and style are ignored
    spans = interleave(ex, FixedRng(TEXT_FIRST, [1, 2]), (1, 1), (2, 2))
    assert _render(spans)[1] == ("speech", "[Hu11][Hu12]")


@st.composite
def aligned_examples(draw):
    n_words = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n_words, max_size=n_words))
    durs = draw(st.lists(st.floats(0.0, 0.6), min_size=n_words, max_size=n_words))
    words, t = [], draw(st.floats(0.0, 0.5))
    for i, (g, d) in enumerate(zip(gaps, durs)):
        words.append([f"w{i}", round(t, 3), round(t + d, 3)])
        t += d + g
    n_frames = int(np.ceil((t + draw(st.floats(0.0, 0.5))) * 25)) + 1
    hubert = draw(st.lists(st.integers(0, 5), min_size=n_frames, max_size=n_frames))  # few values: many repeats
    pitch = draw(st.lists(st.integers(0, 3), min_size=n_frames // 2, max_size=n_frames // 2))
    style = draw(st.lists(st.integers(0, 3), min_size=int(t) + 1, max_size=int(t) + 1))
    return {"kind": "aligned", "words": words, "hubert": hubert, "pitch": pitch, "style": style}


def _owner(starts, n, rate):
    """Brute force: frame i belongs to the last word starting at or before its time (word 0 if none)."""
    out = []
    for i in range(n):
        t = i / rate
        owners = [w for w, s in enumerate(starts) if s <= t]
        out.append(owners[-1] if owners else 0)
    return np.asarray(out, np.int64)


@settings(max_examples=60, deadline=None)
@given(
    aligned_examples(),
    st.integers(0, 2**31 - 1),
    st.integers(1, 4),
    st.integers(0, 3),
    st.integers(1, 3),
    st.integers(0, 3),
)
def test_interleave_properties(ex, seed, t_lo, t_extra, s_lo, s_extra):
    text_span, speech_span = (t_lo, t_lo + t_extra), (s_lo, s_lo + s_extra)
    kinds = ("hubert", "pitch", "style")
    spans = interleave(ex, np.random.default_rng(seed), text_span, speech_span, kinds)
    words = [w[0] for w in ex["words"]]
    # modalities alternate, spans are contiguous and cover every word once, lengths within bounds
    assert all(a[0].modality != b[0].modality for a, b in zip(spans, spans[1:]))
    assert spans[0][0].first == 0 and spans[-1][0].end == len(words)
    assert all(a[0].end == b[0].first for a, b in zip(spans, spans[1:]))
    for k, (s, _) in enumerate(spans):
        lo, hi = text_span if s.modality == "text" else speech_span
        assert s.end - s.first <= hi and (s.end - s.first >= lo or k == len(spans) - 1)
    text_words = [w for s, c in spans if s.modality == "text" for w in c.split()]
    assert text_words == [w for s, _ in spans if s.modality == "text" for w in words[s.first : s.end]]
    # every frame lies in exactly one word's region; a speech span's units are exactly its regions'
    # frames, deduplicated within the span (so each deduplicated unit appears exactly once)
    starts = [w[1] for w in ex["words"]]
    for stream in kinds:
        frames = np.asarray(ex[stream])
        owner = _owner(starts, len(frames), RATES[stream])
        covered = np.zeros(len(frames), int)
        for s, c in spans:
            mine = (owner >= s.first) & (owner < s.end)
            covered += mine
            if s.modality == "speech":
                got = [u for _, k, u in c if k == stream]
                sl = frames[mine].tolist()
                expected = sl if stream == "style" else [u for i, u in enumerate(sl) if i == 0 or sl[i - 1] != u]
                assert got == expected
        assert (covered == 1).all()
    for s, c in spans:
        if s.modality == "speech":
            assert [t for t, _, _ in c] == sorted(t for t, _, _ in c)  # merged in time order


@settings(max_examples=25, deadline=None)
@given(aligned_examples(), st.integers(0, 1000))
def test_markers_only_at_switches(sp_model_tok, ex, seed):
    tok = sp_model_tok
    lay = tok.layout
    rng_a, rng_b = example_rng(seed, 0, 7, 2), example_rng(seed, 0, 7, 2)
    spans = interleave(ex, rng_a, (1, 4), (1, 3))
    enc = encode_example(ex, tok, rng_b, (1, 4), (1, 3))
    ids = enc.tokens.tolist()
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    lead = len(tok.lead_ids)
    assert ids[1 : 1 + lead] == tok.lead_ids
    body = ids[1 + lead : -1]
    markers = [i for i, t in enumerate(body) if t in (lay.text_marker_id, lay.speech_marker_id)]
    assert markers[0] == 0 and len(markers) == len(spans)
    for (s, _), m, m_next in zip(spans, markers, markers[1:] + [len(body)]):
        assert body[m] == (lay.text_marker_id if s.modality == "text" else lay.speech_marker_id)
        content = body[m + 1 : m_next]
        assert (
            all(lay.is_speech_id(t) for t in content)
            if s.modality == "speech"
            else all(lay.is_text_id(t) for t in content)
        )


@pytest.fixture(scope="module")
def sp_model_tok(sp_model):
    return SpiritTokenizer(sp_model)


def test_determinism_per_seed_and_epoch(sp_model_tok):
    rng = np.random.default_rng(0)
    words = [[f"w{i}", 0.3 * i, 0.3 * i + 0.2] for i in range(60)]
    ex = {"kind": "aligned", "words": words, "hubert": rng.integers(0, 50, 60 * 8).tolist()}
    enc = lambda seed, epoch, idx: encode_example(ex, sp_model_tok, example_rng(seed, epoch, idx, 2)).tokens  # noqa: E731
    assert (enc(1, 0, 5) == enc(1, 0, 5)).all()
    by_epoch = [enc(1, e, 5).tolist() for e in range(6)]
    assert len({tuple(t) for t in by_epoch}) > 1  # spans re-drawn each epoch
    assert len({tuple(enc(s, 0, 5).tolist()) for s in range(6)}) > 1  # and per seed
    assert len({tuple(enc(1, 0, i).tolist()) for i in range(6)}) > 1  # and per example


def test_unimodal_examples_get_their_marker(sp_model, sp_model_tok):
    tok = sp_model_tok
    rng = np.random.default_rng(0)
    enc = encode_example({"kind": "text", "text": "hello world"}, tok, rng)
    assert enc.tokens.tolist() == tok.encode("[Text]hello world", eos=True)  # one encode of the whole string
    assert (enc.loss_groups == LOSS_GROUP_IDS["text"]).all()
    speech = {"kind": "speech", "hubert": [3, 3, 4], "pitch": [5, 5], "style": [7]}
    enc = encode_example(speech, tok, rng)
    assert tok.decode(enc.tokens) == "[Speech][Hu3][Hu4]" and (enc.loss_groups == 1).all()  # BASE: pitch, style ignored
    expressive = SpiritTokenizer(sp_model, layout=TokenLayout(tok.layout.text_vocab_size, True))
    enc = encode_example(speech, expressive, rng)
    assert expressive.decode(enc.tokens) == "[Speech][St7][Pi5][Hu3][Hu4]"


@pytest.mark.parametrize(
    "ex, match",
    [
        ({"kind": "video"}, "not one of"),
        ({"kind": "text"}, "string 'text'"),
        ({"kind": "speech", "hubert": []}, "no 'hubert'"),
        ({"kind": "speech", "hubert": [[1, 2]]}, "flat list"),
        ({"kind": "speech", "hubert": [600]}, "out of range"),
        ({"kind": "aligned", "words": [], "hubert": [1]}, "non-empty 'words'"),
        ({"kind": "aligned", "words": [["a", 0.5, 0.6], ["b", 0.1, 0.2]], "hubert": [1] * 20}, "not sorted"),
        ({"kind": "aligned", "words": [["a", 0.5, 0.4]], "hubert": [1] * 20}, "0 <= start <= end"),
        ({"kind": "aligned", "words": [["a", 0.0, 0.1], ["b", 9.0, 9.1]], "hubert": [1] * 20}, "run past the units"),
        ({"kind": "aligned", "words": [["a", 0.0, 0.1]]}, "no 'hubert'"),
    ],
)
def test_bad_examples_raise_clear_errors(sp_model_tok, ex, match):
    with pytest.raises(ValueError, match=match):
        encode_example(ex, sp_model_tok, np.random.default_rng(0))


def test_windows_split_speech_with_prefix_and_text_plainly():
    groups = lambda n, k: np.full(n, k, np.int32)  # noqa: E731
    speech = Encoded(np.asarray([1, 99] + list(range(200, 213)) + [2], np.int32), groups(16, 1))
    ws = windows(speech, 6, speech_prefix=[1, 99])
    assert all(len(w.tokens) <= 6 and w.tokens[:2].tolist() == [1, 99] for w in ws)
    assert [t for w in ws for t in w.tokens[2:].tolist()] == speech.tokens[2:].tolist()  # no unit lost or repeated
    assert all((w.loss_groups == 1).all() for w in ws)
    text = Encoded(np.arange(10, dtype=np.int32), groups(10, 0))
    ws = windows(text, 4)
    assert [w.tokens.tolist() for w in ws] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert windows(text, 10) == [text]
    with pytest.raises(ValueError, match="prefix"):
        windows(text, 4, speech_prefix=[1, 99])


def test_plan_spans_bounds_and_errors():
    plan = plan_spans(100, np.random.default_rng(3))
    assert sum(s.end - s.first for s in plan) == 100
    assert all(10 <= s.end - s.first <= 30 for s in plan[:-1] if s.modality == "text")
    assert all(5 <= s.end - s.first <= 15 for s in plan[:-1] if s.modality == "speech")
    with pytest.raises(ValueError, match="text_span"):
        plan_spans(3, np.random.default_rng(0), text_span=(0, 2))
    # the merge itself is tokens.merge_units: same result on a whole stream
    assert merge_units(hubert=[1, 1, 2]) == [(0.0, "hubert", 1), (2 / RATES["hubert"], "hubert", 2)]
