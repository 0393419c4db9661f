"""HuBERT feature quantizers: the released MLP with a CTC blank, and k-means centroids.

MLP (L11_quantizer_500.pt, SPEC.md §4.1): out = vocab + 1 (blank = vocab), mid = upstream_dim - out,
Linear(dim -> dim - mid//4), LeakyReLU(0.01), Linear(-> dim - mid//2), LeakyReLU(0.01),
Linear(-> out); argmax (the reference's log_softmax does not change it; ties go to the lowest id in
both). Blank filling as the reference: it repeats `code[blank] = roll(code, 1)[blank]` until no blank
is left, so every blank takes the nearest non-blank unit on its left, circularly (leading blanks take
the utterance's last non-blank unit); an all-blank utterance stays all blank (the reference gives up
after 10000 rounds, which only matters for runs of >= 10000 blanks: 400 s at 25 Hz, longer than the
100 s chunks the tokenizer feeds it). The reference runs it per chunk of audio; so do we.

k-means (the reference's KmeansModel, for users with k-means checkpoints): nearest centre by
squared Euclidean distance |x|^2 - 2 x.c + |c|^2, lowest index on ties. Centroids [K, D] saved as .npy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MLPQuantizerConfig:
    vocab_size: int = 500
    dim: int = 768
    upstream_dim: int = 768

    def __post_init__(self):
        w1, w2, _ = self.widths
        if self.vocab_size < 1 or self.dim < 1 or min(w1, w2) < 1:
            raise ValueError(f"MLP quantizer config gives non-positive widths {self.widths} "
                             f"(vocab_size={self.vocab_size}, dim={self.dim}, upstream_dim={self.upstream_dim})")

    @property
    def blank(self) -> int:
        return self.vocab_size

    @property
    def widths(self) -> tuple[int, int, int]:
        out = self.vocab_size + 1
        mid = self.upstream_dim - out
        return self.dim - mid // 4, self.dim - mid // 2, out


class MLPQuantizer(nn.Module):
    """Features [..., dim] -> logits [..., vocab + 1] (index vocab is the CTC blank)."""

    cfg: MLPQuantizerConfig

    @nn.compact
    def __call__(self, x):
        w1, w2, w3 = self.cfg.widths
        x = nn.leaky_relu(nn.Dense(w1, name="linear_0")(x), 0.01)
        x = nn.leaky_relu(nn.Dense(w2, name="linear_2")(x), 0.01)
        return nn.Dense(w3, name="linear_4")(x)


def fill_blanks(code: np.ndarray, blank: int) -> np.ndarray:
    """[T] units: each blank takes the nearest non-blank to its left, wrapping around; all-blank stays."""
    code = np.asarray(code)
    if code.ndim != 1:
        raise ValueError(f"fill_blanks expects one utterance [T], got shape {code.shape}")
    keep = code != blank
    if keep.all() or not keep.any():
        return code.copy()
    last = np.maximum.accumulate(np.where(keep, np.arange(len(code)), -1))
    return code[np.where(last >= 0, last, np.nonzero(keep)[0][-1])]


def fill_blanks_batched(code_bt: jax.Array, lengths_b: jax.Array, blank: int) -> jax.Array:
    """`fill_blanks` for a padded batch inside jit: each item wraps around within its own length."""
    b, t = code_bt.shape
    idx_t = jnp.arange(t)
    keep_bt = (code_bt != blank) & (idx_t[None] < lengths_b[:, None])
    last_bt = jax.lax.cummax(jnp.where(keep_bt, idx_t[None], -1), axis=1)
    wrap_b = jnp.max(jnp.where(keep_bt, idx_t[None], -1), axis=1)  # last non-blank; -1 if none
    src_bt = jnp.where(last_bt >= 0, last_bt, wrap_b[:, None])
    filled_bt = jnp.take_along_axis(code_bt, jnp.maximum(src_bt, 0), axis=1)
    return jnp.where(src_bt >= 0, filled_bt, code_bt)


def mlp_units(logits_td, blank: int) -> np.ndarray:
    """Logits of one utterance [T, vocab + 1] -> units [T] with blanks filled."""
    return fill_blanks(np.asarray(jnp.argmax(logits_td, axis=-1)), blank)


def nearest_centroid(x_nd: jax.Array, centroids_kd: jax.Array) -> jax.Array:
    """Index of the nearest centre (squared Euclidean, the reference's expansion) for each row."""
    d_nk = (jnp.sum(x_nd ** 2, -1, keepdims=True) - 2.0 * x_nd @ centroids_kd.T
            + jnp.sum(centroids_kd ** 2, -1)[None])
    return jnp.argmin(d_nk, axis=-1)


_nearest_jit = jax.jit(nearest_centroid)


class KMeansQuantizer:
    """Nearest-centroid units for HuBERT features: `KMeansQuantizer(centroids)(feats[..., D])`."""

    def __init__(self, centroids_kd):
        c = np.asarray(centroids_kd, np.float32)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"centroids must be [K, D] with K, D >= 1, got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("centroids contain NaN or inf")
        self.centroids = c

    @property
    def n_units(self) -> int:
        return self.centroids.shape[0]

    def save(self, path) -> Path:
        """Write the centroids as a float32 .npy file ([K, D])."""
        path = Path(path)
        if path.suffix != ".npy":
            raise ValueError(f"{path}: centroids are saved as .npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self.centroids)
        return path

    @classmethod
    def load(cls, path) -> "KMeansQuantizer":
        """From a .npy file, or a directory holding centroids.npy (the k-means trainer's output)."""
        path = Path(path)
        if path.is_dir():
            path = path / "centroids.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (expected a [K, D] centroids .npy)")
        try:
            c = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path} is not a numeric .npy array: {e}") from None
        return cls(c)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """Features [..., D] -> int64 units [...]."""
        x = np.asarray(feats, np.float32)
        if x.ndim < 1 or x.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"features of shape {x.shape} do not match centroids of dimension {self.centroids.shape[1]}")
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[0]
        if n == 0:
            return np.zeros(x.shape[:-1], np.int64)
        padded = np.zeros((max(64, 1 << (n - 1).bit_length()), flat.shape[1]), np.float32)  # few compilations
        padded[:n] = flat
        units = np.asarray(_nearest_jit(padded, self.centroids))[:n]
        return units.astype(np.int64).reshape(x.shape[:-1])


def save_mlp_quantizer(directory, params, cfg: MLPQuantizerConfig) -> Path:
    """DIR/quantizer.yaml (the config) + DIR/params (Orbax: {"quantizer": params})."""
    from spiritlm_jax.checkpoint import save_params_dir

    return save_params_dir(directory, {"quantizer": params}, {"quantizer.yaml": cfg})


def load_mlp_quantizer(directory) -> tuple[dict, MLPQuantizerConfig]:
    """(params, config) from a directory written by `save_mlp_quantizer`."""
    from spiritlm_jax.checkpoint import restore_params_dir

    d = Path(directory).absolute()
    params, cfgs = restore_params_dir(d, {"quantizer.yaml": MLPQuantizerConfig}, "MLP quantizer")
    cfg, params = cfgs["quantizer.yaml"], params["quantizer"]
    w1, w2, w3 = cfg.widths
    for name, shape in (("linear_0", (cfg.dim, w1)), ("linear_2", (w1, w2)), ("linear_4", (w2, w3))):
        if tuple(params[name]["kernel"].shape) != shape:
            raise ValueError(f"{d}: {name}.kernel has shape {tuple(params[name]['kernel'].shape)}, "
                             f"expected {shape} from quantizer.yaml")
    return params, cfg
