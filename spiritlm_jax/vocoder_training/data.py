"""Vocoder training data: recordings paired with their units, and random aligned segments.

- `load_utterances(manifests, tokenizer)`: every manifest entry ({"audio": path, "speaker"?: name,
  "style"?: name}, the format `prepare` reads) is loaded at 16 kHz and tokenized once with the speech
  tokenizer that made the corpus' units (`data.tokenizer`, the spec `prepare` takes), so unit frame i
  belongs to samples [hop*i, hop*(i+1)) (the 25 Hz frame convention, speech/features.py). Pitch and
  style streams (EXPRESSIVE tokenizers) are brought to the unit rate as the vocoder does.
- `SegmentSampler.batch(step)`: `batch_size` segments of `segment_frames` frames, drawn from
  np.random.default_rng((seed, step)): an utterance uniformly, then a start frame uniformly. A batch
  is a function of the step alone, so the iterator's state is the step (exact resume).
  Each segment carries its units, the audio under them, speaker/style ids, and the deduplicated units
  with their run lengths (the duration predictor's targets).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.config import ConfigError
from spiritlm_jax.data.prepare.encode import encode_batch, load_speech_tokenizer
from spiritlm_jax.data.prepare.manifest import read_manifest
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hifigan import HifiGanConfig, upsample_stream


@dataclasses.dataclass
class Utterance:
    name: str
    audio: np.ndarray  # float32 [N] at 16 kHz
    units: dict  # "hubert" [T] (+ "pitch", "style" [T] at the unit rate when the model uses them)
    speaker: int = 0
    style: int = 0

    @property
    def frames(self) -> int:
        return len(self.units["hubert"])


def _names(entries: list[dict], key: str) -> list[str]:
    return sorted({str(e[key]) for e in entries if e.get(key) is not None})


def read_entries(manifests: Sequence[str]) -> list[dict]:
    entries = []
    for m in manifests:
        path = Path(m)
        if not path.is_file():
            raise ConfigError(f"data.manifest: {path} does not exist")
        good, bad = read_manifest(path)
        for b in bad:
            print(f"warning: skipped {b['entry']}: {b['reason']}", file=sys.stderr)
        entries.extend(good)
    return entries


def load_utterances(
    entries: list[dict],
    tokenizer,
    cfg: HifiGanConfig,
    speakers: Optional[list[str]] = None,
    styles: Optional[list[str]] = None,
    batch: int = 16,
) -> list[Utterance]:
    """Audio + units for every entry (module docstring); entries that give no units are skipped."""
    out = []
    for i in range(0, len(entries), batch):
        part = entries[i : i + batch]
        wavs = [load_audio(e["audio"]) for e in part]
        for e, wav, units in zip(part, wavs, encode_batch(tokenizer, wavs)):
            hub = np.asarray(units.get("hubert", []), np.int64)
            t = min(len(hub), len(wav) // cfg.hop)
            if t == 0:
                print(f"warning: {e['audio']} gives no units; skipped", file=sys.stderr)
                continue
            if hub.size and hub.max() >= cfg.num_embeddings:
                raise ConfigError(f"{e['audio']}: unit {int(hub.max())} but model.num_embeddings={cfg.num_embeddings}")
            streams = {"hubert": hub[:t]}
            for key, n, rate in (
                ("pitch", cfg.num_f0_tokens, cfg.hubert_to_f0),
                ("style", cfg.num_style_tokens, cfg.hubert_to_style),
            ):
                if n:
                    if units.get(key) is None:
                        raise ConfigError(f"the model has {key} units but the tokenizer gives none")
                    s = np.asarray(units[key], np.int64)
                    streams[key] = s[:t] if len(s) >= len(hub) else upsample_stream(s, len(hub), rate)[:t]
            spk = speakers.index(str(e["speaker"])) if speakers and e.get("speaker") is not None else 0
            sty = styles.index(str(e["style"])) if styles and e.get("style") is not None else 0
            out.append(
                Utterance(str(e.get("id", e["audio"])), wav[: t * cfg.hop].astype(np.float32), streams, spk, sty)
            )
    return out


def dedup_runs(units_bt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the deduplicated units, their run lengths and a validity mask, padded to the row length."""
    b, t = units_bt.shape
    uniq = np.zeros((b, t), np.int32)
    dur = np.zeros((b, t), np.int32)
    mask = np.zeros((b, t), bool)
    for r in range(b):
        row = units_bt[r]
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        n = len(starts)
        uniq[r, :n] = row[starts]
        dur[r, :n] = np.diff(np.r_[starts, t])
        mask[r, :n] = True
    return uniq, dur, mask


class SegmentSampler:
    """Random aligned segments (module docstring); `batch(step)` depends only on (seed, step)."""

    def __init__(self, utts: list[Utterance], cfg: HifiGanConfig, segment_frames: int, batch_size: int, seed: int):
        self.utts = [u for u in utts if u.frames >= segment_frames]
        if not self.utts:
            raise ConfigError(f"no recording has data.segment_frames={segment_frames} unit frames")
        self.cfg, self.n, self.batch_size, self.seed = cfg, segment_frames, batch_size, seed

    def batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, step))
        n, hop = self.n, self.cfg.hop
        picks = rng.integers(0, len(self.utts), self.batch_size)
        starts = [int(rng.integers(0, self.utts[i].frames - n + 1)) for i in picks]
        out = {k: [] for k in ("units", "pitch", "style", "audio", "speaker", "gstyle")}
        for i, s in zip(picks, starts):
            u = self.utts[i]
            out["units"].append(u.units["hubert"][s : s + n])
            out["pitch"].append(u.units["pitch"][s : s + n] if "pitch" in u.units else np.zeros(n, np.int64))
            out["style"].append(u.units["style"][s : s + n] if "style" in u.units else np.zeros(n, np.int64))
            out["audio"].append(u.audio[s * hop : (s + n) * hop])
            out["speaker"].append(u.speaker)
            out["gstyle"].append(u.style)
        b = {k: np.asarray(v, np.float32 if k == "audio" else np.int32) for k, v in out.items()}
        b["uniq"], b["dur"], b["dur_mask"] = dedup_runs(b["units"])
        return b


def speaker_and_style_lists(entries: list[dict], cfg: HifiGanConfig) -> tuple[Optional[list[str]], Optional[list[str]]]:
    """Speaker / style names of the manifests (sorted) when the model has those embeddings (checked against
    the embedding sizes)."""
    speakers = _names(entries, "speaker") if cfg.multispkr else None
    styles = _names(entries, "style") if cfg.multistyle else None
    for what, names, n in (("speaker", speakers, cfg.num_speakers), ("style", styles, cfg.num_styles)):
        if names is not None and len(names) > n:
            raise ConfigError(f"the manifests name {len(names)} {what}s but model.num_{what}s={n}")
    return speakers or None, styles or None


def make_tokenizer(spec: str):
    try:
        return load_speech_tokenizer(spec)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.tokenizer: {e}") from None
