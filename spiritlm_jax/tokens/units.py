"""Speech units <-> Spirit LM token strings, and the token grammar: THE one pattern of a Spirit LM token.

Unit strings follow the reference exactly (docs/reference.md): per-stream consecutive dedup (HuBERT
and pitch yes, style no), merge by time at rates 24.99 / 12.5 / 1 with the stable order style, pitch,
HuBERT; decoding repeats the latest pitch/style per HuBERT token and back-fills leading gaps.
See docs/tokens.md for the places where this module is stricter than the reference.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence, Union

import numpy as np

from spiritlm_jax.tokens.modality import Modality

STREAMS = ("hubert", "pitch", "style")  # the unit streams
RATES = {"hubert": 24.99, "pitch": 12.5, "style": 1.0}
N_UNITS = {"hubert": 501, "pitch": 64, "style": 100}
PREFIX = {"hubert": "Hu", "pitch": "Pi", "style": "St"}
STREAM_OF_PREFIX = {v: k for k, v in PREFIX.items()}
DEDUP = {"hubert": True, "pitch": True, "style": False}
MERGE_ORDER = ("style", "pitch", "hubert")  # concatenation order before the stable time sort
MOST_COMMON_STYLES = (71, 68, 98)
# THE pattern of anything that looks like a Spirit LM token (markers and units); validity (range,
# leading zeros, layout) is checked after. Every other matcher in the package is derived from it.
TOKEN_PATTERN = r"\[(Text|Speech)\]|\[(Hu|Pi|St)(\d+)\]"
TOKEN_RE = re.compile(TOKEN_PATTERN)
# The same grammar with ASCII digits only (RE2, e.g. tf.strings.regex_replace in the data pipeline).
TOKEN_PATTERN_ASCII = TOKEN_PATTERN.replace(r"\d", "[0-9]").replace("(", "(?:")

Units = Union[None, str, Sequence[int], np.ndarray]


def parse_token(token: str) -> tuple[str, Optional[int]]:
    """'[Hu12]' -> ('hubert', 12); '[Text]' -> ('text', None); '[Speech]' -> ('speech', None).

    ValueError for anything else, for units out of range ([Hu9999]) and for leading zeros ([Hu07]),
    which would not round-trip."""
    m = TOKEN_RE.fullmatch(token)
    if not m:
        raise ValueError(f"{token!r} is not a Spirit LM token ([Text], [Speech], [HuN], [PiN], [StN])")
    if m.group(1):
        return m.group(1).lower(), None
    stream, digits = STREAM_OF_PREFIX[m.group(2)], m.group(3)
    unit = int(digits)
    if digits != str(unit):
        raise ValueError(f"{token!r}: unit numbers are written without leading zeros ([{m.group(2)}{unit}])")
    if unit >= N_UNITS[stream]:
        raise ValueError(
            f"{token!r}: {stream} unit {unit} out of range ([{m.group(2)}0]..[{m.group(2)}{N_UNITS[stream] - 1}])"
        )
    return stream, unit


# ----- units <-> strings ------------------------------------------------------------------------
def _as_stream(units: Units, stream: str) -> Optional[np.ndarray]:
    """A per-frame unit stream as a 1-D int64 array (None stays None), range-checked."""
    if units is None:
        return None
    if isinstance(units, str):  # the reference's format: "78 42 81"
        try:
            units = [int(u) for u in units.split()]
        except ValueError:
            raise ValueError(f"{stream} units {units[:40]!r}: expected space-separated integers") from None
    arr = np.asarray(units)
    if arr.ndim != 1:
        raise ValueError(f"{stream} units must be a 1-D sequence of frames, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{stream} units must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= N_UNITS[stream]:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{stream} unit {bad} out of range [0, {N_UNITS[stream]})")
    return arr


def _stream_positions(units: Optional[np.ndarray], stream: str) -> list[tuple[float, str, int]]:
    """(frame_index / rate, stream, unit) for the frames kept after the stream's dedup rule."""
    if units is None or units.size == 0:
        return []
    keep = np.ones(units.size, bool)
    if DEDUP[stream]:
        keep[1:] = units[1:] != units[:-1]
    rate = RATES[stream]
    return [(i / rate, stream, u) for i, u in zip(np.flatnonzero(keep).tolist(), units[keep].tolist())]


def merge_units(hubert: Units = None, pitch: Units = None, style: Units = None) -> list[tuple[float, str, int]]:
    """Per-frame streams -> time-sorted (time_s, stream, unit), as the reference merges them.

    Frame i of a stream sits at i / RATES[stream]; HuBERT and pitch drop a unit equal to the previous
    frame's, style keeps every frame; the lists are concatenated style, pitch, HuBERT and stably sorted
    by time, so ties (all streams at t = 0) keep that order. Streams are lists, 1-D integer arrays or
    space-separated strings; None means the stream is absent."""
    streams = {
        "hubert": _as_stream(hubert, "hubert"),
        "pitch": _as_stream(pitch, "pitch"),
        "style": _as_stream(style, "style"),
    }
    merged = [p for stream in MERGE_ORDER for p in _stream_positions(streams[stream], stream)]
    return sorted(merged, key=lambda x: x[0])  # Python's sort is stable


def merged_to_string(merged: Sequence[tuple[float, str, int]]) -> str:
    """`merge_units` output -> '[St81][Pi13][Hu78]...' (no separators)."""
    return "".join(f"[{PREFIX[stream]}{u}]" for _, stream, u in merged)


def units_to_string(hubert: Units = None, pitch: Units = None, style: Units = None) -> str:
    """Per-frame streams -> '[St81][Pi13][Hu78]...' (no separators)."""
    return merged_to_string(merge_units(hubert, pitch, style))


def _pick_style(rng: Union[None, int, np.random.Generator]) -> int:
    if rng is None:
        return MOST_COMMON_STYLES[0]
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return int(MOST_COMMON_STYLES[int(rng.integers(len(MOST_COMMON_STYLES)))])


def string_to_units(
    s: str, rng: Union[None, int, np.random.Generator] = None, duplicate_hubert_for_multiple_pitch: bool = False
) -> dict[str, Optional[np.ndarray]]:
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
    for m in TOKEN_RE.finditer(s):
        stream, unit = parse_token(m.group(0))
        if stream == "hubert":
            hubert.append(unit)
            pitch.append(cur["pitch"])
            style.append(cur["style"])
            prev_is_pitch = False
        elif stream == "pitch":
            if duplicate_hubert_for_multiple_pitch and prev_is_pitch:
                hubert.append(cur["hubert"])
                pitch.append(unit)
                style.append(cur["style"])
            prev_is_pitch = True
        if stream in cur:
            cur[stream] = unit
            if first[stream] is None:
                first[stream] = unit
    if first["pitch"] is not None and first["style"] is None:
        first["style"] = _pick_style(rng)
    if hubert and first["hubert"] is None:
        raise ValueError(f"{s[:60]!r}: consecutive pitch tokens with no HuBERT token to repeat")
    out: dict[str, Optional[np.ndarray]] = {
        "hubert": np.asarray([first["hubert"] if v is None else v for v in hubert], np.int64),
        "pitch": None,
        "style": None,
    }
    for stream, vals in (("pitch", pitch), ("style", style)):
        if first[stream] is not None:
            out[stream] = np.asarray([first[stream] if v is None else v for v in vals], np.int64)
    return out


# ----- token strings at the API edge (all through TOKEN_RE) -------------------------------------
def _unit_runs(s: str) -> list[tuple[int, int]]:
    """(start, end) of the maximal runs of consecutive unit tokens in `s`."""
    runs: list[tuple[int, int]] = []
    for m in TOKEN_RE.finditer(s):
        if m.group(1):  # a marker
            continue
        if runs and runs[-1][1] == m.start():
            runs[-1] = (runs[-1][0], m.end())
        else:
            runs.append((m.start(), m.end()))
    return runs


def is_unit_string(s) -> bool:
    """True for a non-empty string made only of unit tokens ('[Hu3][Pi1][Hu7]')."""
    return isinstance(s, str) and bool(s) and _unit_runs(s) == [(0, len(s))]


def unit_tokens(s: str) -> str:
    """The unit tokens of `s`, concatenated (markers and text dropped)."""
    return "".join(s[a:b] for a, b in _unit_runs(s))


def split_string(s: str) -> list[tuple[str, Modality]]:
    """'[Text]hi[Speech][Hu1][Hu2]' -> [('hi', TEXT), ('[Hu1][Hu2]', SPEECH)]: markers dropped and
    neighbouring pieces of one modality merged."""
    chunks: list[tuple[str, Modality]] = []

    def add(piece: str, modality: Modality) -> None:
        if not piece:
            return
        if chunks and chunks[-1][1] is modality:
            chunks[-1] = (chunks[-1][0] + piece, modality)
        else:
            chunks.append((piece, modality))

    pos = 0
    for m in TOKEN_RE.finditer(s):
        add(s[pos : m.start()], Modality.TEXT)
        if not m.group(1):
            add(m.group(0), Modality.SPEECH)
        pos = m.end()
    add(s[pos:], Modality.TEXT)
    return chunks


def last_speech_start(s: str) -> int:
    """Index where the trailing run of unit tokens of `s` begins (len(s) when it ends otherwise)."""
    runs = _unit_runs(s)
    return runs[-1][0] if runs and runs[-1][1] == len(s) else len(s)
