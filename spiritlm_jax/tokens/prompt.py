"""THE prompt builder: ordered text/speech segments -> one prompt string -> ids with modality spans.

Generation, few-shot prompts, STSP and likelihood scoring all build their prompts here:

    p = build_prompt(tokenizer, [Segment(Modality.TEXT, "hello"), Segment(Modality.SPEECH, "[Hu3][Hu7]")],
                     output=Modality.TEXT)
    p.text   # '[Text]hello[Speech][Hu3][Hu7][Text]'
    p.ids    # tokenizer.encode(p.text): the whole string goes through the tokenizer in one call
    p.spans  # [Span(TEXT, 2, 3), Span(SPEECH, 4, 6)] over p.ids (BOS, EOS and markers left out)

The reference's rule: a `[Text]`/`[Speech]` marker opens a segment only where the modality changes
(two text inputs in a row share one marker), and the requested output modality's marker closes the
prompt when the last segment is of the other modality (or there is no segment). A segment can ask for
its marker always (`marker=True`: few-shot templates that repeat it) or never (`marker=False`: a
separator such as STSP's "\n" between examples, which is glued on without a marker).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np

from spiritlm_jax.tokens.layout import Span, split_ids
from spiritlm_jax.tokens.modality import SPEECH_MARKER, TEXT_MARKER, Modality
from spiritlm_jax.tokens.units import is_unit_string, units_to_string

Content = Union[str, Sequence[int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Segment:
    """One piece of a prompt. Text: a string (no modality markers). Speech: a unit string
    ('[St3][Pi1][Hu7]...') or a HuBERT unit sequence (ints). `marker`: None = at a modality change
    (the reference's rule), True = always, False = never."""

    modality: Modality
    content: Content
    marker: Optional[bool] = None

    def render(self) -> str:
        if Modality(self.modality) is Modality.TEXT:
            if not isinstance(self.content, str):
                raise ValueError(f"text segment: expected a string, got {type(self.content).__name__}")
            return self.content
        if isinstance(self.content, str):
            if self.content and not is_unit_string(self.content):
                raise ValueError(f"speech segment: {self.content[:40]!r} is not a unit string ([Hu..][Pi..][St..])")
            return self.content
        return units_to_string(hubert=self.content)


def text(content: str, marker: Optional[bool] = None) -> Segment:
    return Segment(Modality.TEXT, content, marker)


def speech(content: Content, marker: Optional[bool] = None) -> Segment:
    return Segment(Modality.SPEECH, content, marker)


class Prompt(str):
    """A built prompt: the prompt string itself (for the API edge and logs; `text` too), with its ids
    (`ids`, what the model sees) and their modality spans (`spans`)."""

    ids: list[int]
    spans: list[Span]

    def __new__(cls, text: str, ids: Sequence[int], spans: Sequence[Span]):
        obj = super().__new__(cls, text)
        obj.ids, obj.spans = [int(i) for i in ids], list(spans)
        return obj

    @property
    def text(self) -> str:
        return str(self)

    @property
    def last_modality(self) -> Optional[Modality]:
        return self.spans[-1].modality if self.spans else None


def render_prompt(
    segments: Sequence[Segment], output: Optional[Modality] = None, after: Optional[Modality] = None
) -> str:
    """The prompt string of `segments` (see the module docstring); `output=None`: no closing marker.
    `after`: the string continues a span of this modality (a fine-tuning response after its prompt's
    closing marker), so a first segment of that modality opens without a marker."""
    parts: list[str] = []
    prev: Optional[Modality] = None if after is None else Modality(after)
    for seg in segments:
        modality = Modality(seg.modality)
        body = seg.render()
        if seg.marker is False:
            parts.append(body)
            continue
        if seg.marker or modality is not prev:
            parts.append(modality.marker)
        parts.append(body)
        prev = modality
    if output is not None and Modality(output) is not prev:
        parts.append(Modality(output).marker)
    return "".join(parts)


def encode_prompt(tokenizer, prompt: str, bos: bool = True) -> Prompt:
    """A ready prompt string (the API edge) -> Prompt; the string is encoded in one call."""
    ids = tokenizer.encode(prompt, bos=bos, eos=False)
    return Prompt(prompt, ids, split_ids(ids, tokenizer.layout, skip={tokenizer.bos_id, tokenizer.eos_id}))


def build_prompt(tokenizer, segments: Sequence[Segment], output: Optional[Modality] = None, bos: bool = True) -> Prompt:
    """Segments -> Prompt: rendered once, encoded through `tokenizer` once."""
    return encode_prompt(tokenizer, render_prompt(segments, output), bos=bos)


def check_text(content, what: str) -> str:
    """A text segment's content: a string with no modality markers (they would change the spans)."""
    if not isinstance(content, str):
        raise ValueError(f"{what}: expected a string, got {type(content).__name__}")
    if TEXT_MARKER in content or SPEECH_MARKER in content:
        raise ValueError(f"{what}: text must not contain modality markers: {content[:60]!r}")
    return content
