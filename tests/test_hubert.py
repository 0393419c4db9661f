"""HuBERT parity with transformers' HubertModel (random weights, fp32) on real speech, batched with
padding.

Tolerance: max |feature difference| <= 1e-4. The features come out of post-LN layer norms (O(1)
values); fp32 reassociation between XLA and PyTorch convs/matmuls accounts for ~1e-6, so 1e-4 still
catches any real mistake (a wrong norm, mask or transpose moves features by O(0.1-1)).

The HF model is built with more layers than we run: we compare `hidden_states[output_layer]` (the
output of layer `output_layer`, 1-based) with our output, so stopping early is checked too.
"""

import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import HubertConfig as HFHubertConfig
from transformers import HubertModel

from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STANDARD_50HZ, STRIDE_640_25HZ, Hubert, HubertConfig
from tools.convert_weights.hubert_from_hf import convert, params_from_hf_state_dict

DATA = Path(__file__).parent / "data"
AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"
TOL = 1e-4


def hf_model(conv_layers, hidden=64, layers=2, heads=4, ffn=96, pos_k=16, pos_g=4, seed=0):
    """A transformers HubertModel in the fairseq HuBERT-Base layout, random weights (norms/biases
    perturbed away from their 1/0 init so that a swapped scale/bias would show)."""
    cfg = HFHubertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_dim=[c for c, _, _ in conv_layers],
        conv_kernel=[k for _, k, _ in conv_layers],
        conv_stride=[s for _, _, s in conv_layers],
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=pos_k,
        num_conv_pos_embedding_groups=pos_g,
        hidden_act="gelu",
        feat_extract_activation="gelu",
        feat_proj_layer_norm=True,
    )
    torch.manual_seed(seed)
    m = HubertModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def params_from_hf(m, cfg: HubertConfig) -> dict:
    """Through the converter used for transformers HubertModel directories."""
    return params_from_hf_state_dict({k: v.detach().float().numpy() for k, v in m.state_dict().items()}, cfg)


def real_speech() -> list[np.ndarray]:
    """16 kHz recordings: amfm_decompy's sample (16 kHz) and the 8 kHz Asterisk prompts, resampled."""
    return [load_audio(AMFM), load_audio(DATA / "agent-loginok.wav"), load_audio(DATA / "agent-pass.wav")[:30000]]


def pad_batch(wavs):
    batch = np.zeros((len(wavs), max(len(w) for w in wavs)), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return jnp.asarray(batch), jnp.asarray([len(w) for w in wavs])


@functools.lru_cache(maxsize=None)
def apply_fn(cfg: HubertConfig):
    """Jitted HuBERT apply for `cfg` (op-by-op dispatch of an unjitted module is far slower on CPU)."""
    return jax.jit(lambda p, w, n=None: Hubert(cfg).apply({"params": p}, w, n))


def hf_layer(m, wav, layer):
    with torch.no_grad():
        return m(torch.from_numpy(wav[None]), output_hidden_states=True).hidden_states[layer].numpy()[0]


# name: (conv stack with narrow channels for speed (kernels/strides real), pos kernel, HF layers, output layer)
CONFIGS = {
    "50hz-7conv-even-pos-kernel": (tuple((32, k, s) for _, k, s in STANDARD_50HZ), 16, 3, 2),
    "25hz-8conv-stride640": (tuple((32, k, s) for _, k, s in STRIDE_640_25HZ), 15, 3, 2),
    "25hz-8conv-stride640-last-layer": (((24, 10, 5),) + ((32, 3, 2),) * 4 + ((40, 2, 2),) * 3, 8, 2, 2),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_transformers_on_real_speech_batched(name):
    conv, pos_k, hf_layers, out_layer = CONFIGS[name]
    m = hf_model(conv, pos_k=pos_k, layers=hf_layers)
    cfg = HubertConfig(
        conv_layers=conv,
        hidden=64,
        num_layers=hf_layers,
        num_heads=4,
        ffn=96,
        pos_conv_kernel=pos_k,
        pos_conv_groups=4,
        output_layer=out_layer,
    )
    params = params_from_hf(m, cfg)
    assert sorted(k for k in params if k.startswith("layers_")) == [f"layers_{i}" for i in range(out_layer)]
    wavs = real_speech()
    feats, lengths = apply_fn(cfg)(params, *pad_batch(wavs))
    assert feats.shape[1] == cfg.frames(max(len(w) for w in wavs))
    for i, w in enumerate(wavs):
        ref = hf_layer(m, w, out_layer)
        assert int(lengths[i]) == ref.shape[0] == cfg.frames(len(w))
        assert np.abs(np.asarray(feats[i, : ref.shape[0]]) - ref).max() <= TOL, (name, i)


def test_even_length_padding_is_masked():
    """fairseq pads the time axis to a multiple of 2 and masks the pad (HF does not pad): sequences
    with an odd and an even number of frames both match HF, so the pad never leaks into real frames."""
    conv, pos_k, hf_layers, out_layer = CONFIGS["25hz-8conv-stride640"]
    m = hf_model(conv, pos_k=pos_k, layers=hf_layers)
    cfg = HubertConfig(
        conv_layers=conv,
        hidden=64,
        num_layers=hf_layers,
        num_heads=4,
        ffn=96,
        pos_conv_kernel=pos_k,
        pos_conv_groups=4,
        output_layer=out_layer,
    )
    params = params_from_hf(m, cfg)
    wav = load_audio(AMFM)
    lengths = (len(wav), len(wav) - cfg.hop)  # consecutive frame counts: one odd, one even
    assert {cfg.frames(n) % 2 for n in lengths} == {0, 1}
    for n in lengths:
        feats, _ = apply_fn(cfg)(params, jnp.asarray(wav[None, :n]))
        assert np.abs(np.asarray(feats[0]) - hf_layer(m, wav[:n], out_layer)).max() <= TOL


def test_normalize_waveform_matches_layer_norm_of_the_input():
    """fairseq task_cfg.normalize: F.layer_norm(wav, wav.shape) before the model, per item of a batch."""
    conv, pos_k, hf_layers, out_layer = CONFIGS["50hz-7conv-even-pos-kernel"]
    m = hf_model(conv, pos_k=pos_k, layers=hf_layers)
    cfg = HubertConfig(
        conv_layers=conv,
        hidden=64,
        num_layers=hf_layers,
        num_heads=4,
        ffn=96,
        pos_conv_kernel=pos_k,
        pos_conv_groups=4,
        output_layer=out_layer,
        normalize_waveform=True,
    )
    wavs = [3.0 * w + 0.05 for w in real_speech()[:2]]
    feats, lengths = apply_fn(cfg)(params_from_hf(m, cfg), *pad_batch(wavs))
    for i, w in enumerate(wavs):
        normed = torch.nn.functional.layer_norm(torch.from_numpy(w), w.shape).numpy()
        ref = hf_layer(m, normed, out_layer)
        assert np.abs(np.asarray(feats[i, : int(lengths[i])]) - ref).max() <= TOL


def test_bf16_compute_stays_close_to_fp32():
    """bf16 compute (accelerators) with fp32 norm statistics and softmax: features within 0.1 of fp32
    (bf16 keeps 8 bits of mantissa, ~4e-3 relative per op; O(1) features drift by a few 1e-2 over
    the conv stack and two layers)."""
    conv, pos_k, hf_layers, out_layer = CONFIGS["25hz-8conv-stride640"]
    m = hf_model(conv, pos_k=pos_k, layers=hf_layers)
    kw = dict(
        conv_layers=conv,
        hidden=64,
        num_layers=hf_layers,
        num_heads=4,
        ffn=96,
        pos_conv_kernel=pos_k,
        pos_conv_groups=4,
        output_layer=out_layer,
    )
    params = params_from_hf(m, HubertConfig(**kw))
    wav = jnp.asarray(load_audio(AMFM)[None])
    f32, _ = apply_fn(HubertConfig(**kw))(params, wav)
    bf16, _ = apply_fn(HubertConfig(**kw, dtype="bfloat16"))(params, wav)
    assert bf16.dtype == jnp.bfloat16
    err = np.abs(np.asarray(bf16, np.float32) - np.asarray(f32))
    assert err.max() <= 0.1 and err.mean() <= 0.02


def test_config_and_input_errors():
    assert HubertConfig(conv_layers=STANDARD_50HZ).frames(16000) == 49
    assert HubertConfig().frames(16000) == 24  # 25 Hz stack, total stride 640
    assert (HubertConfig(conv_layers=STANDARD_50HZ).hop, HubertConfig().hop) == (320, 640)
    assert HubertConfig(conv_layers=STANDARD_50HZ).receptive_field == 400
    cfg = HubertConfig()
    assert cfg.frames(cfg.receptive_field) == 1 and cfg.frames(cfg.receptive_field - 1) == 0
    with pytest.raises(ValueError, match="output_layer"):
        HubertConfig(output_layer=13)
    with pytest.raises(ValueError, match="conv_layers"):
        HubertConfig(conv_layers=((512, 10),))
    with pytest.raises(ValueError, match="divisible"):
        HubertConfig(hidden=100)
    small = HubertConfig(
        conv_layers=((8, 10, 5), (8, 3, 2)),
        hidden=16,
        num_layers=1,
        num_heads=2,
        ffn=8,
        pos_conv_kernel=4,
        pos_conv_groups=2,
        output_layer=1,
    )
    params = jax.jit(Hubert(small).init)(jax.random.PRNGKey(0), jnp.zeros((1, 100)))["params"]
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        Hubert(small).apply({"params": params}, jnp.zeros(100))
    with pytest.raises(ValueError, match=f"needs at least {small.receptive_field}"):
        Hubert(small).apply({"params": params}, jnp.zeros((1, small.receptive_field - 1)))
    # an item shorter than one frame in a batch reports 0 frames, not a negative count
    _, lengths = apply_fn(small)(params, jnp.zeros((2, 100)), jnp.asarray([100, 5]))
    assert lengths.tolist() == [small.frames(100), 0]


def test_hf_directory_converter(tmp_path):
    from spiritlm_jax.speech.tokenizer import SpeechTokenizer

    conv = tuple((32, k, s) for _, k, s in STANDARD_50HZ)
    m = hf_model(conv, pos_k=16, layers=3)
    m.save_pretrained(tmp_path / "hf")
    tok = SpeechTokenizer.load(convert(tmp_path / "hf", tmp_path / "jax", output_layer=2))
    wav = load_audio(AMFM)
    assert np.abs(tok.features(wav) - hf_layer(m, wav, 2)).max() <= TOL
    with pytest.raises(ValueError, match="no quantizer"):
        tok.encode_units(wav)
