"""Speech-tokenizer converters, end to end on files in the reference's formats built here from
transformers modules with random weights (fairseq key names, see docs/reference.md; weight-normed pos conv
split into weight_g/weight_v): the converted JAX models reproduce the PyTorch outputs on real speech
(features <= 1e-4, see test_hubert.py for why; units exact), and malformed checkpoints give errors
that name the file, the tensor and both shapes.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from spiritlm_jax.io import load_component
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.hubert import STRIDE_640_25HZ
from spiritlm_jax.speech.quantizer import MLP_QUANTIZER_SPEC, KMeansQuantizer, MLPQuantizer
from spiritlm_jax.speech.tokenizer import SpeechTokenizer
from tests.test_hubert import hf_layer, hf_model
from tests.test_quantizer import reference_fill, torch_mlp
from tools.convert_weights import hubert_from_fairseq, hubert_from_hf, speech_quantizer_from_pt
from tools.convert_weights.common import ConversionError

AMFM = Path(importlib.util.find_spec("amfm_decompy").submodule_search_locations[0]) / "sample.wav"
CONV = tuple((32, k, s) for _, k, s in STRIDE_640_25HZ)  # 25 Hz, 8 convs, total stride 640
HF_LAYERS, OUT_LAYER = 3, 2


def fairseq_state_dict(m, parametrized=False) -> dict:
    """HF HubertModel weights under fairseq HuBERT names, plus the pre-training tensors the release has."""
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    fs = {}
    for i in range(len(m.config.conv_dim)):
        fs[f"feature_extractor.conv_layers.{i}.0.weight"] = sd[f"feature_extractor.conv_layers.{i}.conv.weight"]
    for t in ("weight", "bias"):
        fs[f"feature_extractor.conv_layers.0.2.{t}"] = sd[f"feature_extractor.conv_layers.0.layer_norm.{t}"]
        for a, b in (
            ("layer_norm", "feature_projection.layer_norm"),
            ("post_extract_proj", "feature_projection.projection"),
            ("encoder.layer_norm", "encoder.layer_norm"),
        ):
            fs[f"{a}.{t}"] = sd[f"{b}.{t}"]
        for i in range(m.config.num_hidden_layers):
            p = f"encoder.layers.{i}."
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                fs[p + f"self_attn.{n}.{t}"] = sd[p + f"attention.{n}.{t}"]
            for a, b in (
                ("self_attn_layer_norm", "layer_norm"),
                ("final_layer_norm", "final_layer_norm"),
                ("fc1", "feed_forward.intermediate_dense"),
                ("fc2", "feed_forward.output_dense"),
            ):
                fs[p + f"{a}.{t}"] = sd[p + f"{b}.{t}"]
    w = m.encoder.pos_conv_embed.conv.weight.detach()  # the effective (folded) weight
    g = torch.sqrt((w**2).sum(dim=(0, 1), keepdim=True))  # weight norm over dim 2
    names = (
        ("parametrizations.weight.original0", "parametrizations.weight.original1")
        if parametrized
        else ("weight_g", "weight_v")
    )
    fs[f"encoder.pos_conv.0.{names[0]}"], fs[f"encoder.pos_conv.0.{names[1]}"] = g, w * 3.0  # v's scale must not matter
    fs["encoder.pos_conv.0.bias"] = sd["encoder.pos_conv_embed.conv.bias"]
    fs["label_embs_concat"], fs["mask_emb"] = torch.zeros(7, 64), torch.zeros(64)  # pre-training only: dropped
    fs["final_proj.weight"], fs["final_proj.bias"] = torch.zeros(16, 64), torch.zeros(16)
    return fs


def model_cfg(**kw) -> dict:
    layers = " + ".join(f"[({c}, {k}, {s})]" for c, k, s in CONV)
    cfg = {
        "label_rate": 25.0,
        "extractor_mode": "default",
        "conv_feature_layers": layers,
        "encoder_embed_dim": 64,
        "encoder_layers": HF_LAYERS,
        "encoder_attention_heads": 4,
        "encoder_ffn_embed_dim": 96,
        "conv_pos": 15,
        "conv_pos_groups": 4,
        "layer_norm_first": False,
        "conv_bias": False,
        "required_seq_len_multiple": 2,
    }
    return {**cfg, **kw}


def write_release(tmp_path, m, q, parametrized=False, normalize=False, **cfg_kw):
    hub, quant = tmp_path / "mhubert_base_25hz.pt", tmp_path / "L11_quantizer_500.pt"
    torch.save(
        {
            "model_cfg": model_cfg(**cfg_kw),
            "task_cfg": {"sample_rate": 16000, "normalize": normalize, "label_rate": 25.0},
            "model_weight": fairseq_state_dict(m, parametrized),
            "dictionaries_symbols": [[str(i) for i in range(16)]],
        },
        hub,
    )
    torch.save(
        {
            "model_cfg": {"vocab_size": 20, "dim": 64, "upstream_dim": 64},
            "model_weight": {k: v.detach() for k, v in q.state_dict().items()},
        },
        quant,
    )
    return hub, quant


@pytest.fixture(scope="module")
def models():
    return hf_model(CONV, pos_k=15, layers=HF_LAYERS), torch_mlp(20, 64, 64, seed=3)


@pytest.mark.parametrize("parametrized, normalize", [(False, False), (True, True)])
def test_fairseq_release_end_to_end(tmp_path, models, parametrized, normalize):
    m, q = models
    hub, quant = write_release(tmp_path, m, q, parametrized, normalize)
    assert (
        hubert_from_fairseq.main(
            ["--src", str(hub), "--quantizer", str(quant), "--out", str(tmp_path / "jax"), "--layer", str(OUT_LAYER)]
        )
        == 0
    )
    tok = SpeechTokenizer.load(tmp_path / "jax")
    assert tok.cfg.conv_layers == CONV and tok.cfg.hop == 640 and tok.cfg.normalize_waveform == normalize
    assert sorted(k for k in tok.params["hubert"] if k.startswith("layers_")) == ["layers_0", "layers_1"]
    wav = load_audio(AMFM)
    x = torch.nn.functional.layer_norm(torch.from_numpy(wav), wav.shape).numpy() if normalize else wav
    ref = hf_layer(m, x, OUT_LAYER)  # what the reference's extract_features(output_layer=2) gives
    assert np.abs(tok.features(wav) - ref).max() <= 1e-4
    with torch.no_grad():
        ref_units = reference_fill(torch.log_softmax(q(torch.from_numpy(ref)), -1).argmax(-1).numpy(), 20)
    np.testing.assert_array_equal(tok.encode_units(wav)["hubert"], ref_units)


def test_fairseq_errors_name_the_tensor_and_shapes(tmp_path, models):
    m, q = models
    hub, _ = write_release(tmp_path, m, q)
    ck = torch.load(hub, weights_only=True)

    def convert_with(weights=None, cfg=None, task=None):
        path = tmp_path / "bad.pt"
        torch.save(
            {
                "model_cfg": cfg or ck["model_cfg"],
                "task_cfg": task or ck["task_cfg"],
                "model_weight": weights or ck["model_weight"],
            },
            path,
        )
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        return hubert_from_fairseq.convert(path, None, out, output_layer=OUT_LAYER)

    bad = dict(ck["model_weight"], **{"encoder.layers.2.fc1.weight": torch.zeros(3, 3)})  # a layer we do not run
    with pytest.raises(
        ConversionError, match=r"bad.pt: tensor encoder.layers.2.fc1.weight has shape \(3, 3\), expected \(96, 64\)"
    ):
        convert_with(bad)
    missing = {k: v for k, v in ck["model_weight"].items() if k != "encoder.pos_conv.0.weight_g"}
    with pytest.raises(
        ConversionError, match=r"missing tensor encoder.pos_conv.0.weight_g \(expected shape \(1, 1, 15\)\)"
    ):
        convert_with(missing)
    extra = dict(ck["model_weight"], **{"encoder.layers.3.fc1.weight": torch.zeros(96, 64)})
    with pytest.raises(ConversionError, match=r"unexpected tensor encoder.layers.3.fc1.weight of shape \(96, 64\)"):
        convert_with(extra)
    with pytest.raises(ConversionError, match="layer_norm_first=True is not supported"):
        convert_with(cfg=model_cfg(layer_norm_first=True))
    with pytest.raises(ConversionError, match="not a list of"):
        convert_with(cfg=model_cfg(conv_feature_layers="[512, 10, 5]"))
    spec = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2 + [(512,2,2)]"  # the 25 Hz stack, fairseq syntax
    assert hubert_from_fairseq.parse_conv_layers(spec) == STRIDE_640_25HZ
    with pytest.raises(ConversionError, match="unsupported expression"):
        hubert_from_fairseq.parse_conv_layers("__import__('os').system('true')")
    with pytest.raises(ConversionError, match="output_layer"):
        hubert_from_fairseq.convert(hub, None, tmp_path / "o", output_layer=4)
    (tmp_path / "trunc.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ConversionError, match="trunc.pt cannot be read"):
        hubert_from_fairseq.convert(tmp_path / "trunc.pt", None, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        hubert_from_fairseq.convert(tmp_path / "nope.pt", None, tmp_path / "o")
    assert hubert_from_fairseq.main(["--src", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2


def test_quantizer_converter(tmp_path, models):
    _, q = models
    torch.save(
        {
            "model_cfg": {"vocab_size": 20, "dim": 64, "upstream_dim": 64},
            "model_weight": {k: v.detach() for k, v in q.state_dict().items()},
        },
        tmp_path / "q.pt",
    )
    assert speech_quantizer_from_pt.main(["--src", str(tmp_path / "q.pt"), "--out", str(tmp_path / "mlp")]) == 0
    params, cfgs = load_component(tmp_path / "mlp", MLP_QUANTIZER_SPEC)
    params, cfg = params["quantizer"], cfgs["quantizer.yaml"]
    x = np.random.default_rng(0).normal(size=(9, 64)).astype(np.float32)
    with torch.no_grad():
        assert (
            np.abs(np.asarray(MLPQuantizer(cfg).apply({"params": params}, x)) - q(torch.from_numpy(x)).numpy()).max()
            <= 1e-4
        )
    # the reference KmeansModel's checkpoint: {cluster_centers (numpy [K, D]), n_clusters}
    centres = np.random.default_rng(1).normal(size=(12, 64)).astype(np.float32)
    torch.save({"cluster_centers": centres, "n_clusters": 12}, tmp_path / "km.pt")
    speech_quantizer_from_pt.convert(tmp_path / "km.pt", tmp_path / "km")
    np.testing.assert_array_equal(KMeansQuantizer.load(tmp_path / "km").centroids, centres)
    # errors
    sd = {k: v.detach() for k, v in q.state_dict().items()}
    torch.save(
        {
            "model_cfg": {"vocab_size": 20, "dim": 64, "upstream_dim": 64},
            "model_weight": {**sd, "2.bias": torch.zeros(5)},
        },
        tmp_path / "bad.pt",
    )
    with pytest.raises(ConversionError, match=r"tensor 2.bias has shape \(5,\), expected \(43,\)"):
        speech_quantizer_from_pt.convert(tmp_path / "bad.pt", tmp_path / "x")
    torch.save(
        {
            "model_cfg": {"vocab_size": 20, "dim": 64, "upstream_dim": 64},
            "model_weight": {**sd, "6.weight": torch.zeros(2)},
        },
        tmp_path / "extra.pt",
    )
    with pytest.raises(ConversionError, match=r"unexpected tensor 6.weight of shape \(2,\)"):
        speech_quantizer_from_pt.convert(tmp_path / "extra.pt", tmp_path / "x")
    torch.save({"model_weight": sd}, tmp_path / "nocfg.pt")
    with pytest.raises(ConversionError, match="'model_cfg' and 'model_weight'"):
        speech_quantizer_from_pt.convert(tmp_path / "nocfg.pt", tmp_path / "x")


def test_hf_directory_with_quantizer(tmp_path, models):
    m, q = models
    m.save_pretrained(tmp_path / "hf")  # safetensors, weight norm as parametrizations
    torch.save(
        {
            "model_cfg": {"vocab_size": 20, "dim": 64, "upstream_dim": 64},
            "model_weight": {k: v.detach() for k, v in q.state_dict().items()},
        },
        tmp_path / "q.pt",
    )
    out = hubert_from_hf.convert(
        tmp_path / "hf", tmp_path / "jax", output_layer=OUT_LAYER, quantizer_pt=tmp_path / "q.pt"
    )
    tok = SpeechTokenizer.load(out)
    wav = load_audio(AMFM)
    ref = hf_layer(m, wav, OUT_LAYER)
    assert np.abs(tok.features(wav) - ref).max() <= 1e-4
    with torch.no_grad():
        np.testing.assert_array_equal(
            tok.encode_units(wav)["hubert"], reference_fill(q(torch.from_numpy(ref)).argmax(-1).numpy(), 20)
        )
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    sd["encoder.layers.0.feed_forward.output_dense.bias"] = torch.zeros(65)
    with pytest.raises(
        ConversionError, match=r"encoder.layers.0.feed_forward.output_dense.bias has shape \(65,\), expected \(64,\)"
    ):
        hubert_from_hf.params_from_hf_state_dict(sd, tok.cfg)
    with pytest.raises(ConversionError, match="do_stable_layer_norm=True is not supported"):
        hubert_from_hf.hubert_config_from_hf({**m.config.to_dict(), "do_stable_layer_norm": True})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hubert_from_hf.convert(tmp_path, tmp_path / "o")
