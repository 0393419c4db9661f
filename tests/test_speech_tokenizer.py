"""HuBERT unit tokenizer: the MLP quantizer against a PyTorch module built from the published
architecture (SPEC.md §4.1), blank filling, and the fairseq-format converter end to end (files built
from transformers' HubertModel weights renamed to fairseq keys) on real speech. Tolerances: logits
1e-4 (fp32); features 1e-4; units exact."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STRIDE_640_25HZ
from spiritlm_jax.speech.quantizer import MLPQuantizer, MLPQuantizerConfig, fill_blanks
from spiritlm_jax.speech.tokenizer import SpeechTokenizer
from tests.test_hubert import hf_model
from tools.convert_weights.hubert_from_fairseq import ConversionError, convert, parse_conv_layers

AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"


def torch_quantizer(vocab, dim, upstream, seed=0):
    out, mid = vocab + 1, upstream - (vocab + 1)
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, dim - mid // 4), torch.nn.LeakyReLU(),
                               torch.nn.Linear(dim - mid // 4, dim - mid // 2), torch.nn.LeakyReLU(),
                               torch.nn.Linear(dim - mid // 2, out)).eval()


def test_fill_blanks_follows_the_reference_roll():
    b = 9
    assert fill_blanks(np.array([3, b, b, 4, b]), b).tolist() == [3, 3, 3, 4, 4]
    assert fill_blanks(np.array([b, b, 5, 6]), b).tolist() == [6, 6, 5, 6]  # leading blanks wrap around
    assert fill_blanks(np.array([b, b]), b).tolist() == [b, b]


def test_mlp_quantizer_matches_torch():
    cfg = MLPQuantizerConfig(vocab_size=20, dim=64, upstream_dim=64)
    ref = torch_quantizer(20, 64, 64)
    params = {f"linear_{i}": {"kernel": ref[i].weight.detach().numpy().T, "bias": ref[i].bias.detach().numpy()}
              for i in (0, 2, 4)}
    x = np.random.default_rng(0).normal(size=(7, 64)).astype(np.float32)
    ours = np.asarray(MLPQuantizer(cfg).apply({"params": params}, x))
    with torch.no_grad():
        assert np.abs(ours - ref(torch.from_numpy(x)).numpy()).max() <= 1e-4
    assert cfg.widths == (64 - (64 - 21) // 4, 64 - (64 - 21) // 2, 21)


def _fairseq_files(tmp_path, m, conv):
    """Write mhubert-style and quantizer-style .pt files from an HF HubertModel (fairseq key names)."""
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    fs = {}
    for i in range(len(conv)):
        fs[f"feature_extractor.conv_layers.{i}.0.weight"] = sd[f"feature_extractor.conv_layers.{i}.conv.weight"]
    fs["feature_extractor.conv_layers.0.2.weight"] = sd["feature_extractor.conv_layers.0.layer_norm.weight"]
    fs["feature_extractor.conv_layers.0.2.bias"] = sd["feature_extractor.conv_layers.0.layer_norm.bias"]
    for a, b in (("layer_norm", "feature_projection.layer_norm"), ("post_extract_proj", "feature_projection.projection"),
                 ("encoder.layer_norm", "encoder.layer_norm")):
        fs[a + ".weight"], fs[a + ".bias"] = sd[b + ".weight"], sd[b + ".bias"]
    w = m.encoder.pos_conv_embed.conv.weight.detach()
    g = torch.sqrt((w ** 2).sum(dim=(0, 1), keepdim=True))
    fs["encoder.pos_conv.0.weight_g"], fs["encoder.pos_conv.0.weight_v"] = g, w * 2.0  # v's scale must not matter
    fs["encoder.pos_conv.0.bias"] = sd["encoder.pos_conv_embed.conv.bias"]
    for i in range(m.config.num_hidden_layers):
        p, q = f"encoder.layers.{i}.", f"encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            for t in ("weight", "bias"):
                fs[p + f"self_attn.{n}.{t}"] = sd[q + f"attention.{n}.{t}"]
        for a, b in (("self_attn_layer_norm", "layer_norm"), ("final_layer_norm", "final_layer_norm"),
                     ("fc1", "feed_forward.intermediate_dense"), ("fc2", "feed_forward.output_dense")):
            fs[p + a + ".weight"], fs[p + a + ".bias"] = sd[q + b + ".weight"], sd[q + b + ".bias"]
    fs["label_embs_concat"] = torch.zeros(3, 4)  # dropped by the converter, as in the release
    layers = " + ".join(f"[({c}, {k}, {s})]" for c, k, s in conv)
    cfg = {"conv_feature_layers": layers, "encoder_embed_dim": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
           "encoder_ffn_embed_dim": 96, "conv_pos": 15, "conv_pos_groups": 4, "extractor_mode": "default"}
    torch.save({"model_cfg": cfg, "task_cfg": {"normalize": False}, "model_weight": fs,
                "dictionaries_symbols": [[str(i) for i in range(20)]]}, tmp_path / "mhubert.pt")
    q = torch_quantizer(20, 64, 64, seed=3)
    torch.save({"model_cfg": {"vocab_size": 20, "dim": 64, "upstream_dim": 64},
                "model_weight": {k: v.detach() for k, v in q.state_dict().items()}}, tmp_path / "quantizer.pt")
    return fs, q


def test_fairseq_checkpoint_end_to_end(tmp_path):
    conv = tuple((32, k, s) for _, k, s in STRIDE_640_25HZ)
    m = hf_model(conv, pos_k=15)
    fs, q = _fairseq_files(tmp_path, m, conv)
    out = convert(tmp_path / "mhubert.pt", tmp_path / "quantizer.pt", tmp_path / "jax", output_layer=2)
    tok = SpeechTokenizer.load(out)
    wav = load_audio(AMFM)
    feats = tok.features(wav)
    with torch.no_grad():
        ref = m(torch.from_numpy(wav[None])).last_hidden_state[0]
        ref_units = q(ref).argmax(-1).numpy()
    assert np.abs(feats - ref.numpy()).max() <= 1e-4
    units = tok.encode_units(wav)["hubert"]
    np.testing.assert_array_equal(units, fill_blanks(ref_units, 20))
    assert tok.encode_string(wav).startswith("[Hu")
    # errors name the tensor and shapes
    bad = dict(fs)
    bad["encoder.layers.1.fc1.weight"] = torch.zeros(3, 3)
    torch.save({"model_cfg": torch.load(tmp_path / "mhubert.pt", weights_only=False)["model_cfg"], "model_weight": bad},
               tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match=r"encoder.layers.1.fc1.weight has shape \(3, 3\), expected \(96, 64\)"):
        convert(tmp_path / "bad.pt", None, tmp_path / "jax2", output_layer=2)
    (tmp_path / "trunc.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ConversionError, match="cannot be read"):
        convert(tmp_path / "trunc.pt", None, tmp_path / "jax3")


def test_parse_conv_layers():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2 + [(512,2,2)]") == STRIDE_640_25HZ
    with pytest.raises(ConversionError):
        parse_conv_layers("__import__('os').system('x')")
