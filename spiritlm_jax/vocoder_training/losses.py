"""The HiFi-GAN / speech-resynthesis losses, in JAX.

- `mel_spectrogram`: reflect-pad (n_fft - hop) / 2 on both sides, frames of `win` samples every `hop`
  (periodic Hann window, zero-padded to n_fft, no centring), |STFT| = sqrt(re^2 + im^2 + 1e-9), slaney
  mel filters (librosa), log(max(x, 1e-5)).
- `mel_loss`: mean |log-mel(real) - log-mel(generated)| (weighted x45 by the trainer).
- `discriminator_loss`: sum over sub-discriminators of mean (1 - D(real))^2 + mean D(fake)^2 (LSGAN).
- `generator_adversarial_loss`: sum of mean (1 - D(fake))^2.
- `feature_matching_loss`: sum over sub-discriminators and layers of mean |fmap_real - fmap_fake|
  (the trainer weights it x2, as the published `feature_loss`).
- `frame_log_mel` / `unit_feature_loss` (optional, `loss.unit_features`): mean |difference| of the
  log-mel power the log-mel / MFCC k-means tokenizers quantize (speech/features.py: frames
  [640 i, 640 i + 720), periodic Hann, |STFT|^2, slaney mel filters, log(x + 1e-6), before the
  per-utterance CMVN), so the resynthesis keeps the envelopes its units were cut from.
- `unit_consistency_loss` (optional, `loss.unit_consistency`): cross-entropy of the k-means
  tokenizer's soft assignment (softmax over units of minus the squared distance of each
  CMVN-normalised generated frame to the centroids) against the units the frames were made from: it
  asks that the resynthesis re-tokenizes to its own units; its argmax is the tokenizer's assignment.
- `duration_loss`: MSE between the predictor's log-duration and log(1 + run length) of the
  deduplicated units, over the valid runs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] slaney mel filters (librosa.filters.mel, transposed)."""
    import librosa

    return np.ascontiguousarray(
        librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T.astype(np.float32)
    )


def hann_periodic(n: int) -> np.ndarray:
    """torch.hann_window(n) (periodic)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def mel_spectrogram(audio_bt, sr: int, n_fft: int, hop: int, win: int, n_mels: int, fmin: float = 0.0, fmax=None):
    """[B, T] audio -> [B, frames, n_mels] log-mel (module docstring)."""
    p = (n_fft - hop) // 2
    x = jnp.pad(audio_bt, ((0, 0), (p, p)), mode="reflect")
    n = (x.shape[1] - n_fft) // hop + 1
    idx = np.arange(n)[:, None] * hop + np.arange(n_fft)[None]
    window = np.zeros(n_fft, np.float32)
    off = (n_fft - win) // 2  # torch.stft centres a shorter window inside n_fft
    window[off : off + win] = hann_periodic(win)
    frames = x[:, idx] * window
    spec = jnp.fft.rfft(frames, axis=-1)
    mag = jnp.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    mel = mag @ mel_basis(sr, n_fft, n_mels, float(fmin), fmax)
    return jnp.log(jnp.maximum(mel, 1e-5))


def frame_log_mel(audio_bt, sr: int, n_fft: int, hop: int, n_mels: int, fmin: float = 0.0, fmax=None):
    """[B, T] audio -> [B, (T - n_fft) // hop + 1, n_mels] log mel power on the tokenizer's frame grid
    (librosa.feature.melspectrogram(center=False, power=2), then log(x + 1e-6))."""
    n = (audio_bt.shape[1] - n_fft) // hop + 1
    idx = np.arange(n)[:, None] * hop + np.arange(n_fft)[None]
    spec = jnp.fft.rfft(audio_bt[:, idx] * hann_periodic(n_fft), axis=-1)
    power = spec.real**2 + spec.imag**2
    return jnp.log(power @ mel_basis(sr, n_fft, n_mels, float(fmin), fmax) + 1e-6)


def unit_consistency_loss(feats_btd, centroids_kd, units_bt):
    """(mean cross-entropy, fraction of frames whose nearest centroid is their unit)."""
    c = jnp.asarray(centroids_kd, jnp.float32)
    d2_btk = jnp.sum(feats_btd**2, -1, keepdims=True) - 2.0 * feats_btd @ c.T + jnp.sum(c**2, -1)
    logp_btk = jax.nn.log_softmax(-d2_btk, axis=-1)
    ce = -jnp.mean(jnp.take_along_axis(logp_btk, units_bt[..., None], axis=-1))
    acc = jnp.mean((jnp.argmin(d2_btk, -1) == units_bt).astype(jnp.float32))
    return ce, acc


def mel_loss(mel_real, mel_fake):
    return jnp.mean(jnp.abs(mel_real - mel_fake))


def discriminator_loss(real_scores, fake_scores):
    return sum(jnp.mean((1.0 - r) ** 2) + jnp.mean(g**2) for r, g in zip(real_scores, fake_scores))


def generator_adversarial_loss(fake_scores):
    return sum(jnp.mean((1.0 - g) ** 2) for g in fake_scores)


def feature_matching_loss(real_fmaps, fake_fmaps):
    return sum(jnp.mean(jnp.abs(r - g)) for dr, dg in zip(real_fmaps, fake_fmaps) for r, g in zip(dr, dg))


def duration_loss(log_dur_pred_bt, dur_bt, mask_bt):
    """MSE on log(1 + d) over the valid runs (mask), as the reference's `F.mse_loss(..., "mean")` on them."""
    target = jnp.log(dur_bt.astype(jnp.float32) + 1.0)
    m = mask_bt.astype(jnp.float32)
    return jnp.sum(m * (log_dur_pred_bt - target) ** 2) / jnp.maximum(jnp.sum(m), 1.0)
