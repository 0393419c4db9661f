"""Fine-tuning examples: prompt -> response pairs, encoded by the one prompt builder.

Input: JSONL, one example a line; each side an ordered list of segments, the inputs `generate` takes:

    {"prompt": [{"text": "..."} | {"audio": "a.wav"} | {"units": "[Hu12][Hu7]..."}, ...],
     "response": [ ...same... ]}

A training sequence is `tokens.build_prompt(prompt, output=<the response's first modality>)` — the very
ids `generate --output-modality <that modality>` builds for the same inputs — followed by the response
(a marker only where its modality changes, as generation would emit one) and EOS; the whole string is
encoded in one call and its prefix must be the prompt's ids. A text response after a text prompt
continues the text span (no marker), with a space between them when neither side has one, as
generation continues a word. Only response tokens and the EOS are targets (`n_prompt`: the
first target position); the prompt is context.

Audio paths are relative to the JSONL file. Each recording is tokenized once with the bundle's
speech tokenizer and its unit string cached (`UnitCache`, keyed by path, size and mtime). Bad
examples (missing audio, an empty side, longer than seq_len, unreadable JSON) are collected with
"file:line" and the reason; the run goes on without them.

Encoded examples are JSON records {"tokens", "n_prompt", "group", "where"} that the Grain pipeline
reads through `sources.ExampleSource` (data/pipeline.py `pair_dataset`): packed rows, segment ids,
exact resume, as pretraining.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from spiritlm_jax.data.batch import LOSS_GROUP_IDS, check_reader_numbers
from spiritlm_jax.data.sources import ExampleSource, iter_jsonl, shard_files, write_jsonl
from spiritlm_jax.tokens import (
    Modality,
    Segment,
    build_prompt,
    check_text,
    encode_prompt,
    render_prompt,
    units_to_string,
)
from spiritlm_jax.tokens.units import is_unit_string

SEGMENT_KEYS = ("text", "audio", "units")
PRESETS = ("asr", "tts", "continuation")


@dataclasses.dataclass(frozen=True)
class PairDataConfig:
    """The data of a fine-tuning run (`python -m spiritlm_jax.finetune`)."""

    train: Optional[str] = None  # JSONL of prompt -> response examples (required)
    eval: Optional[str] = None  # held-out JSONL (eval loss every eval_every steps)
    seq_len: int = 256  # tokens per packed row; longer examples are reported and skipped
    batch_size: int = 8  # rows per process per step
    seed: int = 0
    shuffle: bool = True  # per-epoch permutation of the examples
    num_epochs: Optional[int] = None  # passes over the examples; None = infinite
    read_threads: int = 2  # Grain reader threads; 0 = in the calling thread
    prefetch: int = 64  # examples read ahead

    def __post_init__(self):
        check_reader_numbers(self)


class BadExample(ValueError):
    """An example that cannot be used (reported with its file:line, the run goes on)."""


# ----- segments ---------------------------------------------------------------------------------


def parse_side(side, what: str) -> list[tuple[str, str]]:
    """A side of an example -> [(key, value)] with key in SEGMENT_KEYS; BadExample naming `what`."""
    if not isinstance(side, list) or not side:
        raise BadExample(f"{what} is empty (give a non-empty list of segments)")
    out = []
    for i, seg in enumerate(side):
        if not isinstance(seg, dict) or len(seg) != 1 or next(iter(seg)) not in SEGMENT_KEYS:
            raise BadExample(f"{what}[{i}] is not one of {{'text': ...}}, {{'audio': PATH}}, {{'units': '[Hu..]...'}}")
        key, value = next(iter(seg.items()))
        if not isinstance(value, str) or not value.strip():
            raise BadExample(f"{what}[{i}] ({key}) is empty")
        if key == "units" and not is_unit_string(value):
            raise BadExample(f"{what}[{i}] (units) is not a unit string: {value[:40]!r}")
        if key == "text":
            try:
                check_text(value, f"{what}[{i}] (text)")
            except ValueError as e:
                raise BadExample(str(e)) from None
        out.append((key, value))
    return out


class UnitCache:
    """Unit strings of recordings, computed once with `encode` (audio path -> unit string) and kept in
    a JSON file keyed by absolute path, size and mtime (a changed recording is re-encoded)."""

    def __init__(self, path: Optional[Path], encode: Optional[Callable[[str], str]], tag: str = ""):
        self.path, self.encode, self.tag = path, encode, tag
        self.entries: dict[str, str] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                data = {}
            if isinstance(data, dict) and data.get("tag") == tag and isinstance(data.get("units"), dict):
                self.entries = data["units"]

    def units(self, audio: Path) -> str:
        if not audio.is_file():
            raise BadExample(f"audio {audio} does not exist")
        st = audio.stat()
        key = f"{audio.absolute()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.entries:
            if self.encode is None:
                raise BadExample(f"audio {audio}: the base bundle has no speech tokenizer")
            try:
                units = self.encode(str(audio))
            except (ValueError, OSError, RuntimeError) as e:
                raise BadExample(f"audio {audio} cannot be tokenized ({e})") from None
            if not units:
                raise BadExample(f"audio {audio} gave no speech units (too short or silent)")
            self.entries[key] = units
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self.path is not None and self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"tag": self.tag, "units": self.entries}))
            os.replace(tmp, self.path)
            self.dirty = False


def to_segments(side: list[tuple[str, str]], base_dir: Path, cache: UnitCache) -> list[Segment]:
    """Parsed segments -> prompt-builder Segments (audio tokenized through the cache)."""
    segs = []
    for key, value in side:
        if key == "text":
            segs.append(Segment(Modality.TEXT, value))
        elif key == "units":
            segs.append(Segment(Modality.SPEECH, value))
        else:
            audio = Path(value)
            segs.append(Segment(Modality.SPEECH, cache.units(audio if audio.is_absolute() else base_dir / audio)))
    return segs


# ----- sequences --------------------------------------------------------------------------------


def encode_pair(tok, prompt: list[Segment], response: list[Segment]) -> tuple[list[int], int, Modality]:
    """(ids, n_prompt, response modality): the prompt's ids as `generate --output-modality <response's>`
    builds them, the response, EOS. Targets are the ids at positions >= n_prompt."""
    out = Modality(response[0].modality)
    p = build_prompt(tok, prompt, output=out)
    body = render_prompt(response, after=out)
    if out is Modality.TEXT and p.last_modality is Modality.TEXT and p.text and body:
        if not p.text[-1].isspace() and not body[0].isspace():
            body = " " + body  # text -> text: the response continues the span as a new word
    ids = encode_prompt(tok, p.text + body).ids  # the whole string in one call, as build_prompt
    if ids[: len(p.ids)] != p.ids:
        raise BadExample("prompt and response merge into one token at their boundary (start the response with a space)")
    if len(ids) == len(p.ids):
        raise BadExample("response encodes to no tokens")
    if tok.eos_id is not None:
        ids = ids + [tok.eos_id]
    return ids, len(p.ids), out


def loss_group(modality: Modality) -> int:
    """The metrics' loss group of a response: text or speech."""
    return LOSS_GROUP_IDS["text" if Modality(modality) is Modality.TEXT else "speech"]


@dataclasses.dataclass
class EncodedPairs:
    records: list[dict]  # {"tokens", "n_prompt", "group", "where"}
    bad: list[dict]  # {"where", "reason"}


def encode_pairs(path: str | Path, tok, cache: UnitCache, seq_len: int) -> EncodedPairs:
    """Every example of a JSONL file -> encoded records; bad ones collected with file:line."""
    path = Path(path)
    records, bad = [], []
    try:
        lines = list(iter_jsonl(path, "file", report_bad=True))  # a bad line is reported, not fatal
    except FileNotFoundError as e:
        raise FileNotFoundError(str(e)) from None
    for where, obj in lines:
        try:
            if isinstance(obj, str):
                raise BadExample(obj)
            prompt = to_segments(parse_side(obj.get("prompt"), "prompt"), path.parent, cache)
            response = to_segments(parse_side(obj.get("response"), "response"), path.parent, cache)
            ids, n_prompt, out = encode_pair(tok, prompt, response)
            if len(ids) > seq_len:
                raise BadExample(f"{len(ids)} tokens, longer than seq_len {seq_len}")
        except (BadExample, ValueError) as e:
            bad.append({"where": where, "reason": str(e)})
            continue
        records.append({"tokens": ids, "n_prompt": n_prompt, "group": loss_group(out), "where": where})
    return EncodedPairs(records, bad)


def write_bad_report(path: Path, bad: Iterable[dict]) -> int:
    """bad_examples.txt: one 'file:line: reason' a line; returns the count."""
    bad = list(bad)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{b['where']}: {b['reason']}\n" for b in bad))
    return len(bad)


def write_encoded(path: Path, records: list[dict]) -> int:
    return write_jsonl(path, records)


def target_mask(n_tokens: int, n_prompt: int) -> np.ndarray:
    """Bool [n]: the token is a target (a response token or the EOS), never a prompt token."""
    return np.arange(n_tokens) >= n_prompt


# ----- presets ----------------------------------------------------------------------------------


def _corpus_items(src: Path, split: str) -> list[tuple[str, str, str]]:
    """(where, unit string, transcript) of a prepared corpus' aligned examples of `split`."""
    files = shard_files(src, split, "aligned")
    if not files:
        raise FileNotFoundError(f"{src} has no aligned {split} shards (a prepared corpus, docs/data.md)")
    source = ExampleSource(files)
    items = []
    for i in range(len(source)):
        ex = source[i]
        words = ex.get("words") or []
        text = " ".join(w[0] for w in words) if words else str(ex.get("text") or "")
        items.append((source.describe(i), units_to_string(hubert=ex.get("hubert")), text))
    return items


def _manifest_items(src: Path) -> list[tuple[str, str, str]]:
    """(where, audio path, transcript) of a manifest (prepare/align layout: {"audio", "text"} a line)."""
    items = []
    for where, e in iter_jsonl(src, "manifest"):
        audio, text = e.get("audio"), e.get("text")
        if not isinstance(audio, str) or not isinstance(text, str):
            continue
        path = Path(audio)
        items.append((where, str(path if path.is_absolute() else (src.parent / path).absolute()), text))
    return items


def preset_examples(preset: str, src: str | Path, split: str = "train", instruction: str = "") -> list[dict]:
    """Prompt -> response examples from what users have: a prepared corpus (its aligned examples) or
    a manifest of {"audio", "text"} lines.

    asr: speech -> its transcript; tts: text -> its speech; continuation: the first half of the words
    -> the rest (text) and the first half of the units -> the rest (speech, corpus only).
    `instruction`: a text segment put before the input (e.g. "Transcribe:")."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {PRESETS}")
    src = Path(src)
    corpus = src.is_dir()
    items = _corpus_items(src, split) if corpus else _manifest_items(src)
    speech_key = "units" if corpus else "audio"
    lead = [{"text": instruction}] if instruction else []
    out = []
    for _, speech, text in items:
        if not text.strip():
            continue
        if preset == "asr":
            out.append({"prompt": lead + [{speech_key: speech}], "response": [{"text": text}]})
        elif preset == "tts":
            out.append({"prompt": lead + [{"text": text}], "response": [{speech_key: speech}]})
        else:
            words = text.split()
            if len(words) >= 2:
                h = len(words) // 2
                out.append({"prompt": [{"text": " ".join(words[:h])}], "response": [{"text": " ".join(words[h:])}]})
            if corpus:
                toks = speech.split("]")[:-1]
                if len(toks) >= 2:
                    h = len(toks) // 2
                    first, rest = "]".join(toks[:h]) + "]", "]".join(toks[h:]) + "]"
                    out.append({"prompt": [{"units": first}], "response": [{"units": rest}]})
    return out
