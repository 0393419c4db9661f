"""Transformers HubertModel / Wav2Vec2 encoder weights -> our HuBERT parameter tree.

    python tools/convert_weights/hubert_from_hf.py --hf-dir DIR --out DIR [--layer 11]

Used for a transformers HubertModel directory, and (with prefix "wav2vec2.") for the style encoder's
Wav2Vec2ForSequenceClassification, whose encoder has the same architecture. The weight-normed
positional conv is folded whether stored as weight_g/weight_v or as parametrizations.original0/1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.speech.hubert import HubertConfig  # noqa: E402
from tools.convert_weights.common import run_cli  # noqa: E402


class ConversionError(ValueError):
    pass


def hubert_config_from_hf(hf: dict, output_layer: int | None = None) -> HubertConfig:
    if hf.get("feat_extract_norm", "group") != "group" or hf.get("do_stable_layer_norm", False):
        raise ConversionError("only the group-norm extractor with post-LN layers (HuBERT/wav2vec2 Base) is supported")
    if hf.get("conv_bias", False):
        raise ConversionError("conv_bias=true is not supported (HuBERT/wav2vec2 Base have no conv bias)")
    layers = hf["num_hidden_layers"]
    return HubertConfig(
        conv_layers=tuple(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])), hidden=hf["hidden_size"],
        num_layers=layers, num_heads=hf["num_attention_heads"], ffn=hf["intermediate_size"],
        pos_conv_kernel=hf["num_conv_pos_embeddings"], pos_conv_groups=hf["num_conv_pos_embedding_groups"],
        output_layer=layers if output_layer is None else output_layer, layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
    )


def params_from_hf_state_dict(sd: dict, cfg: HubertConfig, prefix: str = "") -> dict:
    def take(k, shape):
        k = prefix + k
        if k not in sd:
            raise ConversionError(f"missing tensor {k}")
        w = np.asarray(sd[k], np.float32)
        if shape is not None and tuple(w.shape) != tuple(shape):
            raise ConversionError(f"tensor {k} has shape {tuple(w.shape)}, expected {tuple(shape)}")
        return w

    d, c_in = cfg.hidden, 1
    fe = {}
    for i, (c, k, _) in enumerate(cfg.conv_layers):
        fe[f"conv_{i}"] = take(f"feature_extractor.conv_layers.{i}.conv.weight", (c, c_in, k)).transpose(2, 1, 0)
        c_in = c
    c0, c_last = cfg.conv_layers[0][0], cfg.conv_layers[-1][0]
    fe["norm_scale"] = take("feature_extractor.conv_layers.0.layer_norm.weight", (c0,))
    fe["norm_bias"] = take("feature_extractor.conv_layers.0.layer_norm.bias", (c0,))
    dense = lambda p, i, o: {"kernel": take(p + ".weight", (o, i)).T, "bias": take(p + ".bias", (o,))}  # noqa: E731
    ln = lambda p, n: {"scale": take(p + ".weight", (n,)), "bias": take(p + ".bias", (n,))}  # noqa: E731
    pc = "encoder.pos_conv_embed.conv."
    k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
    if prefix + pc + "weight_g" in sd:
        wg, wv = take(pc + "weight_g", (1, 1, k)), take(pc + "weight_v", (d, d // g, k))
    else:
        wg, wv = take(pc + "parametrizations.weight.original0", (1, 1, k)), take(pc + "parametrizations.weight.original1", (d, d // g, k))
    w = wg * wv / np.sqrt((wv ** 2).sum(axis=(0, 1), keepdims=True))
    out = {"feature_extractor": fe, "layer_norm": ln("feature_projection.layer_norm", c_last),
           "post_extract_proj": dense("feature_projection.projection", c_last, d), "pos_conv": w.transpose(2, 1, 0),
           "pos_conv_bias": take(pc + "bias", (d,)), "encoder_layer_norm": ln("encoder.layer_norm", d)}
    for i in range(cfg.output_layer):
        p = f"encoder.layers.{i}."
        out[f"layers_{i}"] = {
            "self_attn": {n: dense(p + f"attention.{n}", d, d) for n in ("q_proj", "k_proj", "v_proj", "out_proj")},
            "self_attn_layer_norm": ln(p + "layer_norm", d), "final_layer_norm": ln(p + "final_layer_norm", d),
            "fc1": dense(p + "feed_forward.intermediate_dense", d, cfg.ffn),
            "fc2": dense(p + "feed_forward.output_dense", cfg.ffn, d),
        }
    return out


def read_hf_dir(hf_dir) -> tuple[dict, dict]:
    """(config.json dict, state dict of numpy arrays) from a transformers model directory."""
    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d} has no config.json")
    if (d / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        sd = load_file(str(d / "model.safetensors"))
    elif (d / "pytorch_model.bin").is_file():
        import torch

        sd = {k: v.float().numpy() for k, v in torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True).items()}
    else:
        raise FileNotFoundError(f"{d} has no model.safetensors or pytorch_model.bin")
    return json.loads((d / "config.json").read_text()), sd


def convert(hf_dir, out_dir, output_layer: int = 11) -> Path:
    from spiritlm_jax.speech.tokenizer import save_speech_tokenizer

    hf, sd = read_hf_dir(hf_dir)
    cfg = hubert_config_from_hf(hf, output_layer)
    return save_speech_tokenizer(out_dir, {"hubert": params_from_hf_state_dict(sd, cfg)}, cfg, None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layer", type=int, default=11)
    args = ap.parse_args(argv)
    return run_cli(lambda: convert(args.hf_dir, args.out, args.layer))


if __name__ == "__main__":
    sys.exit(main())
