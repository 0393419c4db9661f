"""Style units (EXPRESSIVE): a wav2vec2-base sequence classifier pooled per second (docs/reference.md).

    waveform -> zero-mean / unit-variance normalisation per utterance, (x - mean) / sqrt(var + 1e-7)
    (what the reference fetches as facebook/wav2vec2-base's Wav2Vec2FeatureExtractor; done here)
    -> wav2vec2 encoder (the HuBERT-Base architecture of hubert.py, all layers, 50 Hz)
    -> projector -> mean over chunks of 50 frames (1 s; the last chunk may be shorter)
    -> classifier -> argmax: one style unit per started second.

The reference runs this per audio chunk of at most 100 s (chunks under 1280 samples dropped), each
chunk normalised on its own; `StyleTokenizer` does the same. `StyleEncoder` works on padded batches:
normalisation statistics and pooling use each item's valid samples/frames only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.io import ComponentSpec, load_component
from spiritlm_jax.speech.audio import encode_chunked, pad_batch
from spiritlm_jax.speech.hubert import STANDARD_50HZ, Hubert, HubertConfig
from spiritlm_jax.speech.layers import valid_mask
from spiritlm_jax.speech.wav2vec2 import NORM_EPS, normalize, normalize_batch  # noqa: F401 (re-exported)


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    encoder: HubertConfig = HubertConfig(conv_layers=STANDARD_50HZ, output_layer=12)
    proj_size: int = 256
    num_labels: int = 100
    pool_size: int = 50  # frames per unit: 50 frames of 20 ms = 1 s

    def __post_init__(self):
        if self.encoder.output_layer != self.encoder.num_layers:
            raise ValueError(
                "the style encoder uses the last wav2vec2 layer: encoder.output_layer must equal num_layers"
            )
        if min(self.proj_size, self.num_labels, self.pool_size) < 1:
            raise ValueError(
                f"proj_size, num_labels and pool_size must be >= 1, got "
                f"{self.proj_size}, {self.num_labels}, {self.pool_size}"
            )


class StyleEncoder(nn.Module):
    """Raw wav [B, N] (16 kHz, zero-padded) + valid samples [B] -> (logits [B, C, labels], units [B])
    where C = ceil(frames / pool_size) for the longest item; `units` counts each item's chunks."""

    cfg: StyleConfig

    @nn.compact
    def __call__(self, wav_bn, n_b: Optional[jax.Array] = None):
        cfg = self.cfg
        if n_b is None:
            n_b = jnp.full((wav_bn.shape[0],), wav_bn.shape[1], jnp.int32)
        h_btd, frames_b = Hubert(cfg.encoder, name="wav2vec2")(normalize_batch(wav_bn, n_b), n_b)
        h_btp = nn.Dense(cfg.proj_size, name="projector")(h_btd.astype(jnp.float32))
        b, t, p = h_btp.shape
        c = -(-t // cfg.pool_size)
        pad = c * cfg.pool_size - t
        valid_bt = valid_mask(frames_b, t).astype(h_btp.dtype)
        sums_bcp = (
            jnp.pad(h_btp * valid_bt[..., None], ((0, 0), (0, pad), (0, 0))).reshape(b, c, cfg.pool_size, p).sum(2)
        )
        counts_bc = jnp.pad(valid_bt, ((0, 0), (0, pad))).reshape(b, c, cfg.pool_size).sum(-1)
        pooled_bcp = sums_bcp / jnp.maximum(counts_bc, 1.0)[..., None]
        n_chunks_b = -(-frames_b // cfg.pool_size)
        return nn.Dense(cfg.num_labels, name="classifier")(pooled_bcp), n_chunks_b


def _abstract_params(configs: dict) -> dict:
    cfg = configs["style.yaml"]
    wav = jax.ShapeDtypeStruct((1, cfg.encoder.receptive_field), jnp.float32)
    return jax.eval_shape(StyleEncoder(cfg).init, jax.random.PRNGKey(0), wav)["params"]


# DIR/style.yaml (StyleConfig) + DIR/params
STYLE_SPEC = ComponentSpec(
    "converted style encoder",
    {"style.yaml": StyleConfig},
    _abstract_params,
    hint="make one with tools/convert_weights/style_from_hf.py",
)


class StyleTokenizer:
    """Audio -> one style unit per second, chunked as the reference (<= 100 s, chunks < 1280 samples
    dropped, each chunk normalised on its own); chunks are padded to power-of-two sample buckets so
    new lengths compile once per bucket."""

    def __init__(self, params, cfg: StyleConfig):
        self.params, self.cfg = params, cfg
        self._fn = jax.jit(lambda p, w, n: StyleEncoder(cfg).apply({"params": p}, w, n))

    @classmethod
    def load(cls, directory) -> "StyleTokenizer":
        params, cfgs = load_component(directory, STYLE_SPEC)
        return cls(params, cfgs["style.yaml"])

    def logits(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Per-second logits [units, labels] for each 16 kHz waveform, run as one padded batch."""
        if not wavs:
            return []
        lengths = [len(w) for w in wavs]
        if min(lengths) < self.cfg.encoder.receptive_field:
            raise ValueError(
                f"a waveform of {min(lengths)} samples is shorter than one wav2vec2 frame "
                f"({self.cfg.encoder.receptive_field} samples)"
            )
        batch = pad_batch(wavs, pow2_bucket(max(lengths), minimum=1024))
        logits, units = self._fn(self.params, jnp.asarray(batch), jnp.asarray(lengths, jnp.int32))
        logits, units = np.asarray(logits), np.asarray(units)
        return [logits[i, : units[i]] for i in range(len(wavs))]

    def encode_units(self, audio, input_sample_rate=None) -> np.ndarray:
        """Style units (int64, one per started second of each chunk) of one recording."""
        return encode_chunked(
            audio,
            lambda chunks: [self.logits([c])[0].argmax(-1).astype(np.int64) for c in chunks],
            np.zeros(0, np.int64),
            input_sample_rate,
        )
