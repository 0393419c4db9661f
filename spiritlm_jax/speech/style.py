"""Style units (EXPRESSIVE): a wav2vec2-base sequence classifier pooled per second (SPEC.md §4.3).

    waveform -> zero-mean / unit-variance normalisation (done here, as wav2vec2-base's feature
    extractor does; nothing is fetched) -> wav2vec2 encoder (the HuBERT-Base architecture, all layers)
    -> projector -> mean over chunks of 50 frames (1 s at 50 Hz; the last chunk may be shorter)
    -> classifier -> argmax: one style unit per second.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.speech.hubert import STANDARD_50HZ, Hubert, HubertConfig


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    encoder: HubertConfig = HubertConfig(conv_layers=STANDARD_50HZ, output_layer=12)
    proj_size: int = 256
    num_labels: int = 100
    pool_size: int = 50


def normalize(wav: np.ndarray) -> np.ndarray:
    """wav2vec2-base input normalisation: (x - mean) / sqrt(var + 1e-7), per utterance."""
    wav = np.asarray(wav, np.float32)
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)


class StyleEncoder(nn.Module):
    """Normalised wav [B, N] + valid samples [B] -> (logits [B, chunks, labels], valid chunks [B])."""

    cfg: StyleConfig

    @nn.compact
    def __call__(self, wav_bn, n_b):
        cfg = self.cfg
        h_btd, frames_b = Hubert(cfg.encoder, name="wav2vec2")(wav_bn, n_b)
        h_btp = nn.Dense(cfg.proj_size, name="projector")(h_btd)
        b, t, p = h_btp.shape
        c = -(-t // cfg.pool_size)
        pad = c * cfg.pool_size - t
        valid_bt = (jnp.arange(t)[None] < frames_b[:, None]).astype(h_btp.dtype)
        h = jnp.pad(h_btp * valid_bt[..., None], ((0, 0), (0, pad), (0, 0))).reshape(b, c, cfg.pool_size, p)
        cnt = jnp.pad(valid_bt, ((0, 0), (0, pad))).reshape(b, c, cfg.pool_size).sum(-1)
        pooled_bcp = h.sum(2) / jnp.maximum(cnt, 1.0)[..., None]
        n_chunks_b = -(-frames_b // cfg.pool_size)
        return nn.Dense(cfg.num_labels, name="classifier")(pooled_bcp), n_chunks_b
