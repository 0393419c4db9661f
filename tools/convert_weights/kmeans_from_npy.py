"""Convert a k-means quantizer directory of the old format (centroids.npy + quantizer.json, written by
`python -m spiritlm_jax.data.kmeans` before the component format) into a k-means component directory
(kmeans.yaml + params/; spiritlm_jax.speech.quantizer.KMEANS_SPEC). The centroids are copied bit for
bit, so the units are unchanged.

    python tools/convert_weights/kmeans_from_npy.py --src old_quantizer/ --out quantizer/
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.quantizer import KMEANS_FILE, KMEANS_SPEC, KMeansConfig  # noqa: E402
from tools.convert_weights.common import ConversionError, converter_main  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # old quantizer directory: centroids.npy (+ quantizer.json)
    out: str  # new k-means component directory (must not hold params/ yet)


def convert(src, out) -> Path:
    src = Path(src)
    if not (src / "centroids.npy").is_file():
        raise FileNotFoundError(f"{src} has no centroids.npy")
    try:
        c = np.load(src / "centroids.npy", allow_pickle=False)
    except ValueError as e:
        raise ConversionError(f"{src / 'centroids.npy'} is not a numeric .npy array: {e}") from None
    if c.ndim != 2:
        raise ConversionError(f"{src / 'centroids.npy'}: expected centroids [k, D], got shape {c.shape}")
    meta = json.loads((src / "quantizer.json").read_text()) if (src / "quantizer.json").is_file() else {}
    features = meta.get("feature_params")
    if features is None and meta:  # the oldest quantizer.json: log-mel with n_mels = D
        features = {"type": meta.get("features", "log_mel"), "n_mels": int(c.shape[1])}
    cfg = KMeansConfig(
        k=int(c.shape[0]), dim=int(c.shape[1]), features=features or {}, training=meta.get("training", {})
    )
    return save_component(out, KMEANS_SPEC, {"centroids": c.astype(np.float32)}, {KMEANS_FILE: cfg})


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out))


if __name__ == "__main__":
    sys.exit(main())
