"""HiFi-GAN discriminators in Flax: multi-period (MPD) and multi-scale (MSD), for vocoder training.

    mpd = MultiPeriodDiscriminator(cfg); scores, fmaps = mpd.apply({"params": p}, audio_bt)
    msd = MultiScaleDiscriminator(cfg)
    (scores, fmaps), upd = msd.apply({"params": p, "spectral": s}, audio_bt, update_stats=True, mutable=["spectral"])

- MPD (one sub-discriminator per period, 2 3 5 7 11 by default): the waveform [B, T] is reflect-padded
  at the end to a multiple of the period p and folded to [B, T/p, p]; each of the p columns goes
  through the same stack of (k, 1) convolutions (stride s, padding 2 as the published model), so a
  column is one 1-D signal here: we run 1-D convolutions over B*p rows. Channels 32 128 512 1024 1024,
  LeakyReLU 0.1, conv_post (3, 1) -> 1 channel. Weight norm on every conv.
- MSD (3 scales): the waveform, then twice average-pooled (kernel 4, stride 2, padding 2, zeros
  counted as PyTorch's AvgPool1d), each through a stack of grouped 1-D convs (kernels 15 41 41 41 41 41
  5, strides 1 2 2 4 4 1 1, groups 1 4 16 16 16 16 1, channels 128 128 256 512 1024 1024 1024) and
  conv_post (3) -> 1 channel. Spectral norm on the first scale, weight norm on the others.

Every channel list is configurable (`DiscriminatorConfig`) so a CPU demo can use narrow ones.
Outputs: per sub-discriminator the flattened score [B, n] and the feature maps (every layer's
activation after its LeakyReLU, then conv_post's output), which feature matching compares.

Parameter layout (the published checkpoints' names): weight norm stores `weight_v` [k, in/groups, out]
and `weight_g` [out] (w = g * v / ||v||, the norm over kernel and input axes per output channel, as
torch's weight_norm(dim=0)); spectral norm stores `weight` and, in the "spectral" collection, the
power-iteration vectors `u` [out] and `v` [in/groups * k] (w / sigma with sigma = u . W v; with
`update_stats` one power iteration runs first, as torch's spectral_norm in training mode).
Layout NWC (batch, time, channels).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiritlm_jax.speech.layers import conv1d

LRELU_SLOPE = 0.1
SN_EPS = 1e-12  # torch.nn.utils.spectral_norm's eps


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """The published HiFi-GAN discriminators by default; narrower channel lists make small ones."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # MPD sub-discriminators (empty: no MPD)
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)  # MPD conv outputs (the last conv has stride 1)
    mpd_kernel_size: int = 5
    mpd_stride: int = 3
    msd_scales: int = 3  # MSD sub-discriminators (0: no MSD); scale i sees the waveform average-pooled i times
    msd_channels: tuple[int, ...] = (128, 128, 256, 512, 1024, 1024, 1024)  # MSD conv outputs
    msd_kernels: tuple[int, ...] = (15, 41, 41, 41, 41, 41, 5)
    msd_strides: tuple[int, ...] = (1, 2, 2, 4, 4, 1, 1)
    msd_groups: tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1)

    def __post_init__(self):
        if any(p < 1 for p in self.periods):
            raise ValueError(f"periods must be positive, got {self.periods}")
        if self.periods and len(self.mpd_channels) < 2:
            raise ValueError("mpd_channels needs at least 2 convs (the last has stride 1)")
        n = len(self.msd_channels)
        if self.msd_scales and not (len(self.msd_kernels) == len(self.msd_strides) == len(self.msd_groups) == n):
            raise ValueError("msd_channels, msd_kernels, msd_strides and msd_groups must have the same length")
        cin = 1
        for c, g in zip(self.msd_channels, self.msd_groups):
            if self.msd_scales and (cin % g or c % g):
                raise ValueError(f"MSD conv {cin} -> {c} channels cannot use {g} groups")
            cin = c


def _torch_uniform(fan_in: int):
    """PyTorch's default Conv init (kaiming_uniform with a = sqrt 5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def weight_norm(v_kio, g_o):
    """w = g * v / ||v||, the norm over the kernel and input axes per output channel."""
    return v_kio * (g_o / jnp.sqrt(jnp.sum(v_kio**2, axis=(0, 1))))


def _normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x), SN_EPS)


class NormConv1d(nn.Module):
    """PyTorch Conv1d (padding, stride, groups) with weight norm or spectral norm, NWC."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    norm: str = "weight"  # "weight" | "spectral"

    @nn.compact
    def __call__(self, x_btc, update_stats: bool = False):
        k, cin = self.kernel_size, x_btc.shape[-1]
        shape = (k, cin // self.groups, self.features)
        init = _torch_uniform(shape[0] * shape[1])
        b = self.param("bias", init, (self.features,))
        if self.norm == "weight":
            v = self.param("weight_v", init, shape)
            g = self.param("weight_g", lambda key, s: jnp.sqrt(jnp.sum(v**2, axis=(0, 1))), (self.features,))
            w = weight_norm(v, g)
        else:
            w = self.param("weight", init, shape)
            w_mat = jnp.transpose(w, (2, 1, 0)).reshape(self.features, -1)  # torch [out, in/g * k]
            u_var = self.variable(
                "spectral", "u", lambda: _normalize(jax.random.normal(self.make_rng("params"), (self.features,)))
            )
            v_var = self.variable(
                "spectral", "v", lambda: _normalize(jax.random.normal(self.make_rng("params"), (w_mat.shape[1],)))
            )
            u, v = u_var.value, v_var.value
            if update_stats:  # one power iteration, no gradient (torch.no_grad in spectral_norm)
                wm = jax.lax.stop_gradient(w_mat)
                v = _normalize(wm.T @ u)
                u = _normalize(wm @ v)
                if not self.is_initializing():
                    u_var.value, v_var.value = u, v
            sigma = jnp.dot(u, w_mat @ v)
            w = w / sigma
        y = conv1d(x_btc, w, self.stride, self.padding, groups=self.groups)
        return y + b


class PeriodDiscriminator(nn.Module):
    """One MPD sub-discriminator: the waveform folded by `period`, (k, 1) convs along each column."""

    period: int
    channels: tuple[int, ...]
    kernel_size: int = 5
    stride: int = 3

    @nn.compact
    def __call__(self, audio_bt):
        b, t = audio_bt.shape
        p = self.period
        if t % p:
            audio_bt = jnp.pad(audio_bt, ((0, 0), (0, p - t % p)), mode="reflect")
        x = audio_bt.reshape(b, -1, p)  # [B, T/p, p]
        x = jnp.transpose(x, (0, 2, 1)).reshape(b * p, -1, 1)  # one row per column
        fmaps = []
        pad = (self.kernel_size - 1) // 2  # the published get_padding(5, 1) = 2
        for i, c in enumerate(self.channels):
            last = i == len(self.channels) - 1
            x = NormConv1d(c, self.kernel_size, 1 if last else self.stride, pad, name=f"convs_{i}")(x)
            x = nn.leaky_relu(x, LRELU_SLOPE)
            fmaps.append(x)
        x = NormConv1d(1, 3, 1, 1, name="conv_post")(x)
        fmaps.append(x)
        score = jnp.transpose(x[..., 0].reshape(b, p, -1), (0, 2, 1)).reshape(b, -1)  # torch's flatten order
        return score, fmaps


class ScaleDiscriminator(nn.Module):
    """One MSD sub-discriminator: grouped strided 1-D convs on the (pooled) waveform."""

    cfg: DiscriminatorConfig
    norm: str = "weight"

    @nn.compact
    def __call__(self, audio_bt, update_stats: bool = False):
        c = self.cfg
        x = audio_bt[..., None]
        fmaps = []
        for i, (ch, k, s, g) in enumerate(zip(c.msd_channels, c.msd_kernels, c.msd_strides, c.msd_groups)):
            x = NormConv1d(ch, k, s, (k - 1) // 2, g, self.norm, name=f"convs_{i}")(x, update_stats)
            x = nn.leaky_relu(x, LRELU_SLOPE)
            fmaps.append(x)
        x = NormConv1d(1, 3, 1, 1, 1, self.norm, name="conv_post")(x, update_stats)
        fmaps.append(x)
        return x[..., 0], fmaps


def avg_pool(audio_bt):
    """PyTorch AvgPool1d(4, 2, padding=2) (zero padding counted in the mean): T -> T // 2 + 1."""
    x = jnp.pad(audio_bt, ((0, 0), (2, 2)))
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 4), (1, 2), "VALID")
    return s / 4.0


class MultiPeriodDiscriminator(nn.Module):
    cfg: DiscriminatorConfig

    @nn.compact
    def __call__(self, audio_bt):
        c = self.cfg
        outs = [
            PeriodDiscriminator(p, c.mpd_channels, c.mpd_kernel_size, c.mpd_stride, name=f"discriminators_{i}")(
                audio_bt
            )
            for i, p in enumerate(c.periods)
        ]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiScaleDiscriminator(nn.Module):
    cfg: DiscriminatorConfig

    @nn.compact
    def __call__(self, audio_bt, update_stats: bool = False):
        scores, fmaps = [], []
        x = audio_bt
        for i in range(self.cfg.msd_scales):
            if i:
                x = avg_pool(x)
            norm = "spectral" if i == 0 else "weight"
            s, f = ScaleDiscriminator(self.cfg, norm, name=f"discriminators_{i}")(x, update_stats)
            scores.append(s)
            fmaps.append(f)
        return scores, fmaps


class Discriminators(nn.Module):
    """MPD + MSD together: (scores, feature maps), MPD's sub-discriminators first."""

    cfg: DiscriminatorConfig

    @nn.compact
    def __call__(self, audio_bt, update_stats: bool = False):
        s1, f1 = MultiPeriodDiscriminator(self.cfg, name="mpd")(audio_bt) if self.cfg.periods else ([], [])
        s2, f2 = (
            MultiScaleDiscriminator(self.cfg, name="msd")(audio_bt, update_stats) if self.cfg.msd_scales else ([], [])
        )
        return s1 + s2, f1 + f2


def init_discriminators(cfg: DiscriminatorConfig, seed: int = 0, n_samples: int = 4096):
    """(params, spectral-norm state) of `Discriminators(cfg)`."""
    v = Discriminators(cfg).init(jax.random.PRNGKey(seed), jnp.zeros((1, n_samples), jnp.float32))
    return v["params"], v.get("spectral", {})
