"""HiFi-GAN vocoder parity with transformers' SeamlessM4TCodeHifiGan (random weights, fp32).

Bridged conventions: SeamlessM4T's generator (`.hifi_gan`) is the speech-resynthesis Generator
(conv_pre, upsampler = `ups`, resblocks, final LeakyReLU(0.01), conv_post, tanh); its key names are
renamed to the official checkpoint's (`hifi_gan.upsampler.i` -> `ups.i`, `dur_predictor.conv1` ->
`dur_predictor.conv1.0`) and converted by our converter, so the test also covers the converter's
mapping. SeamlessM4T concatenates [language, units, speaker] embeddings while Spirit LM's
CodeGenerator concatenates [units, pitch, style, speaker, style]; the generator is therefore compared
on the same concatenated features, and our concatenation/duration logic against a direct numpy
computation. Tolerance: max |waveform difference| <= 1e-4 (tanh outputs in [-1, 1]).
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import SeamlessM4TConfig
from transformers.models.seamless_m4t.modeling_seamless_m4t import SeamlessM4TCodeHifiGan

from spiritlm_jax.speech.hifigan import CodeGenerator, Generator, HifiGanConfig, repeat_frames
from tools.convert_weights.hifigan_from_pt import ConversionError, convert, params_from_state_dict

CONFIGS = {
    "ladder_640": dict(upsample_rates=[5, 4, 4, 4, 2], upsample_kernel_sizes=[11, 8, 8, 8, 4], upsample_initial_channel=32,
                       resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]]),
    "ladder_320": dict(upsample_rates=[5, 4, 4, 2, 2], upsample_kernel_sizes=[11, 8, 8, 4, 4], upsample_initial_channel=64,
                       resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]]),
}


def seamless(name, seed=0):
    c = CONFIGS[name]
    cfg = SeamlessM4TConfig(unit_embed_dim=16, lang_embed_dim=0, spkr_embed_dim=16, unit_hifi_gan_vocab_size=40,
                            vocoder_num_spkrs=3, vocoder_num_langs=2, variance_predictor_kernel_size=3,
                            var_pred_dropout=0.0, **c)
    torch.manual_seed(seed)
    m = SeamlessM4TCodeHifiGan(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.normal_(0, 0.3 if "bias" in n or "ln" in n else 0.1)  # larger than init so every path matters
    return m, cfg


def official_state_dict(m) -> dict:
    """SeamlessM4T names -> the official generator.pt names our converter reads."""
    sd = {}
    for k, v in m.state_dict().items():
        k2 = k.replace("hifi_gan.upsampler.", "ups.").replace("hifi_gan.", "")
        k2 = k2.replace("dur_predictor.conv1.", "dur_predictor.conv1.0.").replace("dur_predictor.conv2.", "dur_predictor.conv2.0.")
        k2 = k2.replace("unit_embedding.", "dict.").replace("speaker_embedding.", "spkr.")
        if not k2.startswith("language_embedding"):
            sd[k2] = v.float().numpy()
    return sd


def our_config(name, hf_cfg) -> HifiGanConfig:
    c = CONFIGS[name]
    return HifiGanConfig(num_embeddings=40, embedding_dim=16, multispkr=True, num_speakers=3,
                         upsample_rates=tuple(c["upsample_rates"]), upsample_kernel_sizes=tuple(c["upsample_kernel_sizes"]),
                         upsample_initial_channel=c["upsample_initial_channel"],
                         resblock_kernel_sizes=tuple(c["resblock_kernel_sizes"]),
                         resblock_dilation_sizes=tuple(tuple(d) for d in c["resblock_dilation_sizes"]),
                         dur_predictor=True, dur_kernel_size=3, dur_hidden_dim=16)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_generator_matches_seamless_hifigan_batched(name):
    m, hf_cfg = seamless(name)
    cfg = our_config(name, hf_cfg)
    sd = official_state_dict(m)
    # the generator input is 16 (units) + 0 (language) + 16 (speaker) = 32 channels in SeamlessM4T;
    # our converter sizes conv_pre for units + speaker = 32 channels as well
    params = params_from_state_dict(sd, cfg)
    gen = Generator(cfg)
    rng = np.random.default_rng(0)
    lengths = [37, 20]
    x = rng.normal(size=(2, 37, 32)).astype(np.float32)
    x[1, 20:] = 0.0
    valid = np.arange(37)[None] < np.asarray(lengths)[:, None]
    ours = np.asarray(gen.apply({"params": params["generator"]}, jnp.asarray(x), jnp.asarray(valid)))
    assert ours.shape == (2, 37 * cfg.hop)
    for b, n in enumerate(lengths):
        with torch.no_grad():
            ref = m.hifi_gan(torch.from_numpy(x[b:b + 1, :n].transpose(0, 2, 1))).numpy()[0]
        assert ref.shape == (n * cfg.hop,)
        assert np.abs(ours[b, : n * cfg.hop] - ref).max() <= 1e-4
        assert np.all(ours[b, n * cfg.hop:] == 0)


def test_duration_predictor_matches_seamless():
    m, hf_cfg = seamless("ladder_640", seed=1)
    cfg = our_config("ladder_640", hf_cfg)
    params = params_from_state_dict(official_state_dict(m), cfg)
    units = np.random.default_rng(1).integers(0, 40, (1, 23))
    with torch.no_grad():
        emb = m.unit_embedding(torch.from_numpy(units))
        ref = m.dur_predictor(emb).numpy()
    from spiritlm_jax.speech.hifigan import DurationPredictor

    ours = DurationPredictor(16, 3).apply({"params": params["dur_predictor"]}, jnp.asarray(emb.numpy()),
                                          jnp.ones((1, 23), bool))
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-5


def test_code_generator_end_to_end_matches_reference_pipeline():
    """Units -> embeddings -> predicted durations -> repeat -> [units, speaker] -> generator, against
    the same pipeline computed with the PyTorch modules (speech-resynthesis order, no language)."""
    m, hf_cfg = seamless("ladder_640", seed=2)
    cfg = our_config("ladder_640", hf_cfg)
    params = params_from_state_dict(official_state_dict(m), cfg)
    units = np.random.default_rng(2).integers(0, 40, (1, 15))
    with torch.no_grad():
        emb = m.unit_embedding(torch.from_numpy(units)).transpose(1, 2)
        dur = torch.clamp(torch.round(torch.exp(m.dur_predictor(emb.transpose(1, 2))) - 1).long(), min=1)
        x = torch.repeat_interleave(emb, dur.view(-1), dim=2)
        spk = m.speaker_embedding(torch.tensor([[1]])).transpose(1, 2).repeat(1, 1, x.shape[-1])
        ref = m.hifi_gan(torch.cat([x, spk], 1)).numpy()[0]
    model = CodeGenerator(cfg)
    audio, n, needed = model.apply({"params": params}, jnp.asarray(units), jnp.asarray([15]),
                                   speaker_b=jnp.asarray([1]), dur_pred=True, max_frames=128)
    assert int(needed[0]) == int(dur.sum()) and int(n[0]) == ref.shape[0]
    assert np.abs(np.asarray(audio[0, : int(n[0])]) - ref).max() <= 1e-4


def test_repeat_frames():
    x = jnp.asarray([[1, 2, 3, 0]])
    out, valid = repeat_frames(x, jnp.asarray([[2, 1, 3, 0]]), 8)
    assert out[0, :6].tolist() == [1, 1, 2, 3, 3, 3] and valid[0].tolist() == [True] * 6 + [False] * 2


def test_converter_files_and_errors(tmp_path):
    m, hf_cfg = seamless("ladder_640")
    cfg = our_config("ladder_640", hf_cfg)
    sd = official_state_dict(m)
    # weight-normed storage, as the official checkpoints have it
    w = sd.pop("conv_pre.weight")
    norm = np.sqrt((w ** 2).sum(axis=(1, 2), keepdims=True))
    sd["conv_pre.weight_g"], sd["conv_pre.weight_v"] = norm, w
    torch.save({"generator": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}}, tmp_path / "generator.pt")
    (tmp_path / "config.json").write_text(json.dumps({
        "num_embeddings": 40, "embedding_dim": 16, "multispkr": True, "num_speakers": 3,
        "upsample_rates": list(cfg.upsample_rates), "upsample_kernel_sizes": list(cfg.upsample_kernel_sizes),
        "upsample_initial_channel": cfg.upsample_initial_channel, "resblock_kernel_sizes": list(cfg.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in cfg.resblock_dilation_sizes],
        "dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 16, "var_pred_kernel_size": 3,
                                 "var_pred_dropout": 0.0}}))
    (tmp_path / "speakers.txt").write_text("a\nb\nc\n")
    out = convert(tmp_path, tmp_path / "jax")
    from spiritlm_jax.speech.vocoder import Vocoder

    voc = Vocoder.load(out)
    assert voc.speakers == ["a", "b", "c"]
    audio = voc.vocode("[Hu3][Hu5][Hu5][Hu9]", speaker=1)
    assert audio.ndim == 1 and audio.size % 640 == 0 and np.abs(audio).max() <= 1
    from spiritlm_jax.speech.vocoder import _run

    compiled = _run._cache_size()
    for n in (1, 17, 64):  # other lengths in the same 64-frame bucket: no new compilation
        assert voc.vocode("".join(f"[Hu{i % 40}]" for i in range(n)), speaker=0).size > 0
    assert _run._cache_size() == compiled
    with pytest.raises(ValueError, match="speaker 7 out of range"):
        voc.vocode("[Hu3]", speaker=7)
    with pytest.raises(ValueError, match="must be in \\[0, 40\\)"):
        voc.vocode("[Hu45]")
    with pytest.raises(ValueError, match="no HuBERT units"):
        voc.vocode("[Text]hello")
    sd_bad = dict(sd)
    sd_bad["ups.0.weight"] = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ConversionError, match=r"ups.0.weight has shape \(1, 2, 3\)"):
        params_from_state_dict(sd_bad, cfg)
    (tmp_path / "generator.pt").write_bytes(b"truncated")
    with pytest.raises(ConversionError, match="cannot be read"):
        convert(tmp_path, tmp_path / "jax2")
