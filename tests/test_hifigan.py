"""HiFi-GAN CodeGenerator parity (random weights, fp32).

1. Against transformers' SeamlessM4TCodeHifiGan: its generator `.hifi_gan` on two upsampling ladders
   (x640 and x320, batched with different lengths), its variance (duration) predictor, and its full
   forward (units -> durations -> repeat -> [language(0 channels), units, speaker] -> generator).
2. SeamlessM4T has no pitch-unit, style-unit or global-style embeddings, so `RefCodeGenerator` below is
   a small PyTorch module written from the published Spirit LM CodeGenerator (official key names,
   torch weight_norm) for those details: channel order [units, pitch, style, speaker, global style],
   every stream repeated by the predicted durations. It is itself checked against SeamlessM4T's
   generator with the same weights, and reused by tests/test_convert_hifigan.py and test_vocoder.py.

Tolerance: max |waveform difference| <= 1e-4. Outputs are tanh-bounded in [-1, 1] and pass ~30-60 fp32
convolutions; the observed difference is ~1e-6, and a wrong padding, flip or slope gives >= 1e-2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
from transformers import SeamlessM4TConfig
from transformers.models.seamless_m4t.modeling_seamless_m4t import SeamlessM4TCodeHifiGan

from spiritlm_jax.speech.hifigan import (
    CodeGenerator,
    DurationPredictor,
    DurPredictorConfig,
    Generator,
    HifiGanConfig,
    repeat_frames,
    upsample_stream,
)
from tools.convert_weights.hifigan_from_pt import params_from_state_dict

TOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")  # the official format

LADDERS = {
    "ladder_640": dict(
        upsample_rates=(5, 4, 4, 4, 2),
        upsample_kernel_sizes=(11, 8, 8, 8, 4),
        upsample_initial_channel=32,
        resblock_kernel_sizes=(3, 7),
        resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
    ),
    "ladder_320": dict(
        upsample_rates=(5, 4, 4, 2, 2),
        upsample_kernel_sizes=(11, 8, 8, 4, 4),
        upsample_initial_channel=64,
        resblock_kernel_sizes=(3, 7, 11),
        resblock_dilation_sizes=((1, 3, 5),) * 3,
    ),
}


def run(module, params, *args, **static):
    """module.apply under one jit (compiles much faster on CPU than op-by-op dispatch)."""
    return jax.jit(lambda p, *a: module.apply({"params": p}, *a, **static))(params, *args)


# ----- an independent PyTorch CodeGenerator with the official key names ------------------------------
def _wn(module, weight_norm: bool):
    return torch.nn.utils.weight_norm(module) if weight_norm else module


class RefResBlock(nn.Module):
    def __init__(self, ch, k, dilations, weight_norm):
        super().__init__()
        self.convs1 = nn.ModuleList(
            [_wn(nn.Conv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2), weight_norm) for d in dilations]
        )
        self.convs2 = nn.ModuleList([_wn(nn.Conv1d(ch, ch, k, padding=(k - 1) // 2), weight_norm) for _ in dilations])

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(nn.functional.leaky_relu(c1(nn.functional.leaky_relu(x, 0.1)), 0.1))
        return x


class RefDurPredictor(nn.Module):
    def __init__(self, e, h, k):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(e, h, k, padding=(k - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(h)
        self.conv2 = nn.Sequential(nn.Conv1d(h, h, k, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(h)
        self.proj = nn.Linear(h, 1)

    def forward(self, x_btc):
        x = self.ln1(self.conv1(x_btc.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        return self.proj(x).squeeze(2)


class RefCodeGenerator(nn.Module):
    """Spirit LM's CodeGenerator, batch 1, channels-first, written from the published architecture."""

    def __init__(self, cfg: HifiGanConfig, weight_norm: bool = True):
        super().__init__()
        self.cfg = cfg
        e, ch = cfg.embedding_dim, cfg.upsample_initial_channel
        self.dict = nn.Embedding(cfg.num_embeddings, e)
        if cfg.num_f0_tokens:
            self.f0_dict = nn.Embedding(cfg.num_f0_tokens, e)
        if cfg.num_style_tokens:
            self.style_dict = nn.Embedding(cfg.num_style_tokens, e)
        if cfg.multispkr:
            self.spkr = nn.Embedding(cfg.num_speakers, e)
        if cfg.multistyle:
            self.style = nn.Embedding(cfg.num_styles, e)
        d = cfg.dur_predictor_params
        if d is not None:
            self.dur_predictor = RefDurPredictor(e, d.var_pred_hidden_dim, d.var_pred_kernel_size)
        self.conv_pre = _wn(nn.Conv1d(cfg.model_in_dim, ch, 7, padding=3), weight_norm)
        self.ups = nn.ModuleList(
            [
                _wn(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2), weight_norm)
                for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
            ]
        )
        self.resblocks = nn.ModuleList(
            [
                RefResBlock(ch // 2 ** (i + 1), k, dl, weight_norm)
                for i in range(len(cfg.upsample_rates))
                for k, dl in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
            ]
        )
        self.conv_post = _wn(nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), 1, 7, padding=3), weight_norm)

    def randomize(self, seed=0):
        """Weights scaled by 1/sqrt(fan-in) so every layer matters and tanh does not saturate."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("weight_g"):
                    p.uniform_(0.5, 1.5, generator=g)
                elif "ln" in name or name.endswith("bias"):
                    p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3, generator=g)
                else:
                    fan_in = p[0].numel() if p.ndim > 1 else 1
                    p.normal_(0, 1.0 if p.ndim == 2 and "proj" not in name else 1.2 / fan_in**0.5, generator=g)
        return self

    def generator(self, x):
        n_k = len(self.cfg.resblock_kernel_sizes)
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(nn.functional.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * n_k + j](x) for j in range(n_k)) / n_k
        return torch.tanh(self.conv_post(nn.functional.leaky_relu(x))).view(-1)  # default slope 0.01

    def forward(self, code, f0_code=None, style_code=None, spkr=None, style=None, dur_pred=False):
        """code/f0_code/style_code: LongTensor [T] (per HuBERT frame); spkr/style: int."""
        streams = [self.dict(code)]
        if self.cfg.num_f0_tokens:
            streams.append(self.f0_dict(f0_code))
        if self.cfg.num_style_tokens:
            streams.append(self.style_dict(style_code))
        if dur_pred:
            log_dur = self.dur_predictor(streams[0][None])[0]
            dur = torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)
            streams = [torch.repeat_interleave(s, dur, dim=0) for s in streams]
        x = torch.cat(streams, 1)
        glob = ([self.spkr.weight[spkr]] if self.cfg.multispkr else []) + (
            [self.style.weight[style]] if self.cfg.multistyle else []
        )
        if glob:
            x = torch.cat([x, torch.cat(glob)[None].expand(x.shape[0], -1)], 1)
        return self.generator(x.T[None])


def ref_state_dict(ref: RefCodeGenerator) -> dict:
    return {k: v.detach().numpy() for k, v in ref.state_dict().items()}


def ref_upsample(code, n, rate):
    """The reference vocoder's stream upsampling, written here from its description (torch)."""
    up = torch.repeat_interleave(torch.as_tensor(code), rate)
    if up.numel() < n:
        up = torch.cat([up, up[-1:].expand(n - up.numel())])
    return up[:n]


# ----- SeamlessM4T ----------------------------------------------------------------------------------
def seamless(name, seed=0):
    c = LADDERS[name]
    cfg = SeamlessM4TConfig(
        unit_embed_dim=16,
        lang_embed_dim=0,
        spkr_embed_dim=16,
        unit_hifi_gan_vocab_size=40,
        vocoder_num_spkrs=3,
        vocoder_num_langs=2,
        variance_predictor_kernel_size=3,
        var_pred_dropout=0.0,
        **{k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v for k, v in c.items()},
    )
    torch.manual_seed(seed)
    m = SeamlessM4TCodeHifiGan(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.normal_(0, 0.3 if "bias" in n or "ln" in n else 0.1)  # larger than init so every path matters
        m.dur_predictor.proj.bias.fill_(1.8)  # durations of 1 to ~30 frames, not all 1
        m.dur_predictor.proj.weight.normal_(0, 2.0)
    return m


def seamless_to_official(m) -> dict:
    """SeamlessM4T names -> the official generator.pt names (language embedding has 0 channels: dropped)."""
    sd = {}
    for k, v in m.state_dict().items():
        k2 = k.replace("hifi_gan.upsampler.", "ups.").replace("hifi_gan.", "")
        k2 = k2.replace("dur_predictor.conv1.", "dur_predictor.conv1.0.").replace(
            "dur_predictor.conv2.", "dur_predictor.conv2.0."
        )
        k2 = k2.replace("unit_embedding.", "dict.").replace("speaker_embedding.", "spkr.")
        if not k2.startswith("language_embedding"):
            sd[k2] = v.float().numpy()
    return sd


def seamless_like_config(name) -> HifiGanConfig:
    return HifiGanConfig(
        num_embeddings=40,
        embedding_dim=16,
        multispkr=True,
        num_speakers=3,
        multistyle=False,
        dur_predictor_params=DurPredictorConfig(16, 16, 3, 0.0),
        **LADDERS[name],
    )


@pytest.mark.parametrize("name", ["ladder_640"])  # ladder_320: full forward below (compile time)
def test_generator_matches_seamless_hifigan_batched(name):
    m = seamless(name)
    cfg = seamless_like_config(name)
    params = params_from_state_dict(seamless_to_official(m), cfg)
    rng = np.random.default_rng(0)
    lengths = [37, 20]
    x = rng.normal(size=(2, 37, cfg.model_in_dim)).astype(np.float32)
    x[1, 20:] = 0.0
    valid = np.arange(37)[None] < np.asarray(lengths)[:, None]
    ours = np.asarray(run(Generator(cfg), params["generator"], jnp.asarray(x), jnp.asarray(valid)))
    assert ours.shape == (2, 37 * cfg.hop)
    for b, n in enumerate(lengths):
        with torch.no_grad():
            ref = m.hifi_gan(torch.from_numpy(x[b : b + 1, :n].transpose(0, 2, 1))).numpy()[0]
        assert ref.shape == (n * cfg.hop,) and np.abs(ref).max() > 0.05  # a live, unsaturated signal
        assert np.abs(ours[b, : n * cfg.hop] - ref).max() <= TOL
        assert np.all(ours[b, n * cfg.hop :] == 0)


def test_duration_predictor_matches_seamless():
    m = seamless("ladder_640", seed=1)
    params = params_from_state_dict(seamless_to_official(m), seamless_like_config("ladder_640"))
    units = np.random.default_rng(1).integers(0, 40, (1, 23))
    with torch.no_grad():
        emb = m.unit_embedding(torch.from_numpy(units))
        ref = m.dur_predictor(emb).numpy()
    ours = run(DurationPredictor(16, 3), params["dur_predictor"], jnp.asarray(emb.numpy()), jnp.ones((1, 23), bool))
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-5


@pytest.mark.parametrize("name", list(LADDERS))
def test_code_generator_matches_seamless_full_forward(name):
    """SeamlessM4T's own forward: embeddings, predicted durations (expm1, the same values as
    exp(x) - 1 after rounding), repeat, [language (0 ch), units, speaker], generator."""
    m = seamless(name, seed=2)
    cfg = seamless_like_config(name)
    params = params_from_state_dict(seamless_to_official(m), cfg)
    units = np.random.default_rng(2).integers(0, 40, (1, 15))
    with torch.no_grad():
        ref, ref_len = m(torch.from_numpy(units), torch.tensor([[1]]), torch.tensor([[0]]))
    ref = ref.numpy().reshape(-1)
    audio, n, needed = run(
        CodeGenerator(cfg),
        params,
        jnp.asarray(units),
        jnp.asarray([15]),
        None,
        None,
        jnp.asarray([1]),
        dur_pred=True,
        max_frames=512,
    )
    assert int(n[0]) == ref.shape[0] == int(ref_len.reshape(-1)[0]) and int(needed[0]) * cfg.hop == ref.shape[0]
    assert np.abs(np.asarray(audio[0, : int(n[0])]) - ref).max() <= TOL


def test_reference_module_generator_matches_seamless():
    """The test's RefCodeGenerator is itself checked: same weights, same waveform as SeamlessM4T's."""
    m = seamless("ladder_640", seed=3)
    cfg = seamless_like_config("ladder_640")
    ref = RefCodeGenerator(cfg, weight_norm=False).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in seamless_to_official(m).items()})
    x = torch.randn(1, cfg.model_in_dim, 19)
    with torch.no_grad():
        assert torch.abs(ref.generator(x) - m.hifi_gan(x)[0]).max() <= 1e-5


EXPRESSIVE = HifiGanConfig(
    num_embeddings=30,
    embedding_dim=8,
    num_f0_tokens=12,
    num_style_tokens=9,
    num_speakers=3,
    multistyle=False,
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.0),
    upsample_rates=(5, 4, 2),
    upsample_kernel_sizes=(11, 8, 4),
    upsample_initial_channel=32,
    resblock_kernel_sizes=(3, 7),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
)
BASE = HifiGanConfig(
    num_embeddings=30,
    embedding_dim=8,
    num_speakers=3,
    num_styles=10,
    dur_predictor_params=DurPredictorConfig(8, 8, 3, 0.0),
    upsample_rates=(4, 4),
    upsample_kernel_sizes=(8, 8),
    upsample_initial_channel=16,
    resblock_kernel_sizes=(3, 5),
    resblock_dilation_sizes=((1, 3, 5), (1, 2, 4)),
)


@pytest.mark.parametrize("cfg", [EXPRESSIVE, BASE], ids=["expressive", "base"])
@pytest.mark.parametrize("dur_pred", [True, False])
def test_code_generator_matches_spiritlm_reference(cfg, dur_pred):
    """Pitch/style-unit streams, speaker and global style, durations applied to every stream."""
    ref = RefCodeGenerator(cfg).randomize(seed=4).eval()  # weight_g/weight_v, folded by the converter
    params = params_from_state_dict(ref_state_dict(ref), cfg)
    rng = np.random.default_rng(4)
    t = 17
    code = rng.integers(0, cfg.num_embeddings, t)
    f0 = rng.integers(0, 12, t) if cfg.num_f0_tokens else None
    sty = rng.integers(0, 9, t) if cfg.num_style_tokens else None
    with torch.no_grad():
        want = ref(
            torch.from_numpy(code),
            None if f0 is None else torch.from_numpy(f0),
            None if sty is None else torch.from_numpy(sty),
            spkr=2,
            style=7,
            dur_pred=dur_pred,
        ).numpy()
    assert np.abs(want).max() > 0.05

    def batch(a):
        return None if a is None else jnp.asarray(np.stack([a, np.zeros_like(a)]))  # padded 2nd row

    audio, n, _ = run(
        CodeGenerator(cfg),
        params,
        batch(code),
        jnp.asarray([t, 5]),
        batch(f0),
        batch(sty),
        jnp.asarray([2, 0]),
        jnp.asarray([7, 0]),
        dur_pred=dur_pred,
        max_frames=256,
    )
    assert int(n[0]) == want.shape[0]
    assert np.abs(np.asarray(audio[0, : int(n[0])]) - want).max() <= TOL


def test_upsample_stream_matches_reference_rule():
    for k, n, rate in [(9, 17, 2), (8, 17, 2), (1, 17, 25), (2, 30, 25), (3, 50, 25)]:
        code = np.arange(k) + 3
        assert upsample_stream(code, n, rate).tolist() == ref_upsample(code, n, rate).tolist()
    with pytest.raises(ValueError, match="cannot cover 17 HuBERT frames"):
        upsample_stream(np.arange(3), 17, 2)


def test_repeat_frames():
    x = jnp.asarray([[1, 2, 3, 0]])
    out, valid = repeat_frames(x, jnp.asarray([[2, 1, 3, 0]]), 8)
    assert out[0, :6].tolist() == [1, 1, 2, 3, 3, 3] and valid[0].tolist() == [True] * 6 + [False] * 2


def test_config_checks():
    with pytest.raises(ValueError, match="only kernel 3"):
        DurPredictorConfig(var_pred_kernel_size=5)
    with pytest.raises(ValueError, match="encoder_embed_dim 64 must equal embedding_dim 128"):
        HifiGanConfig(dur_predictor_params=DurPredictorConfig(encoder_embed_dim=64))
    with pytest.raises(ValueError, match="k - u even"):
        HifiGanConfig(upsample_rates=(5, 4, 4, 4, 2), upsample_kernel_sizes=(10, 8, 8, 8, 4))
    cfg = HifiGanConfig()
    assert cfg.hop == 640 and cfg.hubert_to_f0 == 2 and cfg.hubert_to_style == 25 and cfg.model_in_dim == 384
