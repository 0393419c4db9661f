"""Spirit LM tokens: the id layout, speech units <-> token strings, and the text+speech tokenizer.

Layout (SPEC.md §2), for a text vocabulary of size T (32000 for LLaMA-2):
    [0, T)            SentencePiece pieces
    T, T+1            [Text], [Speech]
    T+2 ... +501      [Hu0] ... [Hu500]
    then 64           [Pi0] ... [Pi63]      (EXPRESSIVE only)
    then 100          [St0] ... [St99]      (EXPRESSIVE only)
    padded up to a multiple of 256 (32512 BASE, 32768 EXPRESSIVE for T = 32000).

Unit strings follow the reference exactly (SPEC.md §3): per-stream consecutive dedup (HuBERT and
pitch yes, style no), merge by time at rates 24.99 / 12.5 / 1 with the stable order style, pitch,
HuBERT; decoding repeats the latest pitch/style per HuBERT token and back-fills leading gaps.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

RATES = {"hubert": 24.99, "pitch": 12.5, "style": 1.0}
N_UNITS = {"hubert": 501, "pitch": 64, "style": 100}
PREFIX = {"hubert": "Hu", "pitch": "Pi", "style": "St"}
KIND_OF_PREFIX = {v: k for k, v in PREFIX.items()}
MOST_COMMON_STYLES = (71, 68, 98)
TEXT_MARKER, SPEECH_MARKER = "[Text]", "[Speech]"
_SPECIAL = re.compile(r"\[(Text|Speech)\]|\[(Hu|Pi|St)(\d+)\]")


def _pad_to(n: int, multiple: int = 256) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Ids of the Spirit LM special tokens for a text vocabulary of `text_vocab_size` pieces."""

    text_vocab_size: int = 32000
    expressive: bool = False

    @property
    def text_marker_id(self) -> int:
        return self.text_vocab_size

    @property
    def speech_marker_id(self) -> int:
        return self.text_vocab_size + 1

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
        """Ids in use: everything at or past this is padding."""
        return self.style_offset + N_UNITS["style"] if self.expressive else self.pitch_offset

    @property
    def vocab_size(self) -> int:
        return _pad_to(self.num_real_tokens)

    def kinds(self) -> tuple[str, ...]:
        return ("hubert", "pitch", "style") if self.expressive else ("hubert",)

    def unit_id(self, kind: str, unit: int) -> int:
        if kind not in self.kinds():
            raise ValueError(f"unit kind {kind!r} is not part of this layout (kinds: {self.kinds()})")
        if not 0 <= unit < N_UNITS[kind]:
            raise ValueError(f"{kind} unit {unit} out of range [0, {N_UNITS[kind]})")
        return {"hubert": self.hubert_offset, "pitch": self.pitch_offset, "style": self.style_offset}[kind] + unit

    def token_to_id(self, token: str) -> int:
        m = _SPECIAL.fullmatch(token)
        if not m:
            raise ValueError(f"{token!r} is not a Spirit LM special token")
        if m.group(1):
            return self.text_marker_id if m.group(1) == "Text" else self.speech_marker_id
        return self.unit_id(KIND_OF_PREFIX[m.group(2)], int(m.group(3)))

    def id_to_token(self, i: int) -> str:
        if i == self.text_marker_id:
            return TEXT_MARKER
        if i == self.speech_marker_id:
            return SPEECH_MARKER
        for kind in self.kinds():
            off = {"hubert": self.hubert_offset, "pitch": self.pitch_offset, "style": self.style_offset}[kind]
            if off <= i < off + N_UNITS[kind]:
                return f"[{PREFIX[kind]}{i - off}]"
        raise ValueError(f"id {i} is not a Spirit LM special token id in this layout")

    def is_text_id(self, i: int) -> bool:
        return 0 <= i < self.text_vocab_size

    def is_speech_id(self, i: int) -> bool:
        return self.hubert_offset <= i < self.num_real_tokens


# ----- units <-> strings ------------------------------------------------------------------------
def _stream_positions(units: Optional[Iterable[int]], kind: str, dedup: bool) -> list[tuple[float, str, int]]:
    if units is None:
        return []
    out, prev = [], None
    for i, u in enumerate(np.asarray(units, dtype=np.int64).reshape(-1).tolist()):
        if not dedup or prev is None or u != prev:
            out.append((i / RATES[kind], kind, int(u)))
        prev = u
    return out


def merge_units(hubert=None, pitch=None, style=None) -> list[tuple[float, str, int]]:
    """Per-frame streams -> time-sorted (time_s, kind, unit) after per-stream dedup (style: none)."""
    merged = (
        _stream_positions(style, "style", dedup=False)
        + _stream_positions(pitch, "pitch", dedup=True)
        + _stream_positions(hubert, "hubert", dedup=True)
    )
    return sorted(merged, key=lambda x: x[0])  # stable: ties keep style, pitch, hubert order


def units_to_string(hubert=None, pitch=None, style=None) -> str:
    """'[St81][Pi13][Hu78]...' (no separators)."""
    return "".join(f"[{PREFIX[k]}{u}]" for _, k, u in merge_units(hubert, pitch, style))


def string_to_units(s: str, rng: Optional[np.random.Generator] = None) -> dict[str, Optional[np.ndarray]]:
    """Token string -> {"hubert", "pitch", "style"} arrays of the HuBERT length (reference semantics).

    Each HuBERT token takes the latest pitch/style seen before it; leading gaps take the first value
    seen anywhere. If pitch exists but no style token was generated, a style is drawn from
    MOST_COMMON_STYLES with `rng` (default: seeded 0, so the result is deterministic). Text and
    markers in `s` are ignored.
    """
    hubert, pitch, style = [], [], []
    cur = {"pitch": None, "style": None}
    first = {"pitch": None, "style": None}
    for m in _SPECIAL.finditer(s):
        if not m.group(2):
            continue
        kind, unit = KIND_OF_PREFIX[m.group(2)], int(m.group(3))
        if kind == "hubert":
            hubert.append(unit)
            pitch.append(cur["pitch"])
            style.append(cur["style"])
        else:
            cur[kind] = unit
            if first[kind] is None:
                first[kind] = unit
    if first["pitch"] is not None and first["style"] is None:
        rng = rng if rng is not None else np.random.default_rng(0)
        first["style"] = int(rng.choice(MOST_COMMON_STYLES))
    out: dict[str, Optional[np.ndarray]] = {"hubert": np.asarray(hubert, np.int64), "pitch": None, "style": None}
    for kind, vals in (("pitch", pitch), ("style", style)):
        if first[kind] is not None:
            out[kind] = np.asarray([first[kind] if v is None else v for v in vals], np.int64)
    return out


def _hf_added_tokens(d: Path) -> dict[str, int]:
    """{token: id} from added_tokens.json / tokenizer.json, if present."""
    import json

    out: dict[str, int] = {}
    if (d / "added_tokens.json").is_file():
        out.update(json.loads((d / "added_tokens.json").read_text()))
    if (d / "tokenizer.json").is_file():
        for t in json.loads((d / "tokenizer.json").read_text()).get("added_tokens", []):
            out[t["content"]] = int(t["id"])
    return out


# ----- the text + speech tokenizer ---------------------------------------------------------------
class SpiritTokenizer:
    """SentencePiece for text plus the Spirit LM special tokens at their layout ids.

    Encoding splits a mixed string at special tokens: `[Text]hello[Speech][Hu3][Hu7]` becomes
    BOS, [Text], sp("hello"), [Speech], [Hu3], [Hu7]. BOS on and EOS off by default, as the reference.
    """

    def __init__(self, sp_model_path: str | Path, layout: Optional[TokenLayout] = None, expressive: bool = False):
        import sentencepiece as spm

        path = Path(sp_model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model {path} does not exist")
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        n = self.sp.get_piece_size()
        self.layout = layout if layout is not None else TokenLayout(n, expressive)
        if self.layout.text_vocab_size != n:
            raise ValueError(f"layout has {self.layout.text_vocab_size} text ids but {path} has {n} pieces")
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        self.path = path

    @classmethod
    def from_dir(cls, d: str | Path, expressive: bool = False) -> "SpiritTokenizer":
        """tokenizer.model from `d`; when the directory also has Hugging Face added-token files (as the
        released Spirit LM checkpoints do), every special token's id there must equal the layout's."""
        path = Path(d) / "tokenizer.model"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.model in {d}")
        tok = cls(path, expressive=expressive)
        for token, i in _hf_added_tokens(Path(d)).items():
            if _SPECIAL.fullmatch(token):
                try:
                    mine = tok.layout.token_to_id(token)
                except ValueError:
                    continue  # e.g. [Pi3] in files read with a BASE layout
                if mine != i:
                    raise ValueError(f"{d}: token {token} has id {i} in the tokenizer files but {mine} in the layout")
        return tok

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids: list[int] = [self.bos_id] if bos and self.bos_id is not None else []
        pos = 0
        for m in _SPECIAL.finditer(text):
            if m.start() > pos:
                ids.extend(self.sp.encode(text[pos:m.start()]))
            ids.append(self.layout.token_to_id(m.group(0)))
            pos = m.end()
        if pos < len(text):
            ids.extend(self.sp.encode(text[pos:]))
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> string; BOS/EOS/pad are dropped, special tokens written as `[Hu3]` etc."""
        out, text_run = [], []
        skip = {self.bos_id, self.eos_id}
        for i in (int(x) for x in ids):
            if not 0 <= i < self.layout.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.layout.vocab_size})")
            if self.layout.is_text_id(i):
                if i not in skip:
                    text_run.append(i)
                continue
            if text_run:
                out.append(self.sp.decode(text_run))
                text_run = []
            if i < self.layout.num_real_tokens:
                out.append(self.layout.id_to_token(i))
        if text_run:
            out.append(self.sp.decode(text_run))
        return "".join(out)
