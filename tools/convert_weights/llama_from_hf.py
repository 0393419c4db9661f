"""Import a Hugging Face LlamaForCausalLM directory into a spiritlm_jax model directory.

    python tools/convert_weights/llama_from_hf.py --src HF_DIR --out DIR [--dtype float32|bfloat16] [--expressive]

Reads config.json and model.safetensors / pytorch_model.bin (sharded with an index json or not,
bf16 or fp32), one tensor at a time, stacking layers as it goes (peak host memory ~ the output
size plus one tensor). Tokenizer files are copied. RoPE: our layout is transformers' half-split
one, so q/k weights are only transposed, never permuted. Any missing, unexpected or mis-shaped
tensor stops the conversion with its name and both shapes.

The output is a bundle (spiritlm_jax.bundle): the LM directory, the tokenizer files and bundle.yaml.
EXPRESSIVE is what the tokenizer files say (Spirit LM pitch/style tokens present); `--expressive`
declares it when they do not say (a bare tokenizer.model).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.bundle import save_bundle  # noqa: E402
from spiritlm_jax.model.config import LlamaConfig  # noqa: E402
from tools.convert_weights.common import (  # noqa: E402
    ConversionError,
    NamedTensors,
    converter_main,
    numpy_dtype,
    read_json,
)

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints carry


def llama_config_from_hf(hf: dict, dtype: str = "bfloat16") -> LlamaConfig:
    """LlamaConfig from a transformers config.json dict; unsupported settings are errors."""
    if hf.get("model_type", "llama") != "llama":
        raise ConversionError(f"config.json model_type is {hf.get('model_type')!r}, expected 'llama'")
    # transformers >= 5 writes {"rope_parameters": {"rope_type", "rope_theta", ...}}; 4.x writes rope_theta
    # (and rope_scaling: null, or {"rope_type": "default"})
    for key in ("rope_scaling", "rope_parameters"):
        rope = hf.get(key) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default" or "factor" in rope:
            raise ConversionError(f"config.json {key}={rope!r} is not supported (only the default RoPE)")
    rope = hf.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise ConversionError(f"config.json {flag}=true is not supported (LLaMA-2 has no biases)")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"config.json hidden_act={hf['hidden_act']!r}; only silu (SwiGLU) is supported")
    n_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim")
    if head_dim == hf["hidden_size"] // n_heads:
        head_dim = None
    return LlamaConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        d_ff=hf["intermediate_size"],
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        max_seq_len=hf.get("max_position_embeddings", 4096),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        dtype=dtype,
    )


def hf_tensor_specs(cfg: LlamaConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], Callable]]:
    """HF name -> (HF shape, our path, transform HF array -> our per-layer array)."""
    d, n, k, h, f, v = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.dim_per_head, cfg.d_ff, cfg.vocab_size
    specs = {
        "model.embed_tokens.weight": ((v, d), ("embed", "embedding"), lambda w: w),
        "model.norm.weight": ((d,), ("final_norm", "scale"), lambda w: w),
    }
    if not cfg.tie_embeddings:
        specs["lm_head.weight"] = ((v, d), ("lm_head", "kernel"), lambda w: w.T)
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        specs.update(
            {
                p + "input_layernorm.weight": ((d,), ("layers", "attn_norm", "scale", i), lambda w: w),
                p + "post_attention_layernorm.weight": ((d,), ("layers", "mlp_norm", "scale", i), lambda w: w),
                p + "self_attn.q_proj.weight": (
                    (n * h, d),
                    ("layers", "attn", "q", "kernel", i),
                    lambda w: w.T.reshape(d, n, h),
                ),
                p + "self_attn.k_proj.weight": (
                    (k * h, d),
                    ("layers", "attn", "k", "kernel", i),
                    lambda w: w.T.reshape(d, k, h),
                ),
                p + "self_attn.v_proj.weight": (
                    (k * h, d),
                    ("layers", "attn", "v", "kernel", i),
                    lambda w: w.T.reshape(d, k, h),
                ),
                p + "self_attn.o_proj.weight": (
                    (d, n * h),
                    ("layers", "attn", "o", "kernel", i),
                    lambda w: w.T.reshape(n, h, d),
                ),
                p + "mlp.gate_proj.weight": ((f, d), ("layers", "mlp", "gate", "kernel", i), lambda w: w.T),
                p + "mlp.up_proj.weight": ((f, d), ("layers", "mlp", "up", "kernel", i), lambda w: w.T),
                p + "mlp.down_proj.weight": ((d, f), ("layers", "mlp", "down", "kernel", i), lambda w: w.T),
            }
        )
    return specs


def params_from_tensors(
    cfg: LlamaConfig,
    names: set[str],
    get: Callable[[str], np.ndarray],
    dtype=np.float32,
    progress: bool = False,
    order: Optional[list[str]] = None,
):
    """Build our param tree from named HF-layout tensors (`get(name)` loads one on demand).

    Layer tensors go straight into preallocated stacked [L, ...] buffers, so peak memory is the output
    plus one tensor. `order`: the names in the order to read them (e.g. shard by shard).
    """
    specs = hf_tensor_specs(cfg)
    names = {nm for nm in names if not nm.endswith(IGNORED_SUFFIXES)}
    if cfg.tie_embeddings and "lm_head.weight" in names:
        names.discard("lm_head.weight")  # transformers sometimes saves the tied copy
    extra = sorted(names - specs.keys())
    if extra:
        raise ConversionError(f"unexpected tensor {extra[0]} (and {len(extra) - 1} more) for this config")
    missing = sorted(specs.keys() - names)
    if missing:
        raise ConversionError(f"missing tensor {missing[0]} (and {len(missing) - 1} more)")
    layer_buffers: dict[tuple[str, ...], np.ndarray] = {}
    params: dict = {}
    rank = {nm: i for i, nm in enumerate(order or [])}
    items = sorted(specs.items(), key=lambda kv: rank.get(kv[0], len(rank)))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="tensors", unit="t")
    for name, (shape, path, fn) in items:
        w = np.asarray(get(name))
        if tuple(w.shape) != shape:
            raise ConversionError(f"tensor {name} has shape {tuple(w.shape)}, expected {shape}")
        w = fn(w.astype(np.float32)).astype(dtype)
        if path[0] == "layers":
            key, i = path[:-1], path[-1]
            if key not in layer_buffers:
                layer_buffers[key] = np.empty((cfg.n_layers, *w.shape), dtype)
            layer_buffers[key][i] = w
        else:
            _set(params, path, w)
    for key, buf in layer_buffers.items():
        _set(params, key, buf)
    return params


def _set(tree: dict, path, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def open_hf_weights(hf_dir: Path) -> NamedTensors:
    """Lazy tensors of model.safetensors (preferred) or pytorch_model.bin, sharded or not."""
    return NamedTensors.open(hf_dir, ("model.safetensors", "pytorch_model.bin"))


@dataclasses.dataclass(frozen=True)
class FromHFArgs:
    src: str  # Hugging Face LlamaForCausalLM directory (config.json + safetensors / pytorch_model.bin)
    out: str  # output directory (a bundle: LM + tokenizer files + bundle.yaml)
    dtype: Literal["float32", "bfloat16"] = "float32"  # stored parameter dtype (float32: master weights)
    expressive: Optional[bool] = None  # EXPRESSIVE layout when the tokenizer files do not say (default BASE)


def convert(
    hf_dir: str | Path,
    out_dir: str | Path,
    dtype: str = "float32",
    progress: bool = True,
    expressive: Optional[bool] = None,
) -> Path:
    """HF directory -> bundle directory (config.yaml, params/, extra.json, tokenizer files, bundle.yaml)."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} has no config.json (is it a Hugging Face model directory?)")
    if (Path(out_dir) / "params").exists():
        raise FileExistsError(f"{Path(out_dir) / 'params'} already exists; choose a new output directory")
    hf = read_json(hf_dir / "config.json", "config")
    cfg = llama_config_from_hf(hf)
    tensors = open_hf_weights(hf_dir)
    params = params_from_tensors(
        cfg, tensors.names, tensors.get, numpy_dtype(dtype), progress=progress, order=tensors.names_by_file()
    )
    extra = {"source": {"format": "hf", "path": str(hf_dir.absolute())}, "hf_config": hf}
    return save_bundle(
        out_dir, params, cfg.replace(param_dtype=dtype), tokenizer_src=hf_dir, expressive=expressive, extra=extra
    )


def main(argv=None) -> int:
    return converter_main(
        FromHFArgs, argv, __file__, __doc__, lambda a: convert(a.src, a.out, a.dtype, expressive=a.expressive)
    )


if __name__ == "__main__":
    sys.exit(main())
