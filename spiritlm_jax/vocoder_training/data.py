"""Vocoder training data: recordings paired with their units, and random aligned segments.

- Entries (one per recording: {"audio": path, "speaker"?: name, "style"?: name, "_units"?: streams}):
  `read_entries(manifests)` reads manifests ({"audio", "speaker"?, "style"?}, the format `prepare`
  reads: no units, they are computed here); `read_corpus(corpora, split)` reads the speech and
  aligned examples of prepared corpora (their `audio` path, `speaker` / `style_name` names and
  their unit streams, which are used as they are: they are the corpus' units).
- `load_utterances(entries, tokenizer)`: every entry's audio at 16 kHz with its units: the stored
  ones (checked against the audio's frame count) or, for manifest entries, those of one run of the
  speech tokenizer that made the corpus' units (`data.tokenizer`, the spec `prepare` takes), so unit
  frame i belongs to samples [hop*i, hop*(i+1)) (the 25 Hz frame convention, speech/features.py).
  Pitch and style streams (EXPRESSIVE tokenizers) are brought to the unit rate as the vocoder does.
  A missing or unreadable recording is skipped with a warning (none left: an error).
- `SegmentSampler.batch(step)`: `batch_size` segments of `segment_frames` frames, drawn from
  np.random.default_rng((seed, step)): an utterance uniformly, then a start frame uniformly. A batch
  is a function of the step alone, so the iterator's state is the step (exact resume).
  Each segment carries its units, the audio under them, speaker/style ids, and the deduplicated units
  with their run lengths (the duration predictor's targets).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.config import ConfigError
from spiritlm_jax.data.prepare.encode import EXAMPLE_LABELS, check_wav_complete, encode_batch, load_speech_tokenizer
from spiritlm_jax.data.prepare.manifest import read_manifest
from spiritlm_jax.data.sources import ExampleSource, shard_files
from spiritlm_jax.speech.audio import chunk_audio, load_audio
from spiritlm_jax.speech.features import STD_FLOOR, mel_power, num_frames
from spiritlm_jax.speech.hifigan import HifiGanConfig, upsample_stream


@dataclasses.dataclass
class Utterance:
    name: str
    audio: np.ndarray  # float32 [N] at 16 kHz
    units: dict  # "hubert" [T] (+ "pitch", "style" [T] at the unit rate when the model uses them)
    speaker: int = 0
    style: int = 0
    feat_stats: Optional[np.ndarray] = None  # [2, n_mels] the tokenizer's CMVN mean, std of this recording

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


def _corpus_files(corpus: str, split: str) -> list:
    """Speech + aligned shards of a prepared corpus: `split` "train" (the layout prepare writes, or
    train/), or "eval": its eval/ split when it has one, else the corpus as prepared."""
    files = [f for kind in ("speech", "aligned") for f in shard_files(corpus, split, kind)]
    return files if files or split == "train" else _corpus_files(corpus, "train")


def _corpus_entry(ex: dict, where: str) -> dict:
    """A prepared example as an entry: its audio path, names and unit streams."""
    if not isinstance(ex.get("audio"), str) or not ex["audio"]:
        raise ConfigError(
            f"{where} has no 'audio' path: the corpus was prepared before `prepare` kept the audio paths. "
            "Prepare it again into a new --out directory (a rerun into the same one keeps its finished shards), "
            "or give its recordings as data.manifest"
        )
    e = {"audio": ex["audio"], "id": str(ex.get("id", ex["audio"])), "_entry": where}
    e["_units"] = {k: ex[k] for k in ("hubert", "pitch", "style") if ex.get(k) is not None}
    e.update({key: ex[field] for key, field in EXAMPLE_LABELS.items() if ex.get(field) is not None})
    return e


def read_corpus(corpora: Sequence[str], split: str = "train") -> list[dict]:
    """The speech and aligned examples of prepared corpora as entries, with their units (`_corpus_files`)."""
    entries = []
    key = "data.corpus" if split == "train" else "data.eval_corpus"
    for c in corpora:
        files = _corpus_files(c, split) if Path(c).is_dir() else None
        if not files:
            what = "does not exist" if files is None else "holds no speech or aligned shards"
            raise ConfigError(f"{key}: {c} {what} (a directory written by python -m spiritlm_jax.prepare)")
        try:
            src = ExampleSource(files)
            for i in range(len(src)):
                ex = src[i]
                entries.append(_corpus_entry(ex, f"corpus {c}, example {ex.get('id', src.describe(i))!r}"))
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"{key}: {e}") from None
    return entries


def warn_other_tokenizer(corpora: Sequence[str], spec: str) -> None:
    """Manifest units (made by `spec`) beside a corpus' units: a warning when its corpus.json names
    another tokenizer (the two would be different unit spaces)."""
    for c in corpora:
        f = Path(c) / "corpus.json"
        made_by = json.loads(f.read_text()).get("units", {}).get("tokenizer") if f.is_file() else None
        if made_by is not None and made_by != spec:
            print(f"warning: {c} was prepared with tokenizer {made_by!r}, data.tokenizer is {spec!r}", file=sys.stderr)


def _check_frames(e: dict, wav: np.ndarray) -> None:
    """Stored units must be those of this audio: the frames `prepare` gives it (chunks of <= 100 s,
    speech/features.num_frames each), within one frame."""
    want = sum(num_frames(len(c)) for c in chunk_audio(wav))
    got = len(e["_units"].get("hubert", ()))
    if abs(got - want) > 1:
        raise ConfigError(
            f"{e['_entry']}: {got} unit frames but its audio {e['audio']} ({len(wav)} samples) gives {want}: "
            "the recording changed since the corpus was prepared, or is another file; prepare the corpus again"
        )


def _read_audio(e: dict) -> Optional[np.ndarray]:
    """The entry's 16 kHz audio, or None (with a warning) when the file is missing or unreadable."""
    try:
        check_wav_complete(e["audio"])
        return load_audio(e["audio"])
    except (ValueError, OSError, EOFError, RuntimeError) as err:
        print(f"warning: {e.get('_entry', e['audio'])}: skipped: {err}", file=sys.stderr)
        return None


def _utterance(e: dict, wav: np.ndarray, units: dict, cfg: HifiGanConfig, speakers, styles) -> Optional[Utterance]:
    """Audio + units of one entry, trimmed to the frames both have; None when there are none."""
    where = e.get("_entry", e["audio"])
    hub = np.asarray(units.get("hubert", []), np.int64)
    t = min(len(hub), len(wav) // cfg.hop)
    if t == 0:
        print(f"warning: {where} gives no units; skipped", file=sys.stderr)
        return None
    if hub.max() >= cfg.num_embeddings or hub.min() < 0:
        bad = int(hub.max() if hub.max() >= cfg.num_embeddings else hub.min())
        raise ConfigError(f"{where}: unit {bad} but model.num_embeddings={cfg.num_embeddings}")
    streams = {"hubert": hub[:t]}
    for key, n, rate in (
        ("pitch", cfg.num_f0_tokens, cfg.hubert_to_f0),
        ("style", cfg.num_style_tokens, cfg.hubert_to_style),
    ):
        if n:
            if units.get(key) is None:
                src = "the corpus" if "_units" in e else "the tokenizer"
                raise ConfigError(f"{where}: the model has {key} units but {src} gives none")
            s = np.asarray(units[key], np.int64)
            try:
                streams[key] = s[:t] if len(s) >= len(hub) else upsample_stream(s, len(hub), rate)[:t]
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
    spk = speakers.index(str(e["speaker"])) if speakers and e.get("speaker") is not None else 0
    sty = styles.index(str(e["style"])) if styles and e.get("style") is not None else 0
    return Utterance(str(e.get("id", e["audio"])), wav[: t * cfg.hop].astype(np.float32), streams, spk, sty)


def load_utterances(
    entries: list[dict],
    tokenizer,
    cfg: HifiGanConfig,
    speakers: Optional[list[str]] = None,
    styles: Optional[list[str]] = None,
    batch: int = 16,
) -> list[Utterance]:
    """Audio + units for every entry, in order (module docstring): an entry's own `_units` (a prepared
    corpus'), else the tokenizer's (`batch` recordings per call; `tokenizer` may be None when every
    entry has units). Entries without audio or units are skipped; none left is an error."""
    out, missing = [], 0
    for i in range(0, len(entries), batch):
        part = [(e, wav) for e in entries[i : i + batch] for wav in [_read_audio(e)] if wav is not None]
        missing += min(batch, len(entries) - i) - len(part)
        todo = [wav for e, wav in part if "_units" not in e]
        computed = iter(encode_batch(tokenizer, todo) if todo else [])
        for e, wav in part:
            if "_units" in e:
                _check_frames(e, wav)
            u = _utterance(e, wav, e["_units"] if "_units" in e else next(computed), cfg, speakers, styles)
            if u is not None:
                out.append(u)
    if missing:
        print(f"warning: {missing} of {len(entries)} recordings skipped (missing or unreadable audio)", file=sys.stderr)
    if entries and not out:
        raise ConfigError(f"none of the {len(entries)} recordings could be used (warnings above)")
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
        if self.utts[0].feat_stats is not None:  # loss.unit_consistency: each segment's recording's CMVN
            stats = np.stack([self.utts[i].feat_stats for i in picks]).astype(np.float32)
            b["feat_mean"], b["feat_std"] = stats[:, 0], stats[:, 1]
        return b


def feature_stats(audio: np.ndarray, n_mels: int, fmin: float, fmax, cmvn: bool = True) -> np.ndarray:
    """[2, n_mels]: the per-band mean and (floored) std the log-mel tokenizer's CMVN uses for this
    recording (speech/features.py); (0, 1) without CMVN."""
    if not cmvn:
        return np.stack([np.zeros(n_mels), np.ones(n_mels)]).astype(np.float32)
    f = np.log(mel_power(audio, n_mels, fmin, fmax) + 1e-6).astype(np.float64)
    return np.stack([f.mean(0), np.maximum(f.std(0), STD_FLOOR)]).astype(np.float32)


def speaker_and_style_lists(entries: list[dict], cfg: HifiGanConfig) -> tuple[Optional[list[str]], Optional[list[str]]]:
    """Speaker / style names of the entries (manifests and corpora; sorted) when the model has those
    embeddings (checked against the embedding sizes)."""
    speakers = _names(entries, "speaker") if cfg.multispkr else None
    styles = _names(entries, "style") if cfg.multistyle else None
    for what, names, n in (("speaker", speakers, cfg.num_speakers), ("style", styles, cfg.num_styles)):
        if names is not None and len(names) > n:
            raise ConfigError(f"the recordings name {len(names)} {what}s but model.num_{what}s={n}")
    return speakers or None, styles or None


def make_tokenizer(spec: str):
    try:
        return load_speech_tokenizer(spec)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.tokenizer: {e}") from None
