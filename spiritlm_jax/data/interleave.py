"""Examples -> token ids: text-only, speech-only, and word-level interleaved speech+text
(docs/reference.md, training recipe).

Example format (one JSON object each; unit streams are raw per-frame ids, frame i at i / RATES[s]):
    {"kind": "text", "text": "..."}
    {"kind": "speech", "hubert": [...], "pitch": [...]?, "style": [...]?}
    {"kind": "aligned", "text": "..."?, "words": [[word, start_s, end_s], ...], "hubert": [...], ...}

Sequences (B = BOS, E = EOS, when the tokenizer has them):
    text:    B [Text] <text pieces> E
    speech:  B [Speech] <merged units> E
    aligned: B [Text]|[Speech] <span> [Speech]|[Text] <span> ... E   (modalities alternate)

Interleaving rules (aligned examples):
- Spans: the first modality is speech or text with probability 1/2; spans alternate; a text span
  takes U{text_span} words, a speech span U{speech_span} words (inclusive bounds); the last span
  takes what is left, so it may be shorter than the lower bound. Switches happen only between words.
- Time regions: word i owns [start_i, start_{i+1}); word 0 also owns everything before its start and
  the last word everything after its start. So the pause after a word goes with the word on its left:
  every frame of every stream lies in exactly one word's region (none lost, none doubled), only start
  times are needed (end times from aligners overlap or are missing), and a speech span begins at its
  first word's onset, right after its [Speech] marker, keeping the trailing pause before a switch.
- A speech span holds the frames of every stream (HuBERT, and pitch/style for an expressive layout)
  whose times fall in its words' regions, turned into tokens by `tokens.merge_units` on those slices:
  so deduplication restarts at each span. This is how the reference builds interleaved prompts at
  inference (each speech input is tokenized on its own, docs/reference.md "Prompts"), so training spans look
  like inference spans; a unit repeated across a text span is a new unit in the next speech span.
- Text spans are the words joined with single spaces (word-level transcripts carry no other spacing).
- Span lengths come from a numpy Generator seeded by (seed, kind, epoch, example index)
  (`example_rng`), so the same seed gives the same sequences and each epoch re-draws them.

How aligned examples are used (`aligned_as`, for ablations; the paper's recipe is the default):
    interleaved: the word-level interleaving above (one document).
    pairs:       B [Speech] <all merged units> [Text] <all words> E, or text first (probability 1/2):
                 ASR/TTS-style concatenation, no switch inside the utterance (one document).
    separate:    B [Speech] <all merged units> E and B [Text] <all words> E as two documents, so the
                 model sees the same audio and text with no pairing (packed rows keep documents apart
                 through segment ids).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

from spiritlm_jax.data.batch import LOSS_GROUP_IDS
from spiritlm_jax.tokens import RATES, STREAMS, Modality, SpiritTokenizer, merge_units

TEXT, SPEECH = Modality.TEXT, Modality.SPEECH
ALIGNED_AS = ("interleaved", "pairs", "separate")


class Span(NamedTuple):
    """One span of an interleaved example: words [first, end) in one modality."""

    modality: Modality
    first: int
    end: int


class Encoded(NamedTuple):
    """Token ids of one example and the per-token loss group id (LOSS_GROUP_IDS of the example's kind).
    `is_target`: bool [n], which tokens may be predicted (None: all; fine-tuning pairs: the response)."""

    tokens: np.ndarray  # [n] int32
    loss_groups: np.ndarray  # [n] int32
    is_target: Optional[np.ndarray] = None  # [n] bool


def example_rng(seed: int, epoch: int, index: int, kind: int = 0) -> np.random.Generator:
    """The interleaving rng of example `index` (of kind id `kind`) in `epoch`."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(kind), int(epoch), int(index)])


def tokenizer_streams(tok: SpiritTokenizer) -> tuple[str, ...]:
    """Unit streams the tokenizer's layout has ids for (pitch/style only when expressive)."""
    return STREAMS if tok.layout.expressive else ("hubert",)


def _check_span(name: str, span: Sequence[int]) -> tuple[int, int]:
    lo, hi = (int(x) for x in span)
    if not 1 <= lo <= hi:
        raise ValueError(f"{name} must satisfy 1 <= min <= max, got {tuple(span)}")
    return lo, hi


def plan_spans(n_words: int, rng: np.random.Generator, text_span=(10, 30), speech_span=(5, 15)) -> list[Span]:
    """Contiguous alternating spans covering words [0, n_words); draws: one random(), one integers() per span."""
    bounds = {TEXT: _check_span("text_span", text_span), SPEECH: _check_span("speech_span", speech_span)}
    plan: list[Span] = []
    i, modality = 0, SPEECH if rng.random() < 0.5 else TEXT
    while i < n_words:
        lo, hi = bounds[modality]
        j = min(i + int(rng.integers(lo, hi + 1)), n_words)
        plan.append(Span(modality, i, j))
        i, modality = j, (SPEECH if modality == TEXT else TEXT)
    return plan


def _streams(ex: dict, streams: Sequence[str]) -> dict[str, Optional[np.ndarray]]:
    out: dict[str, Optional[np.ndarray]] = {}
    for k in STREAMS:
        v = ex.get(k) if k in streams else None
        if v is None:
            out[k] = None
            continue
        a = np.asarray(v)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{k!r} must be a flat list of integer unit ids")
        out[k] = a.astype(np.int64)
    return out


def check_words(words) -> np.ndarray:
    """Validated word start times (float64 [n]); ValueError on malformed or unsorted words."""
    if not isinstance(words, (list, tuple)) or not words:
        raise ValueError("aligned example needs a non-empty 'words' list of [word, start_s, end_s]")
    starts = []
    for i, w in enumerate(words):
        if not isinstance(w, (list, tuple)) or len(w) != 3 or not isinstance(w[0], str):
            raise ValueError(f"words[{i}] = {w!r} is not [word, start_s, end_s]")
        s, e = float(w[1]), float(w[2])
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e < s:
            raise ValueError(f"words[{i}] = {w!r}: times must be finite with 0 <= start <= end")
        starts.append(s)
    starts_a = np.asarray(starts, np.float64)
    if np.any(np.diff(starts_a) < 0):
        raise ValueError("aligned example: word start times are not sorted")
    return starts_a


def word_of_frame(starts: np.ndarray, n_frames: int, rate: float) -> np.ndarray:
    """Index of the word whose region holds each frame (regions in the module docstring)."""
    times = np.arange(n_frames) / rate
    return np.maximum(np.searchsorted(starts, times, side="right") - 1, 0)


def interleave(
    ex: dict, rng: np.random.Generator, text_span=(10, 30), speech_span=(5, 15), streams: Sequence[str] = ("hubert",)
) -> list[tuple[Span, object]]:
    """Aligned example -> [(span, content)]: content is the text of a text span or the merged
    (time_s, stream, unit) list of a speech span (markers not included)."""
    words = ex.get("words")
    starts = check_words(words)
    unit_streams = _streams(ex, streams)
    if unit_streams["hubert"] is None or unit_streams["hubert"].size == 0:
        raise ValueError("aligned example has no 'hubert' units")
    duration = unit_streams["hubert"].size / RATES["hubert"]
    if starts[-1] > duration + 1.0:
        raise ValueError(
            f"aligned example: word times (last start {starts[-1]:.2f} s) run past the "
            f"units ({duration:.2f} s of HuBERT frames)"
        )
    owner = {k: word_of_frame(starts, v.size, RATES[k]) for k, v in unit_streams.items() if v is not None}
    out: list[tuple[Span, object]] = []
    for span in plan_spans(len(words), rng, text_span, speech_span):
        if span.modality == TEXT:
            out.append((span, " ".join(w[0] for w in words[span.first : span.end])))
        else:
            sliced = {
                k: (None if v is None else v[(owner[k] >= span.first) & (owner[k] < span.end)])
                for k, v in unit_streams.items()
            }
            out.append((span, merge_units(**sliced)))
    return out


def _unit_ids(tok: SpiritTokenizer, merged) -> list[int]:
    return [tok.layout.unit_id(kind, int(unit)) for _, kind, unit in merged]


def _text_ids(tok: SpiritTokenizer, text: str) -> list[int]:
    # the ids `text` gets right after a [Text] marker when the whole sequence string is encoded at once
    return tok.encode_after_marker(text)


def encode_example(
    ex: dict, tok: SpiritTokenizer, rng: np.random.Generator, text_span=(10, 30), speech_span=(5, 15)
) -> Encoded:
    """Example -> Encoded(tokens, loss_groups) with BOS ... EOS. ValueError on malformed input."""
    if not isinstance(ex, dict):
        raise ValueError(f"an example must be a dict, got {type(ex).__name__}")
    kind = ex.get("kind")
    layout = tok.layout
    streams = tokenizer_streams(tok)
    if kind == "text":
        text = ex.get("text")
        if not isinstance(text, str):
            raise ValueError("text example needs a string 'text'")
        body = [layout.text_marker_id] + _text_ids(tok, text)
    elif kind == "speech":
        merged = merge_units(**_streams(ex, streams))
        if not any(k == "hubert" for _, k, _ in merged):
            raise ValueError("speech example has no 'hubert' units")
        body = [layout.speech_marker_id] + _unit_ids(tok, merged)
    elif kind == "aligned":
        body = []
        for span, content in interleave(ex, rng, text_span, speech_span, streams):
            if span.modality == TEXT:
                body += [layout.text_marker_id] + _text_ids(tok, content)
            else:
                body += [layout.speech_marker_id] + _unit_ids(tok, content)
    else:
        raise ValueError(f"example kind {kind!r} is not one of {sorted(LOSS_GROUP_IDS)}")
    return _document(tok, body, kind)


class Document(NamedTuple):
    """One document an example becomes; `speech_only` documents are windowed behind BOS [Speech]."""

    enc: Encoded
    speech_only: bool


def _whole_aligned(ex: dict, tok: SpiritTokenizer) -> tuple[list[int], list[int]]:
    """(text ids, unit ids) of a whole aligned example: its words joined by spaces, all its units merged."""
    words = ex.get("words")
    check_words(words)
    merged = merge_units(**_streams(ex, tokenizer_streams(tok)))
    if not any(k == "hubert" for _, k, _ in merged):
        raise ValueError("aligned example has no 'hubert' units")
    return _text_ids(tok, " ".join(w[0] for w in words)), _unit_ids(tok, merged)


def _document(tok: SpiritTokenizer, body: list[int], kind: str) -> Encoded:
    """BOS, then what precedes a leading marker in the tokenizer's encoding of the whole string ([▁] for
    SentencePiece's dummy prefix), so training sequences are the ids prompts get (docs/tokens.md), the
    body, EOS; every token in the loss group of `kind`."""
    bos = [tok.bos_id] if tok.bos_id is not None else []
    ids = bos + tok.lead_ids + body + ([tok.eos_id] if tok.eos_id is not None else [])
    tokens = np.asarray(ids, np.int32)
    return Encoded(tokens, np.full(tokens.shape, LOSS_GROUP_IDS[kind], np.int32))


def encode_documents(
    ex: dict,
    tok: SpiritTokenizer,
    rng: np.random.Generator,
    text_span=(10, 30),
    speech_span=(5, 15),
    aligned_as: str = "interleaved",
) -> list[Document]:
    """Example -> its documents (module docstring, `aligned_as`); ValueError on malformed input.
    All documents of an aligned example keep the aligned loss group, whatever `aligned_as` is."""
    if aligned_as not in ALIGNED_AS:
        raise ValueError(f"aligned_as must be one of {ALIGNED_AS}, got {aligned_as!r}")
    if not isinstance(ex, dict) or ex.get("kind") != "aligned" or aligned_as == "interleaved":
        enc = encode_example(ex, tok, rng, text_span, speech_span)
        return [Document(enc, ex.get("kind") == "speech")]
    layout = tok.layout
    text_ids, unit_ids = _whole_aligned(ex, tok)
    text_body, speech_body = [layout.text_marker_id] + text_ids, [layout.speech_marker_id] + unit_ids
    if aligned_as == "pairs":
        body = speech_body + text_body if rng.random() < 0.5 else text_body + speech_body
        return [Document(_document(tok, body, "aligned"), False)]
    return [
        Document(_document(tok, speech_body, "aligned"), True),
        Document(_document(tok, text_body, "aligned"), False),
    ]


def windows(enc: Encoded, seq_len: int, speech_prefix: Optional[Sequence[int]] = None) -> list[Encoded]:
    """Split an encoded example into pieces of at most `seq_len` tokens (one piece when it fits).

    With `speech_prefix` (e.g. [BOS, [Speech]] for speech-only examples), the example must start with
    that prefix and every piece starts with it, so each window is a well-formed speech sample; the
    units are split, none repeated (EOS stays on the last piece). Without it, the tokens are cut in
    consecutive pieces (the continuation of a long text starts without a marker).
    """
    n = len(enc.tokens)
    if n <= seq_len:
        return [enc]
    if speech_prefix is None:
        return [Encoded(enc.tokens[i : i + seq_len], enc.loss_groups[i : i + seq_len]) for i in range(0, n, seq_len)]
    p = len(speech_prefix)
    if list(enc.tokens[:p]) != list(speech_prefix):
        raise ValueError("windows: the example does not start with the given prefix")
    if seq_len <= p:
        raise ValueError(f"seq_len {seq_len} leaves no room after a {p}-token prefix")
    prefix, body = enc.tokens[:p], enc.tokens[p:]
    step = seq_len - p
    out = []
    for i in range(0, len(body), step):
        toks = np.concatenate([prefix, body[i : i + step]])
        out.append(Encoded(toks, np.full(toks.shape, enc.loss_groups[0], np.int32)))
    return out
