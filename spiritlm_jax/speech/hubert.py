"""HuBERT-Base (fairseq layout) in Flax: the speech encoder whose layer-11 features give HuBERT units.

    conv feature extractor (GroupNorm on the first conv only, no conv bias, GELU; stack configurable:
    the 50 Hz 7-conv standard or a 25 Hz stack with total stride 640) -> LayerNorm(512) -> Linear ->
    convolutional positional embedding (kernel 128, 16 groups, GELU; the extra frame of an even kernel
    dropped) -> add -> LayerNorm -> pad time to a multiple of 2 (masked) -> post-LN transformer layers;
    output of layer `output_layer` (11 for Spirit LM: later layers are not run).

The same encoder is wav2vec2-base's (transformers' `do_stable_layer_norm=False`), so the style
encoder (style.py) reuses `Hubert` unchanged.

Batches with padding: GroupNorm statistics are taken over each item's valid frames, padded frames are
zeroed before the positional convolution and masked as attention keys, so every item of a padded
batch gets its unbatched result; `lengths` tells each item's valid frames. Layout NWC (batch, time,
channels). Parameters are fp32; `dtype` sets the compute dtype (bf16 on accelerators), with the
GroupNorm/LayerNorm statistics and the attention softmax kept in fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiritlm_jax.speech.layers import conv1d, valid_mask

STANDARD_50HZ = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
STRIDE_640_25HZ = STANDARD_50HZ + ((512, 2, 2),)  # 8 convs; total stride 640 (25 Hz at 16 kHz)


@dataclasses.dataclass(frozen=True)
class HubertConfig:
    conv_layers: tuple[tuple[int, int, int], ...] = STRIDE_640_25HZ  # (channels, kernel, stride)
    hidden: int = 768
    num_layers: int = 12  # layers in the checkpoint; only the first `output_layer` are run
    num_heads: int = 12
    ffn: int = 3072
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    output_layer: int = 11  # 1-based, as fairseq's extract_features(output_layer=...)
    layer_norm_eps: float = 1e-5
    seq_len_multiple: int = 2  # fairseq's required_seq_len_multiple: time padded (and masked) to it
    normalize_waveform: bool = False  # fairseq task_cfg.normalize: per-utterance layer norm of the wav
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype (params stay fp32)
    attention: Literal["xla", "cudnn"] = "xla"  # cudnn: jax.nn.dot_product_attention on GPU (bf16)

    def __post_init__(self):
        if not self.conv_layers or any(len(c) != 3 or min(c) < 1 for c in self.conv_layers):
            raise ValueError(
                f"conv_layers must be non-empty (channels, kernel, stride) triples >= 1, got {self.conv_layers}"
            )
        if not 1 <= self.output_layer <= self.num_layers:
            raise ValueError(f"output_layer must be in [1, {self.num_layers}], got {self.output_layer}")
        if self.hidden % self.num_heads or self.hidden % self.pos_conv_groups:
            raise ValueError(
                f"hidden {self.hidden} must be divisible by num_heads {self.num_heads} "
                f"and pos_conv_groups {self.pos_conv_groups}"
            )
        if self.seq_len_multiple < 1:
            raise ValueError(f"seq_len_multiple must be >= 1, got {self.seq_len_multiple}")

    @property
    def hop(self) -> int:
        """Samples per output frame (320 for 50 Hz, 640 for 25 Hz)."""
        hop = 1
        for _, _, s in self.conv_layers:
            hop *= s
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for the 50 Hz stack)."""
        n = 1
        for _, k, s in reversed(self.conv_layers):
            n = (n - 1) * s + k
        return n

    def frames(self, n_samples):
        """Output frames for `n_samples` of audio (ints or integer arrays; <= 0 when too short)."""
        for _, k, s in self.conv_layers:
            n_samples = (n_samples - k) // s + 1
        return n_samples


class FeatureExtractor(nn.Module):
    """wav [B, N] -> conv features [B, T, C] and valid frames [B]."""

    cfg: HubertConfig

    @nn.compact
    def __call__(self, wav_bn, valid_samples_b):
        dt = jnp.dtype(self.cfg.dtype)
        x = wav_bn[..., None].astype(dt)
        n_b, c_in = valid_samples_b, 1
        for i, (c, k, s) in enumerate(self.cfg.conv_layers):
            w = self.param(f"conv_{i}", nn.initializers.he_normal(), (k, c_in, c))
            x = conv1d(x, w, stride=s)
            n_b = (n_b - k) // s + 1
            if i == 0:  # GroupNorm(c groups of 1 channel) = per-channel norm over each item's valid time, fp32
                x32 = x.astype(jnp.float32)
                m = valid_mask(n_b, x.shape[1])[..., None].astype(jnp.float32)
                cnt = jnp.maximum(m.sum(1, keepdims=True), 1.0)
                mean = (x32 * m).sum(1, keepdims=True) / cnt
                var = (((x32 - mean) * m) ** 2).sum(1, keepdims=True) / cnt
                x32 = (x32 - mean) * jax.lax.rsqrt(var + 1e-5)
                scale = self.param("norm_scale", nn.initializers.ones, (c,))
                x = (x32 * scale + self.param("norm_bias", nn.initializers.zeros, (c,))).astype(dt)
            x = nn.gelu(x, approximate=False)
            c_in = c
        return x, jnp.maximum(n_b, 0)


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; padded keys (valid_bs False) get no weight."""

    hidden: int
    num_heads: int
    dtype: str = "float32"
    backend: str = "xla"

    @nn.compact
    def __call__(self, x_btd, valid_bs):
        dense = lambda name: nn.Dense(self.hidden, dtype=jnp.dtype(self.dtype), name=name)  # noqa: E731
        b, t, _ = x_btd.shape
        h = self.hidden // self.num_heads
        q_btnh = dense("q_proj")(x_btd).reshape(b, t, self.num_heads, h) * h**-0.5  # fairseq: scale after bias
        k_btnh = dense("k_proj")(x_btd).reshape(b, t, self.num_heads, h)
        v_btnh = dense("v_proj")(x_btd).reshape(b, t, self.num_heads, h)
        if self.backend == "cudnn":
            out_btnh = jax.nn.dot_product_attention(
                q_btnh, k_btnh, v_btnh, mask=valid_bs[:, None, None, :], scale=1.0, implementation="cudnn"
            )
        else:
            logits_bnts = jnp.einsum("btnh,bsnh->bnts", q_btnh, k_btnh, preferred_element_type=jnp.float32)
            logits_bnts = jnp.where(valid_bs[:, None, None, :], logits_bnts, jnp.finfo(jnp.float32).min)
            probs_bnts = jax.nn.softmax(logits_bnts, axis=-1).astype(v_btnh.dtype)
            out_btnh = jnp.einsum("bnts,bsnh->btnh", probs_bnts, v_btnh)
        return dense("out_proj")(out_btnh.reshape(b, t, self.hidden))


class EncoderLayer(nn.Module):
    """Post-LN transformer layer: LN(x + attn(x)), then LN(x + fc2(gelu(fc1(x))))."""

    cfg: HubertConfig

    @nn.compact
    def __call__(self, x_btd, valid_bt):
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        ln = lambda name: nn.LayerNorm(cfg.layer_norm_eps, dtype=dt, name=name)  # noqa: E731
        attn = SelfAttention(cfg.hidden, cfg.num_heads, cfg.dtype, cfg.attention, name="self_attn")(x_btd, valid_bt)
        x_btd = ln("self_attn_layer_norm")(x_btd + attn)
        h_btf = nn.gelu(nn.Dense(cfg.ffn, dtype=dt, name="fc1")(x_btd), approximate=False)
        return ln("final_layer_norm")(x_btd + nn.Dense(cfg.hidden, dtype=dt, name="fc2")(h_btf))


class Hubert(nn.Module):
    """wav [B, N] (16 kHz, zero-padded) + valid sample counts [B] -> (features [B, T, D], lengths [B]).

    Features of layer `cfg.output_layer`; frames at or beyond an item's length are padding.
    """

    cfg: HubertConfig

    @nn.compact
    def __call__(self, wav_bn, valid_samples_b: Optional[jax.Array] = None):
        cfg = self.cfg
        if wav_bn.ndim != 2:
            raise ValueError(f"wav must be [batch, samples], got shape {wav_bn.shape}")
        if wav_bn.shape[1] < cfg.receptive_field:
            raise ValueError(
                f"wav has {wav_bn.shape[1]} samples; HuBERT needs at least {cfg.receptive_field} "
                f"(one frame of this conv stack)"
            )
        if valid_samples_b is None:
            valid_samples_b = jnp.full((wav_bn.shape[0],), wav_bn.shape[1], jnp.int32)
        if valid_samples_b.shape != wav_bn.shape[:1]:
            raise ValueError(f"valid_samples must be [{wav_bn.shape[0]}], got shape {valid_samples_b.shape}")
        dt = jnp.dtype(cfg.dtype)
        wav_valid_bn = valid_mask(valid_samples_b, wav_bn.shape[1])
        wav_bn = jnp.where(wav_valid_bn, wav_bn.astype(jnp.float32), 0.0)
        if cfg.normalize_waveform:  # F.layer_norm(wav, wav.shape) over each item's valid samples
            cnt = jnp.maximum(valid_samples_b, 1)[:, None].astype(jnp.float32)
            mean = wav_bn.sum(1, keepdims=True) / cnt
            var = jnp.where(wav_valid_bn, (wav_bn - mean) ** 2, 0.0).sum(1, keepdims=True) / cnt
            wav_bn = jnp.where(wav_valid_bn, (wav_bn - mean) * jax.lax.rsqrt(var + 1e-5), 0.0)

        x_btc, n_b = FeatureExtractor(cfg, name="feature_extractor")(wav_bn, valid_samples_b)
        valid_bt = valid_mask(n_b, x_btc.shape[1])
        x_btc = nn.LayerNorm(cfg.layer_norm_eps, dtype=dt, name="layer_norm")(x_btc)
        x_btd = nn.Dense(cfg.hidden, dtype=dt, name="post_extract_proj")(x_btc)
        x_btd = x_btd * valid_bt[..., None].astype(dt)  # padded frames are zeros for the positional conv
        k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
        w = self.param("pos_conv", nn.initializers.lecun_normal(), (k, cfg.hidden // g, cfg.hidden))
        pos_bias = self.param("pos_conv_bias", nn.initializers.zeros, (cfg.hidden,))
        pos_btd = conv1d(x_btd, w, padding=k // 2, groups=g) + pos_bias.astype(dt)
        if k % 2 == 0:  # fairseq SamePad: an even kernel yields one extra frame
            pos_btd = pos_btd[:, :-1]
        x_btd = nn.LayerNorm(cfg.layer_norm_eps, dtype=dt, name="encoder_layer_norm")(
            x_btd + nn.gelu(pos_btd, approximate=False)
        )

        t = x_btd.shape[1]
        pad = -t % cfg.seq_len_multiple  # fairseq pads to an even length and masks the pad as keys
        x_btd = jnp.pad(x_btd, ((0, 0), (0, pad), (0, 0)))
        valid_bt = jnp.pad(valid_bt, ((0, 0), (0, pad)))
        for i in range(cfg.output_layer):
            x_btd = EncoderLayer(cfg, name=f"layers_{i}")(x_btd, valid_bt)
        return x_btd[:, :t], n_b
