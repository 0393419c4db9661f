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
See docs/tokens.md for the places where this module is stricter than the reference.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

RATES = {"hubert": 24.99, "pitch": 12.5, "style": 1.0}
N_UNITS = {"hubert": 501, "pitch": 64, "style": 100}
PREFIX = {"hubert": "Hu", "pitch": "Pi", "style": "St"}
KIND_OF_PREFIX = {v: k for k, v in PREFIX.items()}
DEDUP = {"hubert": True, "pitch": True, "style": False}
MERGE_ORDER = ("style", "pitch", "hubert")  # concatenation order before the stable time sort
MOST_COMMON_STYLES = (71, 68, 98)
TEXT_MARKER, SPEECH_MARKER = "[Text]", "[Speech]"
# Anything that looks like a Spirit LM token; validity (range, leading zeros, layout) is checked after.
_SPECIAL = re.compile(r"\[(Text|Speech)\]|\[(Hu|Pi|St)(\d+)\]")

Units = Union[None, str, Sequence[int], np.ndarray]


def _pad_to(n: int, multiple: int = 256) -> int:
    return -(-n // multiple) * multiple


def parse_token(token: str) -> tuple[str, Optional[int]]:
    """'[Hu12]' -> ('hubert', 12); '[Text]' -> ('text', None); '[Speech]' -> ('speech', None).

    ValueError for anything else, for units out of range ([Hu9999]) and for leading zeros ([Hu07]),
    which would not round-trip."""
    m = _SPECIAL.fullmatch(token)
    if not m:
        raise ValueError(f"{token!r} is not a Spirit LM token ([Text], [Speech], [HuN], [PiN], [StN])")
    if m.group(1):
        return m.group(1).lower(), None
    kind, digits = KIND_OF_PREFIX[m.group(2)], m.group(3)
    unit = int(digits)
    if digits != str(unit):
        raise ValueError(f"{token!r}: unit numbers are written without leading zeros ([{m.group(2)}{unit}])")
    if unit >= N_UNITS[kind]:
        raise ValueError(f"{token!r}: {kind} unit {unit} out of range "
                         f"([{m.group(2)}0]..[{m.group(2)}{N_UNITS[kind] - 1}])")
    return kind, unit


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

    def kinds(self) -> tuple[str, ...]:
        """Unit streams with ids in this layout."""
        return ("hubert", "pitch", "style") if self.expressive else ("hubert",)

    def offset(self, kind: str) -> int:
        """Id of unit 0 of stream `kind`."""
        offsets = {"hubert": self.hubert_offset, "pitch": self.pitch_offset, "style": self.style_offset}
        if kind not in offsets:
            raise ValueError(f"unknown unit kind {kind!r}; expected one of {tuple(offsets)}")
        return offsets[kind]

    def unit_id(self, kind: str, unit: int) -> int:
        if kind not in self.kinds():
            raise ValueError(f"unit kind {kind!r} is not part of this layout (kinds: {self.kinds()}; "
                             f"pitch and style exist only in the EXPRESSIVE layout)")
        if not 0 <= unit < N_UNITS[kind]:
            raise ValueError(f"{kind} unit {unit} out of range [0, {N_UNITS[kind]})")
        return self.offset(kind) + int(unit)

    def token_to_id(self, token: str) -> int:
        kind, unit = parse_token(token)
        if kind == "text":
            return self.text_marker_id
        if kind == "speech":
            return self.speech_marker_id
        return self.unit_id(kind, unit)

    def id_to_token(self, i: int) -> str:
        if i == self.text_marker_id:
            return TEXT_MARKER
        if i == self.speech_marker_id:
            return SPEECH_MARKER
        for kind in self.kinds():
            off = self.offset(kind)
            if off <= i < off + N_UNITS[kind]:
                return f"[{PREFIX[kind]}{i - off}]"
        raise ValueError(f"id {i} is not a Spirit LM special token id in this layout "
                         f"(special ids are [{self.text_marker_id}, {self.num_real_tokens}))")

    def special_tokens(self) -> dict[str, int]:
        """{token string: id} for every special token of the layout, in id order."""
        return {self.id_to_token(i): i for i in range(self.text_marker_id, self.num_real_tokens)}

    def is_text_id(self, i: int) -> bool:
        return 0 <= i < self.text_vocab_size

    def is_speech_id(self, i: int) -> bool:
        """A unit id (HuBERT, and pitch/style when expressive); the [Speech] marker is not one."""
        return self.hubert_offset <= i < self.num_real_tokens


# ----- units <-> strings ------------------------------------------------------------------------
def _as_stream(units: Units, kind: str) -> Optional[np.ndarray]:
    """A per-frame unit stream as a 1-D int64 array (None stays None), range-checked."""
    if units is None:
        return None
    if isinstance(units, str):  # the reference's format: "78 42 81"
        try:
            units = [int(u) for u in units.split()]
        except ValueError:
            raise ValueError(f"{kind} units {units[:40]!r}: expected space-separated integers") from None
    arr = np.asarray(units)
    if arr.ndim != 1:
        raise ValueError(f"{kind} units must be a 1-D sequence of frames, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{kind} units must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= N_UNITS[kind]:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{kind} unit {bad} out of range [0, {N_UNITS[kind]})")
    return arr


def _stream_positions(units: Optional[np.ndarray], kind: str) -> list[tuple[float, str, int]]:
    """(frame_index / rate, kind, unit) for the frames kept after the stream's dedup rule."""
    if units is None or units.size == 0:
        return []
    keep = np.ones(units.size, bool)
    if DEDUP[kind]:
        keep[1:] = units[1:] != units[:-1]
    rate = RATES[kind]
    return [(i / rate, kind, u) for i, u in zip(np.flatnonzero(keep).tolist(), units[keep].tolist())]


def merge_units(hubert: Units = None, pitch: Units = None, style: Units = None) -> list[tuple[float, str, int]]:
    """Per-frame streams -> time-sorted (time_s, kind, unit), as the reference merges them.

    Frame i of a stream sits at i / RATES[kind]; HuBERT and pitch drop a unit equal to the previous
    frame's, style keeps every frame; the lists are concatenated style, pitch, HuBERT and stably sorted
    by time, so ties (all streams at t = 0) keep that order. Streams are lists, 1-D integer arrays or
    space-separated strings; None means the stream is absent."""
    streams = {"hubert": _as_stream(hubert, "hubert"), "pitch": _as_stream(pitch, "pitch"),
               "style": _as_stream(style, "style")}
    merged = [p for kind in MERGE_ORDER for p in _stream_positions(streams[kind], kind)]
    return sorted(merged, key=lambda x: x[0])  # Python's sort is stable


def units_to_string(hubert: Units = None, pitch: Units = None, style: Units = None) -> str:
    """Per-frame streams -> '[St81][Pi13][Hu78]...' (no separators)."""
    return "".join(f"[{PREFIX[k]}{u}]" for _, k, u in merge_units(hubert, pitch, style))


def _pick_style(rng: Union[None, int, np.random.Generator]) -> int:
    if rng is None:
        return MOST_COMMON_STYLES[0]
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return int(MOST_COMMON_STYLES[int(rng.integers(len(MOST_COMMON_STYLES)))])


def string_to_units(s: str, rng: Union[None, int, np.random.Generator] = None,
                    duplicate_hubert_for_multiple_pitch: bool = False) -> dict[str, Optional[np.ndarray]]:
    """Token string -> {"hubert", "pitch", "style"} int64 arrays of the HuBERT length (reference semantics).

    Each HuBERT token takes the latest pitch and style token seen before it; HuBERT tokens before the
    first pitch (style) take the first pitch (style) of the string. "pitch"/"style" are None when the
    string has no such token, except: if pitch exists but no style was generated, one style from
    MOST_COMMON_STYLES (71, 68, 98) fills the style stream. The reference draws it with Python's global
    `random`; here the pick is deterministic: `rng=None` gives 71 (the first of the list), an int seed or
    a np.random.Generator draws uniformly from the three. With `duplicate_hubert_for_multiple_pitch`
    (reference option, off by default) a pitch token that directly follows another pitch token
    repeats the previous HuBERT unit with the new pitch.

    [Text]/[Speech] markers and any text are ignored; malformed or out-of-range unit tokens raise
    ValueError (the reference would pass them on to the vocoder)."""
    if not isinstance(s, str):
        raise ValueError(f"string_to_units expects a str of unit tokens, got {type(s).__name__}")
    hubert: list[Optional[int]] = []
    pitch: list[Optional[int]] = []
    style: list[Optional[int]] = []
    cur = {"hubert": None, "pitch": None, "style": None}
    first = {"hubert": None, "pitch": None, "style": None}
    prev_is_pitch = False
    for m in _SPECIAL.finditer(s):
        kind, unit = parse_token(m.group(0))
        if kind == "hubert":
            hubert.append(unit)
            pitch.append(cur["pitch"])
            style.append(cur["style"])
            prev_is_pitch = False
        elif kind == "pitch":
            if duplicate_hubert_for_multiple_pitch and prev_is_pitch:
                hubert.append(cur["hubert"])
                pitch.append(unit)
                style.append(cur["style"])
            prev_is_pitch = True
        if kind in cur:
            cur[kind] = unit
            if first[kind] is None:
                first[kind] = unit
    if first["pitch"] is not None and first["style"] is None:
        first["style"] = _pick_style(rng)
    if hubert and first["hubert"] is None:
        raise ValueError(f"{s[:60]!r}: consecutive pitch tokens with no HuBERT token to repeat")
    out: dict[str, Optional[np.ndarray]] = {
        "hubert": np.asarray([first["hubert"] if v is None else v for v in hubert], np.int64),
        "pitch": None, "style": None}
    for kind, vals in (("pitch", pitch), ("style", style)):
        if first[kind] is not None:
            out[kind] = np.asarray([first[kind] if v is None else v for v in vals], np.int64)
    return out


# ----- the text + speech tokenizer ---------------------------------------------------------------
def read_added_tokens(d: Union[str, Path]) -> dict[str, int]:
    """{token: id} of the added tokens in a Hugging Face tokenizer directory (added_tokens.json,
    tokenizer.json "added_tokens", tokenizer_config.json "added_tokens_decoder"); {} when none.
    Files that disagree on a token's id are an error."""
    d = Path(d)
    out: dict[str, int] = {}

    def add(token: str, i, source: str):
        i = int(i)
        if token in out and out[token] != i:
            raise ValueError(f"{d}: {source} gives {token} id {i} but another file gives {out[token]}")
        out[token] = i

    for name in ("added_tokens.json", "tokenizer.json", "tokenizer_config.json"):
        p = d / name
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if name == "added_tokens.json":
            for token, i in data.items():
                add(token, i, name)
        elif name == "tokenizer.json":
            for t in data.get("added_tokens", []):
                add(t["content"], t["id"], name)
        else:
            for i, t in (data.get("added_tokens_decoder") or {}).items():
                add(t["content"] if isinstance(t, dict) else str(t), i, name)
    return out


class SpiritTokenizer:
    """SentencePiece for text plus the Spirit LM special tokens.

    Encoding splits a mixed string at special tokens: `[Text]hello[Speech][Hu3][Hu7]` becomes
    BOS, [Text], sp("hello"), [Speech], [Hu3], [Hu7] (each text segment is encoded on its own, as the
    reference's slow LlamaTokenizer does). BOS on and EOS off by default, as the reference.

    Special-token ids come from `added_tokens` (the official tokenizer files, see `from_dir`) when given,
    else from the layout table. The rest of the library (vocab sizes, modality masks, data pipeline)
    computes ids from `layout`, so ids from files must agree with it: the layout is derived from the
    files ([Text]'s id is the text vocabulary size; pitch/style tokens make it EXPRESSIVE) and any
    disagreement is a ValueError. Added tokens that are not Spirit LM tokens and sit past the
    SentencePiece pieces (e.g. a `<pad>`) are kept as literal tokens."""

    def __init__(self, sp_model_path: Union[str, Path], layout: Optional[TokenLayout] = None,
                 expressive: Optional[bool] = None, added_tokens: Optional[Mapping[str, int]] = None):
        import sentencepiece as spm

        path = Path(sp_model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model {path} does not exist")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise ValueError(f"{path} is not a SentencePiece model ({e})") from None
        self.path = path
        n = self.sp.get_piece_size()
        added = dict(added_tokens or {})
        spirit = {t: i for t, i in added.items() if _SPECIAL.fullmatch(t)}
        if spirit:
            if TEXT_MARKER not in spirit:
                raise ValueError(f"{path.parent}: the tokenizer files list Spirit LM tokens but not {TEXT_MARKER}")
            has_expr = any(t.startswith(("[Pi", "[St")) for t in spirit)
            if layout is None:
                layout = TokenLayout(spirit[TEXT_MARKER], has_expr if expressive is None else bool(expressive))
        elif layout is None:
            layout = TokenLayout(n, bool(expressive))
        if expressive is not None and layout.expressive != bool(expressive):
            raise ValueError(f"layout.expressive={layout.expressive} contradicts expressive={expressive}")
        if layout.text_vocab_size < n:
            raise ValueError(f"{path} has {n} pieces but the layout has only {layout.text_vocab_size} text ids")
        self.layout = layout

        table = layout.special_tokens()
        if spirit:
            missing = [t for t in table if t not in spirit]
            if missing:
                raise ValueError(f"{path.parent}: the tokenizer files lack {len(missing)} token(s) of the "
                                 f"{'EXPRESSIVE' if layout.expressive else 'BASE'} layout, e.g. {missing[:3]}")
            wrong = [(t, spirit[t], i) for t, i in table.items() if spirit[t] != i]
            if wrong:
                t, theirs, mine = wrong[0]
                raise ValueError(f"{path.parent}: token {t} has id {theirs} in the tokenizer files but {mine} in "
                                 f"the Spirit LM layout (SPEC.md §2); {len(wrong)} token(s) disagree")
            self._token_to_id = {t: spirit[t] for t in table}
        else:
            self._token_to_id = table
        # other added tokens past the pieces: literal tokens (a gap id with no token stays undecodable)
        self._extra = {t: i for t, i in added.items() if t not in spirit and i >= n}
        clash = [t for t, i in self._extra.items() if i >= layout.text_vocab_size]
        if clash:
            raise ValueError(f"{path.parent}: added token(s) {clash[:3]} have ids at or past [Text] "
                             f"({layout.text_vocab_size}), where the Spirit LM tokens live")
        self._id_to_token = {i: t for t, i in {**self._token_to_id, **self._extra}.items()}
        literals = sorted(self._extra, key=len, reverse=True)
        self._split = re.compile("|".join([_SPECIAL.pattern] + [re.escape(t) for t in literals]))

        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        self.num_pieces = n

    @classmethod
    def from_dir(cls, d: Union[str, Path], expressive: Optional[bool] = None) -> "SpiritTokenizer":
        """tokenizer.model from `d`, with special-token ids from the Hugging Face tokenizer files in `d`
        when they list Spirit LM tokens (the released checkpoints do), else from the layout table.
        `expressive=None` infers it from the files (pitch/style tokens present) and is BASE otherwise;
        `expressive=False` on EXPRESSIVE files uses only their BASE tokens."""
        d = Path(d)
        path = d / "tokenizer.model"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.model in {d}")
        added = read_added_tokens(d)
        if expressive is False:
            added = {t: i for t, i in added.items() if not t.startswith(("[Pi", "[St"))}
        return cls(path, expressive=expressive, added_tokens=added)

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    def token_to_id(self, token: str) -> int:
        """Id of a special token ([Text], [Hu3], ...) or added literal token."""
        if token in self._token_to_id:
            return self._token_to_id[token]
        if token in self._extra:
            return self._extra[token]
        kind, _ = parse_token(token)  # raises for malformed / out-of-range tokens
        raise ValueError(f"{token!r}: {kind} tokens are not part of this tokenizer's "
                         f"{'EXPRESSIVE' if self.layout.expressive else 'BASE'} layout "
                         f"(pitch and style exist only in the EXPRESSIVE layout)")

    def id_to_token(self, i: int) -> str:
        if i in self._id_to_token:
            return self._id_to_token[i]
        if 0 <= i < self.num_pieces:
            return self.sp.id_to_piece(i)
        raise ValueError(f"id {i} has no token (vocabulary [0, {self.vocab_size}); "
                         f"ids from {self.layout.num_real_tokens} on are padding)")

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = [self.bos_id] if bos and self.bos_id is not None else []
        pos = 0
        for m in self._split.finditer(text):
            if m.start() > pos:
                ids.extend(self.sp.encode(text[pos:m.start()]))
            ids.append(self.token_to_id(m.group(0)))
            pos = m.end()
        if pos < len(text):
            ids.extend(self.sp.encode(text[pos:]))
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> string with special tokens written as `[Hu3]` etc. BOS/EOS are dropped unless
        `skip_special_tokens=False`; an id outside the vocabulary or on a padding row is a ValueError."""
        out: list[str] = []
        run: list[int] = []
        skip = {self.bos_id, self.eos_id} if skip_special_tokens else set()
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            if i in skip:
                continue
            if i < self.num_pieces and not self.sp.is_control(i):
                run.append(i)
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            out.append(self.id_to_token(i))  # control pieces (<s>), special and literal tokens
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)
