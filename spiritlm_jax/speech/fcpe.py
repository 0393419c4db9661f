"""FCPE (Fast Context-based Pitch Estimation) in JAX/Flax: 16 kHz audio -> F0 and voicing at 200 Hz.

The pitch extractor of Spirit LM EXPRESSIVE (docs/reference.md), ported from torchfcpe 0.0.4 (MIT); the
real weights ship inside that package (`torchfcpe/assets/fcpe_c_v001.pt`) and are converted by
`tools/convert_weights/fcpe_from_torchfcpe.py`. What runs, in order:

1. Mel front-end (torchfcpe `Wav2MelModule` at 16 kHz): reflect-pad (win - hop) // 2 = 432 samples on
   each side, STFT (n_fft = win = 1024, hop 160, periodic Hann, not centred), magnitude
   sqrt(re^2 + im^2 + 1e-9), librosa's Slaney mel filterbank (128 bins, 0-8 kHz), log(max(., 1e-5)).
   That gives n // 160 frames; the last is repeated once to reach n // 160 + 1 (100 Hz).
2. Network (`CFNaiveMelPE`): Conv1d(k3) -> GroupNorm(4) -> LeakyReLU(0.01) -> Conv1d(k3), then
   `n_layers` conformer-like layers x += [Performer attention on LayerNorm(x)] (absent in the shipped
   `conv_only` model); x += conv module (LayerNorm -> 1x1 conv to 2*inner -> GLU -> depthwise conv k31
   -> SiLU -> 1x1 conv), then LayerNorm -> Linear (weight norm folded) -> sigmoid: a 360-bin salience
   over cents (the `cent_table` buffer, 32.70 .. 1975.5 Hz).
3. Decoder (torchfcpe `infer` as Spirit LM's `FCPEF0Extractor` calls it): local argmax (salience-
   weighted mean of the cents of the 9 bins around the peak, indices clamped into range), frames with
   peak salience <= threshold (0.05) get F0 0; uv = F0 < f0_min (50 Hz); unvoiced frames linearly
   interpolated from the voiced ones (ends held); F0 clamped to f0_max (1100 Hz); F0 and uv resized
   by nearest neighbour (PyTorch's index rule, float32 scale) to n // 80 + 1 frames (200 Hz);
   voicing = 1 - uv.

Batches: waveforms are padded to a common length and each item's valid length is passed along; the
reflect padding, GroupNorm statistics, conv inputs, attention keys, interpolation and resizing all
use each item's own length, so a padded batch gives each item its unbatched result. Audio of fewer
than `cfg.win_size` (1024) samples is rejected (the reference's padding rule changes, or fails,
below that; Spirit LM never feeds chunks under 1280 samples). An utterance with no voiced frame
keeps F0 0 and voicing 0 everywhere (the reference's interpolation raises an IndexError there).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import quarter_octave_bucket
from spiritlm_jax.io import ComponentSpec, load_component
from spiritlm_jax.speech.audio import pad_batch
from spiritlm_jax.speech.layers import Conv1d, valid_mask


@dataclasses.dataclass(frozen=True)
class FCPEConfig:
    """torchfcpe's `config_dict` (mel + model sections) for the shipped fcpe_c_v001 model."""

    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 1024
    win_size: int = 1024
    hop_size: int = 160  # mel frames (100 Hz); decoded F0 is resized to the 200 Hz grid
    fmin: float = 0.0
    fmax: float = 8000.0
    clip_val: float = 1e-5
    out_dims: int = 360  # cent bins
    hidden_dims: int = 512
    n_layers: int = 6
    n_heads: int = 8
    attn_head_dim: int = 64  # torchfcpe's SelfAttention default (not hidden // heads)
    conv_only: bool = True  # the shipped model has no attention
    use_fa_norm: bool = True  # L2-normalise q, k before the Performer kernel
    use_harmonic_emb: bool = False
    conv_kernel: int = 31
    conv_expansion: int = 2
    f0_min: float = 32.70  # cent-table range (model property, not the voicing threshold)
    f0_max: float = 1975.5
    precision: Literal["highest", "default"] = "highest"  # matmul/conv precision (TF32 off on GPU)

    def __post_init__(self):
        if self.n_fft != self.win_size:
            raise ValueError(f"FCPE port supports n_fft == win_size only, got {self.n_fft} and {self.win_size}")
        if min(self.n_mels, self.n_fft, self.hop_size, self.out_dims, self.hidden_dims, self.n_heads) < 1:
            raise ValueError(f"FCPE config sizes must be >= 1: {self}")
        if self.hop_size > self.win_size:
            raise ValueError(f"hop_size {self.hop_size} exceeds win_size {self.win_size}")
        if self.hidden_dims % 4:
            raise ValueError(f"hidden_dims {self.hidden_dims} must be divisible by GroupNorm's 4 groups")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if not 0 < self.f0_min < self.f0_max:
            raise ValueError(f"need 0 < f0_min < f0_max, got {self.f0_min}, {self.f0_max}")

    @property
    def nb_features(self) -> int:
        """Performer random features: int(d * ln d) as torchfcpe's FastAttention."""
        return int(self.attn_head_dim * math.log(self.attn_head_dim))

    def mel_frames(self, n_samples):
        """Mel (and model) frames for n samples: n // hop + 1."""
        return n_samples // self.hop_size + 1


@dataclasses.dataclass(frozen=True)
class F0Options:
    """How the salience is decoded, as Spirit LM's FCPEF0Extractor calls torchfcpe's `infer`."""

    hop_length: int = 80  # output grid: n // hop_length + 1 frames (200 Hz at 16 kHz)
    decoder: Literal["local_argmax", "argmax"] = "local_argmax"
    threshold: float = 0.05  # peak salience <= threshold -> F0 0 (unvoiced)
    f0_min: float = 50.0  # F0 below -> unvoiced
    f0_max: float = 1100.0  # F0 clamped to this (after interpolation)
    interpolate: bool = True  # fill unvoiced frames linearly from voiced ones

    def __post_init__(self):
        if self.hop_length < 1:
            raise ValueError(f"hop_length must be >= 1, got {self.hop_length}")
        if not 0 <= self.f0_min < self.f0_max:
            raise ValueError(f"need 0 <= f0_min < f0_max, got {self.f0_min}, {self.f0_max}")

    def frames(self, n_samples):
        return n_samples // self.hop_length + 1


def _precision(cfg: FCPEConfig):
    return jax.lax.Precision.HIGHEST if cfg.precision == "highest" else None


# ----- mel front-end ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's Slaney mel filterbank [n_mels, n_fft // 2 + 1], float32, as torchfcpe builds it."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def _reflect(p, n):
    """Index into a length-n signal for position p of its reflect-padded version ('reflect' mode)."""
    p = jnp.abs(p)
    return jnp.where(p >= n, 2 * (n - 1) - p, p)


def log_mel(wav_bn: jax.Array, n_b: jax.Array, cfg: FCPEConfig) -> jax.Array:
    """Padded 16 kHz waveforms [B, N] with valid lengths [B] -> log mel [B, N // hop + 1, n_mels].

    Item b's frames past cfg.mel_frames(n_b[b]) are padding (their values are unspecified)."""
    b, n_max = wav_bn.shape
    win, hop = cfg.win_size, cfg.hop_size
    pad_left = (win - hop) // 2
    slots = n_max // hop + 1
    # sample index of every STFT frame slot, in the reflect-padded signal of each item's own length
    pos_fk = np.arange(slots)[:, None] * hop + np.arange(win)[None, :] - pad_left
    n = n_b.astype(jnp.int32)[:, None, None]
    idx_bfk = jnp.clip(_reflect(jnp.asarray(pos_fk, jnp.int32)[None], n), 0, n_max - 1)
    frames_bfk = jnp.take_along_axis(wav_bn.astype(jnp.float32), idx_bfk.reshape(b, -1), axis=1).reshape(b, slots, win)
    spec = jnp.fft.rfft(frames_bfk * jnp.asarray(hann_window(win)), n=cfg.n_fft, axis=-1)
    mag_bff = jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + 1e-9)
    basis_mf = jnp.asarray(mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(cfg.fmax)))
    mel_bfm = jnp.einsum("bfk,mk->bfm", mag_bff, basis_mf, precision=_precision(cfg))
    mel_bfm = jnp.log(jnp.maximum(mel_bfm, cfg.clip_val))
    # the STFT gives n // hop frames; the reference repeats the last one to reach n // hop + 1
    src_bf = jnp.minimum(jnp.arange(slots)[None, :], n_b[:, None] // hop - 1)
    return jnp.take_along_axis(mel_bfm, src_bf[..., None], axis=1)


# ----- network -----------------------------------------------------------------------------------------


class DepthwiseConv1d(nn.Module):
    """Depthwise Conv1d, 'same' zero padding, NWC; kernel [k, 1, C]. Written as a sum of k shifted
    products: XLA's grouped convolution on CPU was ~20x slower for FCPE's k31 x 1024 channels (GPU
    backends fuse this just as well)."""

    kernel: int

    @nn.compact
    def __call__(self, x_btc):
        c, t, half = x_btc.shape[-1], x_btc.shape[1], self.kernel // 2
        w = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel, 1, c))
        xp = jnp.pad(x_btc, ((0, 0), (half, half), (0, 0)))
        y = sum(xp[:, k : k + t] * w[k, 0] for k in range(self.kernel))
        return y + self.param("bias", nn.initializers.zeros, (c,))


def masked_group_norm(x_btc, valid_bt, groups: int, scale, bias, eps: float = 1e-5):
    """torch GroupNorm over (channels of a group, valid time) per item; biased variance."""
    b, t, c = x_btc.shape
    m = valid_bt[:, :, None, None].astype(x_btc.dtype)
    xg = x_btc.reshape(b, t, groups, c // groups)
    cnt = jnp.maximum(m.sum(axis=(1, 3), keepdims=True), 1.0) * (c // groups)
    mean = (xg * m).sum(axis=(1, 3), keepdims=True) / cnt
    var = (((xg - mean) * m) ** 2).sum(axis=(1, 3), keepdims=True) / cnt
    return ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(b, t, c) * scale + bias


def softmax_kernel(x_bhtd, proj_md, is_query: bool, precision, eps: float = 1e-4):
    """Performer positive random features (torchfcpe's softmax_kernel, including its key-side
    `exp(. + eps)` quirk)."""
    d = x_bhtd.shape[-1]
    norm = d**-0.25
    ratio = proj_md.shape[0] ** -0.5
    dash = jnp.einsum("bhtd,md->bhtm", norm * x_bhtd, proj_md, precision=precision)
    diag = (x_bhtd**2).sum(-1, keepdims=True) / 2.0 * norm**2
    if is_query:
        return ratio * (jnp.exp(dash - diag - dash.max(-1, keepdims=True)) + eps)
    return ratio * jnp.exp(dash - diag + eps)


class PerformerAttention(nn.Module):
    """torchfcpe SelfAttention (global FAVOR+ heads only, as it builds them): q/k/v projections,
    optional L2 normalisation, random-feature linear attention; padded keys contribute nothing."""

    cfg: FCPEConfig

    @nn.compact
    def __call__(self, x_btd, valid_bt):
        cfg, prec = self.cfg, _precision(self.cfg)
        b, t, d = x_btd.shape
        h, hd = cfg.n_heads, cfg.attn_head_dim
        dense = lambda f, name: nn.Dense(f, precision=prec, name=name)  # noqa: E731
        split = lambda y: y.reshape(b, t, h, hd).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(dense(h * hd, n)(x_btd)) for n in ("to_q", "to_k", "to_v"))
        if cfg.use_fa_norm:
            q = q / (jnp.linalg.norm(q, axis=-1, keepdims=True) + 1e-8)
            k = k / (jnp.linalg.norm(k, axis=-1, keepdims=True) + 1e-8)
        proj = self.param("projection_matrix", nn.initializers.normal(1.0), (cfg.nb_features, hd))
        qf = softmax_kernel(q, proj, True, prec)
        kf = softmax_kernel(k, proj, False, prec) * valid_bt[:, None, :, None]
        d_inv = 1.0 / (jnp.einsum("bhtm,bhm->bht", qf, kf.sum(2), precision=prec) + 1e-8)
        ctx = jnp.einsum("bhtm,bhte->bhme", kf, v, precision=prec)
        out = jnp.einsum("bhme,bhtm,bht->bhte", ctx, qf, d_inv, precision=prec)
        return dense(d, "to_out")(out.transpose(0, 2, 1, 3).reshape(b, t, h * hd))


class ConformerLayer(nn.Module):
    """x += attn(LN(x)) (unless conv_only); x += LN -> 1x1 -> GLU -> depthwise -> SiLU -> 1x1."""

    cfg: FCPEConfig

    @nn.compact
    def __call__(self, x_btd, valid_bt):
        cfg, prec = self.cfg, _precision(self.cfg)
        d, inner = cfg.hidden_dims, cfg.hidden_dims * cfg.conv_expansion
        if not cfg.conv_only:
            x_btd = x_btd + PerformerAttention(cfg, name="attn")(nn.LayerNorm(1e-5, name="attn_norm")(x_btd), valid_bt)
        y = nn.LayerNorm(1e-5, name="conv_norm")(x_btd)
        y = nn.Dense(2 * inner, precision=prec, name="pointwise_in")(y)
        y = y[..., :inner] * jax.nn.sigmoid(y[..., inner:])  # GLU over channels
        y = y * valid_bt[..., None]  # the depthwise conv sees zeros past the item's end
        y = DepthwiseConv1d(cfg.conv_kernel, name="depthwise")(y)
        y = nn.Dense(d, precision=prec, name="pointwise_out")(jax.nn.silu(y))
        return x_btd + y


class FCPENet(nn.Module):
    """log mel [B, T, n_mels] (+ valid frames [B]) -> salience [B, T, out_dims] in (0, 1)."""

    cfg: FCPEConfig

    @nn.compact
    def __call__(self, mel_btm, frames_b=None):
        cfg, prec = self.cfg, _precision(self.cfg)
        b, t, _ = mel_btm.shape
        frames_b = jnp.full((b,), t, jnp.int32) if frames_b is None else frames_b
        valid_bt = valid_mask(frames_b, t).astype(jnp.float32)
        x = Conv1d(cfg.hidden_dims, 3, padding=1, precision=prec, name="input_conv_0")(mel_btm * valid_bt[..., None])
        scale = self.param("input_norm_scale", nn.initializers.ones, (cfg.hidden_dims,))
        bias = self.param("input_norm_bias", nn.initializers.zeros, (cfg.hidden_dims,))
        x = masked_group_norm(x, valid_bt, 4, scale, bias)
        x = nn.leaky_relu(x, 0.01) * valid_bt[..., None]
        x = Conv1d(cfg.hidden_dims, 3, padding=1, precision=prec, name="input_conv_1")(x)
        if cfg.use_harmonic_emb:  # inference uses harmonic index 0
            x = x + self.param("harmonic_emb", nn.initializers.normal(1.0), (9, cfg.hidden_dims))[0]
        for i in range(cfg.n_layers):
            x = ConformerLayer(cfg, name=f"layer_{i}")(x, valid_bt)
        x = nn.LayerNorm(1e-5, name="norm")(x)
        return jax.nn.sigmoid(nn.Dense(cfg.out_dims, precision=prec, name="output_proj")(x))


def cent_table(cfg: FCPEConfig) -> np.ndarray:
    """The model's cent bins (for random init; converted checkpoints carry the reference's buffer)."""
    cent = lambda f: 1200.0 * np.log2(f / 10.0)  # noqa: E731
    return np.linspace(cent(cfg.f0_min), cent(cfg.f0_max), cfg.out_dims).astype(np.float32)


class FCPE(nn.Module):
    """Padded waveforms [B, N] + lengths [B] -> (salience [B, N // hop + 1, out_dims], cent table)."""

    cfg: FCPEConfig

    @nn.compact
    def __call__(self, wav_bn, n_b):
        mel = log_mel(wav_bn, n_b, self.cfg)
        salience = FCPENet(self.cfg, name="net")(mel, self.cfg.mel_frames(n_b))
        cents = self.param("cent_table", lambda _: jnp.asarray(cent_table(self.cfg)))
        return salience, cents


# ----- decoder -------------------------------------------------------------------------------------------


def salience_to_f0(salience_btc, cents_c, threshold: float, decoder: str = "local_argmax"):
    """Salience -> F0 in Hz [B, T]; frames whose peak salience is <= threshold get 0 (torchfcpe
    multiplies their cents by -inf, which 10 * 2^(c / 1200) maps to 0)."""
    confident = salience_btc.max(-1)
    if decoder == "local_argmax":
        peak = jnp.argmax(salience_btc, axis=-1)
        idx = jnp.clip(peak[..., None] + jnp.arange(-4, 5), 0, salience_btc.shape[-1] - 1)
        y = jnp.take_along_axis(salience_btc, idx, axis=-1)
        c = cents_c[idx]
    elif decoder == "argmax":
        y, c = salience_btc, jnp.broadcast_to(cents_c, salience_btc.shape)
    else:
        raise ValueError(f"decoder must be 'local_argmax' or 'argmax', got {decoder!r}")
    cents = (c * y).sum(-1) / y.sum(-1)
    f0 = 10.0 * jnp.exp2(cents / 1200.0)
    return jnp.where(confident <= threshold, 0.0, f0)


def interpolate_unvoiced(f0_bt, uv_bt, valid_bt):
    """torchfcpe's batch_interp_with_replacement_detach: each unvoiced frame takes the linear
    interpolation of the nearest voiced frames around it (the first/last voiced F0 beyond the ends);
    items with no voiced frame are left as they are."""
    t = f0_bt.shape[1]
    ar = jnp.arange(t)[None, :]
    voiced = valid_bt & ~uv_bt
    prev = jax.lax.cummax(jnp.where(voiced, ar, -1), axis=1)
    nxt = jax.lax.cummin(jnp.where(voiced, ar, t), axis=1, reverse=True)
    first = jnp.where(voiced.any(1), jnp.argmax(voiced, axis=1), 0)[:, None]
    last = (t - 1 - jnp.argmax(voiced[:, ::-1], axis=1))[:, None]
    y_prev = jnp.take_along_axis(f0_bt, jnp.clip(prev, 0, t - 1), axis=1)
    y_next = jnp.take_along_axis(f0_bt, jnp.clip(nxt, 0, t - 1), axis=1)
    # same operation order as the reference: y_l + ((x - x_l) * (y_r - y_l) / (x_r - x_l))
    inner = y_prev + ((ar - prev).astype(f0_bt.dtype) * (y_next - y_prev) / (nxt - prev).astype(f0_bt.dtype))
    filled = jnp.where(
        prev < 0,
        jnp.take_along_axis(f0_bt, first, axis=1),
        jnp.where(nxt >= t, jnp.take_along_axis(f0_bt, last, axis=1), inner),
    )
    replace = uv_bt & valid_bt & voiced.any(1, keepdims=True)
    return jnp.where(replace, filled, f0_bt)


def nearest_index(out_len, in_len, t_out: int):
    """Source frame of each of `t_out` output slots for PyTorch's F.interpolate(mode='nearest', size=out_len):
    i when sizes match, i >> 1 when doubling, else min(floor(i * float32(in / out)), in - 1)."""
    i = jnp.arange(t_out)[None, :]
    in_len, out_len = in_len[:, None], out_len[:, None]
    scale = in_len.astype(jnp.float32) / out_len.astype(jnp.float32)
    general = jnp.minimum(jnp.floor(i.astype(jnp.float32) * scale).astype(jnp.int32), in_len - 1)
    return jnp.where(out_len == in_len, i, jnp.where(out_len == 2 * in_len, i >> 1, general))


def decode_f0(salience_btc, cents_c, n_b, cfg: FCPEConfig, opts: F0Options, t_out: int):
    """Salience at the mel rate -> (f0 [B, t_out], vuv [B, t_out], frames [B]) on the opts.hop_length
    grid; item b has opts.frames(n_b[b]) valid frames (t_out must cover them; slots past are 0)."""
    b, t, _ = salience_btc.shape
    frames_b = cfg.mel_frames(n_b)
    valid_bt = valid_mask(frames_b, t)
    f0 = salience_to_f0(salience_btc, cents_c, opts.threshold, opts.decoder)
    uv = f0 < opts.f0_min
    if opts.interpolate:
        f0 = interpolate_unvoiced(f0, uv, valid_bt)
    f0 = jnp.minimum(f0, opts.f0_max)
    out_b = opts.frames(n_b)
    src = nearest_index(out_b, frames_b, t_out)
    f0_out = jnp.take_along_axis(f0, jnp.clip(src, 0, t - 1), axis=1)
    vuv_out = 1.0 - jnp.take_along_axis(uv.astype(jnp.float32), jnp.clip(src, 0, t - 1), axis=1)
    valid_out = valid_mask(out_b, t_out)
    return jnp.where(valid_out, f0_out, 0.0), jnp.where(valid_out, vuv_out, 0.0), out_b


def fcpe_f0(params, wav_bn, n_b, cfg: FCPEConfig, opts: F0Options = F0Options()):
    """Pure F0 extraction: params, padded 16 kHz waveforms [B, N], lengths [B] ->
    (f0 [B, T'], vuv [B, T'], frames [B]) with frames = n // opts.hop_length + 1. Jit with cfg/opts static."""
    salience, cents = FCPE(cfg).apply({"params": params}, wav_bn, n_b)
    return decode_f0(salience, cents, n_b, cfg, opts, opts.frames(wav_bn.shape[1]))


# ----- params on disk, and a loaded extractor ---------------------------------------------------------


def init_params(cfg: FCPEConfig, seed: int = 0) -> dict:
    wav = jnp.zeros((1, cfg.win_size), jnp.float32)
    return FCPE(cfg).init(jax.random.PRNGKey(seed), wav, jnp.array([cfg.win_size]))["params"]


def _abstract_params(configs: dict) -> dict:
    cfg = configs["fcpe.yaml"]
    wav = jax.ShapeDtypeStruct((1, cfg.win_size), jnp.float32)
    n = jax.ShapeDtypeStruct((1,), jnp.int32)
    return jax.eval_shape(FCPE(cfg).init, jax.random.PRNGKey(0), wav, n)["params"]


# DIR/fcpe.yaml (FCPEConfig) + DIR/params: io.save_component(DIR, FCPE_SPEC, params, {"fcpe.yaml": cfg})
FCPE_SPEC = ComponentSpec(
    "converted FCPE model",
    {"fcpe.yaml": FCPEConfig},
    _abstract_params,
    hint="make one with tools/convert_weights/fcpe_from_torchfcpe.py",
)
BUCKET_MIN_SAMPLES = 16384  # waveforms are padded to buckets.quarter_octave_bucket(n, BUCKET_MIN_SAMPLES)


def check_waveform(wav, cfg: FCPEConfig, name: str = "waveform") -> np.ndarray:
    """A mono float32 16 kHz waveform, or a ValueError naming the problem."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"{name}: expected mono audio [N], got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {wav.dtype}")
    wav = wav.astype(np.float32)
    if len(wav) < cfg.win_size:
        raise ValueError(
            f"{name}: {len(wav)} samples is shorter than one FCPE window ({cfg.win_size} samples "
            f"at {cfg.sample_rate} Hz)"
        )
    if not np.isfinite(wav).all():
        raise ValueError(f"{name}: contains NaN or infinite samples")
    return wav


@functools.lru_cache(maxsize=None)
def jitted_f0(cfg: FCPEConfig, opts: F0Options):
    """`fcpe_f0` jitted for (cfg, opts), shared by every extractor (params are arguments, so loading a
    model again reuses the compiled code)."""
    return jax.jit(functools.partial(fcpe_f0, cfg=cfg, opts=opts))


class F0Extractor:
    """A loaded FCPE: 16 kHz waveforms -> (F0 Hz, voicing) at 200 Hz, jitted, batched with padding.

    fx = F0Extractor.load("converted/fcpe")
    f0, vuv = fx("speech_16k.wav" samples)   # each [n // 80 + 1] float32
    """

    def __init__(self, params, cfg: FCPEConfig, opts: F0Options = F0Options()):
        self.params, self.cfg, self.opts = params, cfg, opts
        self._fn = jitted_f0(cfg, opts)

    @classmethod
    def load(cls, directory, opts: F0Options = F0Options()) -> "F0Extractor":
        """From a directory written with FCPE_SPEC (no torch needed)."""
        params, cfgs = load_component(directory, FCPE_SPEC)
        return cls(params, cfgs["fcpe.yaml"], opts)

    def batch(self, wavs: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """(f0, vuv) per waveform, all run as one padded batch."""
        wavs = [check_waveform(w, self.cfg, f"waveform {i}") for i, w in enumerate(wavs)]
        if not wavs:
            return []
        lengths = [len(w) for w in wavs]
        padded = pad_batch(wavs, quarter_octave_bucket(max(lengths), BUCKET_MIN_SAMPLES))
        f0, vuv, frames = (
            np.asarray(a) for a in self._fn(self.params, jnp.asarray(padded), jnp.asarray(lengths, jnp.int32))
        )
        return [(f0[i, : frames[i]], vuv[i, : frames[i]]) for i in range(len(wavs))]

    def __call__(self, wav) -> tuple[np.ndarray, np.ndarray]:
        return self.batch([wav])[0]
