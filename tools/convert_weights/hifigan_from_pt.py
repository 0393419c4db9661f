"""Import an official Spirit LM / speech-resynthesis HiFi-GAN vocoder (generator.pt + config.json).

    python tools/convert_weights/hifigan_from_pt.py --src checkpoints/speech_tokenizer/hifigan_spiritlm_base --out DIR

Reads `generator.pt` (state dict under key "generator"; weight-normed convs stored as
weight_g/weight_v are folded, w = g * v / ||v|| over all axes but 0, as torch's weight_norm(dim=0)),
`config.json` and `speakers.txt`/`styles.txt` when present. Writes DIR/config.yaml (HifiGanConfig),
DIR/params (Orbax) and the speaker/style lists (`Vocoder.save`, spiritlm_jax.speech.vocoder.VOCODER_SPEC). A missing,
unexpected or mis-shaped tensor is an error naming the file, the key and both shapes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.config import ConfigError  # noqa: E402
from spiritlm_jax.speech.hifigan import DurPredictorConfig, HifiGanConfig  # noqa: E402
from spiritlm_jax.speech.vocoder import Vocoder  # noqa: E402
from tools.convert_weights.common import (  # noqa: E402
    CheckedTensors,
    ConversionError,
    converter_main,
    fold_weight_norm,
    load_torch_checkpoint,
    torch_to_numpy,
)

UNSUPPORTED = {  # config.json features of speech-resynthesis that the Spirit LM vocoders do not use
    "f0": "continuous F0 input",
    "f0_quant_num_bin": "quantized continuous F0",
    "embedder_params": "speaker embedder",
}


def config_from_json(cfg: dict, source: str = "config.json") -> HifiGanConfig:
    """The official config.json (training fields ignored) -> HifiGanConfig; model_in_dim is checked."""
    for key, what in UNSUPPORTED.items():
        if cfg.get(key):
            raise ConversionError(f"{source}: {key}={cfg[key]!r} ({what}) is not supported by this vocoder")
    missing = [
        k
        for k in (
            "num_embeddings",
            "embedding_dim",
            "upsample_rates",
            "upsample_kernel_sizes",
            "upsample_initial_channel",
            "resblock_kernel_sizes",
            "resblock_dilation_sizes",
        )
        if k not in cfg
    ]
    if missing:
        raise ConversionError(f"{source}: missing field {missing[0]}")
    dur = cfg.get("dur_predictor_params")
    fields = dict(
        num_embeddings=cfg["num_embeddings"],
        embedding_dim=cfg["embedding_dim"],
        num_f0_tokens=cfg.get("num_f0_tokens") or 0,
        num_style_tokens=cfg.get("num_style_tokens") or 0,
        code_hop_size=cfg.get("code_hop_size", 640),
        f0_hop_size=cfg.get("f0_hop_size", 1280),
        style_hop_size=cfg.get("style_hop_size", 16000),
        multispkr=bool(cfg.get("multispkr")),
        num_speakers=cfg.get("num_speakers", 200),  # reference defaults
        multistyle=bool(cfg.get("multistyle")),
        num_styles=cfg.get("num_styles", 100),
        upsample_rates=tuple(cfg["upsample_rates"]),
        upsample_kernel_sizes=tuple(cfg["upsample_kernel_sizes"]),
        upsample_initial_channel=cfg["upsample_initial_channel"],
        resblock_kernel_sizes=tuple(cfg["resblock_kernel_sizes"]),
        resblock_dilation_sizes=tuple(tuple(d) for d in cfg["resblock_dilation_sizes"]),
        sampling_rate=cfg.get("sampling_rate", 16000),
    )
    try:
        if dur:
            fields["dur_predictor_params"] = DurPredictorConfig(
                dur["encoder_embed_dim"],
                dur["var_pred_hidden_dim"],
                dur["var_pred_kernel_size"],
                float(dur.get("var_pred_dropout", 0.0)),
            )
        else:
            fields["dur_predictor_params"] = None
        out = HifiGanConfig(**fields)
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise ConversionError(f"{source}: {type(e).__name__}: {e}") from None
    if "model_in_dim" in cfg and cfg["model_in_dim"] != out.model_in_dim:
        raise ConversionError(
            f"{source}: model_in_dim {cfg['model_in_dim']} but the configured embeddings "
            f"concatenate to {out.model_in_dim} channels"
        )
    return out


def fold_all_weight_norms(sd: dict, source: str) -> dict:
    """{name.weight_g, name.weight_v} -> name.weight (torch weight_norm, dim 0); other tensors as numpy."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            continue
        v = torch_to_numpy(v) if hasattr(v, "detach") else np.asarray(v)
        if k.endswith(".weight_v"):
            base = k[: -len(".weight_v")]
            if base + ".weight_g" not in sd:
                raise ConversionError(f"{source}: {k} has no matching {base}.weight_g")
            g = sd[base + ".weight_g"]
            g = torch_to_numpy(g) if hasattr(g, "detach") else np.asarray(g)
            if g.shape != (v.shape[0],) + (1,) * (v.ndim - 1):
                raise ConversionError(
                    f"{source}: tensor {base}.weight_g has shape {g.shape}, expected "
                    f"{(v.shape[0],) + (1,) * (v.ndim - 1)} for weight_v {v.shape}"
                )
            out[base + ".weight"] = fold_weight_norm(g, v, 0)
        else:
            out[k] = v
    orphans = [k for k in sd if k.endswith(".weight_g") and k[:-2] + "_v" not in sd]
    if orphans:
        raise ConversionError(f"{source}: {orphans[0]} has no matching weight_v")
    return out


def params_from_state_dict(sd: dict, cfg: HifiGanConfig, source: str = "generator.pt") -> dict:
    """Official CodeGenerator state dict (weight-normed or folded) -> our parameter tree (NWC kernels)."""
    t = CheckedTensors(fold_all_weight_norms(sd, source), source)

    def conv(key, cin, cout, k):  # torch Conv1d weight [out, in, k] -> [k, in, out]
        return {
            "kernel": t.take(key + ".weight", (cout, cin, k)).transpose(2, 1, 0),
            "bias": t.take(key + ".bias", (cout,)),
        }

    def emb(key, n):
        return {"embedding": t.take(key + ".weight", (n, cfg.embedding_dim))}

    p: dict = {"dict": emb("dict", cfg.num_embeddings)}
    if cfg.num_f0_tokens:
        p["f0_dict"] = emb("f0_dict", cfg.num_f0_tokens)
    if cfg.num_style_tokens:
        p["style_dict"] = emb("style_dict", cfg.num_style_tokens)
    if cfg.multispkr:
        p["spkr"] = emb("spkr", cfg.num_speakers)
    if cfg.multistyle:
        p["style"] = emb("style", cfg.num_styles)
    d = cfg.dur_predictor_params
    if d is not None:
        e, h, k = cfg.embedding_dim, d.var_pred_hidden_dim, d.var_pred_kernel_size
        p["dur_predictor"] = {
            "conv1": conv("dur_predictor.conv1.0", e, h, k),
            "conv2": conv("dur_predictor.conv2.0", h, h, k),
            "ln1": {"scale": t.take("dur_predictor.ln1.weight", (h,)), "bias": t.take("dur_predictor.ln1.bias", (h,))},
            "ln2": {"scale": t.take("dur_predictor.ln2.weight", (h,)), "bias": t.take("dur_predictor.ln2.bias", (h,))},
            "proj": {
                "kernel": t.take("dur_predictor.proj.weight", (1, h)).T,
                "bias": t.take("dur_predictor.proj.bias", (1,)),
            },
        }
    ch = cfg.upsample_initial_channel
    g: dict = {"conv_pre": conv("conv_pre", cfg.model_in_dim, ch, 7)}
    n_k = len(cfg.resblock_kernel_sizes)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        cin, cout = ch // 2**i, ch // 2 ** (i + 1)
        # torch ConvTranspose1d weight [in, out, k] -> [k, in, out] (flipped inside the module)
        g[f"ups_{i}"] = {
            "kernel": t.take(f"ups.{i}.weight", (cin, cout, k)).transpose(2, 0, 1),
            "bias": t.take(f"ups.{i}.bias", (cout,)),
        }
        for j, (rk, rd) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            r = i * n_k + j
            blk = {}
            for m in range(len(rd)):
                blk[f"convs1_{m}"] = conv(f"resblocks.{r}.convs1.{m}", cout, cout, rk)
                blk[f"convs2_{m}"] = conv(f"resblocks.{r}.convs2.{m}", cout, cout, rk)
            g[f"resblocks_{r}"] = blk
    g["conv_post"] = conv("conv_post", ch // 2 ** len(cfg.upsample_rates), 1, 7)
    p["generator"] = g
    t.check_all_used()
    return p


def convert(src_dir: str | Path, out_dir: str | Path) -> Path:
    """generator.pt + config.json (+ speakers.txt, styles.txt) in `src_dir` -> a vocoder directory."""
    src = Path(src_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src / 'config.json'} does not exist")
    try:
        raw = json.loads((src / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{src / 'config.json'} is not valid JSON: {e}") from None
    cfg = config_from_json(raw, str(src / "config.json"))
    ckpt = load_torch_checkpoint(src / "generator.pt")
    if "generator" not in ckpt:
        raise ConversionError(f"{src / 'generator.pt'} has no 'generator' key (keys: {sorted(ckpt)[:5]})")
    params = params_from_state_dict(ckpt["generator"], cfg, str(src / "generator.pt"))
    lists = {}
    for name in ("speakers", "styles"):
        path = src / f"{name}.txt"
        lists[name] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else None
    for name, n, on in (("speakers", cfg.num_speakers, cfg.multispkr), ("styles", cfg.num_styles, cfg.multistyle)):
        if on and lists[name] is not None and len(lists[name]) > n:
            raise ConversionError(f"{src / (name + '.txt')} lists {len(lists[name])} {name} but the model has {n}")
    return Vocoder(params, cfg, lists["speakers"], lists["styles"]).save(out_dir)


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # folder with generator.pt and config.json (+ speakers.txt, styles.txt)
    out: str  # output vocoder directory (must not hold params/ yet)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out))


if __name__ == "__main__":
    sys.exit(main())
