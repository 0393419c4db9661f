"""HuBERT feature quantizers: the released MLP with a CTC blank, and k-means centroids.

MLP (L11_quantizer_500.pt, docs/reference.md): out = vocab + 1 (blank = vocab), mid = upstream_dim - out,
Linear(dim -> dim - mid//4), LeakyReLU(0.01), Linear(-> dim - mid//2), LeakyReLU(0.01),
Linear(-> out); argmax (the reference's log_softmax does not change it; ties go to the lowest id in
both). Blank filling as the reference: it repeats `code[blank] = roll(code, 1)[blank]` until no blank
is left, so every blank takes the nearest non-blank unit on its left, circularly (leading blanks take
the utterance's last non-blank unit); an all-blank utterance stays all blank (the reference gives up
after 10000 rounds, which only matters for runs of >= 10000 blanks: 400 s at 25 Hz, longer than the
100 s chunks the tokenizer feeds it). The reference runs it per chunk of audio; so do we.

k-means (the reference's KmeansModel, for users with k-means checkpoints): nearest centre by
squared Euclidean distance |x|^2 - 2 x.c + |c|^2, lowest index on ties. Centroids [K, D] saved as a
k-means component directory (speech/kmeans.py: kmeans.yaml + params/).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.io import ComponentSpec, load_component, save_component


@dataclasses.dataclass(frozen=True)
class MLPQuantizerConfig:
    vocab_size: int = 500
    dim: int = 768
    upstream_dim: int = 768

    def __post_init__(self):
        w1, w2, _ = self.widths
        if self.vocab_size < 1 or self.dim < 1 or min(w1, w2) < 1:
            raise ValueError(
                f"MLP quantizer config gives non-positive widths {self.widths} "
                f"(vocab_size={self.vocab_size}, dim={self.dim}, upstream_dim={self.upstream_dim})"
            )

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
    d_nk = jnp.sum(x_nd**2, -1, keepdims=True) - 2.0 * x_nd @ centroids_kd.T + jnp.sum(centroids_kd**2, -1)[None]
    return jnp.argmin(d_nk, axis=-1)


_nearest_jit = jax.jit(nearest_centroid)


KMEANS_FILE = "kmeans.yaml"
UNITS_NOTE = "k-means cluster indices used as [Hu] ids; NOT the released HuBERT units"


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
    """kmeans.yaml of a k-means quantizer directory (params/ holds {"centroids": float32 [k, dim]})."""

    k: int = 100  # clusters: unit ids 0..k-1
    dim: int = 40  # feature dimension
    # the frame features clustered, to rebuild them (speech.features.feature_extractor): a FeatureConfig
    # dict ({"type": "log_mel", ...}) or {"type": "hubert", "checkpoint": DIR, "layer": 11}; {} = given by the caller
    features: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)  # summary of the run that made them
    frame_rate_hz: Optional[float] = None  # the features' frame rate, measured (25 for Spirit LM units)
    units: str = UNITS_NOTE

    def __post_init__(self):
        if self.k < 1 or self.dim < 1:
            raise ValueError(f"k-means needs k >= 1 and dim >= 1, got k={self.k}, dim={self.dim}")


def _kmeans_abstract_params(configs: dict) -> dict:
    cfg = configs[KMEANS_FILE]
    return {"centroids": jax.ShapeDtypeStruct((cfg.k, cfg.dim), jnp.float32)}


KMEANS_SPEC = ComponentSpec(
    "k-means quantizer",
    {KMEANS_FILE: KMeansConfig},
    _kmeans_abstract_params,
    hint="train one with python -m spiritlm_jax.kmeans (an old centroids.npy + "
    "quantizer.json directory converts with tools/convert_weights/kmeans_from_npy.py)",
)


def load_kmeans(directory) -> tuple[np.ndarray, KMeansConfig]:
    """(centroids float32 [k, dim], config) of a k-means quantizer directory, checked finite."""
    params, cfgs = load_component(directory, KMEANS_SPEC)
    c = np.asarray(params["centroids"], np.float32)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{directory}: centroids contain NaN or inf")
    return c, cfgs[KMEANS_FILE]


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

    def save(self, directory) -> Path:
        """Write a k-means component directory (kmeans.yaml + params/, KMEANS_SPEC)."""
        k, d = self.centroids.shape
        return save_component(
            directory, KMEANS_SPEC, {"centroids": self.centroids}, {KMEANS_FILE: KMeansConfig(k=k, dim=d)}
        )

    @classmethod
    def load(cls, directory) -> "KMeansQuantizer":
        """From a k-means component directory (what `save`, the converter and `python -m spiritlm_jax.kmeans`
        write); its feature settings are not used here: the caller gives the features."""
        return cls(load_kmeans(directory)[0])

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """Features [..., D] -> int64 units [...]."""
        x = np.asarray(feats, np.float32)
        if x.ndim < 1 or x.shape[-1] != self.centroids.shape[1]:
            raise ValueError(
                f"features of shape {x.shape} do not match centroids of dimension {self.centroids.shape[1]}"
            )
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[0]
        if n == 0:
            return np.zeros(x.shape[:-1], np.int64)
        padded = np.zeros((pow2_bucket(n, minimum=64), flat.shape[1]), np.float32)  # few compilations
        padded[:n] = flat
        units = np.asarray(_nearest_jit(padded, self.centroids))[:n]
        return units.astype(np.int64).reshape(x.shape[:-1])


def _mlp_abstract_params(configs: dict) -> dict:
    cfg = configs["quantizer.yaml"]
    x = jax.ShapeDtypeStruct((1, cfg.dim), jnp.float32)
    return {"quantizer": jax.eval_shape(MLPQuantizer(cfg).init, jax.random.PRNGKey(0), x)["params"]}


# A standalone MLP quantizer: DIR/quantizer.yaml (MLPQuantizerConfig) + DIR/params ({"quantizer": ...})
MLP_QUANTIZER_SPEC = ComponentSpec(
    "converted MLP quantizer",
    {"quantizer.yaml": MLPQuantizerConfig},
    _mlp_abstract_params,
    hint="make one with tools/convert_weights/speech_quantizer_from_pt.py",
)
