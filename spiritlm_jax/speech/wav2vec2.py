"""wav2vec2 in Flax: the input normalisation shared by every wav2vec2 model (style encoder, CTC
aligner) and `Wav2Vec2ForCTC`, the character CTC model of a forced aligner, in the layout of
transformers' `Wav2Vec2ForCTC` (converter: tools/convert_weights/wav2vec2_ctc_from_hf.py).

Two encoder variants, as transformers has them:
- `stable_layer_norm=False` (wav2vec2-base, -large LS-960): group-norm feature extractor without conv
  bias, post-LN transformer layers. This is exactly `speech.hubert.Hubert` (the style encoder's
  encoder too), used here unchanged.
- `stable_layer_norm=True` (wav2vec2-large-lv60, XLS-R, MMS): a LayerNorm after every conv of the
  feature extractor (conv bias on or off), no LayerNorm before the layers, pre-LN layers
  (x + attn(LN(x)), then x + ffn(LN(x))), and one LayerNorm after the last layer (`StableWav2Vec2`,
  reusing hubert's attention).

    waveform -> [zero-mean / unit-variance per utterance, when the model's feature extractor does it]
    -> encoder (50 Hz, 20 ms frames) -> lm_head (Dense to the vocabulary) -> logits [B, T, V]

Padded batches give each item its unbatched result (masked normalisation statistics, padded frames
zeroed before the positional convolution, masked as attention keys).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.io import ComponentSpec
from spiritlm_jax.speech.hubert import STANDARD_50HZ, Hubert, HubertConfig, SelfAttention
from spiritlm_jax.speech.layers import conv1d, valid_mask

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


def normalize(wav: np.ndarray) -> np.ndarray:
    """wav2vec2 input normalisation of one utterance (numpy, float32 as transformers does)."""
    wav = np.asarray(wav, np.float32)
    return (wav - wav.mean()) / np.sqrt(wav.var() + NORM_EPS)


def normalize_batch(wav_bn: jax.Array, n_b: jax.Array) -> jax.Array:
    """`normalize` of each item of a zero-padded batch over its valid samples; padding stays 0."""
    valid_bn = valid_mask(n_b, wav_bn.shape[1])
    cnt_b1 = jnp.maximum(n_b, 1)[:, None].astype(jnp.float32)
    wav_bn = jnp.where(valid_bn, wav_bn.astype(jnp.float32), 0.0)
    mean_b1 = wav_bn.sum(1, keepdims=True) / cnt_b1
    var_b1 = jnp.where(valid_bn, (wav_bn - mean_b1) ** 2, 0.0).sum(1, keepdims=True) / cnt_b1
    return jnp.where(valid_bn, (wav_bn - mean_b1) / jnp.sqrt(var_b1 + NORM_EPS), 0.0)


@dataclasses.dataclass(frozen=True)
class Wav2Vec2CTCConfig:
    encoder: HubertConfig = HubertConfig(conv_layers=STANDARD_50HZ, output_layer=12)
    stable_layer_norm: bool = False  # True: layer-norm extractor + pre-LN layers (large/XLS-R/MMS)
    conv_bias: bool = False  # bias in the feature extractor's convs (stable_layer_norm models only)
    labels: tuple[str, ...] = ()  # the vocabulary in id order (vocab.json)
    blank: int = 0  # id of the CTC blank (transformers: pad_token_id)
    word_delimiter: str = "|"  # the label between words ("" when the vocabulary has none)
    normalize_input: bool = True  # zero-mean / unit-variance input (the feature extractor's do_normalize)

    def __post_init__(self):
        if self.encoder.output_layer != self.encoder.num_layers:
            raise ValueError("a CTC model uses its last layer: encoder.output_layer must equal num_layers")
        if len(self.labels) < 2:
            raise ValueError(f"labels must hold the vocabulary (>= 2 entries), got {len(self.labels)}")
        if not 0 <= self.blank < len(self.labels):
            raise ValueError(f"blank {self.blank} is not an id of the {len(self.labels)}-label vocabulary")
        if self.conv_bias and not self.stable_layer_norm:
            raise ValueError("conv_bias is only supported with stable_layer_norm (the base layout has no conv bias)")

    @property
    def frame_seconds(self) -> float:
        return self.encoder.hop / 16000


class StableWav2Vec2(nn.Module):
    """The stable-layer-norm wav2vec2 encoder: wav [B, N] + valid samples [B] -> (features, frames)."""

    cfg: Wav2Vec2CTCConfig

    @nn.compact
    def __call__(self, wav_bn, n_b):
        enc = self.cfg.encoder
        dt = jnp.dtype(enc.dtype)
        x = wav_bn[..., None].astype(dt)
        c_in = 1
        for i, (c, k, s) in enumerate(enc.conv_layers):
            w = self.param(f"conv_{i}", nn.initializers.he_normal(), (k, c_in, c))
            x = conv1d(x, w, stride=s)
            if self.cfg.conv_bias:
                x = x + self.param(f"conv_{i}_bias", nn.initializers.zeros, (c,)).astype(dt)
            n_b = (n_b - k) // s + 1
            x = nn.gelu(nn.LayerNorm(1e-5, dtype=dt, name=f"conv_{i}_norm")(x), approximate=False)
            c_in = c
        n_b = jnp.maximum(n_b, 0)
        valid_bt = valid_mask(n_b, x.shape[1])
        x = nn.LayerNorm(enc.layer_norm_eps, dtype=dt, name="layer_norm")(x)
        x_btd = nn.Dense(enc.hidden, dtype=dt, name="post_extract_proj")(x)
        x_btd = x_btd * valid_bt[..., None].astype(dt)
        k, g = enc.pos_conv_kernel, enc.pos_conv_groups
        w = self.param("pos_conv", nn.initializers.lecun_normal(), (k, enc.hidden // g, enc.hidden))
        pos_btd = conv1d(x_btd, w, padding=k // 2, groups=g) + self.param(
            "pos_conv_bias", nn.initializers.zeros, (enc.hidden,)
        ).astype(dt)
        if k % 2 == 0:
            pos_btd = pos_btd[:, :-1]
        x_btd = x_btd + nn.gelu(pos_btd, approximate=False)
        ln = lambda name: nn.LayerNorm(enc.layer_norm_eps, dtype=dt, name=name)  # noqa: E731
        for i in range(enc.num_layers):
            p = f"layers_{i}_"
            h = SelfAttention(enc.hidden, enc.num_heads, enc.dtype, enc.attention, name=p + "self_attn")(
                ln(p + "self_attn_layer_norm")(x_btd), valid_bt
            )
            x_btd = x_btd + h
            h = nn.gelu(
                nn.Dense(enc.ffn, dtype=dt, name=p + "fc1")(ln(p + "final_layer_norm")(x_btd)), approximate=False
            )
            x_btd = x_btd + nn.Dense(enc.hidden, dtype=dt, name=p + "fc2")(h)
        return ln("encoder_layer_norm")(x_btd), n_b


class Wav2Vec2ForCTC(nn.Module):
    """wav [B, N] (16 kHz, zero-padded) + valid samples [B] -> (logits [B, T, V] fp32, frames [B])."""

    cfg: Wav2Vec2CTCConfig

    @nn.compact
    def __call__(self, wav_bn, n_b: Optional[jax.Array] = None):
        cfg = self.cfg
        if n_b is None:
            n_b = jnp.full((wav_bn.shape[0],), wav_bn.shape[1], jnp.int32)
        wav_bn = normalize_batch(wav_bn, n_b) if cfg.normalize_input else wav_bn
        if cfg.stable_layer_norm:
            h_btd, frames_b = StableWav2Vec2(cfg, name="wav2vec2")(wav_bn, n_b)
        else:
            h_btd, frames_b = Hubert(cfg.encoder, name="wav2vec2")(wav_bn, n_b)
        return nn.Dense(len(cfg.labels), name="lm_head")(h_btd.astype(jnp.float32)), frames_b


def _abstract_params(configs: dict) -> dict:
    cfg = configs["ctc.yaml"]
    wav = jax.ShapeDtypeStruct((1, cfg.encoder.receptive_field), jnp.float32)
    return jax.eval_shape(Wav2Vec2ForCTC(cfg).init, jax.random.PRNGKey(0), wav)["params"]


# DIR/ctc.yaml (Wav2Vec2CTCConfig, with the vocabulary) + DIR/params
CTC_SPEC = ComponentSpec(
    "converted wav2vec2 CTC model",
    {"ctc.yaml": Wav2Vec2CTCConfig},
    _abstract_params,
    hint="make one with tools/convert_weights/wav2vec2_ctc_from_hf.py",
)
