"""The one prompt builder (markers only at modality changes, the output marker, one tokenizer call on
the whole string, modality spans), splitting ids by modality, and the single token pattern."""

import re
from pathlib import Path

import numpy as np
import pytest

import spiritlm_jax
from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.tokens import (
    Modality,
    Segment,
    Span,
    SpiritTokenizer,
    TokenLayout,
    build_prompt,
    encode_prompt,
    modality_chunks,
    render_prompt,
    split_ids,
    split_string,
    units_to_string,
)

T, S = Modality.TEXT, Modality.SPEECH


@pytest.fixture(scope="module")
def tok():
    return SpiritTokenizer(DEMO_CORPUS / "tokenizer.model")


def test_markers_only_where_the_modality_changes():
    segs = [Segment(T, "hello"), Segment(T, " there"), Segment(S, "[Hu3][Hu7]"), Segment(S, "[Hu9]"), Segment(T, "x")]
    assert render_prompt(segs) == "[Text]hello there[Speech][Hu3][Hu7][Hu9][Text]x"
    # the output marker closes the prompt only when the last segment is of the other modality
    assert render_prompt(segs, S) == "[Text]hello there[Speech][Hu3][Hu7][Hu9][Text]x[Speech]"
    assert render_prompt(segs, T) == render_prompt(segs)
    assert render_prompt([], S) == "[Speech]"
    # forced and suppressed markers (few-shot templates, separators)
    assert (
        render_prompt(
            [
                Segment(T, "a", marker=True),
                Segment(T, "b", marker=True),
                Segment(T, "\n", marker=False),
                Segment(S, "[Hu1]", marker=True),
                Segment(S, "", marker=True),
            ]
        )
        == "[Text]a[Text]b\n[Speech][Hu1][Speech]"
    )
    # speech given as HuBERT units
    units = units_to_string(hubert=[5, 5, 6])
    assert render_prompt([Segment(S, [5, 5, 6])]) == "[Speech]" + units == "[Speech][Hu5][Hu6]"
    with pytest.raises(ValueError, match="not a unit string"):
        render_prompt([Segment(S, "hello")])
    with pytest.raises(ValueError, match="expected a string"):
        render_prompt([Segment(T, [1, 2])])


def test_ids_are_one_encode_of_the_whole_string_with_spans(tok):
    segs = [Segment(T, "please enter"), Segment(S, "[Hu3][Hu7][Hu7]"), Segment(T, " your password")]
    p = build_prompt(tok, segs, S)
    assert p == p.text == "[Text]please enter[Speech][Hu3][Hu7][Hu7][Text] your password[Speech]"
    assert p.ids == tok.encode(p.text, bos=True, eos=False)
    lay = tok.layout
    assert p.ids[0] == tok.bos_id and p.ids[1 : 1 + len(tok.lead_ids)] == tok.lead_ids
    assert p.ids[1 + len(tok.lead_ids)] == lay.text_marker_id and p.ids[-1] == lay.speech_marker_id
    lead = [T] if tok.lead_ids else []  # the dummy-prefix piece before the first marker is a text span
    assert [s.modality for s in p.spans] == [*lead, T, S, T] and p.last_modality is T
    text0, speech, text1 = p.spans[len(lead) :]
    assert tok.decode(p.ids[text0.start : text0.end]) == "please enter"
    assert p.ids[speech.start : speech.end] == [lay.unit_id("hubert", u) for u in (3, 7, 7)]
    assert tok.decode(p.ids[text1.start : text1.end]).strip() == "your password"
    assert all(not lay.is_marker_id(i) and i != tok.bos_id for s in p.spans for i in p.ids[s.start : s.end])
    q = build_prompt(tok, segs, S, bos=False)
    assert q.ids == p.ids[1:] and encode_prompt(tok, p.text).ids == p.ids


def test_split_ids_by_modality():
    lay = TokenLayout(100, expressive=True)
    tm, sm = lay.text_marker_id, lay.speech_marker_id
    hu, pi, st = lay.unit_id("hubert", 4), lay.unit_id("pitch", 2), lay.unit_id("style", 9)
    ids = [1, tm, 5, 6, sm, st, pi, hu, hu, tm, 7, sm, hu]
    assert split_ids(ids, lay) == [Span(T, 0, 1), Span(T, 2, 4), Span(S, 5, 9), Span(T, 10, 11), Span(S, 12, 13)]
    assert split_ids(ids, lay, skip={1}) == split_ids(ids, lay)[1:]
    assert split_ids(np.asarray([sm, hu, sm, hu]), lay) == [Span(S, 1, 2), Span(S, 3, 4)]
    assert modality_chunks([sm, hu, sm, hu, tm, 5], lay) == [(S, [hu, hu]), (T, [5])]
    assert [lay.modality_of(i) for i in (5, tm, sm, hu, st)] == [T, None, None, S, S]
    allowed = {m: lay.allowed_ids(lay.vocab_size, m) for m in (T, S, None)}
    assert allowed[T][:100].all() and not allowed[T][100:].any()
    assert not allowed[S][: lay.hubert_offset].any() and allowed[S][lay.hubert_offset : lay.num_real_tokens].all()
    assert allowed[None][: lay.num_real_tokens].all() and not allowed[None][lay.num_real_tokens :].any()
    assert split_string("[Text]a[Speech][Hu1][Speech][Pi2][Text]b") == [("a", T), ("[Hu1][Pi2]", S), ("b", T)]


def test_the_token_pattern_is_written_once():
    """The unit-token regex lives in spiritlm_jax/tokens/units.py only; everything else derives from it."""
    root = Path(spiritlm_jax.__file__).parent
    shape = re.compile(r"Hu\|Pi\|St|Pi\|Hu|St\|Pi|\(\?:Hu")
    hits = [
        (p.relative_to(root).as_posix(), n)
        for p in sorted(root.rglob("*.py"))
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if shape.search(line)
    ]
    assert [h[0] for h in hits] == ["tokens/units.py"], hits
