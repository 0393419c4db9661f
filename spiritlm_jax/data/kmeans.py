"""Mini-batch k-means in JAX: the unit quantizer a user trains for a new language or feature set.

    centroids, inertia = train_kmeans(features_nd, k=100, seed=0)
    units = assign(features_nd, centroids)

k-means++ initialisation on a sample, then mini-batch updates with per-centroid counts (Sculley
2010), then a few full Lloyd steps; empty clusters are re-seeded from the farthest points. The
result (.npy centroids) is what the speech tokenizer applies in place of the released quantizer.

CLI: python -m spiritlm_jax.data.kmeans --audio-list files.txt --k 100 --out DIR  (log-mel features)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _dists(x_nd, c_kd):
    return jnp.sum(x_nd ** 2, 1, keepdims=True) - 2 * x_nd @ c_kd.T + jnp.sum(c_kd ** 2, 1)[None]


def assign(x_nd: np.ndarray, centroids_kd: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Nearest centroid (squared Euclidean) per row."""
    x_nd = np.asarray(x_nd, np.float32)
    out = [np.asarray(jnp.argmin(_dists(x_nd[i:i + chunk], centroids_kd), 1)) for i in range(0, len(x_nd), chunk)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def inertia(x_nd, centroids_kd) -> float:
    d = _dists(jnp.asarray(x_nd, jnp.float32), jnp.asarray(centroids_kd))
    return float(jnp.sum(jnp.maximum(jnp.min(d, 1), 0.0)))


def _kmeans_pp(x_nd: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x_nd[rng.integers(len(x_nd))]]
    d2 = np.sum((x_nd - centres[0]) ** 2, 1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x_nd[rng.choice(len(x_nd), p=p)])
        d2 = np.minimum(d2, np.sum((x_nd - centres[-1]) ** 2, 1))
    return np.stack(centres).astype(np.float32)


@jax.jit
def _minibatch_step(c_kd, counts_k, x_bd):
    idx_b = jnp.argmin(_dists(x_bd, c_kd), 1)
    onehot_bk = jax.nn.one_hot(idx_b, c_kd.shape[0], dtype=jnp.float32)
    n_k = onehot_bk.sum(0)
    counts_k = counts_k + n_k
    sums_kd = onehot_bk.T @ x_bd
    lr_k = jnp.where(n_k > 0, n_k / jnp.maximum(counts_k, 1.0), 0.0)
    mean_kd = sums_kd / jnp.maximum(n_k, 1.0)[:, None]
    return c_kd + lr_k[:, None] * (mean_kd - c_kd), counts_k


def train_kmeans(x_nd: np.ndarray, k: int, seed: int = 0, batch_size: int = 4096, steps: int = 200,
                 lloyd_steps: int = 5, progress: bool = False) -> tuple[np.ndarray, float]:
    """Centroids [k, D] and final inertia (sum of squared distances)."""
    x_nd = np.asarray(x_nd, np.float32)
    if x_nd.ndim != 2 or len(x_nd) < k:
        raise ValueError(f"need at least k={k} feature rows of shape [N, D], got {x_nd.shape}")
    rng = np.random.default_rng(seed)
    sample = x_nd[rng.choice(len(x_nd), min(len(x_nd), 20 * k), replace=False)]
    c_kd = jnp.asarray(_kmeans_pp(sample, k, rng))
    counts_k = jnp.zeros(k, jnp.float32)
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="k-means", unit="batch")
    for _ in it:
        xb = jnp.asarray(x_nd[rng.integers(0, len(x_nd), min(batch_size, len(x_nd)))])
        c_kd, counts_k = _minibatch_step(c_kd, counts_k, xb)
    c_kd = np.array(c_kd)  # writable host copy
    for _ in range(lloyd_steps):
        idx = assign(x_nd, c_kd)
        sizes = np.bincount(idx, minlength=k)
        for j in np.nonzero(sizes)[0]:
            c_kd[j] = x_nd[idx == j].mean(0)
        empty = np.nonzero(sizes == 0)[0]
        if len(empty):  # re-seed empty clusters from the points worst served
            far = np.argsort(-np.min(np.asarray(_dists(x_nd, c_kd)), 1))[: len(empty)]
            c_kd[empty] = x_nd[far]
    return c_kd.astype(np.float32), inertia(x_nd, c_kd)


def save_quantizer(out_dir: str | Path, centroids_kd: np.ndarray, meta: dict) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "centroids.npy", centroids_kd)
    (out / "quantizer.json").write_text(json.dumps({"k": int(len(centroids_kd)), **meta}, indent=2))


def main(argv=None) -> int:
    from spiritlm_jax.speech.audio import load_audio
    from spiritlm_jax.speech.features import log_mel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio-list", required=True, help="text file with one audio path per line")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    feats, bad = [], 0
    for line in Path(args.audio_list).read_text().splitlines():
        if not line.strip():
            continue
        try:
            feats.append(log_mel(load_audio(line.strip())))
        except (ValueError, FileNotFoundError) as e:
            print(f"skipping {line.strip()}: {e}", file=sys.stderr)
            bad += 1
    if not feats:
        print("error: no usable audio", file=sys.stderr)
        return 2
    x = np.concatenate(feats)
    c, inert = train_kmeans(x, args.k, args.seed, progress=True)
    save_quantizer(args.out, c, {"features": "log_mel", "n_mels": x.shape[1], "frames": int(len(x)),
                                 "inertia_per_frame": inert / len(x)})
    print(f"wrote {args.out}/centroids.npy ({args.k} x {x.shape[1]}) from {len(x)} frames; skipped {bad} files")
    return 3 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
