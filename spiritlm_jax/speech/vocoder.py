"""Spirit LM unit strings (or unit arrays) -> 16 kHz audio with the JAX HiFi-GAN.

    voc = Vocoder.load("converted/hifigan_spiritlm_base")
    audio = voc.vocode("[Hu12][Hu7][Hu7]...", speaker=2)
    write_wav("out.wav", audio)

Lengths are bucketed to powers of two (at least 64 frames), so a new length compiles only when it
falls in a new bucket. Directory format: config.yaml (HifiGanConfig), params/ (Orbax),
speakers.txt / styles.txt when the source had them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from spiritlm_jax.config import from_dict, read_yaml, save_config
from spiritlm_jax.model.decode import bucket
from spiritlm_jax.speech.hifigan import CodeGenerator, HifiGanConfig
from spiritlm_jax.tokens import string_to_units


def save_vocoder(directory, params, cfg: HifiGanConfig) -> Path:
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ck:
        ck.save(directory / "params", params)
        ck.wait_until_finished()
    save_config(cfg, directory / "config.yaml")
    return directory


def write_wav(path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, np.float32), sample_rate)


@functools.partial(jax.jit, static_argnames=("model", "dur_pred", "max_frames"))
def _run(model, params, units, lengths, pitch, style, speaker, gstyle, dur_pred, max_frames):
    return model.apply({"params": params}, units, lengths, pitch, style, speaker, gstyle, dur_pred, max_frames)


class Vocoder:
    def __init__(self, params, cfg: HifiGanConfig, speakers: Optional[list[str]] = None):
        self.params, self.cfg, self.model = params, cfg, CodeGenerator(cfg)
        self.speakers = speakers

    @classmethod
    def load(cls, directory) -> "Vocoder":
        d = Path(directory).absolute()
        if not (d / "config.yaml").is_file() or not (d / "params").is_dir():
            raise FileNotFoundError(f"{d} is not a converted vocoder directory (config.yaml + params/)")
        cfg = from_dict(HifiGanConfig, read_yaml(d / "config.yaml"))
        with ocp.StandardCheckpointer() as ck:
            params = ck.restore(d / "params")
        speakers = (d / "speakers.txt").read_text().split() if (d / "speakers.txt").is_file() else None
        return cls(params, cfg, speakers)

    def _check(self, name, arr, n):
        if arr is not None and len(arr) and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name} unit ids must be in [0, {n}), got {int(arr.min())}..{int(arr.max())}")

    def vocode(self, units: Union[str, dict], speaker: int = 0, style: int = 0, dur_pred: Optional[bool] = None) -> np.ndarray:
        """A unit string ("[Hu1][Pi3]...") or {"hubert", "pitch", "style"} per-HuBERT-frame arrays -> audio."""
        cfg = self.cfg
        u = string_to_units(units) if isinstance(units, str) else units
        hubert = np.asarray(u["hubert"], np.int32)
        if hubert.size == 0:
            raise ValueError("nothing to vocode: the input has no HuBERT units")
        self._check("HuBERT", hubert, cfg.num_embeddings)
        if cfg.multispkr and not 0 <= speaker < cfg.num_speakers:
            raise ValueError(f"speaker {speaker} out of range: this vocoder has {cfg.num_speakers} speakers")
        if cfg.multistyle and not 0 <= style < cfg.num_styles:
            raise ValueError(f"style {style} out of range: this vocoder has {cfg.num_styles} styles")
        streams = {}
        for key, n in (("pitch", cfg.num_f0_tokens), ("style", cfg.num_style_tokens)):
            if n:
                arr = u.get(key)
                if arr is None:
                    raise ValueError(f"this vocoder needs {key} units and the input has none")
                arr = np.asarray(arr, np.int32)
                if len(arr) != len(hubert):
                    raise ValueError(f"{key} units ({len(arr)}) must be given per HuBERT frame ({len(hubert)})")
                self._check(key, arr, n)
                streams[key] = arr
        dur_pred = cfg.dur_predictor if dur_pred is None else dur_pred
        t = bucket(len(hubert), minimum=64)
        max_frames = t * 8 if dur_pred else t  # predicted durations are rarely > 8 frames per unit on average

        def pad(a):
            out = np.zeros((1, t), np.int32)
            out[0, : len(a)] = a
            return jnp.asarray(out)

        args = (pad(hubert), jnp.asarray([len(hubert)]), pad(streams["pitch"]) if "pitch" in streams else None,
                pad(streams["style"]) if "style" in streams else None, jnp.asarray([speaker]), jnp.asarray([style]))
        audio, n, needed = _run(self.model, self.params, *args, dur_pred, max_frames)
        if int(needed[0]) > max_frames:  # durations overflowed the bucket: one more run, sized to fit
            audio, n, _ = _run(self.model, self.params, *args, dur_pred, bucket(int(needed[0])))
        return np.asarray(audio[0, : int(n[0])])
