"""Import an FCPE checkpoint of torchfcpe (by default the one it ships: assets/fcpe_c_v001.pt, MIT).

    python tools/convert_weights/fcpe_from_torchfcpe.py --out DIR [--src fcpe_c_v001.pt]

The checkpoint is {"model": state dict, "config_dict": {"mel": ..., "model": ...}, ...}; it becomes
DIR/fcpe.yaml (FCPEConfig) + DIR/params (Orbax), loaded without torch by
`F0Extractor.load` (or `io.load_component(DIR, FCPE_SPEC)`). torchfcpe itself is not imported (its
module imports torchaudio), only the file is read. Key mapping (torch -> Flax, under "net" unless
noted; Conv1d [out, in, k] -> [k, in, out], Linear [out, in] -> [in, out]):

    input_stack.0 / .3                          -> input_conv_0 / input_conv_1
    input_stack.1 (GroupNorm)                    -> input_norm_scale, input_norm_bias
    harmonic_emb.weight                          -> harmonic_emb (use_harmonic_emb only)
    net.encoder_layers.{i}.conformer[.0].net.0   -> layer_{i}.conv_norm (LayerNorm)
                                 ... .net.2      -> layer_{i}.pointwise_in
                                 ... .net.4.conv -> layer_{i}.depthwise
                                 ... .net.6      -> layer_{i}.pointwise_out
    net.encoder_layers.{i}.norm                  -> layer_{i}.attn_norm (unused, dropped, when conv_only)
    net.encoder_layers.{i}.attn.to_{q,k,v,out}   -> layer_{i}.attn.to_*
    ....attn.fast_attention.projection_matrix    -> layer_{i}.attn.projection_matrix
    norm, output_proj (weight norm folded)       -> norm, output_proj
    cent_table (buffer)                          -> cent_table (top level)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.fcpe import FCPE_SPEC, FCPEConfig  # noqa: E402
from tools.convert_weights.common import (  # noqa: E402
    CheckedTensors,
    ConversionError,
    converter_main,
    fold_weight_norm,
    load_torch_checkpoint,
)


def bundled_checkpoint() -> Path:
    """torchfcpe's shipped weights, located without importing torchfcpe (which needs torchaudio)."""
    spec = importlib.util.find_spec("torchfcpe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchfcpe is not installed; pip install --no-deps torchfcpe==0.0.4, or pass --pt")
    return Path(spec.submodule_search_locations[0]) / "assets" / "fcpe_c_v001.pt"


def config_from_torchfcpe(config_dict: dict, source: str = "torchfcpe config") -> FCPEConfig:
    """torchfcpe's config_dict (mel + model sections) -> FCPEConfig; unsupported settings are errors."""
    try:
        mel, model = config_dict["mel"], config_dict["model"]
    except (KeyError, TypeError):
        raise ConversionError(f"{source}: config_dict needs 'mel' and 'model' sections") from None
    if model.get("type", "CFNaiveMelPE") != "CFNaiveMelPE":
        raise ConversionError(f"{source}: model.type {model.get('type')!r} is not CFNaiveMelPE")
    if str(mel.get("type", "default")).lower() not in ("default", "none"):
        raise ConversionError(f"{source}: mel.type {mel.get('type')!r} (only the default mel front-end is ported)")
    d = FCPEConfig()
    pick = lambda sec, k, default: default if sec.get(k) is None else sec[k]  # noqa: E731  (torchfcpe: None -> default)
    try:
        return FCPEConfig(
            sample_rate=int(pick(mel, "sr", 16000)),
            n_mels=int(mel["num_mels"]),
            n_fft=int(pick(mel, "n_fft", 1024)),
            win_size=int(pick(mel, "win_size", 1024)),
            hop_size=int(pick(mel, "hop_size", 160)),
            fmin=float(pick(mel, "fmin", 0)),
            fmax=float(pick(mel, "fmax", 8000)),
            out_dims=int(model["out_dims"]),
            hidden_dims=int(model["hidden_dims"]),
            n_layers=int(model["n_layers"]),
            n_heads=int(model["n_heads"]),
            conv_only=bool(pick(model, "conv_only", False)),
            use_fa_norm=bool(model["use_fa_norm"]),
            use_harmonic_emb=bool(pick(model, "use_harmonic_emb", False)),
            f0_min=float(model["f0_min"]),
            f0_max=float(model["f0_max"]),
            precision=d.precision,
        )
    except KeyError as e:
        raise ConversionError(f"{source}: config_dict lacks {e.args[0]!r}") from None
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from None


def _conv(t: CheckedTensors, key: str, out: int, cin: int, k: int) -> dict:
    return {"kernel": t.take(f"{key}.weight", (out, cin, k)).transpose(2, 1, 0), "bias": t.take(f"{key}.bias", (out,))}


def _dense(t: CheckedTensors, key: str, out: int, cin: int, conv1x1: bool = False) -> dict:
    w = t.take(f"{key}.weight", (out, cin, 1) if conv1x1 else (out, cin))
    return {"kernel": (w[..., 0] if conv1x1 else w).T, "bias": t.take(f"{key}.bias", (out,))}


def _norm(t: CheckedTensors, key: str, d: int) -> dict:
    return {"scale": t.take(f"{key}.weight", (d,)), "bias": t.take(f"{key}.bias", (d,))}


def _weight_norm_linear(t: CheckedTensors, key: str, out: int, cin: int) -> np.ndarray:
    """torch weight_norm(Linear, dim=0), old (weight_g/weight_v) or parametrization key names."""
    layouts = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))
    for g_key, v_key in layouts:
        if t.has(f"{key}.{g_key}"):
            return fold_weight_norm(t.take(f"{key}.{g_key}", (out, 1)), t.take(f"{key}.{v_key}", (out, cin)), dim=0)
    return t.take(f"{key}.weight", (out, cin))


def params_from_state_dict(sd: dict, cfg: FCPEConfig, source: str = "FCPE state dict") -> dict:
    """torchfcpe CFNaiveMelPE state dict -> Flax params of `spiritlm_jax.speech.fcpe.FCPE`; missing,
    mis-shaped or unexpected tensors raise ConversionError naming the tensor (and both shapes)."""
    t = CheckedTensors(sd, source)
    h, m, inner = cfg.hidden_dims, cfg.n_mels, cfg.hidden_dims * cfg.conv_expansion
    gn = _norm(t, "input_stack.1", h)
    net = {
        "input_conv_0": _conv(t, "input_stack.0", h, m, 3),
        "input_norm_scale": gn["scale"],
        "input_norm_bias": gn["bias"],
        "input_conv_1": _conv(t, "input_stack.3", h, h, 3),
    }
    if cfg.use_harmonic_emb:
        net["harmonic_emb"] = t.take("harmonic_emb.weight", (9, h))
    for i in range(cfg.n_layers):
        pre = f"net.encoder_layers.{i}."
        conv = pre + ("conformer.0.net." if t.has(pre + "conformer.0.net.0.weight") else "conformer.net.")
        layer = {
            "conv_norm": _norm(t, conv + "0", h),
            "pointwise_in": _dense(t, conv + "2", 2 * inner, h, True),
            "depthwise": _conv(t, conv + "4.conv", inner, 1, cfg.conv_kernel),
            "pointwise_out": _dense(t, conv + "6", h, inner, True),
        }
        if cfg.conv_only:
            for k in ("norm.weight", "norm.bias"):  # built but never used without attention
                if t.has(pre + k):
                    t.take(pre + k, (h,))
        else:
            hd = cfg.n_heads * cfg.attn_head_dim
            layer["attn_norm"] = _norm(t, pre + "norm", h)
            attn = {n: _dense(t, f"{pre}attn.{n}", hd, h) for n in ("to_q", "to_k", "to_v")}
            attn["to_out"] = _dense(t, f"{pre}attn.to_out", h, hd)
            attn["projection_matrix"] = t.take(
                f"{pre}attn.fast_attention.projection_matrix", (cfg.nb_features, cfg.attn_head_dim)
            )
            layer["attn"] = attn
        net[f"layer_{i}"] = layer
    net["norm"] = _norm(t, "norm", h)
    net["output_proj"] = {
        "kernel": _weight_norm_linear(t, "output_proj", cfg.out_dims, h).T,
        "bias": t.take("output_proj.bias", (cfg.out_dims,)),
    }
    params = {"net": net, "cent_table": t.take("cent_table", (cfg.out_dims,))}
    t.check_all_used(ignore_prefixes=("gaussian_blurred_cent_mask",))
    return params


def load_checkpoint(pt_path) -> tuple[FCPEConfig, dict]:
    """(config, Flax params) from a torchfcpe .pt file."""
    ckpt = load_torch_checkpoint(pt_path)
    for k in ("model", "config_dict"):
        if k not in ckpt:
            raise ConversionError(f"{pt_path}: expected a torchfcpe checkpoint with '{k}', got keys {sorted(ckpt)}")
    cfg = config_from_torchfcpe(ckpt["config_dict"], str(pt_path))
    return cfg, params_from_state_dict(ckpt["model"], cfg, str(pt_path))


def convert(pt_path, out_dir) -> Path:
    cfg, params = load_checkpoint(pt_path)
    return save_component(out_dir, FCPE_SPEC, params, {"fcpe.yaml": cfg})


@dataclasses.dataclass(frozen=True)
class Args:
    out: str  # output FCPE directory (must not hold params/ yet)
    src: Optional[str] = None  # torchfcpe checkpoint (default: the one torchfcpe ships)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src or bundled_checkpoint(), a.out))


if __name__ == "__main__":
    sys.exit(main())
