"""F0 VQ-VAE encoder + codebook in JAX vs a PyTorch module written here from the published architecture
(speech-resynthesis / Jukebox `Encoder`, `EncoderConvBlock`, `Resnet1D`, `BottleneckBlock`, with the
state-dict key names of Spirit LM's `vqvae_f0_quantizer/model.pt`), random weights, fp32, on F0
tracks from real speech (torchfcpe's) and a synthetic contour.

Tolerances: codes must be identical, encoder outputs within 1e-4 absolute (the outputs are O(10-100):
F0 enters in Hz; fp32 conv sums of a few hundred terms round at ~1e-7 relative, ~1e-5 absolute).
The codebook is drawn from the encoder's own outputs (as the reference initialises it) plus noise,
so codes are spread over many rows and a wrong layer or padding changes them.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from spiritlm_jax.io import load_component
from spiritlm_jax.speech import f0_vqvae as fv
from spiritlm_jax.speech.audio import load_audio
from tests.fcpe_reference import bundled_model, converted_bundled, spiritlm_f0
from tools.convert_weights.common import ConversionError
from tools.convert_weights.f0_vqvae_from_pt import config_from_yaml, load_quantizer, main, params_from_state_dict

DATA = Path(__file__).parent / "data"
AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"

PUBLIC = dict(
    input_emb_width=2,
    output_emb_width=128,
    levels=1,
    downs_t=[4],
    strides_t=[2],
    width=32,
    depth=4,
    m_conv=1.0,
    dilation_growth_rate=3,
)  # docs/reference.md, components: pitch's public nearest config, 64 codes
ODD = dict(
    input_emb_width=2,
    output_emb_width=64,
    levels=2,
    downs_t=[[1, 1], [2]],
    strides_t=[[2, 3], [2]],
    width=16,
    depth=3,
    m_conv=0.5,
    dilation_growth_rate=2,
    dilation_cycle=2,
    res_scale=True,
)  # list strides, odd stride 3,
# a dilation cycle, res_scale, two chained levels and an encoder twice the codebook width (halves summed)
CONFIGS = {"public": (PUBLIC, 128, "norm_f0_interp,vuv"), "odd": (ODD, 32, "f0,vuv")}


# ----- the PyTorch reference, written from the published architecture --------------------------------


class ResConv1DBlock(nn.Module):
    def __init__(self, n_in, n_state, dilation, res_scale):
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(), nn.Conv1d(n_in, n_state, 3, 1, dilation, dilation), nn.ReLU(), nn.Conv1d(n_state, n_in, 1, 1, 0)
        )
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.model(x)


class Resnet1D(nn.Module):
    def __init__(self, n_in, depth, m_conv, growth, cycle, res_scale):
        super().__init__()
        scale = 1.0 / math.sqrt(depth) if res_scale else 1.0
        dilations = [growth ** (d if cycle is None else d % cycle) for d in range(depth)]
        self.model = nn.Sequential(*[ResConv1DBlock(n_in, int(m_conv * n_in), dil, scale) for dil in dilations])

    def forward(self, x):
        return self.model(x)


class EncoderConvBlock(nn.Module):
    def __init__(
        self,
        c_in,
        c_out,
        down_t,
        stride_t,
        width,
        depth,
        m_conv,
        dilation_growth_rate=1,
        dilation_cycle=None,
        res_scale=False,
    ):
        super().__init__()
        pairs = list(zip(stride_t, down_t)) if isinstance(stride_t, list) else [(stride_t, down_t)]
        blocks, first = [], True
        for s, d in pairs:
            k, p = (2 * s, s // 2) if (s % 2 == 0 or not isinstance(stride_t, list)) else (2 * s + 1, s // 2 + 1)
            for _ in range(d):
                res = Resnet1D(width, depth, m_conv, dilation_growth_rate, dilation_cycle, res_scale)
                blocks.append(nn.Sequential(nn.Conv1d(c_in if first else width, width, k, s, p), res))
                first = False
        blocks.append(nn.Conv1d(width, c_out, 3, 1, 1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x):
        return self.model(x)


class Encoder(nn.Module):
    def __init__(self, input_emb_width, output_emb_width, levels, downs_t, strides_t, **kw):
        super().__init__()
        self.level_blocks = nn.ModuleList(
            [
                EncoderConvBlock(
                    input_emb_width if lv == 0 else output_emb_width, output_emb_width, downs_t[lv], strides_t[lv], **kw
                )
                for lv in range(levels)
            ]
        )

    def forward(self, x):  # (N, C, T) -> one output per level, levels chained
        xs = []
        for block in self.level_blocks:
            x = block(x)
            xs.append(x)
        return xs


class BottleneckBlock(nn.Module):
    def __init__(self, l_bins, emb_width):
        super().__init__()
        self.emb_width = emb_width
        self.register_buffer("k", torch.zeros(l_bins, emb_width))

    def forward(self, x):  # (N, C, T) -> codes (N, T)
        n, _, t = x.shape
        x = x.permute(0, 2, 1).reshape(n * t, -1)
        if x.shape[-1] == 2 * self.emb_width:
            x = x[:, : self.emb_width] + x[:, self.emb_width :]
        k_w = self.k.t()
        dist = (x**2).sum(-1, keepdim=True) - 2 * x @ k_w + (k_w**2).sum(0, keepdim=True)
        return dist.min(-1)[1].view(n, t)


class Bottleneck(nn.Module):
    def __init__(self, l_bins, emb_width, levels):
        super().__init__()
        self.level_blocks = nn.ModuleList([BottleneckBlock(l_bins, emb_width) for _ in range(levels)])


class VQVAE(nn.Module):
    def __init__(self, enc: dict, emb_width: int, l_bins: int = 64):
        super().__init__()
        self.encoder = Encoder(**enc)
        self.vq = Bottleneck(l_bins, emb_width, enc["levels"])

    def forward(self, x):
        xs = self.encoder(x)
        return [b(z) for b, z in zip(self.vq.level_blocks, xs)], xs


def reference_inputs(f0, vuv, features: str, speaker_mean=None):
    """F0Tokenizer.quantize_vqvae's input: non-zero F0 minus the mean (of voiced frames) when
    normalising, stacked with vuv to (1, 2, T)."""
    f0, vuv = torch.tensor(f0).clone(), torch.tensor(vuv)
    if "norm_" in features:
        mask = f0 != 0
        mean = speaker_mean if speaker_mean is not None else torch.mean(f0[vuv != 0])
        f0[mask] = f0[mask] - mean
    return torch.stack([f0, vuv]).float().unsqueeze(0)


# ----- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracks():
    """(f0, vuv) from torchfcpe on real speech, and a synthetic contour with unvoiced gaps."""
    model = bundled_model()
    out = [spiritlm_f0(model, load_audio(AMFM)), spiritlm_f0(model, load_audio(DATA / "agent-pass.wav"))]
    rng = np.random.default_rng(0)
    t = np.arange(1203)
    f0 = (180 + 40 * np.sin(t / 37) + np.cumsum(rng.normal(0, 1.5, t.size))).astype(np.float32)
    vuv = (np.sin(t / 23) > -0.6).astype(np.float32)
    out.append((f0, vuv))
    return out


_BUILT: dict = {}


def build(name: str, tracks, seed: int = 0):
    """(torch VQVAE with a codebook drawn from its encoder's outputs, JAX config, JAX params), cached."""
    if (name, seed) not in _BUILT:
        _BUILT[name, seed] = _build(name, tracks, seed)
    return _BUILT[name, seed]


def _build(name: str, tracks, seed: int):
    enc, emb, features = CONFIGS[name]
    torch.manual_seed(seed)
    m = VQVAE(enc, emb).eval()
    with torch.no_grad():
        for level in range(enc["levels"]):
            z = torch.cat([m.encoder(reference_inputs(f, v, features))[level] for f, v in tracks], -1)
            z = z.permute(0, 2, 1).reshape(-1, z.shape[1])
            if z.shape[-1] == 2 * emb:
                z = z[:, :emb] + z[:, emb:]
            pick = z[torch.randint(0, z.shape[0], (64,))]
            m.vq.level_blocks[level].k.copy_(pick + 0.05 * pick.std() * torch.randn_like(pick))
    cfg = config_from_yaml(
        {
            "encoder_params": enc,
            "vq_params": {"l_bins": 64, "emb_width": emb, "mu": 0.99, "levels": enc["levels"]},
            "features": features,
        }
    )
    return m, cfg, params_from_state_dict(m.state_dict(), cfg)


@functools.lru_cache(maxsize=None)
def encode_fn(cfg: fv.F0VQVAEConfig):
    """Jitted encode_f0 for cfg (op-by-op dispatch of the conv stack is far slower on CPU)."""
    return jax.jit(lambda p, f0, vuv, n, mean=None: fv.encode_f0(p, f0, vuv, n, cfg, mean))


def encode_one(params, cfg, f0, vuv, f0_mean=None):
    codes, _ = encode_fn(cfg)(params, jnp.asarray(f0)[None], jnp.asarray(vuv)[None], jnp.array([len(f0)]), f0_mean)
    return np.asarray(codes[0])


# ----- tests -------------------------------------------------------------------------------------------


def padded(tracks, cfg):
    """The tracks as one zero-padded batch (a spare unit of padding) and their lengths."""
    t_max = -(-max(len(f) for f, _ in tracks) // cfg.hop) * cfg.hop + cfg.hop
    f0 = np.zeros((len(tracks), t_max), np.float32)
    vuv = np.zeros_like(f0)
    for i, (f, v) in enumerate(tracks):
        f0[i, : len(f)], vuv[i, : len(v)] = f, v
    return jnp.asarray(f0), jnp.asarray(vuv), jnp.array([len(f) for f, _ in tracks])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_and_codes_match_pytorch(name, tracks):
    """Every level's encoder output and codes, each track against the reference run on it alone;
    ours run as one padded batch, so per-item lengths (conv inputs zeroed past each item's end, as the
    reference's padding) are checked too."""
    m, cfg, params = build(name, tracks)
    f0, vuv, n = padded(tracks, cfg)
    x = jax.jit(lambda a, b, c: fv.f0_features(a, b, c, cfg))(f0, vuv, n)
    out = jax.jit(lambda p, x, n: fv.F0VQVAE(cfg).apply({"params": p}, x, n))(params, x, n)
    used = set()
    for i, (f, v) in enumerate(tracks):
        x_ref = reference_inputs(f, v, cfg.features)
        with torch.no_grad():
            codes_ref, xs_ref = m(x_ref)
        np.testing.assert_allclose(np.asarray(x[i, : len(f)]), x_ref[0].numpy().T, rtol=1e-6, atol=1e-4)
        for level, (codes, z, n_l) in enumerate(out):
            t_l = xs_ref[level].shape[-1]
            assert int(n_l[i]) == t_l
            assert np.abs(np.asarray(z[i, :t_l]) - xs_ref[level][0].numpy().T).max() <= 1e-4
            np.testing.assert_array_equal(np.asarray(codes[i, :t_l]), codes_ref[level][0].numpy())
            assert (np.asarray(codes[i, t_l:]) == -1).all()
        used |= set(codes_ref[0].numpy().ravel().tolist())
    assert len(used) >= 8  # codes are spread: a wrong layer would change them
    assert len(tracks[-1][0]) // cfg.hop == int(out[0][2][-1])  # public: 1203 frames -> 75 units (hop 16)


def test_speaker_mean_replaces_the_utterance_mean(tracks):
    m, cfg, params = build("public", tracks)
    f0, vuv = tracks[1]
    with torch.no_grad():
        ref = m(reference_inputs(f0, vuv, cfg.features, speaker_mean=150.0))[0][0][0].numpy()
        ref_utt = m(reference_inputs(f0, vuv, cfg.features))[0][0][0].numpy()
    assert (ref != ref_utt).any()  # the option matters on this input
    np.testing.assert_array_equal(encode_one(params, cfg, f0, vuv, 150.0), ref)


def _write_reference_files(d: Path, m: VQVAE, name: str):
    enc, emb, features = CONFIGS[name]
    d.mkdir(parents=True)
    sd = dict(m.state_dict())
    sd["decoder.out.weight"], sd["decoder.out.bias"] = torch.zeros(2, 128, 3), torch.zeros(2)  # decoder: skipped
    torch.save({"model": sd, "steps": 1000}, d / "model.pt")
    yaml.safe_dump(
        {
            "encoder_params": dict(enc, zero_out=False, reverse_decoder_dilation=True),
            "vq_params": {"l_bins": 64, "emb_width": emb, "mu": 0.99, "levels": enc["levels"]},
            "decoder_params": dict(enc, zero_out=False),
            "features": features,
            "speaker_stats": "f0_stats.pt",
        },
        (d / "config.yaml").open("w"),
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_converter_reproduces_the_reference_files(name, tracks, tmp_path):
    m, cfg, _ = build(name, tracks, seed=3)
    _write_reference_files(tmp_path / "vqvae_f0_quantizer", m, name)
    assert main(["--src", str(tmp_path / "vqvae_f0_quantizer"), "--out", str(tmp_path / "out")]) == 0
    params, cfgs = load_component(tmp_path / "out", fv.F0_VQVAE_SPEC)
    loaded_cfg = cfgs["f0_vqvae.yaml"]
    assert loaded_cfg == cfg
    f0, vuv = tracks[0]
    with torch.no_grad():
        ref = m(reference_inputs(f0, vuv, cfg.features))[0][0][0].numpy()
    np.testing.assert_array_equal(encode_one(params, cfg, f0, vuv), ref)


def test_converter_names_missing_and_misshaped_tensors(tracks, tmp_path):
    m, cfg, _ = build("public", tracks)
    sd = dict(m.state_dict())
    key = "encoder.level_blocks.0.model.2.1.model.3.model.1.weight"
    with pytest.raises(ConversionError, match=rf"missing tensor {key} \(expected shape \(32, 32, 3\)\)"):
        params_from_state_dict({k: v for k, v in sd.items() if k != key}, cfg)
    with pytest.raises(ConversionError, match=r"vq\.level_blocks\.0\.k has shape \(32, 128\), expected \(64, 128\)"):
        params_from_state_dict(dict(sd, **{"vq.level_blocks.0.k": torch.zeros(32, 128)}), cfg)
    with pytest.raises(ConversionError, match="unexpected tensor encoder.extra"):
        params_from_state_dict(dict(sd, **{"encoder.extra": torch.zeros(1)}), cfg)
    d = tmp_path / "q"
    _write_reference_files(d, m, "public")
    (d / "config.yaml").write_text(yaml.safe_dump({"encoder_params": PUBLIC, "features": "f0,vuv"}))
    assert main(["--src", str(d), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ConversionError, match="missing 'vq_params'"):
        config_from_yaml({"encoder_params": PUBLIC, "features": "f0,vuv"})
    assert main(["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_quantizer(tmp_path / "nowhere")


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="odd int stride 3"):
        fv.F0VQVAEConfig(strides_t=(3,))
    with pytest.raises(ValueError, match="features 'log_f0,vuv'"):
        fv.F0VQVAEConfig(features="log_f0,vuv")
    with pytest.raises(ValueError, match="levels=2 needs"):
        fv.F0VQVAEConfig(levels=2)
    with pytest.raises(ValueError, match="output_emb_width 100"):
        fv.F0VQVAEConfig(output_emb_width=100)
    assert fv.F0VQVAEConfig().hop == 16


def test_pitch_tokenizer_matches_the_reference_pipeline(tracks, tmp_path):
    """Audio -> torchfcpe F0 -> reference normalisation -> PyTorch VQ-VAE codes, against
    PitchTokenizer (JAX FCPE with the real weights -> JAX VQ-VAE), one jitted function."""
    m, cfg, params = build("public", tracks)
    fcpe_cfg, fcpe_params = converted_bundled()
    tok = fv.PitchTokenizer(fcpe_params, fcpe_cfg, params, cfg)
    wavs = [load_audio(AMFM), load_audio(DATA / "agent-loginok.wav")]
    out = tok.batch(wavs)
    for wav, item in zip(wavs, out):
        f0_ref, vuv_ref = spiritlm_f0(bundled_model(), wav)
        with torch.no_grad():
            ref = m(reference_inputs(f0_ref, vuv_ref, cfg.features))[0][0][0].numpy()
        assert len(item["units"]) == (len(wav) // 80 + 1) // 16 == len(ref)
        np.testing.assert_array_equal(item["units"], ref)
    assert len(set(out[1]["units"].tolist())) >= 3
    np.testing.assert_array_equal(tok.f0_units(wavs[0]), out[0]["units"])  # alone = in the batch
    np.testing.assert_array_equal(tok.encode_units(AMFM), out[0]["units"])  # a file, one chunk (< 100 s)
    assert len(tok.f0_units(wavs[0][:1280])) == 1  # the reference's shortest chunk gives one unit
    with pytest.raises(ValueError, match="shorter than one FCPE window"):
        tok.f0_units(np.zeros(500, np.float32))


def test_release_model_pt_with_training_objects_loads_without_trust_pickle(tracks, tmp_path):
    """The release's model.pt is read by the reference with weights_only=False; the objects such a
    training checkpoint holds beside the state dict load through the allowlist, anything else is refused."""
    import argparse
    import datetime
    import pathlib

    m, cfg, _ = build("public", tracks, seed=3)
    d = tmp_path / "vqvae_f0_quantizer"
    _write_reference_files(d, m, "public")
    ckpt = torch.load(d / "model.pt", weights_only=True)
    extra = {"args": argparse.Namespace(lr=2e-4, out=pathlib.PosixPath("/ckpt")), "best": np.float64(0.25)}
    torch.save({**ckpt, **extra, "hist": np.arange(3)}, d / "model.pt")
    got_cfg, params = load_quantizer(d)
    assert got_cfg == cfg and params
    torch.save({**ckpt, "when": datetime.date(2024, 1, 1)}, d / "model.pt")
    with pytest.raises(ConversionError, match=r"holds datetime.date.*restricted loader.*--trust-pickle"):
        load_quantizer(d)
    assert load_quantizer(d, trust_pickle=True)[0] == cfg  # the escape hatch for trusted files
