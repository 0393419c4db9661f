"""Audio in: any file soundfile/librosa reads, bytes, or arrays -> mono float32 at 16 kHz.

Errors are ValueError/FileNotFoundError naming the input. Silent input is not an error: it is valid
audio, and its units are whatever the encoder gives for silence. Chunking follows the reference:
at most 100 s per chunk, chunks under 1280 samples (80 ms) are dropped.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

SAMPLE_RATE = 16000
MAX_CHUNK_SECONDS = 100
MIN_CHUNK_SAMPLES = 1280

AudioInput = Union[str, os.PathLike, bytes, np.ndarray]


def _read(src, name: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(src, dtype="float32", always_2d=True)
        return data, sr
    except Exception as sf_error:  # soundfile cannot read it: try librosa's other backends
        if isinstance(src, io.BytesIO):
            raise ValueError(f"{name}: cannot decode audio bytes ({sf_error})") from None
        try:
            import librosa

            data, sr = librosa.load(src, sr=None, mono=False)
            data = np.atleast_2d(data).T.astype(np.float32)
            return data, int(sr)
        except Exception as e:
            raise ValueError(f"{name}: cannot read audio ({e})") from None


def load_audio(src: AudioInput, input_sample_rate: Optional[int] = None, channel: Optional[int] = None,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio at `sample_rate`. Arrays need `input_sample_rate` unless already at 16 kHz
    ([N] or [channels, N] / [N, channels]); stereo is averaged unless `channel` picks one."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"audio file {path} does not exist")
        data, sr = _read(str(path), str(path))
        name = str(path)
    elif isinstance(src, (bytes, bytearray)):
        if not src:
            raise ValueError("audio bytes are empty")
        data, sr = _read(io.BytesIO(bytes(src)), "audio bytes")
        name = "audio bytes"
    elif isinstance(src, np.ndarray) or hasattr(src, "__array__"):
        data = np.asarray(src, np.float32)
        name = f"audio array of shape {data.shape}"
        if data.ndim == 1:
            data = data[:, None]
        elif data.ndim == 2:
            if data.shape[0] < data.shape[1]:
                data = data.T  # [channels, N] -> [N, channels]
        else:
            raise ValueError(f"{name}: expected [N] or [channels, N]")
        sr = int(input_sample_rate) if input_sample_rate else sample_rate
    else:
        raise ValueError(f"unsupported audio input of type {type(src).__name__}; give a path, bytes or an array")

    if data.shape[0] == 0:
        raise ValueError(f"{name}: audio is empty")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name}: audio contains NaN or inf samples")
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise ValueError(f"{name}: channel {channel} requested but the audio has {data.shape[1]} channel(s)")
        wav = data[:, channel]
    else:
        wav = data.mean(axis=1)
    if sr != sample_rate:
        import librosa

        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(wav, dtype=np.float32)


def chunk_audio(wav: np.ndarray, max_seconds: float = MAX_CHUNK_SECONDS, min_samples: int = MIN_CHUNK_SAMPLES,
                sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Consecutive chunks of at most `max_seconds`; chunks shorter than `min_samples` are dropped."""
    step = int(max_seconds * sample_rate)
    return [wav[i:i + step] for i in range(0, len(wav), step) if len(wav[i:i + step]) >= min_samples]
