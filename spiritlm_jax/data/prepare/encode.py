"""The work on one unit, in a worker process or in this one: recordings -> unit streams with a speech
tokenizer -> examples (speech, aligned, text) -> shards, with the unit's statistics and bad files."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from spiritlm_jax import paths
from spiritlm_jax.alignment import align_one, load_aligner
from spiritlm_jax.data.pipeline import DEMO_CORPUS
from spiritlm_jax.data.prepare.config import PrepareConfig
from spiritlm_jax.data.prepare.manifest import audio_stat, check_words
from spiritlm_jax.data.prepare.plan import Unit
from spiritlm_jax.data.prepare.shards import write_shard
from spiritlm_jax.speech.audio import MIN_CHUNK_SAMPLES, SAMPLE_RATE, encode_chunked_batch, load_audio
from spiritlm_jax.speech.kmeans import MelUnitTokenizer
from spiritlm_jax.speech.tokenizer import SpeechTokenizer
from spiritlm_jax.tokens import STREAMS, merge_units

# manifest entry key -> speech/aligned example field of its name (a string): "style" is the example's
# style unit stream, so a manifest's style name is kept as "style_name"
EXAMPLE_LABELS = {"speaker": "speaker", "style": "style_name"}


def load_speech_tokenizer(spec: str):
    """A speech tokenizer from its spec string: "mel:DIR" (k-means quantizer dir; "mel:demo" = the demo
    corpus' log-mel units), "base:DIR" (converted SpeechTokenizer: HuBERT + quantizer), "expressive:DIR"
    (the same directory with fcpe/, f0_vqvae/ and style/: HuBERT + pitch + style units)."""
    kind, _, arg = spec.partition(":")
    if not arg:
        raise ValueError(f"tokenizer {spec!r}: expected KIND:DIR with KIND in mel, base, expressive")
    if paths.is_remote(arg) and arg != "demo":
        arg = str(paths.local_dir(arg))  # loaders read local folders: a cached copy
    if kind == "mel":
        return MelUnitTokenizer(DEMO_CORPUS / "quantizer" if arg == "demo" else arg)
    if kind in ("base", "expressive"):
        tok = SpeechTokenizer.load(arg, expressive=kind == "expressive")
        if getattr(tok, "quantizer", None) is None:
            raise ValueError(f"tokenizer {spec!r}: the converted HuBERT has no quantizer, so it gives no units")
        return tok
    raise ValueError(f"tokenizer {spec!r}: unknown kind {kind!r} (mel, base, expressive)")


def describe_tokenizer(tok, spec: str) -> str:
    d = getattr(tok, "describe", None)
    return d() if callable(d) else spec


def encode_batch(tok, wavs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Unit streams of 16 kHz recordings, chunked as the reference (<= 100 s, chunks under 80 ms
    dropped); all chunks of the batch go through one `encode_units_batch` call when the tokenizer
    has it, else one `encode_units` call per recording."""
    if not hasattr(tok, "encode_units_batch"):
        return [{k: np.asarray(v) for k, v in tok.encode_units(w).items() if v is not None} for w in wavs]
    return encode_chunked_batch(wavs, tok.encode_units_batch, empty={"hubert": np.zeros(0, np.int64)})


def check_wav_complete(path: str) -> None:
    """ValueError naming the file when a RIFF/WAVE file's data chunk is shorter than its header says
    (a truncated copy: libsndfile would read it as a shorter recording without a word)."""
    if not str(path).lower().endswith((".wav", ".wave")):
        return
    try:
        f = paths.path(path).open("rb")
    except OSError:
        return  # load_audio reports a missing or unreadable file
    with f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not RIFF: libsndfile decides
        size = f.seek(0, os.SEEK_END)
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, n = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if cid == b"data":
                if n not in (0, 0xFFFFFFFF) and pos + 8 + n > size:
                    raise ValueError(
                        f"{path}: truncated WAV file: the header declares {n} bytes of audio, "
                        f"the file holds {size - pos - 8}"
                    )
                return
            pos += 8 + n + (n & 1)
        # no data chunk found: libsndfile decides (and names the file)


class UnitWorker:
    """Per-process state: the speech tokenizer and the SentencePiece model (for token counts)."""

    def __init__(self, cfg: PrepareConfig, tokenizer=None):
        self.cfg = cfg
        self.tok = (
            tokenizer
            if tokenizer is not None
            else (load_speech_tokenizer(cfg.tokenizer) if cfg.manifest or cfg.audio_dir else None)
        )
        sp = cfg.sp_model
        self.sp = spm.SentencePieceProcessor(model_proto=paths.path(sp).read_bytes()) if sp else None
        self.aligner = load_aligner(cfg.align) if cfg.align and self.tok is not None else None
        self.current = ""  # the input being worked on (named when a unit fails)

    def text_tokens(self, text: str) -> int:
        return len(self.sp.encode(text)) if self.sp is not None else 0

    def run(self, unit: Unit, out: Path) -> dict:
        t0 = time.perf_counter()
        self.current = str(unit.items[0][0] if unit.name.startswith("text-") else unit.items[0]["_entry"])
        if unit.name.startswith("text-"):
            examples = {"text": [{"kind": "text", "id": i, "text": s} for i, s in unit.items]}
            bad: list[dict] = []
        else:
            audio = {e["audio"]: audio_stat(e["audio"]) for e in unit.items}
            examples, bad = self._audio(unit.items)
        stats = unit_stats(examples, self)
        self.current = f"writing the shards of {unit.name}"
        shards = {}
        for kind, exs in examples.items():
            if exs:
                shards[kind] = str(write_shard(out, kind, unit.name, exs, self.cfg.format).relative_to(out))
        streams = sorted(
            {k for kind in ("speech", "aligned") for ex in examples.get(kind, []) for k in STREAMS if k in ex}
        )
        return {
            "unit": unit.name,
            "shards": shards,
            "stats": stats,
            "bad": bad,
            "streams": streams,
            "units": describe_tokenizer(self.tok, self.cfg.tokenizer) if self.tok is not None else None,
            "seconds": time.perf_counter() - t0,
            "files": len(unit.items),
            **({"audio": audio} if not unit.name.startswith("text-") else {}),
        }

    def _audio(self, entries: list[dict]) -> tuple[dict[str, list], list[dict]]:
        examples: dict[str, list] = {"speech": [], "aligned": [], "text": []}
        bad = []
        for b in range(0, len(entries), self.cfg.batch_size):
            batch, wavs = [], []
            for e in entries[b : b + self.cfg.batch_size]:
                self.current = f"{e['_entry']} ({e['audio']})"
                try:
                    check_wav_complete(e["audio"])
                    wav = load_audio(e["audio"])
                    if len(wav) < MIN_CHUNK_SAMPLES:
                        raise ValueError(
                            f"{e['audio']}: {len(wav)} samples, shorter than one "
                            f"{MIN_CHUNK_SAMPLES}-sample chunk: no units"
                        )
                    if self.aligner is not None and "words" not in e and isinstance(e.get("text"), str) and e["text"]:
                        e = {**e, "words": align_one(self.aligner, wav, e["text"])}  # AlignmentError: a ValueError
                    if "words" in e:
                        reason = check_words(e["words"], len(wav) / SAMPLE_RATE, self.cfg.align_tolerance)
                        if reason:
                            raise ValueError(f"{e['audio']}: {reason}")
                    if "text" in e and not isinstance(e["text"], str):
                        raise ValueError(f"{e['audio']}: 'text' must be a string")
                except (ValueError, OSError, EOFError, RuntimeError, OverflowError) as err:  # never fatal
                    bad.append({"path": e["audio"], "reason": str(err) or type(err).__name__, "entry": e["_entry"]})
                    continue
                batch.append(e)
                wavs.append(wav)
            if batch:
                self.current = f"{batch[0]['_entry']} ({batch[0]['audio']}; tokenizing a batch of {len(batch)})"
            for e, wav, units in zip(batch, wavs, encode_batch(self.tok, wavs) if wavs else []):
                ex: dict[str, Any] = {
                    "kind": "aligned" if "words" in e else "speech",
                    "id": str(e.get("id", e["audio"])),
                    "audio": paths.absolute(e["audio"]),  # where the recording is (vocoder training)
                }
                if "source" in e:
                    ex["source"] = e["source"]
                for key, field in EXAMPLE_LABELS.items():
                    if e.get(key) is not None:
                        ex[field] = str(e[key])
                if "words" in e:
                    ex["text"] = e.get("text") or " ".join(w[0] for w in e["words"])
                    ex["words"] = [[w[0], float(w[1]), float(w[2])] for w in e["words"]]
                for k in STREAMS:
                    if units.get(k) is not None:
                        ex[k] = np.asarray(units[k]).astype(int).tolist()
                ex["_seconds"] = len(wav) / SAMPLE_RATE
                examples[ex["kind"]].append(ex)
                if self.cfg.transcripts_as_text and e.get("text"):
                    examples["text"].append({"kind": "text", "id": ex["id"], "text": e["text"]})
        return examples, bad


def unit_stats(examples: dict[str, list], worker: UnitWorker) -> dict:
    """Per kind: examples, seconds, speech_tokens, text_tokens, words, frames (pops `_seconds`)."""
    s: dict[str, dict] = {}
    for kind, exs in examples.items():
        if not exs:
            continue
        k = s.setdefault(
            kind, {"examples": 0, "seconds": 0.0, "speech_tokens": 0, "text_tokens": 0, "words": 0, "frames": 0}
        )
        for ex in exs:
            k["examples"] += 1
            k["seconds"] += ex.pop("_seconds", 0.0)
            if kind in ("speech", "aligned"):
                k["frames"] += len(ex["hubert"])
                k["speech_tokens"] += len(merge_units(ex.get("hubert"), ex.get("pitch"), ex.get("style")))
            if kind in ("text", "aligned"):
                text = ex["text"] if kind == "text" else " ".join(w[0] for w in ex["words"])
                k["words"] += len(text.split())
                k["text_tokens"] += worker.text_tokens(text)
    return s
