"""LoRA adapters on the LLaMA projections, through qwix (the `lora` extra; imported where used).

`lora_model(model, cfg)` wraps a `Llama` with `qwix.LoraProvider`: every projection whose module path
(e.g. "layers/attn/q", "layers/mlp/down") fully matches `cfg.targets` computes
`x W + (alpha / rank) (x A) B`, with A [in, r] and B [r, out] created next to the kernel as
`kernel_lora_a` / `kernel_lora_b` (stacked over layers like the kernel; qwix flattens the
projection's input axes into `in` and output axes into `out`). B starts at zero, so a fresh adapter
leaves the model unchanged. Only the adapters are trained; the base weights stay frozen.

`merge_adapters` folds them into the kernels (W + (alpha / rank) A B): a plain parameter tree that
the un-wrapped `Llama` runs, which is how a LoRA run is loaded for generation and how `merge` exports.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LORA_A, LORA_B = "kernel_lora_a", "kernel_lora_b"
DEFAULT_TARGETS = r"layers/(attn/(q|k|v|o)|mlp/(gate|up|down))"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8  # adapter rank r; 0 = full fine-tuning (every weight trained)
    alpha: float = 16.0  # the adapter's output is scaled by alpha / rank
    targets: str = DEFAULT_TARGETS  # regex over projection paths (layers/attn/q|k|v|o, layers/mlp/gate|up|down)
    dropout: float = 0.0  # dropout on the adapter's input while training

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0 (0 = full fine-tuning), got {self.rank}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ValueError(f"targets is not a regular expression ({e})") from None

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def lora_model(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """`model` with LoRA adapters on the projections `cfg.targets` matches (qwix)."""
    try:
        import qwix
    except ImportError:
        raise ImportError("LoRA needs qwix: pip install 'spiritlm_jax[lora]'") from None
    provider = qwix.LoraProvider(module_path=cfg.targets, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)
    return qwix.apply_lora_to_model(model, provider)


def split_adapters(params) -> tuple[dict, dict]:
    """(base, adapters): the tree without and with only the LoRA leaves (nested dicts)."""
    flat = _flatten(params)
    base = {k: v for k, v in flat.items() if k[-1] not in (LORA_A, LORA_B)}
    adapters = {k: v for k, v in flat.items() if k[-1] in (LORA_A, LORA_B)}
    return _unflatten(base), _unflatten(adapters)


def combine(base, adapters):
    """One parameter tree of base weights and adapters (what the LoRA-wrapped model runs)."""
    if not adapters:
        return base
    if not base:
        return adapters
    return _unflatten({**_flatten(base), **_flatten(adapters)})


def merge_adapters(params, cfg: LoraConfig):
    """Base + adapters -> plain params: each adapted kernel W [L, *in, *out] becomes
    W + (alpha / rank) A B, computed in float32 and cast back to W's dtype."""
    flat = _flatten(params)
    out = {k: v for k, v in flat.items() if k[-1] not in (LORA_A, LORA_B)}
    for k, a in flat.items():
        if k[-1] != LORA_A:
            continue
        kernel_key = k[:-1] + ("kernel",)
        b, w = flat[k[:-1] + (LORA_B,)], flat[kernel_key]
        delta = jnp.einsum("lir,lro->lio", jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        merged = jnp.asarray(w, jnp.float32) + cfg.scale * delta.reshape(w.shape)
        out[kernel_key] = merged.astype(w.dtype)
    return _unflatten(out)


def adapter_count(cfg: LoraConfig, model_cfg) -> int:
    """Σ r·(in + out) over the targeted projections of all layers (the adapters' parameter count)."""
    d, f, n, k, h = model_cfg.d_model, model_cfg.d_ff, model_cfg.n_heads, model_cfg.n_kv_heads, model_cfg.dim_per_head
    shapes = {
        "layers/attn/q": (d, n * h),
        "layers/attn/k": (d, k * h),
        "layers/attn/v": (d, k * h),
        "layers/attn/o": (n * h, d),
        "layers/mlp/gate": (d, f),
        "layers/mlp/up": (d, f),
        "layers/mlp/down": (f, d),
    }
    return model_cfg.n_layers * sum(
        cfg.rank * (i + o) for path, (i, o) in shapes.items() if re.fullmatch(cfg.targets, path)
    )


def tree_bytes(tree) -> int:
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def _flatten(tree) -> dict[tuple, Any]:
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict) or hasattr(node, "items") and not hasattr(node, "shape"):
            for key, v in node.items():
                walk(prefix + (key,), v)
        else:
            out[prefix] = node

    walk((), tree)
    return out


def _unflatten(flat: dict[tuple, Any]) -> dict:
    root: dict = {}
    for key, v in flat.items():
        node = root
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = v
    return root
