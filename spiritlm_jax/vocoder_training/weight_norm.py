"""The generator trains weight-normed, as the reference's (torch weight_norm, dim 0): every conv of
`generator/` (conv_pre, ups_i, resblocks_j/convs*, conv_post) is stored as `weight_v` (our kernel
layout [k, in, out]) and `weight_g` (one gain per torch output row: per output channel for Conv1d,
per *input* channel for ConvTranspose1d, whose torch weight is [in, out, k]). Embeddings and the
duration predictor are plain, as in the reference.

- `split(params)`: plain CodeGenerator params -> weight-normed ones (g = ||w||, so w is unchanged).
- `merge(wn_params)`: -> plain params for `CodeGenerator.apply` (in JAX, differentiable).
- `fold(wn_params)`: -> plain numpy params, computed in the torch layout exactly as
  tools/convert_weights' `fold_weight_norm` does, so the exported generator.pt converts back to the
  same bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _norm_axes(name: str) -> tuple[int, int]:
    """Axes of our [k, in, out] kernel the norm runs over (all but torch's dim 0)."""
    return (0, 2) if name.startswith("ups_") else (0, 1)


def _is_wn(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[0] == "generator" and path[-1] == "kernel"


def _map_convs(tree, fn, path=()):
    if not isinstance(tree, dict):
        return tree
    if "kernel" in tree and _is_wn(path + ("kernel",)):
        return fn(path[-1], tree)
    if "weight_v" in tree:
        return fn(path[-1], tree)
    return {k: _map_convs(v, fn, path + (k,)) for k, v in tree.items()}


# The row norm of PyTorch's default conv init (kaiming_uniform, a = sqrt 5: U(+-1/sqrt(fan_in)) has row norm
# 1/sqrt 3). The reference's generator starts there: its init_weights' normal(0, 0.01) is written to the
# weight that weight_norm recomputes from g and v at every forward, so it has no effect.
TORCH_INIT_ROW_NORM = 1.0 / np.sqrt(3.0)


def split(params, gain=None):
    """`gain` None: g = ||w|| (w unchanged); a number: every g set to it (the direction of w kept)."""

    def one(name, conv):
        w = conv["kernel"]
        g = jnp.sqrt(jnp.sum(jnp.asarray(w) ** 2, axis=_norm_axes(name)))
        if gain is not None:
            g = jnp.full_like(g, gain)
        return {"weight_v": w, "weight_g": g, "bias": conv["bias"]}

    return _map_convs(jax.tree.map(lambda x: x, params), one)


def merge(wn_params):
    def one(name, conv):
        v, g = conv["weight_v"], conv["weight_g"]
        axes = _norm_axes(name)
        n = jnp.sqrt(jnp.sum(v**2, axis=axes, keepdims=True))
        gb = jnp.expand_dims(g, axes)
        return {"kernel": v * gb / n, "bias": conv["bias"]}

    return _map_convs(wn_params, one)


def to_torch_layout(name: str, v: np.ndarray) -> np.ndarray:
    """Our kernel [k, in, out] -> torch's Conv1d [out, in, k] or ConvTranspose1d [in, out, k]."""
    return np.ascontiguousarray(v.transpose(1, 2, 0) if name.startswith("ups_") else v.transpose(2, 1, 0))


def from_torch_layout(name: str, w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 0, 1) if name.startswith("ups_") else w.transpose(2, 1, 0))


def fold_torch(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """w = g * v / ||v|| over every axis but 0, on a torch-layout weight (float64 norm, as the converter)."""
    v = np.asarray(v, np.float32)
    axes = tuple(range(1, v.ndim))
    return (
        np.asarray(g, np.float32)
        * v
        / np.sqrt((v.astype(np.float64) ** 2).sum(axis=axes, keepdims=True)).astype(np.float32)
    )


def fold(wn_params):
    def one(name, conv):
        v = to_torch_layout(name, np.asarray(conv["weight_v"], np.float32))
        g = np.asarray(conv["weight_g"], np.float32).reshape((-1,) + (1,) * (v.ndim - 1))
        return {"kernel": from_torch_layout(name, fold_torch(g, v)), "bias": np.asarray(conv["bias"], np.float32)}

    return jax.tree.map(np.asarray, _map_convs(wn_params, one))
