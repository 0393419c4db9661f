"""Audio in: a file (anything soundfile or librosa reads), bytes, a file object or an array -> mono
float32 at 16 kHz, and the reference's chunking of long audio.

Conventions (see docs/tokens.md, "Audio"):
- Resampling is librosa's soxr_hq; the output has ceil(n * 16000 / sr) samples, the length the
  reference's torchaudio resampling gives (the samples themselves differ slightly: another filter).
- Stereo (any number of channels) is averaged, as the reference, unless `channel` picks one.
- Arrays are [N], [channels, N] or [N, channels] (the shorter axis is the channel axis, at most
  MAX_CHANNELS of them). Float arrays are taken as they are; integer PCM is scaled to [-1, 1).
  `input_sample_rate` gives an array's rate; left out, the array is taken to be at `sample_rate`
  already, as the reference (which never resamples arrays) does.
- Errors are ValueError/FileNotFoundError naming the input: empty audio, NaN/inf samples, an
  unreadable file, a bad channel or sample rate.
- Silence is valid audio: it is returned unchanged and the unit encoders give their units for it, as
  the reference does (it has no silence check). `reject_silent=True` makes silent input a ValueError
  instead, for data preparation that wants to skip it; `is_silent` is the test used.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from spiritlm_jax import paths

SAMPLE_RATE = 16000
MAX_CHUNK_SECONDS = 100
MIN_CHUNK_SAMPLES = 1280  # 80 ms: the shortest chunk the reference encodes (pitch needs 1280 samples)
MAX_CHANNELS = 16
SILENCE_PEAK = 1e-4  # |x| below this everywhere (-80 dBFS) counts as silent

AudioInput = Union[str, os.PathLike, bytes, bytearray, io.IOBase, np.ndarray, list]


def _read_file(src, name: str) -> tuple[np.ndarray, int]:
    """[N, channels] float32 and the sample rate, via soundfile, then librosa's other backends."""
    import soundfile as sf

    try:
        data, sr = sf.read(src, dtype="float32", always_2d=True)
        return data, int(sr)
    except Exception as sf_error:  # noqa: BLE001 - soundfile raises several types
        if not isinstance(src, str):  # bytes / file objects: soundfile is the only decoder
            why = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the data", str(sf_error))  # no memory address
            raise ValueError(f"{name}: cannot read audio ({why})") from None
        try:
            import warnings

            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa warns before trying audioread
                data, sr = librosa.load(src, sr=None, mono=False)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{name}: cannot read audio ({sf_error}; librosa: {type(e).__name__} {e})") from None
        return np.atleast_2d(data).T.astype(np.float32), int(sr)


def _array_to_frames(src, name: str) -> np.ndarray:
    """An array-like -> [N, channels] float32 (integer PCM scaled to [-1, 1))."""
    arr = np.asarray(src)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{name}: expected numeric samples, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: complex samples are not audio")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        half = 2.0 ** (8 * arr.dtype.itemsize - 1)
        arr = (arr.astype(np.float64) - half) / half
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64) / 2.0 ** (8 * arr.dtype.itemsize - 1)
    arr = arr.astype(np.float32)
    if arr.ndim == 1:
        return arr[:, None]
    if arr.ndim == 2:
        n_ch = min(arr.shape)
        if n_ch > MAX_CHANNELS or (arr.shape[0] == arr.shape[1] and arr.size > 1):
            raise ValueError(
                f"{name}: cannot tell the channel axis; give [N], [channels, N] or [N, channels] "
                f"with at most {MAX_CHANNELS} channels (a batch of waveforms is not one audio)"
            )
        return arr.T if arr.shape[0] < arr.shape[1] else arr
    raise ValueError(f"{name}: expected [N], [channels, N] or [N, channels] samples")


def is_silent(wav: np.ndarray, peak: float = SILENCE_PEAK) -> bool:
    """True when every sample's magnitude is below `peak` (default -80 dBFS)."""
    return bool(np.max(np.abs(wav), initial=0.0) < peak)


def load_audio(
    src: AudioInput,
    input_sample_rate: Optional[int] = None,
    channel: Optional[int] = None,
    sample_rate: int = SAMPLE_RATE,
    reject_silent: bool = False,
) -> np.ndarray:
    """Mono float32 [N] at `sample_rate` (16 kHz) from a path, bytes, a file object or an array.

    `input_sample_rate` is the rate of an array input (default: `sample_rate`, i.e. no resampling);
    files and bytes carry their own rate, and a different `input_sample_rate` for them is an error.
    `channel` picks one channel instead of averaging them."""
    is_array = False
    if isinstance(src, (str, os.PathLike)) and paths.is_remote(src):  # gs:// or s3://
        remote = paths.path(src)
        if not remote.is_file():
            raise FileNotFoundError(f"audio file {src} does not exist")
        name = str(src)
        data, sr = _read_file(io.BytesIO(remote.read_bytes()), name)
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"audio file {path} does not exist")
        if not path.is_file():
            raise ValueError(f"audio file {path} is not a file")
        name = str(path)
        data, sr = _read_file(str(path), name)
    elif isinstance(src, (bytes, bytearray, memoryview)):
        name = f"audio bytes ({len(src)} bytes)"
        if len(src) == 0:
            raise ValueError("audio bytes are empty")
        data, sr = _read_file(io.BytesIO(bytes(src)), name)
    elif hasattr(src, "read"):
        name = f"audio file object {getattr(src, 'name', type(src).__name__)}"
        data, sr = _read_file(src, name)
    elif isinstance(src, (np.ndarray, list, tuple)) or hasattr(src, "__array__"):
        name = f"audio array of shape {tuple(np.shape(src))}"
        data, is_array = _array_to_frames(src, name), True
        sr = sample_rate if input_sample_rate is None else input_sample_rate
    else:
        raise ValueError(
            f"unsupported audio input of type {type(src).__name__}; give a path, bytes, a file object or an array"
        )
    if input_sample_rate is not None and not is_array and input_sample_rate != sr:
        raise ValueError(f"{name}: the file is at {sr} Hz but input_sample_rate={input_sample_rate} was given")
    for label, rate in (("input sample rate", sr), ("sample_rate", sample_rate)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"{name}: {label} must be a positive integer (Hz), got {rate!r}")
    sr, sample_rate = int(sr), int(sample_rate)

    if data.shape[0] == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name}: audio contains NaN or inf samples")
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise ValueError(f"{name}: channel {channel} requested but the audio has {data.shape[1]} channel(s)")
        wav = data[:, channel]
    else:
        wav = data.mean(axis=1)
    if reject_silent and is_silent(wav):
        raise ValueError(f"{name}: audio is silent (peak amplitude {np.max(np.abs(wav)):.2g} < {SILENCE_PEAK:g})")
    if sr != sample_rate:
        import librosa

        n_out = -(-len(wav) * sample_rate // sr)  # ceil: torchaudio's output length
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
        wav = np.pad(wav[:n_out], (0, max(0, n_out - len(wav))))
    return np.ascontiguousarray(wav, dtype=np.float32)


def chunk_audio(
    wav: np.ndarray,
    max_seconds: float = MAX_CHUNK_SECONDS,
    min_samples: int = MIN_CHUNK_SAMPLES,
    sample_rate: int = SAMPLE_RATE,
) -> list[np.ndarray]:
    """Consecutive chunks of at most `max_seconds` (100 s); chunks shorter than `min_samples` (1280, i.e.
    80 ms; only the last chunk can be) are dropped, as the reference does. Audio shorter than
    `min_samples` gives [] (no units)."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"chunk_audio expects mono audio [N], got shape {wav.shape}")
    step = int(max_seconds * sample_rate)
    if step <= 0 or min_samples < 0:
        raise ValueError(
            f"max_seconds must give at least one sample per chunk and min_samples be >= 0 "
            f"(got {max_seconds} s at {sample_rate} Hz, min_samples={min_samples})"
        )
    return [wav[i : i + step] for i in range(0, len(wav), step) if len(wav[i : i + step]) >= min_samples]


def encode_chunked(
    audio: AudioInput,
    run: Callable[[list[np.ndarray]], Sequence[Any]],
    empty: Any,
    input_sample_rate: Optional[int] = None,
    channel: Optional[int] = None,
) -> Any:
    """The reference's "chunk the audio, run, concatenate": `audio` loaded (16 kHz mono) and cut by
    `chunk_audio`; `run(chunks)` gives one result per chunk, an array [T_i, ...] or a dict of them
    ({stream: units}); the results are concatenated along time. `empty` is the result when no chunk
    is long enough (an array, or a dict with every key)."""
    return encode_chunked_batch([load_audio(audio, input_sample_rate, channel)], run, empty)[0]


def encode_chunked_batch(
    wavs_16k: Sequence[np.ndarray], run: Callable[[list[np.ndarray]], Sequence[Any]], empty: Any
) -> list[Any]:
    """`encode_chunked` of many 16 kHz waveforms with one `run` call over all their chunks (so a
    batched encoder sees them together); one concatenated result per waveform."""
    chunks = [chunk_audio(w) for w in wavs_16k]
    flat = [c for cs in chunks for c in cs]
    results = list(run(flat)) if flat else []
    out, i = [], 0
    for cs in chunks:
        parts, i = results[i : i + len(cs)], i + len(cs)
        if isinstance(empty, dict):  # streams of the parts (all of them); `empty` when no chunk survived
            out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else dict(empty))
        else:
            out.append(np.concatenate(parts) if parts else empty)
    return out


def pad_batch(rows: Sequence[np.ndarray], length: int, dtype=np.float32) -> np.ndarray:
    """1-D rows zero-padded into one [len(rows), length] array (length >= the longest row)."""
    out = np.zeros((len(rows), length), dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
