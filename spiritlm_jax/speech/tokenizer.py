"""SpeechTokenizer (BASE): audio -> HuBERT layer features -> MLP quantizer units -> Spirit LM string.

    tok = SpeechTokenizer.load("converted/speech_tokenizer")
    units = tok.encode_units("speech.wav")        # {"hubert": int array at 25 Hz}
    s = tok.encode_string("speech.wav")           # "[Hu12][Hu7]..."

Audio is chunked as the reference (<= 100 s, chunks under 1280 samples dropped); each chunk is padded
to a power-of-two bucket of samples so new lengths recompile only per bucket. Directory format:
hubert.yaml, quantizer.yaml (optional), params/ (Orbax {"hubert", "quantizer"}).
EXPRESSIVE (pitch + style streams) is not wired in yet.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from spiritlm_jax.config import from_dict, read_yaml, save_config
from spiritlm_jax.speech.audio import chunk_audio, load_audio
from spiritlm_jax.speech.hubert import Hubert, HubertConfig
from spiritlm_jax.speech.quantizer import MLPQuantizer, MLPQuantizerConfig, mlp_units
from spiritlm_jax.tokens import units_to_string


def save_speech_tokenizer(directory, params, cfg: HubertConfig, qcfg: Optional[MLPQuantizerConfig]) -> Path:
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    if (d / "params").exists():
        raise FileExistsError(f"{d / 'params'} already exists; choose a new output directory")
    with ocp.StandardCheckpointer() as ck:
        ck.save(d / "params", params)
        ck.wait_until_finished()
    save_config(cfg, d / "hubert.yaml")
    if qcfg is not None:
        save_config(qcfg, d / "quantizer.yaml")
    return d


@functools.partial(jax.jit, static_argnames=("hubert", "quantizer"))
def _features_and_logits(hubert, quantizer, params, wav_bn, n_b):
    feats, frames = hubert.apply({"params": params["hubert"]}, wav_bn, n_b)
    logits = None if quantizer is None else quantizer.apply({"params": params["quantizer"]}, feats)
    return feats, logits, frames


class SpeechTokenizer:
    def __init__(self, params, cfg: HubertConfig, qcfg: Optional[MLPQuantizerConfig] = None):
        self.params, self.cfg, self.qcfg = params, cfg, qcfg
        self.hubert = Hubert(cfg)
        self.quantizer = MLPQuantizer(qcfg) if qcfg is not None else None

    @classmethod
    def load(cls, directory) -> "SpeechTokenizer":
        d = Path(directory).absolute()
        if not (d / "hubert.yaml").is_file() or not (d / "params").is_dir():
            raise FileNotFoundError(f"{d} is not a converted speech tokenizer (hubert.yaml + params/)")
        cfg = from_dict(HubertConfig, read_yaml(d / "hubert.yaml"))
        qcfg = from_dict(MLPQuantizerConfig, read_yaml(d / "quantizer.yaml")) if (d / "quantizer.yaml").is_file() else None
        with ocp.StandardCheckpointer() as ck:
            params = ck.restore(d / "params")
        return cls(params, cfg, qcfg)

    def _run(self, wav: np.ndarray):
        n = len(wav)
        padded = np.zeros((1, max(1 << (n - 1).bit_length(), 1024)), np.float32)
        padded[0, :n] = wav
        feats, logits, frames = _features_and_logits(self.hubert, self.quantizer, self.params,
                                                     jnp.asarray(padded), jnp.asarray([n]))
        t = int(frames[0])
        return np.asarray(feats[0, :t]), (None if logits is None else np.asarray(logits[0, :t]))

    def features(self, audio, input_sample_rate=None) -> np.ndarray:
        """Layer-`output_layer` features [T, D] of all chunks, concatenated."""
        wav = load_audio(audio, input_sample_rate)
        chunks = [self._run(c)[0] for c in chunk_audio(wav)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.cfg.hidden), np.float32)

    def encode_units(self, audio, input_sample_rate=None) -> dict[str, np.ndarray]:
        if self.quantizer is None:
            raise ValueError("this speech tokenizer has no quantizer (convert it with --quantizer)")
        wav = load_audio(audio, input_sample_rate)
        units = [mlp_units(self._run(c)[1], self.qcfg.vocab_size) for c in chunk_audio(wav)]
        return {"hubert": np.concatenate(units) if units else np.zeros(0, np.int64)}

    def encode_string(self, audio, input_sample_rate=None) -> str:
        return units_to_string(**self.encode_units(audio, input_sample_rate))
