"""Pitch units for Spirit LM EXPRESSIVE: F0 (FCPE) -> F0 VQ-VAE encoder -> 64-code codebook, 12.5 Hz.

The encoder is the public speech-resynthesis / Jukebox VQ-VAE one that Spirit LM's f0 tokenizer loads
from `vqvae_f0_quantizer/{config.yaml, model.pt}` (docs/reference.md). Per level (levels run in a chain,
level l > 0 taking level l - 1's output; Spirit LM's units are level 0's codes):

    for each (stride s, downs d) of the level, d times:
        Conv1d(k = 2s, stride s, pad s // 2)          (list-given odd s: k = 2s + 1, pad s // 2 + 1)
        Resnet1D: `depth` x [x + res_scale * Conv1d_1x1(ReLU(Conv1d_k3(ReLU(x), dilation g^i, pad g^i)))]
                  with g = dilation_growth_rate, i = depth index (mod dilation_cycle when set),
                  res_scale = 1 or 1 / sqrt(depth)
    Conv1d(width -> output_emb_width, k3, pad 1)

then nearest codebook row by |x|^2 - 2 x.k + |k|^2 (lowest index on ties; an output of twice the
codebook width is split in halves that are summed first, as the reference's bottleneck does).
T frames in give T // prod(s^d) codes (200 Hz / 2^4 = 12.5 Hz for the public config).

Input features, as the reference's F0Tokenizer.quantize_vqvae: x[t] = (f0[t], vuv[t]) with F0 in Hz
(no log); when the config's `features` contain "norm_" (or `speaker_norm` is set), every non-zero F0
has the mean F0 subtracted: a given speaker mean, else the mean over the utterance's voiced frames.
Layout here is NWC: [B, T, 2] (the reference's (1, 2, T) transposed).

Batches: each item's valid frame count is carried through; conv inputs past an item's end are zeroed
(as the reference's zero padding sees them), so a padded batch gives each item its unbatched codes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import quarter_octave_bucket
from spiritlm_jax.io import ComponentSpec, load_component
from spiritlm_jax.speech.audio import encode_chunked, pad_batch
from spiritlm_jax.speech.fcpe import BUCKET_MIN_SAMPLES, FCPE_SPEC, F0Options, FCPEConfig, check_waveform, fcpe_f0
from spiritlm_jax.speech.layers import Conv1d, mask_time, valid_mask

FEATURES = ("f0_interp,vuv", "f0,vuv", "norm_f0_interp,vuv", "norm_f0,vuv")  # what the reference accepts


@dataclasses.dataclass(frozen=True)
class F0VQVAEConfig:
    """encoder_params + vq_params + features of the reference's config.yaml (decoder not needed)."""

    input_emb_width: int = 2  # (f0, vuv)
    output_emb_width: int = 128
    levels: int = 1
    downs_t: tuple[Union[int, tuple[int, ...]], ...] = (4,)  # per level: an int, or a list zipped with strides_t
    strides_t: tuple[Union[int, tuple[int, ...]], ...] = (2,)
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: Optional[int] = None
    res_scale: bool = False
    l_bins: int = 64  # codebook size (Spirit LM: 64 pitch units)
    emb_width: int = 128
    features: str = "norm_f0_interp,vuv"  # [guess] for Spirit LM's file; read from config.yaml on import
    speaker_norm: bool = False

    def __post_init__(self):
        if self.levels < 1 or len(self.downs_t) != self.levels or len(self.strides_t) != self.levels:
            raise ValueError(
                f"levels={self.levels} needs that many downs_t and strides_t entries, "
                f"got downs_t={self.downs_t}, strides_t={self.strides_t}"
            )
        if self.features not in FEATURES:
            raise ValueError(f"features {self.features!r} is not one of {list(FEATURES)}")
        if self.output_emb_width not in (self.emb_width, 2 * self.emb_width):
            raise ValueError(
                f"output_emb_width {self.output_emb_width} must be emb_width {self.emb_width} "
                "or twice it (the bottleneck sums the two halves)"
            )
        if (
            min(
                self.input_emb_width,
                self.width,
                self.depth,
                self.l_bins,
                self.emb_width,
                self.dilation_growth_rate,
                int(self.m_conv * self.width),
            )
            < 1
        ):
            raise ValueError(f"F0 VQ-VAE sizes must be >= 1: {self}")
        if self.dilation_cycle is not None and self.dilation_cycle < 1:
            raise ValueError(f"dilation_cycle must be >= 1 or null, got {self.dilation_cycle}")
        for level in range(self.levels):
            self.down_convs(level)

    def down_convs(self, level: int) -> tuple[tuple[int, int, int], ...]:
        """(kernel, stride, padding) of each strided conv of `level`, in order (the reference's rules)."""
        d_t, s_t = self.downs_t[level], self.strides_t[level]
        if isinstance(s_t, int) != isinstance(d_t, int):
            raise ValueError(f"level {level}: downs_t {d_t!r} and strides_t {s_t!r} must both be ints or both lists")
        if isinstance(s_t, int):
            if d_t < 1 or s_t < 1:
                raise ValueError(f"level {level}: downs_t and strides_t must be >= 1, got {d_t}, {s_t}")
            if s_t % 2:
                raise ValueError(
                    f"level {level}: an odd int stride {s_t} gets kernel {2 * s_t} (T - 1) // s frames, "
                    "which the reference's shape assertion rejects; give strides as a list"
                )
            return ((2 * s_t, s_t, s_t // 2),) * d_t
        if len(s_t) != len(d_t) or min(s_t, default=1) < 1 or min(d_t, default=0) < 0:
            raise ValueError(
                f"level {level}: strides_t {s_t} and downs_t {d_t} must pair up (strides >= 1, downs >= 0)"
            )
        convs = []
        for s, d in zip(s_t, d_t):
            k, p = (2 * s, s // 2) if s % 2 == 0 else (2 * s + 1, s // 2 + 1)
            convs += [(k, s, p)] * d
        return tuple(convs)

    def level_stride(self, level: int) -> int:
        return math.prod(s for _, s, _ in self.down_convs(level))

    @property
    def hop(self) -> int:
        """F0 frames per level-0 code (16 for the public config: 200 Hz -> 12.5 Hz)."""
        return self.level_stride(0)

    @property
    def normalize(self) -> bool:
        return self.speaker_norm or "norm_" in self.features

    def dilations(self) -> list[int]:
        cyc = self.dilation_cycle
        return [self.dilation_growth_rate ** (i if cyc is None else i % cyc) for i in range(self.depth)]


class EncoderLevel(nn.Module):
    """One level's EncoderConvBlock: [strided conv + Resnet1D] per down, then a k3 conv."""

    cfg: F0VQVAEConfig
    level: int

    @nn.compact
    def __call__(self, x_btc, n_b):
        cfg = self.cfg
        state = int(cfg.m_conv * cfg.width)
        scale = 1.0 / math.sqrt(cfg.depth) if cfg.res_scale else 1.0
        conv = functools.partial(Conv1d, precision=jax.lax.Precision.HIGHEST)
        for i, (k, s, p) in enumerate(self.cfg.down_convs(self.level)):
            x_btc = conv(cfg.width, k, s, p, name=f"down_{i}")(mask_time(x_btc, valid_mask(n_b, x_btc.shape[1])))
            n_b = n_b // s
            m = valid_mask(n_b, x_btc.shape[1])
            for j, dil in enumerate(cfg.dilations()):
                y = conv(state, 3, 1, dil, dil, name=f"down_{i}_res_{j}_conv")(mask_time(jax.nn.relu(x_btc), m))
                x_btc = x_btc + scale * conv(cfg.width, 1, padding=0, name=f"down_{i}_res_{j}_proj")(jax.nn.relu(y))
        out = conv(cfg.output_emb_width, 3, 1, 1, name="out")(mask_time(x_btc, valid_mask(n_b, x_btc.shape[1])))
        return out, n_b


def nearest_code(z_btc, codebook_kc):
    """Index of the nearest codebook row, |x|^2 - 2 x.k + |k|^2 as the reference computes it."""
    hi = jax.lax.Precision.HIGHEST
    dist = (
        (z_btc**2).sum(-1, keepdims=True)
        - 2 * jnp.einsum("btc,kc->btk", z_btc, codebook_kc, precision=hi)
        + (codebook_kc**2).sum(-1)
    )
    return jnp.argmin(dist, axis=-1)


class F0VQVAE(nn.Module):
    """(f0, vuv) features [B, T, 2] + valid frames [B] -> per level: (codes [B, T_l], encoder output
    [B, T_l, output_emb_width], valid frames [B]). Codes of padded slots are -1."""

    cfg: F0VQVAEConfig

    @nn.compact
    def __call__(self, x_btc, n_b=None):
        cfg = self.cfg
        n_b = jnp.full((x_btc.shape[0],), x_btc.shape[1], jnp.int32) if n_b is None else n_b
        out = []
        for level in range(cfg.levels):
            x_btc, n_b = EncoderLevel(cfg, level, name=f"level_{level}")(x_btc, n_b)
            z = x_btc
            if cfg.output_emb_width == 2 * cfg.emb_width:
                z = z[..., : cfg.emb_width] + z[..., cfg.emb_width :]
            k = self.param(f"codebook_{level}", nn.initializers.normal(1.0), (cfg.l_bins, cfg.emb_width))
            codes = jnp.where(valid_mask(n_b, z.shape[1]), nearest_code(z, k), -1)
            out.append((codes, x_btc, n_b))
        return out


def f0_features(f0_bt, vuv_bt, n_b, cfg: F0VQVAEConfig, f0_mean=None):
    """Stacked VQ-VAE input [B, T, 2] = (f0, vuv), mean-normalised when the config says so: non-zero F0
    minus `f0_mean` (speaker stats, [B] or scalar) or else the mean F0 over each item's voiced frames
    (0 when it has none, where the reference's mean would be NaN)."""
    f0_bt, vuv_bt = f0_bt.astype(jnp.float32), vuv_bt.astype(jnp.float32)
    valid = valid_mask(n_b, f0_bt.shape[1])
    if cfg.normalize:
        if f0_mean is None:
            voiced = (vuv_bt != 0) & valid
            mean = jnp.where(voiced, f0_bt, 0.0).sum(1) / jnp.maximum(voiced.sum(1), 1)
        else:
            mean = jnp.broadcast_to(jnp.asarray(f0_mean, jnp.float32), f0_bt.shape[:1])
        f0_bt = jnp.where(f0_bt != 0, f0_bt - mean[:, None], f0_bt)
    x = jnp.stack([f0_bt, vuv_bt], axis=-1)
    return jnp.where(valid[..., None], x, 0.0)


def encode_f0(params, f0_bt, vuv_bt, n_b, cfg: F0VQVAEConfig, f0_mean=None):
    """Pure: F0/voicing [B, T] (valid frames [B]) -> (level-0 codes [B, T // hop], valid codes [B])."""
    codes, _, n_codes = F0VQVAE(cfg).apply({"params": params}, f0_features(f0_bt, vuv_bt, n_b, cfg, f0_mean), n_b)[0]
    return codes, n_codes


def _abstract_params(configs: dict) -> dict:
    cfg = configs["f0_vqvae.yaml"]
    t = 2 * math.prod(cfg.level_stride(lv) for lv in range(cfg.levels))  # enough frames for every level
    x = jax.ShapeDtypeStruct((1, t, cfg.input_emb_width), jnp.float32)
    return jax.eval_shape(F0VQVAE(cfg).init, jax.random.PRNGKey(0), x)["params"]


# DIR/f0_vqvae.yaml (F0VQVAEConfig) + DIR/params
F0_VQVAE_SPEC = ComponentSpec(
    "converted F0 VQ-VAE",
    {"f0_vqvae.yaml": F0VQVAEConfig},
    _abstract_params,
    hint="make one with tools/convert_weights/f0_vqvae_from_pt.py",
)


def _pitch_fn(fcpe_params, vq_params, wav_bn, n_b, f0_mean, fcpe_cfg, opts, vq_cfg, t_pad):
    f0, vuv, frames = fcpe_f0(fcpe_params, wav_bn, n_b, fcpe_cfg, opts)
    pad = ((0, 0), (0, t_pad - f0.shape[1]))
    codes, n_codes = encode_f0(vq_params, jnp.pad(f0, pad), jnp.pad(vuv, pad), frames, vq_cfg, f0_mean)
    return codes, n_codes, f0, vuv, frames


@functools.lru_cache(maxsize=None)
def _jitted_pitch(fcpe_cfg: FCPEConfig, opts: F0Options, vq_cfg: F0VQVAEConfig, t_pad: int):
    """FCPE -> VQ-VAE jitted per configuration and F0 slot count (shared by every tokenizer)."""
    return jax.jit(functools.partial(_pitch_fn, fcpe_cfg=fcpe_cfg, opts=opts, vq_cfg=vq_cfg, t_pad=t_pad))


class PitchTokenizer:
    """16 kHz audio -> FCPE F0/voicing (200 Hz) -> F0 VQ-VAE level-0 codes (12.5 Hz), as Spirit LM's
    `spiritlm_expressive_f0()` (FCPE, hop 80, interpolation on). One jitted function per padded
    length bucket (powers of two, >= 16384 samples).

        tok = PitchTokenizer.load("converted/fcpe", "converted/vqvae_f0_quantizer")
        units = tok.f0_units(wav_16k)          # int64 [(len(wav) // 80 + 1) // 16]
        units = tok.encode_units("speech.wav") # chunked like the reference tokenizer

    Lengths: n samples give n // 80 + 1 F0 frames and (n // 80 + 1) // hop units (hop 16): trailing
    frames that do not fill a unit are dropped, as the reference encoder's strided convs drop them.
    Audio under 1024 samples is an error (FCPE's window); under 1200 samples it gives no unit.
    """

    def __init__(
        self, fcpe_params, fcpe_cfg: FCPEConfig, vq_params, vq_cfg: F0VQVAEConfig, opts: F0Options = F0Options()
    ):
        self.fcpe_params, self.fcpe_cfg, self.vq_params, self.vq_cfg, self.opts = (
            fcpe_params,
            fcpe_cfg,
            vq_params,
            vq_cfg,
            opts,
        )

    @classmethod
    def load(cls, fcpe_dir, vqvae_dir, opts: F0Options = F0Options()) -> "PitchTokenizer":
        fcpe_params, fcpe_cfgs = load_component(fcpe_dir, FCPE_SPEC)
        vq_params, vq_cfgs = load_component(vqvae_dir, F0_VQVAE_SPEC)
        return cls(fcpe_params, fcpe_cfgs["fcpe.yaml"], vq_params, vq_cfgs["f0_vqvae.yaml"], opts)

    def _fn(self, n_pad: int):
        frames = self.opts.frames(n_pad)
        return _jitted_pitch(self.fcpe_cfg, self.opts, self.vq_cfg, -(-frames // self.vq_cfg.hop) * self.vq_cfg.hop)

    def batch(self, wavs: list, f0_mean=None) -> list[dict]:
        """Per waveform {"units": int64 [U], "f0": float32 [F], "vuv": float32 [F]}, run as one padded
        batch. `f0_mean` (a number, or one per waveform) replaces the per-utterance mean when the
        config normalises F0 (the reference's speaker statistics)."""
        wavs = [check_waveform(w, self.fcpe_cfg, f"waveform {i}") for i, w in enumerate(wavs)]
        if not wavs:
            return []
        lengths = [len(w) for w in wavs]
        n_pad = quarter_octave_bucket(max(lengths), BUCKET_MIN_SAMPLES)
        padded = pad_batch(wavs, n_pad)
        mean = None if f0_mean is None else jnp.broadcast_to(jnp.asarray(f0_mean, jnp.float32), (len(wavs),))
        codes, n_codes, f0, vuv, frames = (
            np.asarray(a)
            for a in self._fn(n_pad)(
                self.fcpe_params, self.vq_params, jnp.asarray(padded), jnp.asarray(lengths, jnp.int32), mean
            )
        )
        return [
            {"units": codes[i, : n_codes[i]].astype(np.int64), "f0": f0[i, : frames[i]], "vuv": vuv[i, : frames[i]]}
            for i in range(len(wavs))
        ]

    def f0_units(self, wav_16k, f0_mean=None) -> np.ndarray:
        """Pitch units (int64, 12.5 Hz) of one 16 kHz waveform (one reference chunk)."""
        return self.batch([wav_16k], f0_mean)[0]["units"]

    def encode_units(self, audio, input_sample_rate=None) -> np.ndarray:
        """Pitch units of a recording, chunked as the reference tokenizer (<= 100 s, chunks under 1280
        samples dropped), concatenated."""
        return encode_chunked(
            audio, lambda chunks: [self.f0_units(c) for c in chunks], np.zeros(0, np.int64), input_sample_rate
        )
