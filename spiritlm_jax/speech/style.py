"""Style units (EXPRESSIVE): a wav2vec2-base sequence classifier pooled per second (SPEC.md §4.3).

    waveform -> zero-mean / unit-variance normalisation (done here, as wav2vec2-base's feature
    extractor does; nothing is fetched) -> wav2vec2 encoder (the HuBERT-Base architecture, all layers)
    -> projector -> mean over chunks of 50 frames (1 s at 50 Hz; the last chunk may be shorter)
    -> classifier -> argmax: one style unit per second.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from spiritlm_jax.speech.hubert import STANDARD_50HZ, Hubert, HubertConfig


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    encoder: HubertConfig = HubertConfig(conv_layers=STANDARD_50HZ, output_layer=12)
    proj_size: int = 256
    num_labels: int = 100
    pool_size: int = 50


def normalize(wav: np.ndarray) -> np.ndarray:
    """wav2vec2-base input normalisation: (x - mean) / sqrt(var + 1e-7), per utterance."""
    wav = np.asarray(wav, np.float32)
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)


class StyleEncoder(nn.Module):
    """Normalised wav [B, N] + valid samples [B] -> (logits [B, chunks, labels], valid chunks [B])."""

    cfg: StyleConfig

    @nn.compact
    def __call__(self, wav_bn, n_b):
        cfg = self.cfg
        h_btd, frames_b = Hubert(cfg.encoder, name="wav2vec2")(wav_bn, n_b)
        h_btp = nn.Dense(cfg.proj_size, name="projector")(h_btd)
        b, t, p = h_btp.shape
        c = -(-t // cfg.pool_size)
        pad = c * cfg.pool_size - t
        valid_bt = (jnp.arange(t)[None] < frames_b[:, None]).astype(h_btp.dtype)
        h = jnp.pad(h_btp * valid_bt[..., None], ((0, 0), (0, pad), (0, 0))).reshape(b, c, cfg.pool_size, p)
        cnt = jnp.pad(valid_bt, ((0, 0), (0, pad))).reshape(b, c, cfg.pool_size).sum(-1)
        pooled_bcp = h.sum(2) / jnp.maximum(cnt, 1.0)[..., None]
        n_chunks_b = -(-frames_b // cfg.pool_size)
        return nn.Dense(cfg.num_labels, name="classifier")(pooled_bcp), n_chunks_b


def save_style_encoder(directory, params, cfg: StyleConfig):
    import orbax.checkpoint as ocp
    from pathlib import Path

    from spiritlm_jax.config import save_config

    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ck:
        ck.save(d / "params", params)
        ck.wait_until_finished()
    save_config(cfg, d / "style.yaml")
    return d


class StyleTokenizer:
    """Audio -> one style unit per second (chunks of <= 100 s as the reference)."""

    def __init__(self, params, cfg: StyleConfig):
        import jax

        self.params, self.cfg = params, cfg
        self._fn = jax.jit(lambda p, w, n: StyleEncoder(cfg).apply({"params": p}, w, n))

    @classmethod
    def load(cls, directory) -> "StyleTokenizer":
        import orbax.checkpoint as ocp
        from pathlib import Path

        from spiritlm_jax.config import from_dict, read_yaml

        d = Path(directory).absolute()
        if not (d / "style.yaml").is_file():
            raise FileNotFoundError(f"{d} is not a converted style encoder (style.yaml + params/)")
        with ocp.StandardCheckpointer() as ck:
            params = ck.restore(d / "params")
        return cls(params, from_dict(StyleConfig, read_yaml(d / "style.yaml")))

    def encode_units(self, audio, input_sample_rate=None) -> np.ndarray:
        from spiritlm_jax.speech.audio import chunk_audio, load_audio

        out = []
        for chunk in chunk_audio(load_audio(audio, input_sample_rate)):
            w = normalize(chunk)
            padded = np.zeros((1, max(1 << (len(w) - 1).bit_length(), 1024)), np.float32)
            padded[0, : len(w)] = w
            logits, n = self._fn(self.params, jnp.asarray(padded), jnp.asarray([len(w)]))
            out.append(np.asarray(logits[0, : int(n[0])]).argmax(-1))
        return np.concatenate(out) if out else np.zeros(0, np.int64)
