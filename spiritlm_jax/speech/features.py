"""Frame features at the HuBERT unit rate (25 Hz: hop 640 at 16 kHz) with librosa: log-mel or MFCC.

These are what the k-means unit quantizer clusters when no converted HuBERT checkpoint is at hand
(the demo corpus' units). The feature extractors share one small interface (`FrameFeatures`) with
the HuBERT layer features, so the k-means trainer and the unit tokenizers do not care which is used.

Length convention (the same frames as the 25 Hz HuBERT stack). The mHuBERT-25Hz conv feature
extractor (kernels/strides (10,5) (3,2)x4 (2,2)x2 (2,2), no padding) has a receptive field of 720
samples and a stride of 640, so N samples give `num_frames(N) = (N - 720) // 640 + 1` frames (0 when
N < 720); frame i sees samples [640 i, 640 i + 720). Our frame i is computed from exactly that window
(an uncentred 720-sample Hann window and FFT, librosa `center=False`), so unit i of a mel-based tokenizer and
unit i of a HuBERT-based one describe the same stretch of audio and the same frame times (i / 25 s).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import numpy as np

from spiritlm_jax.speech.tokenizer import SpeechTokenizer

SAMPLE_RATE = 16000
HOP = 640  # samples per 25 Hz frame
WINDOW = 720  # receptive field of the 25 Hz HuBERT conv stack
FEATURE_KINDS = ("log_mel", "mfcc")


def num_frames(n_samples: int) -> int:
    """Frames of the 25 Hz HuBERT conv stack (and of these features) for `n_samples` at 16 kHz."""
    return max(0, (int(n_samples) - WINDOW) // HOP + 1)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Librosa frame features. `kind`: "log_mel" (n_mels log energies) or "mfcc" (n_mfcc cepstra of the
    same mel spectrum, plus deltas when `deltas`). `cmvn`: per-utterance mean/variance normalisation
    (removes channel and level differences, which matters when sources differ, as in the demo); a
    dimension's std is floored at STD_FLOOR so near-constant dims (the empty bands above 4 kHz of
    upsampled telephone audio) stay near 0 instead of becoming unit-variance noise.
    `fmax` None = 8 kHz (Nyquist)."""

    kind: str = "log_mel"
    n_mels: int = 40
    n_mfcc: int = 13
    deltas: bool = False
    fmin: float = 0.0
    fmax: Optional[float] = None
    cmvn: bool = True

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind {self.kind!r} is not one of {FEATURE_KINDS}")
        if self.n_mels < 1 or self.n_mfcc < 1 or (self.kind == "mfcc" and self.n_mfcc > self.n_mels):
            raise ValueError(
                f"need n_mels >= 1 and 1 <= n_mfcc <= n_mels, got n_mels={self.n_mels}, n_mfcc={self.n_mfcc}"
            )
        hi = self.fmax if self.fmax is not None else SAMPLE_RATE / 2
        if not 0 <= self.fmin < hi <= SAMPLE_RATE / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= {SAMPLE_RATE // 2} Hz, got fmin={self.fmin}, fmax={self.fmax}")

    @property
    def dim(self) -> int:
        if self.kind == "log_mel":
            return self.n_mels
        return self.n_mfcc * (3 if self.deltas else 1)

    def to_dict(self) -> dict:
        fields = [f.name for f in dataclasses.fields(self) if f.name != "kind"]
        return {"type": self.kind, **{name: getattr(self, name) for name in fields}}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = dict(d)
        kind = d.pop("type", d.pop("kind", "log_mel"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown feature parameters {sorted(unknown)} (known: {sorted(known)})")
        return cls(kind=kind, **d)


def _check_wav(wav) -> np.ndarray:
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono 16 kHz audio of shape [N], got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
        raise ValueError("audio contains NaN or inf samples")
    return wav


STD_FLOOR = 0.1  # dims varying less than this (e.g. empty mel bands of 8 kHz audio) are not blown up to unit variance


def _cmvn(feats_td: np.ndarray) -> np.ndarray:
    f = feats_td.astype(np.float64)
    return (f - f.mean(0)) / np.maximum(f.std(0), STD_FLOOR)


def mel_power(wav: np.ndarray, n_mels: int = 40, fmin: float = 0.0, fmax: Optional[float] = None) -> np.ndarray:
    """[N] audio at 16 kHz -> [num_frames(N), n_mels] mel power spectrum on the HuBERT frame grid."""
    import librosa

    wav = _check_wav(wav)
    t = num_frames(len(wav))
    if t == 0:
        return np.zeros((0, n_mels), np.float32)
    mel_mt = librosa.feature.melspectrogram(
        y=wav,
        sr=SAMPLE_RATE,
        n_fft=WINDOW,
        hop_length=HOP,
        window="hann",
        center=False,
        power=2.0,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
    )
    return np.ascontiguousarray(mel_mt.T, dtype=np.float32)  # librosa's frames: [640 i, 640 i + 720), t of them


def log_mel(
    wav: np.ndarray, n_mels: int = 40, cmvn: bool = True, fmin: float = 0.0, fmax: Optional[float] = None
) -> np.ndarray:
    """[N] float audio at 16 kHz -> [num_frames(N), n_mels] float32 log-mel features."""
    feats = np.log(mel_power(wav, n_mels, fmin, fmax) + 1e-6)
    return _cmvn(feats).astype(np.float32) if cmvn and len(feats) else feats.astype(np.float32)


def mfcc(
    wav: np.ndarray,
    n_mfcc: int = 13,
    n_mels: int = 40,
    deltas: bool = False,
    cmvn: bool = True,
    fmin: float = 0.0,
    fmax: Optional[float] = None,
) -> np.ndarray:
    """[N] float audio at 16 kHz -> [num_frames(N), n_mfcc (x3 with deltas)] float32 MFCCs (DCT-II of
    the log-mel energies, orthonormal), on the same frame grid as `log_mel`."""
    import librosa

    logmel_td = np.log(mel_power(wav, n_mels, fmin, fmax) + 1e-6)
    if len(logmel_td) == 0:
        return np.zeros((0, n_mfcc * (3 if deltas else 1)), np.float32)
    cep_td = librosa.feature.mfcc(S=logmel_td.T, n_mfcc=n_mfcc, dct_type=2, norm="ortho").T
    if deltas:
        width = min(9, len(cep_td) - (1 - len(cep_td) % 2))  # librosa needs an odd width <= T
        if width >= 3:
            d1 = librosa.feature.delta(cep_td.T, width=width).T
            d2 = librosa.feature.delta(cep_td.T, width=width, order=2).T
        else:  # too short for deltas: zeros
            d1 = d2 = np.zeros_like(cep_td)
        cep_td = np.concatenate([cep_td, d1, d2], axis=1)
    return (_cmvn(cep_td) if cmvn else cep_td).astype(np.float32)


class FrameFeatures(Protocol):
    """What the k-means trainer and the unit tokenizers need from a feature extractor.

    `__call__(wav_16k [N]) -> [num_frames(N), dim]` float32 frames at 25 Hz; `name` ("log_mel",
    "mfcc", "hubert"); `dim`; `params()` a JSON-able dict recorded next to the centroids so the same
    features can be rebuilt (`quantizer.json`)."""

    name: str
    dim: int
    frame_rate_hz: float  # frames per second at 16 kHz (25 for the Spirit LM HuBERT stream)

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict: ...


class LibrosaFeatures:
    """Log-mel or MFCC frames (FeatureConfig) behind the FrameFeatures interface."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        self.config = config
        self.name = config.kind
        self.dim = config.dim
        self.frame_rate_hz = 16000 / HOP

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray:
        c = self.config
        if c.kind == "log_mel":
            return log_mel(wav_16k, c.n_mels, c.cmvn, c.fmin, c.fmax)
        return mfcc(wav_16k, c.n_mfcc, c.n_mels, c.deltas, c.cmvn, c.fmin, c.fmax)

    def params(self) -> dict:
        return self.config.to_dict()


class HubertLayerFeatures:
    """Output features of a converted HuBERT checkpoint (spiritlm_jax.speech.tokenizer.SpeechTokenizer
    directory) behind the FrameFeatures interface: layer `layer` (default: the checkpoint's
    output_layer, 11 for Spirit LM)."""

    def __init__(self, checkpoint_dir: str, layer: Optional[int] = None):
        tok = SpeechTokenizer.load(checkpoint_dir, expressive=False)
        if layer is not None and layer != tok.cfg.output_layer:
            tok = SpeechTokenizer(tok.params, dataclasses.replace(tok.cfg, output_layer=int(layer)), tok.qcfg)
        self._tok = tok
        self.checkpoint_dir, self.layer = str(checkpoint_dir), int(tok.cfg.output_layer)
        self.name = "hubert"
        self.dim = int(tok.cfg.hidden)
        self.frame_rate_hz = 16000 / tok.cfg.hop  # measured from the checkpoint's conv stack (50 Hz: 320)

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray:
        return np.asarray(self._tok.features(_check_wav(wav_16k)), np.float32)

    def params(self) -> dict:
        return {"type": "hubert", "checkpoint": self.checkpoint_dir, "layer": self.layer}


def feature_extractor(params: dict) -> FrameFeatures:
    """The FrameFeatures described by `params` (a FeatureConfig dict or {"type": "hubert", ...})."""
    params = dict(params)
    if params.get("type") == "hubert":
        return HubertLayerFeatures(params["checkpoint"], params.get("layer"))
    return LibrosaFeatures(FeatureConfig.from_dict(params))
