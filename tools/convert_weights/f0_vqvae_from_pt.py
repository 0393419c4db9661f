"""Import the F0 VQ-VAE quantizer of the reference code (`speech_tokenizer/vqvae_f0_quantizer/`).

    python tools/convert_weights/f0_vqvae_from_pt.py --src vqvae_f0_quantizer --out DIR [--trust-pickle]

Reads config.yaml (OmegaConf-style YAML: encoder_params, vq_params, decoder_params, features
[, speaker_norm]) and model.pt ({"model": state dict}); writes DIR/f0_vqvae.yaml + DIR/params (Orbax),
loaded with `io.load_component(DIR, F0_VQVAE_SPEC)` or `PitchTokenizer.load`. The decoder (only used
to train the VQ-VAE) is not imported. Key mapping, Conv1d [out, in, k] -> [k, in, out]:

    encoder.level_blocks.{l}.model.{i}.0                     -> level_{l}.down_{i}
    encoder.level_blocks.{l}.model.{i}.1.model.{j}.model.1   -> level_{l}.down_{i}_res_{j}_conv
    encoder.level_blocks.{l}.model.{i}.1.model.{j}.model.3   -> level_{l}.down_{i}_res_{j}_proj
    encoder.level_blocks.{l}.model.{D}   (D = downs)          -> level_{l}.out
    vq.level_blocks.{l}.k                                     -> codebook_{l}

model.pt is read with torch's weights-only unpickler plus an allowlist of exactly the non-tensor types a
training checkpoint of this kind holds beside its state dict (argparse.Namespace arguments, numpy
scalars and arrays, paths: `ALLOWED_GLOBALS`), so the release's file loads without `--trust-pickle`
(the reference reads it with weights_only=False). Anything else is refused with a message naming the
type; `--trust-pickle` lifts the restriction for a file you trust.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.f0_vqvae import F0_VQVAE_SPEC, F0VQVAEConfig  # noqa: E402
from tools.convert_weights.common import (  # noqa: E402
    CheckedTensors,
    ConversionError,
    converter_main,
    load_torch_file,
)

ENCODER_KEYS = {
    "input_emb_width",
    "output_emb_width",
    "levels",
    "downs_t",
    "strides_t",
    "width",
    "depth",
    "m_conv",
    "dilation_growth_rate",
    "dilation_cycle",
    "res_scale",
}
IGNORED_ENCODER_KEYS = {"zero_out", "reverse_decoder_dilation"}  # init-time / decoder-only settings


def _levels_list(v, key: str, source: str):
    if not isinstance(v, (list, tuple)):
        raise ConversionError(f"{source}: encoder_params.{key} must be a list (one entry per level), got {v!r}")
    return tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v)


def config_from_yaml(data: dict, source: str = "config.yaml") -> F0VQVAEConfig:
    """The reference's VQ-VAE config (a dict read from config.yaml) -> F0VQVAEConfig."""
    if not isinstance(data, dict):
        raise ConversionError(f"{source}: expected a mapping, got {type(data).__name__}")
    for sec in ("encoder_params", "vq_params", "features"):
        if sec not in data:
            raise ConversionError(f"{source}: missing {sec!r}")
    enc, vq = data["encoder_params"], data["vq_params"]
    unknown = sorted(set(enc) - ENCODER_KEYS - IGNORED_ENCODER_KEYS)
    if unknown:
        raise ConversionError(f"{source}: unsupported encoder_params key(s) {unknown}")
    for k in ("input_emb_width", "output_emb_width", "levels", "downs_t", "strides_t", "width", "depth"):
        if k not in enc:
            raise ConversionError(f"{source}: encoder_params lacks {k!r}")
    for k in ("l_bins", "emb_width", "levels"):
        if k not in vq:
            raise ConversionError(f"{source}: vq_params lacks {k!r}")
    if int(vq["levels"]) != int(enc["levels"]):
        raise ConversionError(f"{source}: vq_params.levels {vq['levels']} != encoder_params.levels {enc['levels']}")
    try:
        return F0VQVAEConfig(
            input_emb_width=int(enc["input_emb_width"]),
            output_emb_width=int(enc["output_emb_width"]),
            levels=int(enc["levels"]),
            downs_t=_levels_list(enc["downs_t"], "downs_t", source),
            strides_t=_levels_list(enc["strides_t"], "strides_t", source),
            width=int(enc["width"]),
            depth=int(enc["depth"]),
            m_conv=float(enc.get("m_conv", 1.0)),
            dilation_growth_rate=int(enc.get("dilation_growth_rate", 1)),
            dilation_cycle=None if enc.get("dilation_cycle") is None else int(enc["dilation_cycle"]),
            res_scale=bool(enc.get("res_scale", False)),
            l_bins=int(vq["l_bins"]),
            emb_width=int(vq["emb_width"]),
            features=str(data["features"]),
            speaker_norm=bool(data.get("speaker_norm", False)),
        )
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{source}: {e}") from None


def params_from_state_dict(sd: dict, cfg: F0VQVAEConfig, source: str = "model.pt") -> dict:
    """The reference VQVAE state dict -> Flax params of `F0VQVAE`; decoder.* is skipped; a missing,
    mis-shaped or unexpected tensor raises ConversionError naming it (with both shapes)."""
    t = CheckedTensors(sd, source)
    state = int(cfg.m_conv * cfg.width)

    def conv(key, out, cin, k):
        w = t.take(f"{key}.weight", (out, cin, k))
        return {"kernel": w.transpose(2, 1, 0), "bias": t.take(f"{key}.bias", (out,))}

    params = {}
    for level in range(cfg.levels):
        pre = f"encoder.level_blocks.{level}.model."
        cin = cfg.input_emb_width if level == 0 else cfg.output_emb_width
        p = {}
        downs = cfg.down_convs(level)
        for i, (k, _, _) in enumerate(downs):
            p[f"down_{i}"] = conv(f"{pre}{i}.0", cfg.width, cin if i == 0 else cfg.width, k)
            for j in range(cfg.depth):
                p[f"down_{i}_res_{j}_conv"] = conv(f"{pre}{i}.1.model.{j}.model.1", state, cfg.width, 3)
                p[f"down_{i}_res_{j}_proj"] = conv(f"{pre}{i}.1.model.{j}.model.3", cfg.width, state, 1)
        p["out"] = conv(f"{pre}{len(downs)}", cfg.output_emb_width, cfg.width, 3)
        params[f"level_{level}"] = p
        params[f"codebook_{level}"] = t.take(f"vq.level_blocks.{level}.k", (cfg.l_bins, cfg.emb_width))
    t.check_all_used(ignore_prefixes=("decoder.",))
    return params


def allowed_globals() -> list:
    """The non-tensor types a VQ-VAE training checkpoint may hold beside its state dict."""
    import argparse
    import collections
    import pathlib

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    dtypes = {type(np.dtype(c)) for c in "?bhilqBHILQefdFD"}
    return [
        argparse.Namespace,
        collections.OrderedDict,
        collections.defaultdict,
        pathlib.PosixPath,
        pathlib.PurePosixPath,
        np.ndarray,
        np.dtype,
        multiarray.scalar,
        multiarray._reconstruct,
        *sorted(dtypes, key=lambda t: t.__name__),
    ]


def load_restricted(path: Path) -> dict:
    """torch.load with weights_only=True and `allowed_globals()`; other types are a ConversionError naming them."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    allowed = allowed_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; name the file instead
        msg = str(e)
        if "Unsupported global" in msg or "not an allowed global" in msg or "safe_globals" in msg:
            what = msg.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in msg else "a type"
            names = ", ".join(sorted({f"{t.__module__}.{t.__name__}" for t in allowed}))
            raise ConversionError(
                f"{path}: holds {what}, which the restricted loader does not allow (allowed besides tensors: "
                f"{names}); pass --trust-pickle only for a file you trust"
            ) from None
        raise ConversionError(f"{path} cannot be read as a PyTorch checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    return ckpt


def load_quantizer(src, trust_pickle: bool = False) -> tuple[F0VQVAEConfig, dict]:
    """(config, params) from a vqvae_f0_quantizer directory (or its model.pt, config.yaml beside it)."""
    src = Path(src)
    model_pt = src / "model.pt" if src.is_dir() else src
    config = model_pt.parent / "config.yaml"
    for f in (model_pt, config):
        if not f.is_file():
            raise FileNotFoundError(f"{f} does not exist (expected vqvae_f0_quantizer/{{config.yaml, model.pt}})")
    try:
        data = yaml.safe_load(config.read_text())
    except yaml.YAMLError as e:
        raise ConversionError(f"{config}: not valid YAML ({e})") from None
    cfg = config_from_yaml(data, str(config))
    if not trust_pickle:
        ckpt = load_restricted(model_pt)
    else:
        try:
            ckpt = load_torch_file(model_pt, weights_only=False)
        except Exception as e:  # noqa: BLE001 - name the file whatever torch raises
            raise ConversionError(
                f"{model_pt} cannot be read as a PyTorch checkpoint: {type(e).__name__}: {e}"
            ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConversionError(f"{model_pt}: expected a dict with 'model' (the state dict), got {keys}")
    return cfg, params_from_state_dict(ckpt["model"], cfg, str(model_pt))


def convert(src, out_dir, trust_pickle: bool = False) -> Path:
    cfg, params = load_quantizer(src, trust_pickle)
    return save_component(out_dir, F0_VQVAE_SPEC, params, {"f0_vqvae.yaml": cfg})


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # vqvae_f0_quantizer directory (config.yaml + model.pt) or its model.pt
    out: str  # output F0 VQ-VAE directory (must not hold params/ yet)
    trust_pickle: bool = False  # allow non-tensor objects in model.pt (trusted files only)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out, a.trust_pickle))


if __name__ == "__main__":
    sys.exit(main())
