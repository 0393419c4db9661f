"""SpeechTokenizer: audio -> Spirit LM unit streams -> one Spirit LM string (docs/reference.md).

BASE: HuBERT layer features -> MLP quantizer units (25 Hz).
EXPRESSIVE: the same HuBERT units, plus pitch units (FCPE F0 -> F0 VQ-VAE, 12.5 Hz) and style units
(wav2vec2 style classifier, 1 Hz), merged by time as the reference's `units_to_string`.

    tok = SpeechTokenizer.load("converted/speech_tokenizer")          # EXPRESSIVE when pitch/style exist
    units = tok.encode_units("speech.wav")   # {"hubert": [...], "pitch": [...], "style": [...]}
    s = tok.encode_string("speech.wav")      # "[St71][Pi13][Hu12][Hu7]..."

Audio is loaded once and chunked as the reference (<= 100 s, chunks under 1280 samples dropped); every
stream runs on each chunk and the per-chunk units are concatenated, as the reference does. Each chunk
is padded to a power-of-two bucket of samples so new lengths recompile only per bucket.
Directory format (`SPEECH_TOKENIZER_SPEC`, spiritlm_jax.io): hubert.yaml, quantizer.yaml (optional),
params/ (Orbax {"hubert", "quantizer"}); EXPRESSIVE adds fcpe/ (FCPE_SPEC), f0_vqvae/ (F0_VQVAE_SPEC)
and style/ (STYLE_SPEC), each a component directory of its own
(tools/convert_weights/spiritlm_checkpoints.py writes all of them).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.buckets import pow2_bucket
from spiritlm_jax.io import ComponentSpec, load_component
from spiritlm_jax.speech.audio import encode_chunked, pad_batch
from spiritlm_jax.speech.f0_vqvae import PitchTokenizer
from spiritlm_jax.speech.hubert import Hubert, HubertConfig
from spiritlm_jax.speech.quantizer import MLP_QUANTIZER_SPEC, MLPQuantizer, MLPQuantizerConfig, mlp_units
from spiritlm_jax.speech.style import StyleTokenizer
from spiritlm_jax.tokens import STREAMS, units_to_string

PITCH_DIRS = ("fcpe", "f0_vqvae")
STYLE_DIR = "style"


def _abstract_params(configs: dict) -> dict:
    cfg, qcfg = configs["hubert.yaml"], configs.get("quantizer.yaml")
    wav = jax.ShapeDtypeStruct((1, cfg.receptive_field), jnp.float32)
    params = {"hubert": jax.eval_shape(Hubert(cfg).init, jax.random.PRNGKey(0), wav)["params"]}
    if qcfg is not None:
        params.update(MLP_QUANTIZER_SPEC.abstract_params({"quantizer.yaml": qcfg}))
    return params


# The HuBERT part of a speech tokenizer directory: DIR/hubert.yaml (+ quantizer.yaml) + DIR/params
# ({"hubert"[, "quantizer"]}); the EXPRESSIVE parts are component directories inside it (fcpe/, ...).
SPEECH_TOKENIZER_SPEC = ComponentSpec(
    "converted speech tokenizer",
    {"hubert.yaml": HubertConfig, "quantizer.yaml": MLPQuantizerConfig},
    _abstract_params,
    optional=("quantizer.yaml",),
    hint="make one with tools/convert_weights/hubert_from_fairseq.py",
)


@functools.partial(jax.jit, static_argnames=("hubert", "quantizer"))
def _features_and_logits(hubert, quantizer, params, wav_bn, n_b):
    feats, frames = hubert.apply({"params": params["hubert"]}, wav_bn, n_b)
    logits = None if quantizer is None else quantizer.apply({"params": params["quantizer"]}, feats)
    return feats, logits, frames


class SpeechTokenizer:
    """HuBERT units (BASE), plus pitch and style units when `pitch` and `style` are given (EXPRESSIVE)."""

    def __init__(self, params, cfg: HubertConfig, qcfg: Optional[MLPQuantizerConfig] = None, pitch=None, style=None):
        if (pitch is None) != (style is None):
            raise ValueError("an EXPRESSIVE speech tokenizer needs both a pitch and a style tokenizer")
        self.params, self.cfg, self.qcfg = params, cfg, qcfg
        self.hubert = Hubert(cfg)
        self.quantizer = MLPQuantizer(qcfg) if qcfg is not None else None
        self.pitch, self.style = pitch, style

    @property
    def expressive(self) -> bool:
        return self.pitch is not None

    @classmethod
    def load(cls, directory, expressive: Optional[bool] = None) -> "SpeechTokenizer":
        """`expressive=None` loads pitch and style when the directory has them (all of fcpe/,
        f0_vqvae/, style/); True requires them; False loads HuBERT only (for a BASE model)."""
        d = Path(directory).absolute()
        params, cfgs = load_component(d, SPEECH_TOKENIZER_SPEC)
        cfg, qcfg = cfgs["hubert.yaml"], cfgs["quantizer.yaml"]
        parts = (*PITCH_DIRS, STYLE_DIR)
        missing = [p for p in parts if not (d / p).is_dir()]
        if expressive and missing:
            raise FileNotFoundError(
                f"{d} has no {', '.join(p + '/' for p in missing)}: an EXPRESSIVE speech "
                "tokenizer needs fcpe/, f0_vqvae/ and style/ (see "
                "tools/convert_weights/spiritlm_checkpoints.py)"
            )
        pitch = style = None
        if expressive is True or (expressive is None and not missing):
            pitch = PitchTokenizer.load(d / "fcpe", d / "f0_vqvae")
            style = StyleTokenizer.load(d / STYLE_DIR)
        return cls(params, cfg, qcfg, pitch, style)

    def _hubert_batch(self, wavs: list[np.ndarray]):
        """(features [T_i, D], logits [T_i, V+1] or None) per waveform, as one padded jitted batch."""
        padded = pad_batch(wavs, pow2_bucket(max(len(w) for w in wavs), minimum=1024))
        feats, logits, frames = _features_and_logits(
            self.hubert, self.quantizer, self.params, jnp.asarray(padded), jnp.asarray([len(w) for w in wavs])
        )
        feats, frames = np.asarray(feats), np.asarray(frames)
        logits = None if logits is None else np.asarray(logits)
        return [(feats[i, : frames[i]], None if logits is None else logits[i, : frames[i]]) for i in range(len(wavs))]

    def features(self, audio, input_sample_rate=None, channel=None) -> np.ndarray:
        """Layer-`output_layer` features [T, D] of all chunks, concatenated."""
        return encode_chunked(
            audio,
            lambda chunks: [f for g in _groups(chunks) for f, _ in self._hubert_batch(g)],
            np.zeros((0, self.cfg.hidden), np.float32),
            input_sample_rate,
            channel,
        )

    def encode_units_batch(self, wavs_16k) -> list[dict[str, np.ndarray]]:
        """Unit streams of many 16 kHz waveforms (each one reference chunk: <= 100 s), run as padded
        batches of similar lengths; each item gets exactly its unbatched result."""
        if self.quantizer is None:
            raise ValueError("this speech tokenizer has no quantizer (convert it with --quantizer)")
        wavs = [np.asarray(w, np.float32) for w in wavs_16k]
        out: list[dict] = [{} for _ in wavs]
        order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))  # similar lengths share a batch
        for group in _groups([wavs[i] for i in order]):
            idx, order = order[: len(group)], order[len(group) :]
            for i, (_, logits) in zip(idx, self._hubert_batch(group)):
                out[i]["hubert"] = mlp_units(logits, self.qcfg.vocab_size).astype(np.int64)
            if self.expressive:
                for i, item in zip(idx, self.pitch.batch(group)):
                    out[i]["pitch"] = item["units"]
                for i, logits in zip(idx, self.style.logits(group)):
                    out[i]["style"] = logits.argmax(-1).astype(np.int64)
        return out

    def encode_units(self, audio, input_sample_rate=None, channel=None) -> dict[str, np.ndarray]:
        """{"hubert": int64 [T]} (BASE), plus "pitch" and "style" (EXPRESSIVE): each stream's units of
        every chunk, concatenated, as the reference. `channel` picks one channel of a stereo input
        (default: average)."""
        streams = STREAMS if self.expressive else ("hubert",)
        return encode_chunked(
            audio, self.encode_units_batch, {s: np.zeros(0, np.int64) for s in streams}, input_sample_rate, channel
        )

    def encode_string(self, audio, input_sample_rate=None, channel=None) -> str:
        return units_to_string(**self.encode_units(audio, input_sample_rate, channel))


def _groups(wavs: list, max_items: int = 8, max_samples: int = 200 * 16000) -> list[list]:
    """Consecutive batches of at most `max_items` waveforms and `max_samples` padded samples."""
    groups: list[list] = []
    for w in wavs:
        g = groups[-1] if groups else None
        if g is None or len(g) == max_items or (len(g) + 1) * max(len(w), max(len(x) for x in g)) > max_samples:
            groups.append([w])
        else:
            g.append(w)
    return groups
