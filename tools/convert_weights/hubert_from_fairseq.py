"""Import the official HuBERT units tokenizer: mhubert_base_25hz.pt (+ L11_quantizer_500.pt).

    python tools/convert_weights/hubert_from_fairseq.py --hubert mhubert_base_25hz.pt \
        --quantizer L11_quantizer_500.pt --out DIR [--layer 11]

mhubert_base_25hz.pt: {model_cfg, task_cfg, model_weight, dictionaries_symbols} with fairseq key names
(SPEC.md §4.1); the positional conv is weight-normed over dim 2 (weight_g/weight_v, folded here).
The conv stack is read from model_cfg["conv_feature_layers"]. L11_quantizer_500.pt:
{model_cfg{vocab_size, dim, upstream_dim}, model_weight{0.*, 2.*, 4.*}}. Writes DIR/hubert.yaml,
DIR/quantizer.yaml and DIR/params (Orbax: {"hubert": ..., "quantizer": ...}).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.speech.hubert import HubertConfig  # noqa: E402
from spiritlm_jax.speech.quantizer import MLPQuantizerConfig  # noqa: E402
from tools.convert_weights.common import run_cli  # noqa: E402

IGNORED = ("label_embs_concat", "final_proj.", "mask_emb")


class ConversionError(ValueError):
    pass


def parse_conv_layers(spec: str) -> tuple[tuple[int, int, int], ...]:
    """'[(512,10,5)] + [(512,3,2)] * 4 + ...' -> tuple of (dim, kernel, stride), without eval."""
    def ev(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ev(node.left) + ev(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return ev(node.left) * ev(node.right)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts] if isinstance(node, ast.List) else tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ConversionError(f"conv_feature_layers: unsupported expression {ast.dump(node)[:60]}")

    layers = ev(ast.parse(spec, mode="eval").body)
    return tuple(tuple(int(v) for v in layer) for layer in layers)


def hubert_config(model_cfg: dict, output_layer: int) -> HubertConfig:
    if model_cfg.get("extractor_mode", "default") != "default":
        raise ConversionError(f"extractor_mode {model_cfg['extractor_mode']!r} is not supported (group-norm 'default' only)")
    if model_cfg.get("layer_norm_first", False):
        raise ConversionError("layer_norm_first=True (pre-LN) is not supported; HuBERT-Base is post-LN")
    return HubertConfig(
        conv_layers=parse_conv_layers(model_cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")),
        hidden=model_cfg.get("encoder_embed_dim", 768), num_layers=model_cfg.get("encoder_layers", 12),
        num_heads=model_cfg.get("encoder_attention_heads", 12), ffn=model_cfg.get("encoder_ffn_embed_dim", 3072),
        pos_conv_kernel=model_cfg.get("conv_pos", 128), pos_conv_groups=model_cfg.get("conv_pos_groups", 16),
        output_layer=output_layer,
    )


def hubert_params(sd: dict, cfg: HubertConfig) -> dict:
    sd = {k: np.asarray(v, np.float32) for k, v in sd.items() if not k.startswith(IGNORED)}
    used: set[str] = set()

    def take(k, shape):
        if k not in sd:
            raise ConversionError(f"missing tensor {k}")
        if tuple(sd[k].shape) != tuple(shape):
            raise ConversionError(f"tensor {k} has shape {tuple(sd[k].shape)}, expected {tuple(shape)}")
        used.add(k)
        return sd[k]

    d, c_last = cfg.hidden, cfg.conv_layers[-1][0]
    fe, c_in = {}, 1
    for i, (c, k, _) in enumerate(cfg.conv_layers):
        fe[f"conv_{i}"] = take(f"feature_extractor.conv_layers.{i}.0.weight", (c, c_in, k)).transpose(2, 1, 0)
        c_in = c
    c0 = cfg.conv_layers[0][0]
    fe["norm_scale"] = take("feature_extractor.conv_layers.0.2.weight", (c0,))
    fe["norm_bias"] = take("feature_extractor.conv_layers.0.2.bias", (c0,))
    dense = lambda p, i, o: {"kernel": take(p + ".weight", (o, i)).T, "bias": take(p + ".bias", (o,))}  # noqa: E731
    ln = lambda p, n: {"scale": take(p + ".weight", (n,)), "bias": take(p + ".bias", (n,))}  # noqa: E731
    k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
    v = take("encoder.pos_conv.0.weight_v", (d, d // g, k))
    wg = take("encoder.pos_conv.0.weight_g", (1, 1, k))
    w = wg * v / np.sqrt((v ** 2).sum(axis=(0, 1), keepdims=True))  # weight norm over dim 2
    out = {"feature_extractor": fe, "layer_norm": ln("layer_norm", c_last),
           "post_extract_proj": dense("post_extract_proj", c_last, d), "pos_conv": w.transpose(2, 1, 0),
           "pos_conv_bias": take("encoder.pos_conv.0.bias", (d,)), "encoder_layer_norm": ln("encoder.layer_norm", d)}
    for i in range(cfg.num_layers):
        p = f"encoder.layers.{i}."
        layer = {"self_attn": {n: dense(p + f"self_attn.{n}", d, d) for n in ("q_proj", "k_proj", "v_proj", "out_proj")},
                 "self_attn_layer_norm": ln(p + "self_attn_layer_norm", d), "final_layer_norm": ln(p + "final_layer_norm", d),
                 "fc1": dense(p + "fc1", d, cfg.ffn), "fc2": dense(p + "fc2", cfg.ffn, d)}
        if i < cfg.output_layer:  # later layers are checked but not kept: they are never run
            out[f"layers_{i}"] = layer
    extra = sorted(set(sd) - used)
    if extra:
        raise ConversionError(f"unexpected tensor {extra[0]} (and {len(extra) - 1} more)")
    return out


def quantizer_params(ckpt: dict) -> tuple[MLPQuantizerConfig, dict]:
    if "model_cfg" not in ckpt or "model_weight" not in ckpt:
        raise ConversionError("quantizer checkpoint must hold 'model_cfg' and 'model_weight'")
    mc = ckpt["model_cfg"]
    cfg = MLPQuantizerConfig(int(mc["vocab_size"]), int(mc["dim"]), int(mc["upstream_dim"]))
    sd = {k: np.asarray(v, np.float32) for k, v in ckpt["model_weight"].items()}
    w1, w2, w3 = cfg.widths
    params = {}
    for idx, (i, o) in zip((0, 2, 4), ((cfg.dim, w1), (w1, w2), (w2, w3))):
        for name, shape in (("weight", (o, i)), ("bias", (o,))):
            key = f"{idx}.{name}"
            if key not in sd:
                raise ConversionError(f"quantizer: missing tensor {key}")
            if sd[key].shape != shape:
                raise ConversionError(f"quantizer: tensor {key} has shape {sd[key].shape}, expected {shape}")
        params[f"linear_{idx}"] = {"kernel": sd[f"{idx}.weight"].T, "bias": sd[f"{idx}.bias"]}
    return cfg, params


def _load(path):
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConversionError(f"{path} cannot be read as a PyTorch checkpoint: {e}") from None


def _to_numpy(d):
    return {k: v.float().numpy() if hasattr(v, "float") else v for k, v in d.items()}


def convert(hubert_pt, quantizer_pt, out_dir, output_layer: int = 11) -> Path:
    from spiritlm_jax.speech.tokenizer import save_speech_tokenizer

    ck = _load(hubert_pt)
    if not isinstance(ck, dict) or "model_weight" not in ck or "model_cfg" not in ck:
        raise ConversionError(f"{hubert_pt}: expected a dict with 'model_cfg' and 'model_weight'")
    cfg = hubert_config(dict(ck["model_cfg"]), output_layer)
    params = {"hubert": hubert_params(_to_numpy(ck["model_weight"]), cfg)}
    qcfg = None
    if quantizer_pt is not None:
        q = _load(quantizer_pt)
        qcfg, params["quantizer"] = quantizer_params({"model_cfg": q.get("model_cfg"), "model_weight": _to_numpy(q.get("model_weight", {}))})
        if qcfg.dim != cfg.hidden:
            raise ConversionError(f"quantizer dim {qcfg.dim} does not match HuBERT width {cfg.hidden}")
    return save_speech_tokenizer(out_dir, params, cfg, qcfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hubert", required=True)
    ap.add_argument("--quantizer", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layer", type=int, default=11)
    args = ap.parse_args(argv)
    return run_cli(lambda: convert(args.hubert, args.quantizer, args.out, args.layer))


if __name__ == "__main__":
    sys.exit(main())
