"""Examples -> token ids: text-only, speech-only, and word-level interleaved speech+text (SPEC.md §6).

Example format (one JSON object each; unit streams are raw per-frame ids, frame i at i / RATES[kind]):
    {"kind": "text", "text": "..."}
    {"kind": "speech", "hubert": [...], "pitch": [...]?, "style": [...]?}
    {"kind": "aligned", "words": [[word, start_s, end_s], ...], "hubert": [...], ...}

Interleaving (aligned examples): start with a random modality, alternate spans switching only at word
boundaries; a text span takes U[text_span] words, a speech span U[speech_span] words. Word i owns the
time region [start_i, start_{i+1}) (the first word from 0, the last to the end), so the pause after a
word goes with that word; a speech span holds exactly the units whose frame times fall in its words'
regions (none lost, none doubled), deduplicated and merged as SPEC.md §3 says, with deduplication
restarting at each span (each span is a fresh speech segment, as at inference). Every span starts with
its marker. The caller passes an rng seeded per (seed, epoch, example), so spans re-draw every epoch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.tokens import RATES, SPEECH_MARKER, TEXT_MARKER, SpiritTokenizer, units_to_string

KIND_IDS = {"text": 0, "speech": 1, "aligned": 2}  # loss bookkeeping: text, speech, interleaved
STREAMS = ("hubert", "pitch", "style")


def _streams(ex: dict, layout_kinds: Sequence[str]) -> dict[str, Optional[np.ndarray]]:
    return {k: (np.asarray(ex[k], np.int64) if (k in ex and k in layout_kinds) else None) for k in STREAMS}


def _slice_streams(streams, t0: float, t1: float):
    out = {}
    for k, units in streams.items():
        if units is None:
            out[k] = None
            continue
        times = np.arange(len(units)) / RATES[k]
        out[k] = units[(times >= t0) & (times < t1)]
    return out


def plan_spans(n_words: int, rng: np.random.Generator, text_span=(10, 30), speech_span=(5, 15)):
    """[(modality "t"|"s", first word, end word), ...] covering words [0, n_words) in order."""
    plan, i, modality = [], 0, "s" if rng.random() < 0.5 else "t"
    while i < n_words:
        lo, hi = text_span if modality == "t" else speech_span
        j = min(i + int(rng.integers(lo, hi + 1)), n_words)
        plan.append((modality, i, j))
        i, modality = j, ("s" if modality == "t" else "t")
    return plan


def word_regions(words) -> list[float]:
    """Region boundaries: word i owns [b[i], b[i+1]) with b[0] = 0 and b[-1] = inf."""
    starts = [float(w[1]) for w in words]
    if any(b < a for a, b in zip(starts, starts[1:])):
        raise ValueError("aligned example: word start times are not sorted")
    return [0.0] + starts[1:] + [np.inf]


def interleave_spans(ex: dict, rng: np.random.Generator, text_span=(10, 30), speech_span=(5, 15),
                     layout_kinds: Sequence[str] = ("hubert",)) -> list[tuple[str, str]]:
    """Aligned example -> [("t", "some words"), ("s", "[Hu1][Hu2]..."), ...] (markers not included)."""
    words = ex["words"]
    if not words:
        raise ValueError("aligned example has no words")
    bounds = word_regions(words)
    streams = _streams(ex, layout_kinds)
    spans = []
    for modality, i, j in plan_spans(len(words), rng, text_span, speech_span):
        if modality == "t":
            spans.append(("t", " ".join(str(w[0]) for w in words[i:j])))
        else:
            spans.append(("s", units_to_string(**_slice_streams(streams, bounds[i], bounds[j]))))
    return spans


def encode_example(ex: dict, tok: SpiritTokenizer, rng: np.random.Generator, text_span=(10, 30),
                   speech_span=(5, 15)) -> tuple[np.ndarray, int]:
    """Example -> (token ids int32 with BOS ... EOS, kind id). Raises ValueError on malformed input."""
    kind = ex.get("kind")
    kinds = tok.layout.kinds()
    if kind == "text":
        body = tok.encode(TEXT_MARKER + str(ex["text"]), bos=True, eos=True)
    elif kind == "speech":
        s = units_to_string(**_streams(ex, kinds))
        if not s:
            raise ValueError("speech example has no units")
        body = tok.encode(SPEECH_MARKER + s, bos=True, eos=True)
    elif kind == "aligned":
        ids = [tok.bos_id] if tok.bos_id is not None else []
        for modality, content in interleave_spans(ex, rng, text_span, speech_span, kinds):
            marker = TEXT_MARKER if modality == "t" else SPEECH_MARKER
            ids.extend(tok.encode(marker + content, bos=False, eos=False))
        if tok.eos_id is not None:
            ids.append(tok.eos_id)
        body = ids
    else:
        raise ValueError(f"example kind {kind!r} is not one of {sorted(KIND_IDS)}")
    return np.asarray(body, np.int32), KIND_IDS[kind]
