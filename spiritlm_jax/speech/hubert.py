"""HuBERT-Base (fairseq layout) in Flax: the speech encoder whose layer-11 features give HuBERT units.

    conv feature extractor (GroupNorm on the first conv only, no conv bias, GELU; stack configurable:
    the 50 Hz 7-conv standard or a 25 Hz stack with total stride 640) -> LayerNorm(512) -> Linear ->
    convolutional positional embedding (kernel 128, 16 groups, GELU; the extra frame of an even kernel
    dropped) -> add -> LayerNorm -> post-LN transformer layers; output of layer `output_layer`
    (11 for Spirit LM: later layers are not run).

Batches with padding: GroupNorm statistics are taken over each item's valid frames, padded frames are
zeroed before the positional convolution and masked as attention keys, so a padded batch gives each
item's unbatched result. Layout NWC (batch, time, channels).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

STANDARD_50HZ = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
STRIDE_640_25HZ = STANDARD_50HZ + ((512, 2, 2),)


@dataclasses.dataclass(frozen=True)
class HubertConfig:
    conv_layers: tuple[tuple[int, int, int], ...] = STRIDE_640_25HZ  # (channels, kernel, stride)
    hidden: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn: int = 3072
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    output_layer: int = 11
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if not 1 <= self.output_layer <= self.num_layers:
            raise ValueError(f"output_layer must be in [1, {self.num_layers}], got {self.output_layer}")
        if self.hidden % self.num_heads or self.hidden % self.pos_conv_groups:
            raise ValueError("hidden must be divisible by num_heads and pos_conv_groups")

    def frames(self, n_samples):
        """Output frames for `n_samples` of audio (works on ints and arrays)."""
        for _, k, s in self.conv_layers:
            n_samples = (n_samples - k) // s + 1
        return n_samples


def _conv(x_btc, kernel_kio, stride=1, padding=0, groups=1):
    return jax.lax.conv_general_dilated(x_btc, kernel_kio, (stride,), [(padding, padding)],
                                        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)


class FeatureExtractor(nn.Module):
    cfg: HubertConfig

    @nn.compact
    def __call__(self, wav_bn, valid_samples_b):
        x = wav_bn[..., None]
        n_b = valid_samples_b
        c_in = 1
        for i, (c, k, s) in enumerate(self.cfg.conv_layers):
            w = self.param(f"conv_{i}", nn.initializers.lecun_normal(), (k, c_in, c))
            x = _conv(x, w, stride=s)
            n_b = (n_b - k) // s + 1
            if i == 0:  # GroupNorm(c groups of 1 channel) = per-channel norm over each item's valid time
                valid_bt = jnp.arange(x.shape[1])[None] < n_b[:, None]
                m = valid_bt[..., None].astype(x.dtype)
                cnt = jnp.maximum(m.sum(1, keepdims=True), 1.0)
                mean = (x * m).sum(1, keepdims=True) / cnt
                var = (((x - mean) * m) ** 2).sum(1, keepdims=True) / cnt
                x = (x - mean) * jax.lax.rsqrt(var + 1e-5)
                x = x * self.param("norm_scale", nn.initializers.ones, (c,)) + self.param("norm_bias", nn.initializers.zeros, (c,))
            x = nn.gelu(x, approximate=False)
            c_in = c
        return x, n_b


class SelfAttention(nn.Module):
    hidden: int
    num_heads: int

    @nn.compact
    def __call__(self, x_btd, valid_bt):
        h = self.hidden // self.num_heads
        b, t, _ = x_btd.shape
        q = nn.Dense(self.hidden, name="q_proj")(x_btd).reshape(b, t, self.num_heads, h) * h ** -0.5
        k = nn.Dense(self.hidden, name="k_proj")(x_btd).reshape(b, t, self.num_heads, h)
        v = nn.Dense(self.hidden, name="v_proj")(x_btd).reshape(b, t, self.num_heads, h)
        logits_bnts = jnp.einsum("btnh,bsnh->bnts", q, k)
        logits_bnts = jnp.where(valid_bt[:, None, None, :], logits_bnts, jnp.finfo(logits_bnts.dtype).min)
        probs = jax.nn.softmax(logits_bnts, axis=-1)
        out = jnp.einsum("bnts,bsnh->btnh", probs, v).reshape(b, t, self.hidden)
        return nn.Dense(self.hidden, name="out_proj")(out)


class EncoderLayer(nn.Module):
    cfg: HubertConfig

    @nn.compact
    def __call__(self, x_btd, valid_bt):
        cfg = self.cfg
        x_btd = nn.LayerNorm(cfg.layer_norm_eps, name="self_attn_layer_norm")(
            x_btd + SelfAttention(cfg.hidden, cfg.num_heads, name="self_attn")(x_btd, valid_bt))
        ffn = nn.Dense(cfg.hidden, name="fc2")(nn.gelu(nn.Dense(cfg.ffn, name="fc1")(x_btd), approximate=False))
        return nn.LayerNorm(cfg.layer_norm_eps, name="final_layer_norm")(x_btd + ffn)


class Hubert(nn.Module):
    """wav [B, N] (16 kHz, zero-padded) + valid sample counts [B] -> (features [B, T, D], frames [B])."""

    cfg: HubertConfig

    @nn.compact
    def __call__(self, wav_bn, valid_samples_b):
        cfg = self.cfg
        x, n_b = FeatureExtractor(cfg, name="feature_extractor")(wav_bn, valid_samples_b)
        valid_bt = jnp.arange(x.shape[1])[None] < n_b[:, None]
        x = nn.LayerNorm(cfg.layer_norm_eps, name="layer_norm")(x)
        x = nn.Dense(cfg.hidden, name="post_extract_proj")(x)
        x = x * valid_bt[..., None]
        k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
        w = self.param("pos_conv", nn.initializers.lecun_normal(), (k, cfg.hidden // g, cfg.hidden))
        pos = _conv(x, w, padding=k // 2, groups=g) + self.param("pos_conv_bias", nn.initializers.zeros, (cfg.hidden,))
        if k % 2 == 0:
            pos = pos[:, :-1]
        x = nn.LayerNorm(cfg.layer_norm_eps, name="encoder_layer_norm")(x + nn.gelu(pos, approximate=False))
        for i in range(cfg.output_layer):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, valid_bt)
        return x, n_b
