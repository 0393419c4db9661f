"""HiFi-GAN unit vocoder ("CodeGenerator" of speech-resynthesis / Spirit LM) in Flax.

    units [B, T] (+ pitch/style units, speaker, global style) -> embeddings concatenated on channels
    -> conv_pre(k7) -> per stage: LeakyReLU(0.1), ConvTranspose(u, k, pad (k-u)//2), mean of ResBlock1s
    -> LeakyReLU(0.01) -> conv_post(k7) -> tanh -> waveform [B, T * prod(upsample_rates)]

Batches of different lengths: activations are zeroed beyond each item's valid length before every
convolution, which is exactly the zero padding an unbatched PyTorch run sees at the end of its signal,
so a padded batch reproduces each item alone (tested). Layout is NWC (batch, time, channels).
Parameter names follow the official checkpoint keys (`dict`, `f0_dict`, `style_dict`, `spkr`, `style`,
`conv_pre`, `ups_i`, `resblocks_j/convs1_k`, `conv_post`, `dur_predictor/...`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class HifiGanConfig:
    """Mirrors the official config.json fields (speech-resynthesis / Spirit LM)."""

    num_embeddings: int = 501  # HuBERT units (the released BASE vocoder: 501)
    embedding_dim: int = 128
    num_f0_tokens: int = 0  # pitch units (EXPRESSIVE: 64); 0 = no pitch stream
    num_style_tokens: int = 0  # per-second style units (EXPRESSIVE: 100); 0 = none
    f0_upsample: int = 2  # HuBERT frames per pitch unit (25 Hz / 12.5 Hz)
    style_upsample: int = 25  # HuBERT frames per style unit (25 Hz / 1 Hz)
    multispkr: bool = True
    num_speakers: int = 4
    multistyle: bool = False  # BASE: a global style embedding
    num_styles: int = 100
    upsample_rates: tuple[int, ...] = (5, 4, 4, 4, 2)
    upsample_kernel_sizes: tuple[int, ...] = (11, 8, 8, 8, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    dur_predictor: bool = True
    dur_kernel_size: int = 3
    dur_hidden_dim: int = 128
    sample_rate: int = 16000

    def __post_init__(self):
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise ValueError(f"upsample kernel {k} and rate {u}: k - u must be even for length T*u outputs")

    @property
    def hop(self) -> int:
        """Output samples per unit frame (640 for 25 Hz units at 16 kHz)."""
        return math.prod(self.upsample_rates)


def _mask(x_btc, valid_bt):
    return x_btc * valid_bt[..., None].astype(x_btc.dtype)


class Conv1d(nn.Module):
    """PyTorch-style Conv1d on NWC input: kernel [k, in, out], bias, symmetric padding, dilation."""

    features: int
    kernel_size: int
    dilation: int = 1
    padding: Optional[int] = None

    @nn.compact
    def __call__(self, x_btc):
        pad = (self.kernel_size * self.dilation - self.dilation) // 2 if self.padding is None else self.padding
        k = self.param("kernel", nn.initializers.normal(0.01), (self.kernel_size, x_btc.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.conv_general_dilated(
            x_btc, k.astype(x_btc.dtype), (1,), [(pad, pad)], rhs_dilation=(self.dilation,),
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        return y + b.astype(y.dtype)


class ConvTranspose1d(nn.Module):
    """PyTorch ConvTranspose1d(stride u, padding p) on NWC input. kernel [k, in, out] holds PyTorch's
    weight [in, out, k] transposed (not flipped); the flip happens here."""

    features: int
    kernel_size: int
    stride: int

    @nn.compact
    def __call__(self, x_btc):
        k, u = self.kernel_size, self.stride
        p = (k - u) // 2
        w = self.param("kernel", nn.initializers.normal(0.01), (k, x_btc.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.conv_general_dilated(
            x_btc, jnp.flip(w, 0).astype(x_btc.dtype), (1,), [(k - 1 - p, k - 1 - p)], lhs_dilation=(u,),
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        return y + b.astype(y.dtype)


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation, LeakyReLU -> dilated conv -> LeakyReLU -> conv, residual."""

    kernel_size: int
    dilations: tuple[int, ...]

    @nn.compact
    def __call__(self, x_btc, valid_bt):
        c = x_btc.shape[-1]
        for i, d in enumerate(self.dilations):
            h = nn.leaky_relu(x_btc, 0.1)
            h = _mask(Conv1d(c, self.kernel_size, d, name=f"convs1_{i}")(h), valid_bt)
            h = nn.leaky_relu(h, 0.1)
            h = _mask(Conv1d(c, self.kernel_size, 1, name=f"convs2_{i}")(h), valid_bt)
            x_btc = x_btc + h
        return x_btc


class Generator(nn.Module):
    """The waveform generator proper: features [B, T, C_in] -> audio [B, T * hop]."""

    cfg: HifiGanConfig

    @nn.compact
    def __call__(self, x_btc, valid_bt):
        cfg = self.cfg
        x_btc = _mask(Conv1d(cfg.upsample_initial_channel, 7, padding=3, name="conv_pre")(_mask(x_btc, valid_bt)), valid_bt)
        n_k = len(cfg.resblock_kernel_sizes)
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            x_btc = nn.leaky_relu(x_btc, 0.1)
            x_btc = ConvTranspose1d(cfg.upsample_initial_channel // 2 ** (i + 1), k, u, name=f"ups_{i}")(x_btc)
            valid_bt = jnp.repeat(valid_bt, u, axis=1)
            x_btc = _mask(x_btc, valid_bt)
            acc = None
            for j, (rk, rd) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
                r = ResBlock(rk, tuple(rd), name=f"resblocks_{i * n_k + j}")(x_btc, valid_bt)
                acc = r if acc is None else acc + r
            x_btc = acc / n_k
        x_btc = nn.leaky_relu(x_btc, 0.01)
        x_btc = Conv1d(1, 7, padding=3, name="conv_post")(x_btc)
        return jnp.tanh(x_btc[..., 0]) * valid_bt


class DurationPredictor(nn.Module):
    """Conv(k, pad (k-1)//2)+ReLU -> LayerNorm -> Conv(k, pad 1)+ReLU -> LayerNorm -> Linear: log(1+dur)."""

    hidden: int
    kernel_size: int

    @nn.compact
    def __call__(self, x_btc, valid_bt):
        h = nn.relu(Conv1d(self.hidden, self.kernel_size, padding=(self.kernel_size - 1) // 2, name="conv1")(_mask(x_btc, valid_bt)))
        h = nn.LayerNorm(epsilon=1e-5, name="ln1")(h)
        h = nn.relu(Conv1d(self.hidden, self.kernel_size, padding=1, name="conv2")(_mask(h, valid_bt)))
        h = nn.LayerNorm(epsilon=1e-5, name="ln2")(h)
        return nn.Dense(1, name="proj")(h)[..., 0]


def durations(log_dur_bt, valid_bt):
    """max(1, round(exp(x) - 1)) on valid frames, 0 elsewhere."""
    return jnp.where(valid_bt, jnp.maximum(jnp.round(jnp.exp(log_dur_bt) - 1.0), 1.0), 0.0).astype(jnp.int32)


def repeat_frames(x_bt_, dur_bt, out_len: int):
    """Repeat frame t of each row dur[t] times into a fixed length `out_len` (zeros after the end)."""
    ends_bt = jnp.cumsum(dur_bt, axis=1)
    pos_o = jnp.arange(out_len)
    idx_bo = jax.vmap(lambda e: jnp.searchsorted(e, pos_o, side="right"))(ends_bt)
    idx_bo = jnp.minimum(idx_bo, x_bt_.shape[1] - 1)
    out = jnp.take_along_axis(x_bt_, idx_bo.reshape(idx_bo.shape + (1,) * (x_bt_.ndim - 2)), axis=1)
    return out, pos_o[None] < ends_bt[:, -1:]


class CodeGenerator(nn.Module):
    """Units (+ pitch, style, speaker, global style) -> waveform, with the optional duration predictor.

    Inputs are per-HuBERT-frame arrays [B, T] (pitch/style already at the HuBERT rate, as
    tokens.string_to_units gives them), `lengths` [B], speaker [B], style [B]. With `dur_pred`, every
    stream is repeated by the predicted durations into `max_frames` frames (static, bucketed).
    Returns (audio [B, frames * hop], valid audio lengths [B], frames the durations asked for [B]; more
    than max_frames means the output was cut and the caller should use a larger bucket).
    """

    cfg: HifiGanConfig

    @nn.compact
    def __call__(self, units_bt, lengths_b, pitch_bt=None, style_bt=None, speaker_b=None, global_style_b=None,
                 dur_pred: bool = True, max_frames: Optional[int] = None):
        cfg = self.cfg
        valid_bt = jnp.arange(units_bt.shape[1])[None] < lengths_b[:, None]
        e = cfg.embedding_dim
        x_btc = nn.Embed(cfg.num_embeddings, e, name="dict")(units_bt)
        streams = [x_btc]
        if cfg.num_f0_tokens:
            streams.append(nn.Embed(cfg.num_f0_tokens, e, name="f0_dict")(pitch_bt))
        if cfg.num_style_tokens:
            streams.append(nn.Embed(cfg.num_style_tokens, e, name="style_dict")(style_bt))
        x_btc = jnp.concatenate(streams, axis=-1)
        needed_b = lengths_b
        if dur_pred:
            if not cfg.dur_predictor:
                raise ValueError("this vocoder has no duration predictor; call with dur_pred=False")
            log_dur = DurationPredictor(cfg.dur_hidden_dim, cfg.dur_kernel_size, name="dur_predictor")(streams[0], valid_bt)
            dur_bt = durations(log_dur, valid_bt)
            needed_b = dur_bt.sum(1)
            x_btc, valid_bt = repeat_frames(x_btc, dur_bt, max_frames or units_bt.shape[1])
        globals_ = []
        if cfg.multispkr:
            globals_.append(nn.Embed(cfg.num_speakers, e, name="spkr")(speaker_b))
        if cfg.multistyle:
            globals_.append(nn.Embed(cfg.num_styles, e, name="style")(global_style_b))
        if globals_:
            g_bc = jnp.concatenate(globals_, axis=-1)
            x_btc = jnp.concatenate([x_btc, jnp.broadcast_to(g_bc[:, None], x_btc.shape[:2] + g_bc.shape[-1:])], -1)
        audio = Generator(cfg, name="generator")(x_btc, valid_bt)
        return audio, valid_bt.sum(1) * cfg.hop, needed_b
