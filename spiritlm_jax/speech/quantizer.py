"""HuBERT feature quantizers: the released MLP with a CTC blank, and k-means centroids.

MLP (L11_quantizer_500.pt, SPEC.md §4.1): out = vocab + 1 (blank = vocab), mid = upstream_dim - out,
Linear(dim -> dim - mid//4), LeakyReLU(0.01), Linear(-> dim - mid//2), LeakyReLU(0.01),
Linear(-> out); argmax; every blank frame takes the nearest non-blank unit on its left, circularly
(a leading blank takes the last frame's unit), as the reference's repeated roll does.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MLPQuantizerConfig:
    vocab_size: int = 500
    dim: int = 768
    upstream_dim: int = 768

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
    """Each blank takes the nearest non-blank to its left, wrapping around; all-blank stays blank."""
    code = np.asarray(code).copy()
    keep = np.nonzero(code != blank)[0]
    if len(keep) == 0 or len(keep) == len(code):
        return code
    last = np.maximum.accumulate(np.where(code != blank, np.arange(len(code)), -1))
    wrap = keep[-1]  # leading blanks take the last non-blank frame's unit
    return code[np.where(last >= 0, last, wrap)]


def mlp_units(logits_td, blank: int) -> np.ndarray:
    return fill_blanks(np.asarray(jnp.argmax(logits_td, axis=-1)), blank)


class KMeansQuantizer:
    """Nearest centroid (squared Euclidean) over features; centroids [K, D] as .npy."""

    def __init__(self, centroids_kd: np.ndarray):
        self.centroids = np.asarray(centroids_kd, np.float32)
        if self.centroids.ndim != 2:
            raise ValueError(f"centroids must be [K, D], got shape {self.centroids.shape}")

    @classmethod
    def load(cls, path) -> "KMeansQuantizer":
        return cls(np.load(path))

    def __call__(self, feats_td: np.ndarray) -> np.ndarray:
        from spiritlm_jax.data.kmeans import assign

        if feats_td.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"features have dimension {feats_td.shape[-1]}, centroids {self.centroids.shape[1]}")
        return assign(feats_td, self.centroids)
