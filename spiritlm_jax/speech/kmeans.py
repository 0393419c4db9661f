"""Mini-batch k-means in JAX: the unit quantizer a user trains for a new language or feature set.

    result = train_kmeans(features_nd, k=100, seed=0)        # KMeansResult: centroids [k, D], inertia, ...
    units_n = assign(features_nd, result.centroids)          # nearest centroid per frame
    save_component(out_dir, KMEANS_SPEC, {"centroids": result.centroids},  # kmeans.yaml + params/
                   {KMEANS_FILE: kmeans_config(result, features.params())})
    tok = MelUnitTokenizer(out_dir)                           # audio -> {"hubert": 25 Hz unit ids}

Training: k-means++ (or uniform random) initialisation on a sample, then mini-batch updates with
per-centroid counts (Sculley 2010: each centroid moves towards its batch mean with step
n_batch / n_seen, i.e. it stays the running mean of the points it has won), centroids that win
nothing for `reassign_every` steps re-seeded on the current batch's worst-served points, then
`lloyd_steps` full-batch Lloyd refinements (empty clusters re-seeded from the farthest points).
Deterministic under the seed on a given backend.

Features (spiritlm_jax/speech/features.py, `FrameFeatures`): log-mel or MFCC frames (librosa) by
default, or layer features of a converted HuBERT checkpoint (`--hubert-checkpoint`). The units these
centroids give are cluster indices, usable as [Hu0]..[Hu{k-1}] ids (k <= 501), NOT the released
HuBERT units.

CLI (trains and saves a quantizer directory): python -m spiritlm_jax.kmeans --help
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.speech.audio import encode_chunked
from spiritlm_jax.speech.features import feature_extractor
from spiritlm_jax.speech.quantizer import KMeansConfig, load_kmeans
from spiritlm_jax.tokens import N_UNITS, units_to_string

MAX_UNITS = N_UNITS["hubert"]  # 501: unit ids must fit the HuBERT token range
INIT_METHODS = ("k-means++", "random")


def _sq_dists(x_nd, c_kd):
    """Squared Euclidean distances [n, k] (clamped at 0 against cancellation)."""
    d = jnp.sum(x_nd**2, 1, keepdims=True) - 2.0 * x_nd @ c_kd.T + jnp.sum(c_kd**2, 1)[None]
    return jnp.maximum(d, 0.0)


@jax.jit
def _nearest(x_nd, c_kd):
    d_nk = _sq_dists(x_nd, c_kd)
    return jnp.argmin(d_nk, 1), jnp.min(d_nk, 1)


def _nearest_chunks(x_nd: np.ndarray, c_kd, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    x_nd = np.asarray(x_nd, np.float32)
    c_kd = jnp.asarray(c_kd, jnp.float32)
    if x_nd.ndim != 2 or x_nd.shape[1] != c_kd.shape[1]:
        raise ValueError(f"features of shape {x_nd.shape} do not match centroids of shape {tuple(c_kd.shape)}")
    ids, d2 = [], []
    for i in range(0, len(x_nd), chunk):
        part = x_nd[i : i + chunk]
        padded = np.zeros((pow2_bucket(len(part), 256, chunk), x_nd.shape[1]), np.float32)  # few compilations
        padded[: len(part)] = part
        j, d = _nearest(jnp.asarray(padded), c_kd)
        ids.append(np.asarray(j)[: len(part)])
        d2.append(np.asarray(d)[: len(part)])
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(ids).astype(np.int64), np.concatenate(d2)


def assign(x_nd: np.ndarray, centroids_kd: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Nearest centroid (squared Euclidean; lowest index on ties) per row: [n, D] -> [n] int64."""
    return _nearest_chunks(x_nd, centroids_kd, chunk)[0]


def inertia(x_nd: np.ndarray, centroids_kd: np.ndarray) -> float:
    """Sum over rows of the squared distance to the nearest centroid."""
    return float(np.sum(_nearest_chunks(x_nd, centroids_kd)[1], dtype=np.float64))


@functools.partial(jax.jit, static_argnums=2)
def kmeans_plusplus(key, x_nd, k: int):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre so far (uniform if all are covered)."""
    n = x_nd.shape[0]
    key, sub = jax.random.split(key)
    first = jax.random.randint(sub, (), 0, n)
    c_kd = jnp.zeros((k, x_nd.shape[1]), x_nd.dtype).at[0].set(x_nd[first])
    d2_n = jnp.sum((x_nd - x_nd[first]) ** 2, 1)

    def body(i, carry):
        c_kd, d2_n, key = carry
        key, sub = jax.random.split(key)
        logits_n = jnp.where(d2_n > 0, jnp.log(jnp.maximum(d2_n, 1e-30)), -jnp.inf)
        logits_n = jnp.where(jnp.any(d2_n > 0), logits_n, jnp.zeros_like(d2_n))
        j = jax.random.categorical(sub, logits_n)
        c_kd = c_kd.at[i].set(x_nd[j])
        return c_kd, jnp.minimum(d2_n, jnp.sum((x_nd - x_nd[j]) ** 2, 1)), key

    c_kd, _, _ = jax.lax.fori_loop(1, k, body, (c_kd, d2_n, key))
    return c_kd


@jax.jit
def minibatch_step(c_kd, counts_k, x_bd):
    """One mini-batch update. Returns new centroids, cumulative counts, batch wins per centroid and
    the batch's mean squared distance (before the update)."""
    idx_b, d2_b = _nearest(x_bd, c_kd)
    onehot_bk = jax.nn.one_hot(idx_b, c_kd.shape[0], dtype=x_bd.dtype)
    n_k = onehot_bk.sum(0)
    counts_k = counts_k + n_k
    mean_kd = (onehot_bk.T @ x_bd) / jnp.maximum(n_k, 1.0)[:, None]
    step_k = jnp.where(n_k > 0, n_k / jnp.maximum(counts_k, 1.0), 0.0)
    return c_kd + step_k[:, None] * (mean_kd - c_kd), counts_k, n_k, jnp.mean(d2_b)


@functools.partial(jax.jit, static_argnums=2)
def _chunk_sums(x_nd, c_kd, k: int):
    idx_n, d2_n = _nearest(x_nd, c_kd)
    return jax.ops.segment_sum(x_nd, idx_n, k), jax.ops.segment_sum(jnp.ones_like(d2_n), idx_n, k), jnp.sum(d2_n)


def lloyd_step(x_nd: np.ndarray, c_kd: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray, float]:
    """One full-batch Lloyd iteration: (new centroids, cluster sizes, inertia before the update).
    Empty clusters keep their centroid here; train_kmeans re-seeds them."""
    k, d = c_kd.shape
    sums_kd, sizes_k, total = np.zeros((k, d), np.float64), np.zeros(k, np.float64), 0.0
    cj = jnp.asarray(c_kd, jnp.float32)
    for i in range(0, len(x_nd), chunk):
        s, n, t = _chunk_sums(jnp.asarray(x_nd[i : i + chunk]), cj, k)
        sums_kd += np.asarray(s, np.float64)
        sizes_k += np.asarray(n, np.float64)
        total += float(t)
    new = np.where(sizes_k[:, None] > 0, sums_kd / np.maximum(sizes_k, 1)[:, None], c_kd)
    return new.astype(np.float32), sizes_k.astype(np.int64), total


@dataclasses.dataclass
class KMeansResult:
    centroids: np.ndarray  # [k, D] float32
    inertia: float  # sum of squared distances of all training rows to their nearest centroid
    sizes: np.ndarray  # [k] rows per cluster on the training data
    n_rows: int
    history: list  # mean squared distance per mini-batch (before its update), then per Lloyd step
    reseeded: int  # centroids re-seeded because they were empty

    @property
    def inertia_per_row(self) -> float:
        return self.inertia / max(self.n_rows, 1)


def _reseed(c_kd: np.ndarray, dead: np.ndarray, x_nd: np.ndarray) -> np.ndarray:
    """Move the `dead` centroids onto the rows of x_nd farthest from their nearest centroid."""
    _, d2 = _nearest_chunks(x_nd, c_kd)
    far = np.argsort(-d2, kind="stable")[: len(dead)]
    c_kd = c_kd.copy()
    c_kd[dead[: len(far)]] = x_nd[far]
    return c_kd


def train_kmeans(
    x_nd: np.ndarray,
    k: int,
    seed: int = 0,
    batch_size: int = 4096,
    steps: int = 300,
    lloyd_steps: int = 3,
    init: str = "k-means++",
    init_sample: int = 20000,
    reassign_every: int = 50,
    progress: bool = False,
) -> KMeansResult:
    """Fit k centroids to the rows of x_nd [N, D] (module docstring). Raises ValueError on bad input."""
    x_nd = np.asarray(x_nd, np.float32)
    if x_nd.ndim != 2 or x_nd.shape[1] == 0:
        raise ValueError(f"k-means needs features of shape [N, D], got {x_nd.shape}")
    if not 1 <= k <= len(x_nd):
        raise ValueError(f"k={k} must be between 1 and the number of feature rows ({len(x_nd)})")
    if not np.all(np.isfinite(x_nd)):
        raise ValueError("k-means features contain NaN or inf")
    if init not in INIT_METHODS:
        raise ValueError(f"init {init!r} is not one of {INIT_METHODS}")
    if batch_size < 1 or steps < 0 or lloyd_steps < 0:
        raise ValueError(
            f"need batch_size >= 1, steps >= 0, lloyd_steps >= 0; got {batch_size}, {steps}, {lloyd_steps}"
        )
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    sample = x_nd[np.sort(rng.choice(len(x_nd), min(len(x_nd), max(init_sample, k)), replace=False))]
    if init == "k-means++":
        c_kd = np.asarray(kmeans_plusplus(key, jnp.asarray(sample), k))
    else:
        c_kd = sample[np.sort(rng.choice(len(sample), k, replace=False))]
    history, reseeded = [], 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps + lloyd_steps, desc=f"k-means k={k}", unit="step")
    counts_k = jnp.zeros(k, jnp.float32)
    wins_k = np.zeros(k, np.float64)
    cj = jnp.asarray(c_kd)
    bsz = min(batch_size, len(x_nd))
    for step in range(steps):
        xb = x_nd[rng.integers(0, len(x_nd), bsz)]
        cj, counts_k, n_k, msd = minibatch_step(cj, counts_k, jnp.asarray(xb))
        wins_k += np.asarray(n_k)
        history.append(float(msd))
        if reassign_every and (step + 1) % reassign_every == 0 and step + 1 < steps:
            dead = np.nonzero(wins_k == 0)[0]
            if len(dead):
                cj = jnp.asarray(_reseed(np.asarray(cj), dead, xb))
                counts_k = counts_k.at[dead].set(0.0)
                reseeded += len(dead)
            wins_k[:] = 0
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(msd=f"{history[-1]:.4g}")
    c_kd = np.array(cj)
    for _ in range(lloyd_steps):
        c_new, sizes, total = lloyd_step(x_nd, c_kd)
        history.append(total / len(x_nd))
        dead = np.nonzero(sizes == 0)[0]
        if len(dead):
            c_new = _reseed(c_new, dead, x_nd)
            reseeded += len(dead)
        c_kd = c_new
        if bar is not None:
            bar.update(1)
            bar.set_postfix(msd=f"{history[-1]:.4g}")
    if bar is not None:
        bar.close()
    ids, d2 = _nearest_chunks(x_nd, c_kd)
    return KMeansResult(
        centroids=c_kd.astype(np.float32),
        inertia=float(np.sum(d2, dtype=np.float64)),
        sizes=np.bincount(ids, minlength=k),
        n_rows=len(x_nd),
        history=history,
        reseeded=reseeded,
    )


# ---------------------------------------------------------------------------------------------------
# Quantizer directory: the k-means component (speech.quantizer.KMEANS_SPEC: kmeans.yaml + params/)


def kmeans_config(
    result: KMeansResult | np.ndarray,
    feature_params: dict,
    training: Optional[dict] = None,
    frame_rate_hz: Optional[float] = None,
) -> KMeansConfig:
    """The kmeans.yaml of trained centroids: k, dim, the feature parameters and a training summary."""
    centroids = result.centroids if isinstance(result, KMeansResult) else np.asarray(result, np.float32)
    summary = dict(training or {})
    if isinstance(result, KMeansResult):
        summary = {
            "rows": result.n_rows,
            "inertia_per_row": result.inertia_per_row,
            "reseeded": result.reseeded,
            **summary,
        }
    return KMeansConfig(
        k=int(centroids.shape[0]),
        dim=int(centroids.shape[1]),
        features=dict(feature_params),
        training=summary,
        frame_rate_hz=frame_rate_hz,
    )


UNIT_RATE_HZ = 25.0  # the Spirit LM HuBERT stream


def check_unit_rate(rate_hz: float, what: str) -> None:
    """ValueError unless `rate_hz` is the 25 Hz of the Spirit LM HuBERT stream (units are timed at it)."""
    if abs(float(rate_hz) - UNIT_RATE_HZ) > 1e-6:
        raise ValueError(
            f"{what}: features at {rate_hz:g} Hz, but Spirit LM units are a 25 Hz stream (hop 640 at 16 kHz); "
            "a standard 50 Hz HuBERT needs one more stride-2 conv (mHuBERT-25Hz) or log-mel/MFCC features"
        )


class MelUnitTokenizer:
    """Audio -> 25 Hz unit ids with librosa (log-mel/MFCC) or HuBERT-layer features and k-means
    centroids: the speech tokenizer of the demo corpus, which needs no pretrained HuBERT.

    Same interface as the HuBERT-based tokenizers: `encode_units(audio) -> {"hubert": ids}` (audio: a
    path, bytes or an array; 100 s chunks as the reference), `encode_string(audio) -> "[Hu..].."`, and
    `encode_units_batch(wavs_16k)` which quantizes the frames of many utterances in one call."""

    def __init__(self, quantizer_dir: str | Path):
        self.quantizer_dir = Path(quantizer_dir)
        self.centroids, self.config = load_kmeans(quantizer_dir)
        if len(self.centroids) > MAX_UNITS:
            raise ValueError(f"{quantizer_dir}: {len(self.centroids)} centroids, but unit ids must be < {MAX_UNITS}")
        if not self.config.features:
            raise ValueError(f"{quantizer_dir}: kmeans.yaml names no features (centroids for caller-given features)")
        self.features = feature_extractor(self.config.features)
        check_unit_rate(self.features.frame_rate_hz, f"{quantizer_dir} ({self.features.name})")
        if self.features.dim != self.centroids.shape[1]:
            raise ValueError(
                f"{quantizer_dir}: features have dim {self.features.dim} but centroids "
                f"{self.centroids.shape[1]} ({self.config.features})"
            )
        self._cj = jnp.asarray(self.centroids)

    def describe(self) -> str:
        return f"k-means K={len(self.centroids)} over {self.features.name} features ({self.quantizer_dir})"

    def encode_units_batch(self, wavs_16k: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Unit streams of many 16 kHz mono utterances (no chunking: each is one utterance)."""
        feats = [self.features(np.asarray(w, np.float32)) for w in wavs_16k]
        ids = assign(np.concatenate(feats) if feats else np.zeros((0, self.centroids.shape[1]), np.float32), self._cj)
        out, start = [], 0
        for f in feats:
            out.append({"hubert": ids[start : start + len(f)]})
            start += len(f)
        return out

    def encode_units(self, audio, input_sample_rate=None) -> dict[str, np.ndarray]:
        return encode_chunked(audio, self.encode_units_batch, {"hubert": np.zeros(0, np.int64)}, input_sample_rate)

    def encode_string(self, audio, input_sample_rate=None) -> str:
        return units_to_string(**self.encode_units(audio, input_sample_rate))
