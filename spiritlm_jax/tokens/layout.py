"""The Spirit LM id layout: id ranges, modalities, the ids each output modality may generate, and
splitting an id sequence into modality spans.

Layout (docs/reference.md), for a text vocabulary of size T (32000 for LLaMA-2):
    [0, T)            SentencePiece pieces
    T, T+1            [Text], [Speech]
    T+2 ... +501      [Hu0] ... [Hu500]
    then 64           [Pi0] ... [Pi63]      (EXPRESSIVE only)
    then 100          [St0] ... [St99]      (EXPRESSIVE only)
    padded up to a multiple of 256 (32512 BASE, 32768 EXPRESSIVE for T = 32000).
"""

from __future__ import annotations

import dataclasses
from typing import Collection, Optional, Sequence

import numpy as np

from spiritlm_jax.tokens.modality import SPEECH_MARKER, TEXT_MARKER, Modality
from spiritlm_jax.tokens.units import N_UNITS, PREFIX, STREAMS, parse_token


def _pad_to(n: int, multiple: int = 256) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class Span:
    """Ids [start, end) of one modality in a sequence (markers excluded)."""

    modality: Modality
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Ids of the Spirit LM special tokens for a text vocabulary of `text_vocab_size` pieces."""

    text_vocab_size: int = 32000
    expressive: bool = False

    def __post_init__(self):
        if int(self.text_vocab_size) != self.text_vocab_size or self.text_vocab_size < 1:
            raise ValueError(f"text_vocab_size must be a positive integer, got {self.text_vocab_size!r}")

    @property
    def text_marker_id(self) -> int:
        return self.text_vocab_size

    @property
    def speech_marker_id(self) -> int:
        return self.text_vocab_size + 1

    def marker_id(self, modality: Modality) -> int:
        return self.text_marker_id if Modality(modality) is Modality.TEXT else self.speech_marker_id

    @property
    def hubert_offset(self) -> int:
        return self.text_vocab_size + 2

    @property
    def pitch_offset(self) -> int:
        return self.hubert_offset + N_UNITS["hubert"]

    @property
    def style_offset(self) -> int:
        return self.pitch_offset + N_UNITS["pitch"]

    @property
    def num_real_tokens(self) -> int:
        """Ids in use: everything at or past this is padding (an embedding row with no token)."""
        return self.style_offset + N_UNITS["style"] if self.expressive else self.pitch_offset

    @property
    def vocab_size(self) -> int:
        """Embedding rows: the real tokens padded up to a multiple of 256."""
        return _pad_to(self.num_real_tokens)

    def streams(self) -> tuple[str, ...]:
        """Unit streams with ids in this layout."""
        return STREAMS if self.expressive else ("hubert",)

    def offset(self, stream: str) -> int:
        """Id of unit 0 of unit stream `stream`."""
        offsets = {"hubert": self.hubert_offset, "pitch": self.pitch_offset, "style": self.style_offset}
        if stream not in offsets:
            raise ValueError(f"unknown unit stream {stream!r}; expected one of {tuple(offsets)}")
        return offsets[stream]

    def unit_id(self, stream: str, unit: int) -> int:
        if stream not in self.streams():
            raise ValueError(
                f"unit stream {stream!r} is not part of this layout (streams: {self.streams()}; "
                f"pitch and style exist only in the EXPRESSIVE layout)"
            )
        if not 0 <= unit < N_UNITS[stream]:
            raise ValueError(f"{stream} unit {unit} out of range [0, {N_UNITS[stream]})")
        return self.offset(stream) + int(unit)

    def token_to_id(self, token: str) -> int:
        stream, unit = parse_token(token)
        if stream == "text":
            return self.text_marker_id
        if stream == "speech":
            return self.speech_marker_id
        return self.unit_id(stream, unit)

    def id_to_token(self, i: int) -> str:
        if i == self.text_marker_id:
            return TEXT_MARKER
        if i == self.speech_marker_id:
            return SPEECH_MARKER
        for stream in self.streams():
            off = self.offset(stream)
            if off <= i < off + N_UNITS[stream]:
                return f"[{PREFIX[stream]}{i - off}]"
        raise ValueError(
            f"id {i} is not a Spirit LM special token id in this layout "
            f"(special ids are [{self.text_marker_id}, {self.num_real_tokens}))"
        )

    def special_tokens(self) -> dict[str, int]:
        """{token string: id} for every special token of the layout, in id order."""
        return {self.id_to_token(i): i for i in range(self.text_marker_id, self.num_real_tokens)}

    def is_text_id(self, i: int) -> bool:
        return 0 <= i < self.text_vocab_size

    def is_speech_id(self, i: int) -> bool:
        """A unit id (HuBERT, and pitch/style when expressive); the [Speech] marker is not one."""
        return self.hubert_offset <= i < self.num_real_tokens

    def is_hubert_id(self, i: int) -> bool:
        return self.hubert_offset <= i < self.pitch_offset

    def is_marker_id(self, i: int) -> bool:
        return i in (self.text_marker_id, self.speech_marker_id)

    def modality_of(self, i: int) -> Optional[Modality]:
        """SPEECH for unit ids, None for the two markers, TEXT for everything else (pieces, BOS/EOS)."""
        if self.is_marker_id(i):
            return None
        return Modality.SPEECH if self.is_speech_id(i) else Modality.TEXT

    def allowed_ids(self, vocab_size: int, output: Optional[Modality] = None) -> np.ndarray:
        """Bool [vocab_size] of the ids a model may generate: never padding rows; for a TEXT output no
        markers and no units, for a SPEECH output only units (no text ids, EOS included, as the
        reference); `output=None` (arbitrary) allows every real token."""
        ids = np.arange(vocab_size)
        real = ids < self.num_real_tokens
        if output is None:
            return real
        markers = (ids == self.text_marker_id) | (ids == self.speech_marker_id)
        speech = (ids >= self.hubert_offset) & real
        if Modality(output) is Modality.TEXT:
            return real & ~markers & ~speech
        return real & ~markers & speech


def split_ids(ids: Sequence[int], layout: TokenLayout, skip: Collection[Optional[int]] = ()) -> list[Span]:
    """Modality spans of an id sequence: runs of ids of one modality, markers and the ids in `skip`
    (e.g. BOS/EOS) left out (they end a span). Other ids that are not units are text."""
    spans: list[Span] = []
    for pos, i in enumerate(np.asarray(ids, np.int64).reshape(-1).tolist()):
        m = None if i in skip else layout.modality_of(i)
        if m is None:
            continue
        if spans and spans[-1].modality is m and spans[-1].end == pos:
            spans[-1] = Span(m, spans[-1].start, pos + 1)
        else:
            spans.append(Span(m, pos, pos + 1))
    return spans


def modality_chunks(ids: Sequence[int], layout: TokenLayout) -> list[tuple[Modality, list[int]]]:
    """[(modality, ids)]: the content of `ids` by modality, markers dropped and neighbouring spans of
    one modality merged (`[Hu1][Speech][Hu2]` is one speech chunk)."""
    ids = np.asarray(ids, np.int64).reshape(-1).tolist()
    chunks: list[tuple[Modality, list[int]]] = []
    for span in split_ids(ids, layout):
        if chunks and chunks[-1][0] is span.modality:
            chunks[-1][1].extend(ids[span.start : span.end])
        else:
            chunks.append((span.modality, ids[span.start : span.end]))
    return chunks


def count_hubert(ids: Sequence[int], layout: TokenLayout) -> int:
    return sum(1 for i in ids if layout.is_hubert_id(int(i)))
