"""Import an official Spirit LM / speech-resynthesis HiFi-GAN vocoder (generator.pt + config.json).

    python tools/convert_weights/hifigan_from_pt.py --dir hifigan_spiritlm_base --out DIR

Reads `generator.pt` (state dict under key "generator"; weight-normed convs stored as
weight_g/weight_v are folded), `config.json` and `speakers.txt`/`styles.txt` when present. Writes
DIR/config.yaml (HifiGanConfig), DIR/params (Orbax) and the speaker/style lists. A missing,
unexpected or mis-shaped tensor is an error naming the key and both shapes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.speech.hifigan import HifiGanConfig  # noqa: E402
from tools.convert_weights.common import run_cli  # noqa: E402


class ConversionError(ValueError):
    pass


def config_from_json(cfg: dict) -> HifiGanConfig:
    dur = cfg.get("dur_predictor_params") or {}
    code_hop = cfg.get("code_hop_size", 640)
    return HifiGanConfig(
        num_embeddings=cfg["num_embeddings"], embedding_dim=cfg["embedding_dim"],
        num_f0_tokens=cfg.get("num_f0_tokens") or 0, num_style_tokens=cfg.get("num_style_tokens") or 0,
        f0_upsample=round(cfg.get("f0_hop_size", 2 * code_hop) / code_hop),
        style_upsample=round(cfg.get("style_hop_size", 25 * code_hop) / code_hop),
        multispkr=bool(cfg.get("multispkr")), num_speakers=cfg.get("num_speakers", 200),
        multistyle=bool(cfg.get("multistyle")), num_styles=cfg.get("num_styles", 100),
        upsample_rates=tuple(cfg["upsample_rates"]), upsample_kernel_sizes=tuple(cfg["upsample_kernel_sizes"]),
        upsample_initial_channel=cfg["upsample_initial_channel"],
        resblock_kernel_sizes=tuple(cfg["resblock_kernel_sizes"]),
        resblock_dilation_sizes=tuple(tuple(d) for d in cfg["resblock_dilation_sizes"]),
        dur_predictor=bool(dur), dur_kernel_size=dur.get("var_pred_kernel_size", 3),
        dur_hidden_dim=dur.get("var_pred_hidden_dim", cfg["embedding_dim"]),
    )


def fold_weight_norm(sd: dict) -> dict:
    """{name.weight_g, name.weight_v} -> name.weight = g * v / ||v|| (norm over all dims but 0)."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_v"):
            base = k[: -len(".weight_v")]
            g = np.asarray(sd[base + ".weight_g"], np.float32)
            v = np.asarray(v, np.float32)
            norm = np.sqrt((v ** 2).sum(axis=tuple(range(1, v.ndim)), keepdims=True))
            out[base + ".weight"] = g * v / norm
        elif not k.endswith(".weight_g"):
            out[k] = np.asarray(v, np.float32)
    return out


def params_from_state_dict(sd: dict, cfg: HifiGanConfig) -> dict:
    """Official key names -> our parameter tree (NWC kernels [k, in, out])."""
    sd = fold_weight_norm(sd)
    used: set[str] = set()

    def take(key, shape=None):
        if key not in sd:
            raise ConversionError(f"missing tensor {key}")
        w = sd[key]
        if shape is not None and tuple(w.shape) != tuple(shape):
            raise ConversionError(f"tensor {key} has shape {tuple(w.shape)}, expected {tuple(shape)}")
        used.add(key)
        return w

    def conv(key, cin, cout, k):
        return {"kernel": take(key + ".weight", (cout, cin, k)).transpose(2, 1, 0), "bias": take(key + ".bias", (cout,))}

    e = cfg.embedding_dim
    p: dict = {"dict": {"embedding": take("dict.weight", (cfg.num_embeddings, e))}}
    if cfg.num_f0_tokens:
        p["f0_dict"] = {"embedding": take("f0_dict.weight", (cfg.num_f0_tokens, e))}
    if cfg.num_style_tokens:
        p["style_dict"] = {"embedding": take("style_dict.weight", (cfg.num_style_tokens, e))}
    if cfg.multispkr:
        p["spkr"] = {"embedding": take("spkr.weight", (cfg.num_speakers, e))}
    if cfg.multistyle:
        p["style"] = {"embedding": take("style.weight", (cfg.num_styles, e))}
    if cfg.dur_predictor:
        h, k = cfg.dur_hidden_dim, cfg.dur_kernel_size
        p["dur_predictor"] = {
            "conv1": conv("dur_predictor.conv1.0", e, h, k), "conv2": conv("dur_predictor.conv2.0", h, h, k),
            "ln1": {"scale": take("dur_predictor.ln1.weight", (h,)), "bias": take("dur_predictor.ln1.bias", (h,))},
            "ln2": {"scale": take("dur_predictor.ln2.weight", (h,)), "bias": take("dur_predictor.ln2.bias", (h,))},
            "proj": {"kernel": take("dur_predictor.proj.weight", (1, h)).T, "bias": take("dur_predictor.proj.bias", (1,))},
        }
    c_in = e * (1 + bool(cfg.num_f0_tokens) + bool(cfg.num_style_tokens) + cfg.multispkr + cfg.multistyle)
    ch = cfg.upsample_initial_channel
    g: dict = {"conv_pre": conv("conv_pre", c_in, ch, 7)}
    n_k = len(cfg.resblock_kernel_sizes)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        cin, cout = ch // 2 ** i, ch // 2 ** (i + 1)
        g[f"ups_{i}"] = {"kernel": take(f"ups.{i}.weight", (cin, cout, k)).transpose(2, 0, 1),
                         "bias": take(f"ups.{i}.bias", (cout,))}
        for j, (rk, rd) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            blk = {}
            for m in range(len(rd)):
                blk[f"convs1_{m}"] = conv(f"resblocks.{i * n_k + j}.convs1.{m}", cout, cout, rk)
                blk[f"convs2_{m}"] = conv(f"resblocks.{i * n_k + j}.convs2.{m}", cout, cout, rk)
            g[f"resblocks_{i * n_k + j}"] = blk
    g["conv_post"] = conv("conv_post", ch // 2 ** len(cfg.upsample_rates), 1, 7)
    p["generator"] = g
    extra = sorted(set(sd) - used)
    if extra:
        raise ConversionError(f"unexpected tensor {extra[0]} (and {len(extra) - 1} more) for this config")
    return p


def convert(src_dir: str | Path, out_dir: str | Path) -> Path:
    import torch

    from spiritlm_jax.speech.vocoder import save_vocoder

    src = Path(src_dir)
    for name in ("generator.pt", "config.json"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} does not exist")
    cfg = config_from_json(json.loads((src / "config.json").read_text()))
    try:
        ckpt = torch.load(src / "generator.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise ConversionError(f"{src / 'generator.pt'} cannot be read as a PyTorch checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or "generator" not in ckpt:
        raise ConversionError(f"{src / 'generator.pt'} has no 'generator' key (keys: {list(ckpt)[:5]})")
    params = params_from_state_dict({k: v.float().numpy() for k, v in ckpt["generator"].items()}, cfg)
    out = save_vocoder(out_dir, params, cfg)
    for name in ("speakers.txt", "styles.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder with generator.pt and config.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return run_cli(lambda: convert(args.dir, args.out))


if __name__ == "__main__":
    sys.exit(main())
