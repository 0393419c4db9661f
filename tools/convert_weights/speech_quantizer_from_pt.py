"""Import a HuBERT unit quantizer checkpoint of the reference code.

    python tools/convert_weights/speech_quantizer_from_pt.py --src L11_quantizer_500.pt --out DIR

- The released MLP quantizer (`L11_quantizer_500.pt`, docs/reference.md): {model_cfg{vocab_size, dim,
  upstream_dim}, model_weight{0.*, 2.*, 4.*}} (an nn.Sequential state dict) -> DIR/quantizer.yaml +
  DIR/params (Orbax {"quantizer": ...}); load with `io.load_component(DIR, MLP_QUANTIZER_SPEC)`.
- A k-means checkpoint of the reference's KmeansModel: {cluster_centers [K, D], n_clusters}
  -> a k-means component directory (kmeans.yaml + params/); load with `KMeansQuantizer.load(DIR)`.
To convert HuBERT and the quantizer into one speech-tokenizer directory use hubert_from_fairseq.py.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.quantizer import MLP_QUANTIZER_SPEC, KMeansQuantizer, MLPQuantizerConfig  # noqa: E402
from tools.convert_weights.common import (  # noqa: E402
    CheckedTensors,
    ConversionError,
    converter_main,
    load_torch_checkpoint,
    torch_to_numpy,
)


def load_quantizer_checkpoint(path) -> dict:
    """The checkpoint dict; numpy arrays (k-means centres) are allowed in the weights-only unpickler."""
    import torch

    numpy_globals = [np.ndarray, np.dtype, type(np.dtype(np.float32)), type(np.dtype(np.float64))]
    core = getattr(np, "_core", None) or np.core
    numpy_globals.append(core.multiarray._reconstruct)
    with torch.serialization.safe_globals(numpy_globals):
        return load_torch_checkpoint(path)


def mlp_quantizer_params(ckpt: dict, source: str = "quantizer") -> tuple[MLPQuantizerConfig, dict]:
    """{model_cfg, model_weight} -> (config, Flax params {linear_0, linear_2, linear_4})."""
    if "model_cfg" not in ckpt or "model_weight" not in ckpt:
        raise ConversionError(f"{source}: expected a dict with 'model_cfg' and 'model_weight', got keys {sorted(ckpt)}")
    mc = ckpt["model_cfg"]
    missing = [k for k in ("vocab_size", "dim", "upstream_dim") if k not in mc]
    if missing:
        raise ConversionError(f"{source}: model_cfg lacks {missing}")
    try:
        cfg = MLPQuantizerConfig(int(mc["vocab_size"]), int(mc["dim"]), int(mc["upstream_dim"]))
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from None
    t = CheckedTensors(ckpt["model_weight"], source)
    w1, w2, w3 = cfg.widths
    params = {}
    for idx, (i, o) in zip((0, 2, 4), ((cfg.dim, w1), (w1, w2), (w2, w3))):
        params[f"linear_{idx}"] = {"kernel": t.take(f"{idx}.weight", (o, i)).T, "bias": t.take(f"{idx}.bias", (o,))}
    t.check_all_used()
    return cfg, params


def kmeans_centroids(ckpt: dict, source: str = "k-means") -> np.ndarray:
    """{cluster_centers [K, D], n_clusters} -> centroids [K, D] float32."""
    c = ckpt["cluster_centers"]
    c = torch_to_numpy(c) if hasattr(c, "detach") else np.asarray(c)
    if c.ndim != 2 or ("n_clusters" in ckpt and int(ckpt["n_clusters"]) != c.shape[0]):
        raise ConversionError(
            f"{source}: cluster_centers has shape {c.shape}, expected [n_clusters={ckpt.get('n_clusters')}, D]"
        )
    return c.astype(np.float32)


def convert(quantizer_pt, out_dir) -> Path:
    ckpt = load_quantizer_checkpoint(quantizer_pt)
    if "cluster_centers" in ckpt:
        return KMeansQuantizer(kmeans_centroids(ckpt, str(quantizer_pt))).save(out_dir)
    cfg, params = mlp_quantizer_params(ckpt, str(quantizer_pt))
    return save_component(out_dir, MLP_QUANTIZER_SPEC, {"quantizer": params}, {"quantizer.yaml": cfg})


@dataclasses.dataclass(frozen=True)
class Args:
    src: str  # L11_quantizer_500.pt, or a k-means .pt
    out: str  # output directory (must not hold params/ yet)


def main(argv=None) -> int:
    return converter_main(Args, argv, __file__, __doc__, lambda a: convert(a.src, a.out))


if __name__ == "__main__":
    sys.exit(main())
