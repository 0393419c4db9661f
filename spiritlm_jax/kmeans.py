"""Train a k-means unit quantizer on audio (spiritlm_jax.speech.kmeans) and save its directory.

    python -m spiritlm_jax.kmeans --audio-list files.txt --k 100 --out DIR [--features mfcc]
    python -m spiritlm_jax.kmeans --help      # every key, its type, default and doc

DIR is a k-means component directory (kmeans.yaml + params/; spiritlm_jax.speech.quantizer.KMEANS_SPEC)
that `MelUnitTokenizer(DIR)` and `python -m spiritlm_jax.prepare --tokenizer mel:DIR` read.
Exit status: 0 ok, 2 bad arguments or no usable audio, 3 trained but some audio files were skipped.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from spiritlm_jax.config import run_cli
from spiritlm_jax.io import save_component
from spiritlm_jax.speech.audio import load_audio
from spiritlm_jax.speech.features import FeatureConfig, feature_extractor
from spiritlm_jax.speech.kmeans import MAX_UNITS, check_unit_rate, kmeans_config, train_kmeans
from spiritlm_jax.speech.quantizer import KMEANS_FILE, KMEANS_SPEC

PROG = "python -m spiritlm_jax.kmeans"


@dataclasses.dataclass(frozen=True)
class KMeansCLIConfig:
    audio_list: str  # text file with one audio path per line (# comments allowed)
    out: str  # output quantizer directory (kmeans.yaml + params/); must not hold params/ yet
    k: int = 100  # clusters: unit ids 0..k-1 (at most 501)
    seed: int = 0
    init: Literal["k-means++", "random"] = "k-means++"  # initialisation
    steps: int = 300  # mini-batch steps
    batch_size: int = 4096
    lloyd_steps: int = 3  # full-batch refinement steps after the mini-batches
    max_frames: int = 2_000_000  # subsample (seeded) to at most this many frames
    features: Literal["log_mel", "mfcc"] = "log_mel"
    n_mels: int = 40
    n_mfcc: int = 13
    deltas: bool = False  # MFCC + deltas + delta-deltas
    fmax: Optional[float] = None  # highest mel frequency in Hz (default 8000)
    cmvn: bool = True  # per-utterance mean/variance normalisation (--no-cmvn: off)
    hubert_checkpoint: Optional[str] = None  # converted HuBERT dir: cluster its layer features
    layer: Optional[int] = None  # HuBERT layer clustered (default: the checkpoint's, 11)


def _read_list(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--audio-list {p} does not exist")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _feature_params(cfg: KMeansCLIConfig) -> dict:
    if cfg.hubert_checkpoint:
        return {"type": "hubert", "checkpoint": cfg.hubert_checkpoint, "layer": cfg.layer}
    return FeatureConfig(
        kind=cfg.features, n_mels=cfg.n_mels, n_mfcc=cfg.n_mfcc, deltas=cfg.deltas, fmax=cfg.fmax, cmvn=cfg.cmvn
    ).to_dict()


def train(cfg: KMeansCLIConfig) -> int:
    try:
        if not 1 <= cfg.k <= MAX_UNITS:
            raise ValueError(f"--k must be between 1 and {MAX_UNITS} (unit ids index [Hu0]..[Hu500]), got {cfg.k}")
        feats_fn = feature_extractor(_feature_params(cfg))
        check_unit_rate(feats_fn.frame_rate_hz, cfg.hubert_checkpoint or f"{feats_fn.name} features")
        paths = _read_list(cfg.audio_list)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    feats, bad = [], []
    for path in tqdm(paths, desc=f"{feats_fn.name} features", unit="file"):
        try:
            f = feats_fn(load_audio(path))
            if len(f) == 0:
                raise ValueError(f"{path}: too short for one 25 Hz frame")
            feats.append(f)
        except (ValueError, FileNotFoundError) as e:
            bad.append(path)
            print(f"skipping {path}: {e}", file=sys.stderr)
    if not feats:
        print("error: no usable audio in --audio-list", file=sys.stderr)
        return 2
    x = np.concatenate(feats)
    if len(x) > cfg.max_frames:
        x = x[np.sort(np.random.default_rng(cfg.seed).choice(len(x), cfg.max_frames, replace=False))]
    try:
        res = train_kmeans(
            x,
            cfg.k,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            steps=cfg.steps,
            lloyd_steps=cfg.lloyd_steps,
            init=cfg.init,
            progress=True,
        )
        training = {
            "files": len(feats),
            "skipped_files": len(bad),
            "seed": cfg.seed,
            "init": cfg.init,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "lloyd_steps": cfg.lloyd_steps,
        }
        out = save_component(
            cfg.out,
            KMEANS_SPEC,
            {"centroids": res.centroids},
            {KMEANS_FILE: kmeans_config(res, feats_fn.params(), training, feats_fn.frame_rate_hz)},
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {out} ({cfg.k} x {x.shape[1]} centroids) from {len(x)} frames of {len(feats)} files; "
        f"inertia/frame {res.inertia_per_row:.4g}; skipped {len(bad)} files"
    )
    return 3 if bad else 0


def main(argv=None) -> int:
    return run_cli(KMeansCLIConfig, argv, PROG, train, __doc__)


if __name__ == "__main__":
    sys.exit(main())
