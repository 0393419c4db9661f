"""HuBERT parity with transformers' HubertModel (random weights, fp32) on real speech, batched with
padding. Tolerance: max |feature difference| <= 1e-4 after post-LN layer norms (features are O(1)).
The HF model is built with exactly `output_layer` layers, so its last hidden state is the layer we use.
"""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import HubertConfig as HFHubertConfig, HubertModel

from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STANDARD_50HZ, STRIDE_640_25HZ, Hubert, HubertConfig
from tools.convert_weights.hubert_from_hf import convert, params_from_hf_state_dict

DATA = Path(__file__).parent / "data"
AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"


def hf_model(conv_layers, hidden=64, layers=2, heads=4, ffn=96, pos_k=16, pos_g=4, seed=0):
    cfg = HFHubertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
        conv_dim=[c for c, _, _ in conv_layers], conv_kernel=[k for _, k, _ in conv_layers],
        conv_stride=[s for _, _, s in conv_layers], conv_bias=False, feat_extract_norm="group",
        do_stable_layer_norm=False, num_conv_pos_embeddings=pos_k, num_conv_pos_embedding_groups=pos_g,
        hidden_act="gelu", feat_extract_activation="gelu", feat_proj_layer_norm=True,
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


@pytest.mark.parametrize("conv_layers, pos_k", [(STANDARD_50HZ, 16), (STRIDE_640_25HZ, 15)])
def test_matches_transformers_on_real_speech_batched(conv_layers, pos_k):
    conv = tuple((32, k, s) for _, k, s in conv_layers)  # narrow channels for speed; the kernels/strides are real
    m = hf_model(conv, pos_k=pos_k)
    cfg = HubertConfig(conv_layers=conv, hidden=64, num_layers=2, num_heads=4, ffn=96, pos_conv_kernel=pos_k,
                       pos_conv_groups=4, output_layer=2)
    params = params_from_hf(m, cfg)
    wavs = [load_audio(AMFM), load_audio(DATA / "agent-loginok.wav")[:9000]]
    n = max(len(w) for w in wavs)
    batch = np.zeros((2, n), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    feats, frames = Hubert(cfg).apply({"params": params}, jnp.asarray(batch), jnp.asarray([len(w) for w in wavs]))
    for i, w in enumerate(wavs):
        with torch.no_grad():
            ref = m(torch.from_numpy(w[None])).last_hidden_state.numpy()[0]
        assert int(frames[i]) == ref.shape[0] == cfg.frames(len(w))
        assert np.abs(np.asarray(feats[i, : ref.shape[0]]) - ref).max() <= 1e-4


def test_frame_rates():
    assert HubertConfig(conv_layers=STANDARD_50HZ).frames(16000) == 49
    assert HubertConfig().frames(16000) == 24  # 25 Hz stack, total stride 640
    with pytest.raises(ValueError, match="output_layer"):
        HubertConfig(output_layer=13)


def test_hf_directory_converter(tmp_path):
    from spiritlm_jax.speech.tokenizer import SpeechTokenizer

    conv = tuple((32, k, s) for _, k, s in STANDARD_50HZ)
    m = hf_model(conv, pos_k=16)
    m.save_pretrained(tmp_path / "hf")
    tok = SpeechTokenizer.load(convert(tmp_path / "hf", tmp_path / "jax", output_layer=2))
    wav = load_audio(AMFM)
    with torch.no_grad():
        ref = m(torch.from_numpy(wav[None])).last_hidden_state.numpy()[0]
    assert np.abs(tok.features(wav) - ref).max() <= 1e-4
    with pytest.raises(ValueError, match="no quantizer"):
        tok.encode_units(wav)
