"""Log-mel k-means units: a speech tokenizer that needs no pretrained HuBERT (the demo corpus uses it).

Same interface as the HuBERT-based tokenizers: `encode_units(audio) -> {"hubert": ids}` at 25 Hz and
`encode_string(audio) -> "[Hu..]..."`. The unit ids are k-means cluster indices, not HuBERT units.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spiritlm_jax.data.kmeans import assign
from spiritlm_jax.speech.audio import chunk_audio, load_audio
from spiritlm_jax.speech.features import log_mel
from spiritlm_jax.tokens import units_to_string


class MelUnitTokenizer:
    def __init__(self, quantizer_dir: str | Path):
        d = Path(quantizer_dir)
        if not (d / "centroids.npy").is_file():
            raise FileNotFoundError(f"{d} has no centroids.npy (train one with python -m spiritlm_jax.data.kmeans)")
        self.centroids = np.load(d / "centroids.npy")
        self.meta = json.loads((d / "quantizer.json").read_text()) if (d / "quantizer.json").is_file() else {}
        if self.meta.get("features", "log_mel") != "log_mel":
            raise ValueError(f"{d}: quantizer was trained on {self.meta['features']!r} features, not log_mel")

    def encode_units(self, audio, input_sample_rate=None) -> dict[str, np.ndarray]:
        wav = load_audio(audio, input_sample_rate)
        units = [assign(log_mel(c, n_mels=self.centroids.shape[1]), self.centroids) for c in chunk_audio(wav)]
        return {"hubert": np.concatenate(units) if units else np.zeros(0, np.int64)}

    def encode_string(self, audio, input_sample_rate=None) -> str:
        return units_to_string(**self.encode_units(audio, input_sample_rate))
