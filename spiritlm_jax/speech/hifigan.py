"""HiFi-GAN unit vocoder ("CodeGenerator" of speech-resynthesis / Spirit LM) in Flax.

    units [B, T] (+ pitch/style units, speaker, global style) -> embeddings concatenated on channels
    -> conv_pre(k7) -> per stage: LeakyReLU(0.1), ConvTranspose(u, k, pad (k-u)//2), mean of ResBlock1s
    -> LeakyReLU(0.01) -> conv_post(k7) -> tanh -> waveform [B, T * prod(upsample_rates)]

Batches of different lengths: activations are zeroed beyond each item's valid length before every
convolution, which is exactly the zero padding an unbatched PyTorch run sees at the end of its signal,
so a padded batch reproduces each item alone (tested). Layout is NWC (batch, time, channels).
Parameter names follow the official checkpoint keys (`dict`, `f0_dict`, `style_dict`, `spkr`, `style`,
`generator/conv_pre`, `generator/ups_i`, `generator/resblocks_j/convs1_k`, `generator/conv_post`,
`dur_predictor/{conv1,ln1,conv2,ln2,proj}`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.speech.layers import Conv1d, mask_time, valid_mask


@dataclasses.dataclass(frozen=True)
class DurPredictorConfig:
    """The official config.json's `dur_predictor_params` (dropout is inference-irrelevant, kept for fidelity)."""

    encoder_embed_dim: int = 128
    var_pred_hidden_dim: int = 128
    var_pred_kernel_size: int = 3
    var_pred_dropout: float = 0.5

    def __post_init__(self):
        # conv2 has padding 1 whatever the kernel (reference); only k=3 keeps one duration per unit
        if self.var_pred_kernel_size != 3:
            raise ValueError(
                f"var_pred_kernel_size={self.var_pred_kernel_size}: the reference duration predictor's "
                "second conv pads by 1, so only kernel 3 gives one duration per unit"
            )


@dataclasses.dataclass(frozen=True)
class HifiGanConfig:
    """Mirrors the official config.json fields (speech-resynthesis / Spirit LM), generator part only.

    Defaults: the Spirit LM BASE-like shape (25 Hz units, x640 ladder, 4 speakers, global styles)."""

    num_embeddings: int = 501  # HuBERT units
    embedding_dim: int = 128
    num_f0_tokens: int = 0  # pitch units (EXPRESSIVE: 64); 0 = no pitch stream
    num_style_tokens: int = 0  # per-second style units (EXPRESSIVE: 100); 0 = no style stream
    code_hop_size: int = 640  # audio samples per HuBERT unit
    f0_hop_size: int = 1280  # per pitch unit (12.5 Hz)
    style_hop_size: int = 16000  # per style unit (1 Hz)
    multispkr: bool = True
    num_speakers: int = 4
    multistyle: bool = True  # BASE: one global style embedding per utterance
    num_styles: int = 100
    upsample_rates: tuple[int, ...] = (5, 4, 4, 4, 2)
    upsample_kernel_sizes: tuple[int, ...] = (11, 8, 8, 8, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    dur_predictor_params: Optional[DurPredictorConfig] = DurPredictorConfig()  # None: no duration predictor
    sampling_rate: int = 16000

    def __post_init__(self):
        for name in (
            "num_embeddings",
            "embedding_dim",
            "num_speakers",
            "num_styles",
            "upsample_initial_channel",
            "code_hop_size",
            "f0_hop_size",
            "style_hop_size",
            "sampling_rate",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2 or k < u:
                raise ValueError(f"upsample kernel {k} and rate {u}: need k >= u and k - u even (output length T*u)")
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise ValueError(
                f"upsample_initial_channel {self.upsample_initial_channel} must be divisible by "
                f"2**{len(self.upsample_rates)} (channels halve at every stage)"
            )
        d = self.dur_predictor_params
        if d is not None and d.encoder_embed_dim != self.embedding_dim:
            raise ValueError(
                f"dur_predictor_params.encoder_embed_dim {d.encoder_embed_dim} must equal "
                f"embedding_dim {self.embedding_dim} (it reads the unit embedding)"
            )

    @property
    def hop(self) -> int:
        """Output samples per unit frame: prod(upsample_rates) (640 for 25 Hz units at 16 kHz)."""
        return math.prod(self.upsample_rates)

    @property
    def hubert_to_f0(self) -> int:
        """HuBERT frames per pitch unit (2 for 25 Hz / 12.5 Hz), as the reference rounds it."""
        return max(1, round(self.f0_hop_size / self.code_hop_size))

    @property
    def hubert_to_style(self) -> int:
        """HuBERT frames per style unit (25 for 25 Hz / 1 Hz)."""
        return max(1, round(self.style_hop_size / self.code_hop_size))

    @property
    def has_dur_predictor(self) -> bool:
        return self.dur_predictor_params is not None

    @property
    def model_in_dim(self) -> int:
        """conv_pre input channels: one embedding_dim block per stream and per global embedding."""
        n = 1 + bool(self.num_f0_tokens) + bool(self.num_style_tokens) + self.multispkr + self.multistyle
        return n * self.embedding_dim


# PyTorch Conv1d with the generator's init (normal, std 0.01; converted checkpoints replace it)
_conv = functools.partial(Conv1d, kernel_init=nn.initializers.normal(0.01))


class ConvTranspose1d(nn.Module):
    """PyTorch ConvTranspose1d(stride u, padding (k-u)//2) on NWC input: length T -> T*u.

    `kernel` [k, in, out] holds PyTorch's weight [in, out, k] transposed (not flipped); a transposed
    conv is the conv of the u-dilated input with the flipped kernel, padded k-1-p on each side."""

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
            x_btc,
            jnp.flip(w, 0).astype(x_btc.dtype),
            (1,),
            [(k - 1 - p, k - 1 - p)],
            lhs_dilation=(u,),
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
            h = mask_time(_conv(c, self.kernel_size, dilation=d, name=f"convs1_{i}")(h), valid_bt)
            h = nn.leaky_relu(h, 0.1)
            h = mask_time(_conv(c, self.kernel_size, name=f"convs2_{i}")(h), valid_bt)
            x_btc = x_btc + h
        return x_btc


class Generator(nn.Module):
    """The waveform generator proper: features [B, T, model_in_dim] (zero past each length) -> audio [B, T * hop]."""

    cfg: HifiGanConfig

    @nn.compact
    def __call__(self, x_btc, valid_bt):
        cfg = self.cfg
        x_btc = _conv(cfg.upsample_initial_channel, 7, padding=3, name="conv_pre")(mask_time(x_btc, valid_bt))
        x_btc = mask_time(x_btc, valid_bt)
        n_k = len(cfg.resblock_kernel_sizes)
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            x_btc = nn.leaky_relu(x_btc, 0.1)
            x_btc = ConvTranspose1d(cfg.upsample_initial_channel // 2 ** (i + 1), k, u, name=f"ups_{i}")(x_btc)
            valid_bt = jnp.repeat(valid_bt, u, axis=1)
            x_btc = mask_time(x_btc, valid_bt)
            acc = None
            for j, (rk, rd) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
                r = ResBlock(rk, tuple(rd), name=f"resblocks_{i * n_k + j}")(x_btc, valid_bt)
                acc = r if acc is None else acc + r
            x_btc = acc / n_k
        x_btc = nn.leaky_relu(x_btc, 0.01)  # the reference's F.leaky_relu default slope
        x_btc = _conv(1, 7, padding=3, name="conv_post")(x_btc)
        return jnp.tanh(x_btc[..., 0]) * valid_bt


class DurationPredictor(nn.Module):
    """Conv(k, pad (k-1)//2)+ReLU -> LayerNorm -> Conv(k, pad 1)+ReLU -> LayerNorm -> Linear: log(1 + dur)."""

    hidden: int
    kernel_size: int

    @nn.compact
    def __call__(self, x_btc, valid_bt):
        k = self.kernel_size
        h = nn.relu(_conv(self.hidden, k, padding=(k - 1) // 2, name="conv1")(mask_time(x_btc, valid_bt)))
        h = nn.LayerNorm(epsilon=1e-5, name="ln1")(h)
        h = nn.relu(_conv(self.hidden, k, padding=1, name="conv2")(mask_time(h, valid_bt)))
        h = nn.LayerNorm(epsilon=1e-5, name="ln2")(h)
        return nn.Dense(1, name="proj")(h)[..., 0]


def durations(log_dur_bt, valid_bt):
    """max(1, round(exp(x) - 1)) on valid frames, 0 elsewhere (round half to even, as torch.round)."""
    return jnp.where(valid_bt, jnp.maximum(jnp.round(jnp.exp(log_dur_bt) - 1.0), 1.0), 0.0).astype(jnp.int32)


def predict_durations(params, cfg: HifiGanConfig, units_bt, lengths_b):
    """Frames per unit [B, T] (0 past each length) from the CodeGenerator's `dict` and `dur_predictor` params."""
    if cfg.dur_predictor_params is None:
        raise ValueError("this vocoder has no duration predictor (dur_predictor_params is None)")
    d = cfg.dur_predictor_params
    valid_bt = valid_mask(lengths_b, units_bt.shape[1])
    emb_btc = jnp.take(params["dict"]["embedding"], units_bt, axis=0)
    log_dur = DurationPredictor(d.var_pred_hidden_dim, d.var_pred_kernel_size).apply(
        {"params": params["dur_predictor"]}, emb_btc, valid_bt
    )
    return durations(log_dur, valid_bt)


def repeat_frames(x_bt_, dur_bt, out_len: int):
    """Repeat frame t of each row dur[t] times into a fixed length `out_len` (the last frame's value after
    the end); returns (repeated, valid mask [B, out_len])."""
    ends_bt = jnp.cumsum(dur_bt, axis=1)
    pos_o = jnp.arange(out_len)
    idx_bo = jax.vmap(lambda e: jnp.searchsorted(e, pos_o, side="right"))(ends_bt)
    idx_bo = jnp.minimum(idx_bo, x_bt_.shape[1] - 1)
    out = jnp.take_along_axis(x_bt_, idx_bo.reshape(idx_bo.shape + (1,) * (x_bt_.ndim - 2)), axis=1)
    return out, pos_o[None] < ends_bt[:, -1:]


def upsample_stream(code_k, n: int, rate: int) -> np.ndarray:
    """A coarser unit stream (pitch: 12.5 Hz, style: 1 Hz) -> n HuBERT frames: each unit repeated `rate`
    times, the last one extended if short, cut at n (the reference vocoder's `upsample`, no durations)."""
    code_k = np.asarray(code_k)
    k = len(code_k)
    if k == 0 or abs(k * rate - n) / rate > 1:
        raise ValueError(
            f"a stream of {k} units at 1/{rate} of the HuBERT rate cannot cover {n} HuBERT frames "
            f"(expected about {n / rate:.1f} units)"
        )
    up = np.repeat(code_k, rate)
    if len(up) < n:
        up = np.concatenate([up, np.full(n - len(up), up[-1], up.dtype)])
    return up[:n]


class CodeGenerator(nn.Module):
    """Units (+ pitch, style, speaker, global style) -> waveform, with the optional duration predictor.

    Inputs are per-HuBERT-frame arrays [B, T] (pitch/style already at the HuBERT rate, as
    tokens.string_to_units gives them or `upsample_stream` makes them), `lengths` [B], speaker [B],
    global style [B]. With `dur_pred`, every stream is repeated by the predicted durations into
    `max_frames` frames (static). Returns (audio [B, frames * hop], valid audio lengths [B], frames the
    durations asked for [B]; more than max_frames means the output was cut).
    """

    cfg: HifiGanConfig

    @nn.compact
    def __call__(
        self,
        units_bt,
        lengths_b,
        pitch_bt=None,
        style_bt=None,
        speaker_b=None,
        global_style_b=None,
        dur_pred: bool = False,
        max_frames: Optional[int] = None,
    ):
        cfg = self.cfg
        valid_bt = valid_mask(lengths_b, units_bt.shape[1])
        e = cfg.embedding_dim
        unit_btc = nn.Embed(cfg.num_embeddings, e, name="dict")(units_bt)
        streams = [unit_btc]
        if cfg.num_f0_tokens:
            streams.append(nn.Embed(cfg.num_f0_tokens, e, name="f0_dict")(pitch_bt))
        if cfg.num_style_tokens:
            streams.append(nn.Embed(cfg.num_style_tokens, e, name="style_dict")(style_bt))
        x_btc = jnp.concatenate(streams, axis=-1)
        needed_b = lengths_b
        if dur_pred:
            d = cfg.dur_predictor_params
            if d is None:
                raise ValueError("this vocoder has no duration predictor; call with dur_pred=False")
            log_dur = DurationPredictor(d.var_pred_hidden_dim, d.var_pred_kernel_size, name="dur_predictor")(
                unit_btc, valid_bt
            )
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


def init_params(cfg: HifiGanConfig, seed: int = 0):
    """Random parameters for `cfg` (every submodule, the duration predictor included when configured)."""
    z = jnp.zeros((1, 4), jnp.int32)
    one = jnp.zeros((1,), jnp.int32)
    model = CodeGenerator(cfg)
    return model.init(
        jax.random.PRNGKey(seed), z, jnp.asarray([4]), z, z, one, one, dur_pred=cfg.has_dur_predictor, max_frames=4
    )["params"]
