"""Spirit LM unit strings (or unit arrays) -> 16 kHz audio with the JAX HiFi-GAN.

    voc = Vocoder.load("converted/hifigan_spiritlm_base")
    audio = voc.vocode("[Hu12][Hu7][Hu7]...", speaker=2)         # float32 [samples], 16 kHz
    audios = voc.vocode_batch(["[Hu1][Hu2]", "[Hu3]"], speaker=2)  # one padded batch per max_batch items
    write_wav("out.wav", audio)

Two jitted stages, both on bucketed shapes so that new lengths compile only when they reach a new
bucket (`buckets.half_octave_bucket`: 32, 48, 64, 96, 128, ... frames; batch sizes 1, 2, 4, ..., max_batch):
durations (when the duration predictor is on) on the unit bucket, then the streams are repeated on the
host and the generator runs on the bucket of the repeated length, so no work is spent on a guessed
upper bound. `num_traces` counts how often each stage was traced (compiled).

Directory format (`VOCODER_SPEC`, `Vocoder.save` / `Vocoder.load`): config.yaml (HifiGanConfig), params/
(Orbax StandardCheckpointer), speakers.txt / styles.txt when the source had them. Stored shapes are
checked against config.yaml before restoring (spiritlm_jax.io).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Optional, Sequence, Union

import jax
import numpy as np

from spiritlm_jax.buckets import half_octave_bucket, pow2_bucket
from spiritlm_jax.io import ComponentSpec, load_component, save_component
from spiritlm_jax.speech.hifigan import CodeGenerator, HifiGanConfig, init_params, predict_durations, upsample_stream
from spiritlm_jax.tokens import STREAMS, string_to_units

Units = Union[str, dict, Sequence[int], np.ndarray]
DEFAULT_SPEAKER = 2  # the reference's default_speaker for both released vocoders
DEFAULT_STYLE = 8  # the reference's BASE default style ("conv-default")


FRAME_BUCKET_MIN = 32  # unit frames are padded to buckets.half_octave_bucket(n, FRAME_BUCKET_MIN)


def _abstract_params(configs: dict) -> dict:
    return jax.eval_shape(lambda: init_params(configs["config.yaml"]))


# DIR/config.yaml (HifiGanConfig) + DIR/params; Vocoder.save adds speakers.txt / styles.txt
VOCODER_SPEC = ComponentSpec(
    "converted vocoder",
    {"config.yaml": HifiGanConfig},
    _abstract_params,
    hint="make one with tools/convert_weights/hifigan_from_pt.py",
)


def write_wav(path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Write mono float audio as a wav file (soundfile, 16-bit PCM)."""
    import soundfile as sf

    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"write_wav expects mono audio [samples], got shape {audio.shape}")
    sf.write(str(path), audio, sample_rate, subtype="PCM_16")


def _read_list(path: Path) -> Optional[list[str]]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else None


def _as_int_stream(x, name: str) -> np.ndarray:
    if isinstance(x, str):  # the reference's units format: "78 42 81"
        try:
            x = [int(t) for t in x.split()]
        except ValueError:
            raise ValueError(f"{name} units {x[:40]!r}: expected space-separated integers") from None
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} units must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} units must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


class Vocoder:
    """A HiFi-GAN CodeGenerator with its parameters, speaker/style names and bucketed jitted stages."""

    def __init__(
        self,
        params,
        cfg: HifiGanConfig,
        speakers: Optional[list[str]] = None,
        styles: Optional[list[str]] = None,
        max_batch: int = 8,
    ):
        self.params, self.cfg, self.model = params, cfg, CodeGenerator(cfg)
        self.speakers, self.styles = speakers, styles
        self.max_batch = pow2_bucket(max_batch)
        self.num_traces: collections.Counter = collections.Counter()  # "durations" / "generator"
        self._durations = jax.jit(self._durations_impl)
        self._generate = jax.jit(self._generate_impl)

    # ----- files -----------------------------------------------------------------------------
    @classmethod
    def load(cls, directory, **kwargs) -> "Vocoder":
        d = Path(directory).absolute()
        params, cfgs = load_component(d, VOCODER_SPEC)
        return cls(params, cfgs["config.yaml"], _read_list(d / "speakers.txt"), _read_list(d / "styles.txt"), **kwargs)

    def save(self, directory) -> Path:
        """params/ + config.yaml (VOCODER_SPEC, shapes checked first) + speakers.txt / styles.txt."""
        d = save_component(directory, VOCODER_SPEC, self.params, {"config.yaml": self.cfg})
        for name, items in (("speakers.txt", self.speakers), ("styles.txt", self.styles)):
            if items is not None:
                (d / name).write_text("".join(f"{s}\n" for s in items))
        return d

    # ----- jitted stages (traced once per bucket) ----------------------------------------------
    def _durations_impl(self, params, units_bt, lengths_b):
        self.num_traces["durations"] += 1
        return predict_durations(params, self.cfg, units_bt, lengths_b)

    def _generate_impl(self, params, units_bt, lengths_b, pitch_bt, style_bt, speaker_b, gstyle_b):
        self.num_traces["generator"] += 1
        audio, n, _ = self.model.apply(
            {"params": params}, units_bt, lengths_b, pitch_bt, style_bt, speaker_b, gstyle_b, dur_pred=False
        )
        return audio, n

    # ----- inputs ------------------------------------------------------------------------------
    def _index(self, value, names: Optional[list[str]], n: int, what: str, default: int) -> int:
        if value is None:
            value = default
        if isinstance(value, str):
            if not names or value not in names:
                raise ValueError(
                    f"unknown {what} {value!r}"
                    + (f" (known: {', '.join(names[:10])}...)" if names else f": this vocoder has no {what} names")
                )
            value = names.index(value)
        if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n:
            raise ValueError(f"{what} {value} out of range: this vocoder has {n} {what}s (0..{n - 1})")
        return int(value)

    def _streams(self, item: Units, dur_pred: Optional[bool]) -> tuple[dict, bool]:
        """One input -> ({"hubert", "pitch", "style"} per-HuBERT-frame int arrays, dur_pred)."""
        cfg = self.cfg
        if isinstance(item, str):
            u = string_to_units(item)
        elif isinstance(item, dict):
            unknown = set(item) - set(STREAMS)
            if unknown:
                raise ValueError(f"unit dict keys must be hubert/pitch/style, got {sorted(unknown)}")
            u = dict(item)
        else:
            u = {"hubert": item}
        if u.get("hubert") is None:
            raise ValueError("nothing to vocode: the input has no HuBERT units")
        hubert = _as_int_stream(u["hubert"], "HuBERT")
        if hubert.size == 0:
            what = f"the string {item[:60]!r}" if isinstance(item, str) else "the input"
            raise ValueError(f"nothing to vocode: {what} has no HuBERT units")
        _check_range(hubert, cfg.num_embeddings, "HuBERT")
        if dur_pred is None:
            dur_pred = cfg.has_dur_predictor
        elif dur_pred and not cfg.has_dur_predictor:
            raise ValueError("dur_pred=True but this vocoder has no duration predictor")
        out = {"hubert": hubert, "pitch": None, "style": None}
        streams = [("pitch", cfg.num_f0_tokens, cfg.hubert_to_f0), ("style", cfg.num_style_tokens, cfg.hubert_to_style)]
        # the reference's decode: a pitch stream not at the HuBERT length means undeduplicated units
        # at their own rates (resynthesis), so durations are off and the streams are upsampled
        pitch = u.get("pitch")
        if cfg.num_f0_tokens and pitch is not None and len(_as_int_stream(pitch, "pitch")) != len(hubert):
            dur_pred = False
        for key, n, rate in streams:
            if not n:
                continue  # the reference ignores streams its model has no embedding for
            if u.get(key) is None:
                raise ValueError(f"this vocoder needs {key} units (EXPRESSIVE) and the input has none")
            arr = _as_int_stream(u[key], key)
            _check_range(arr, n, key)
            if len(arr) != len(hubert):
                if dur_pred:
                    raise ValueError(
                        f"with dur_pred, {key} units must be given per HuBERT frame ({len(arr)} vs {len(hubert)})"
                    )
                arr = upsample_stream(arr, len(hubert), rate)
            out[key] = arr
        return out, bool(dur_pred)

    # ----- synthesis ---------------------------------------------------------------------------
    def vocode(
        self,
        units: Units,
        speaker: Union[int, str, None] = None,
        style: Union[int, str, None] = None,
        dur_pred: Optional[bool] = None,
    ) -> np.ndarray:
        """A unit string ("[Hu1][Pi3]..."), a {"hubert", "pitch", "style"} dict (arrays, lists or
        space-separated strings) or a HuBERT unit array -> float32 audio at cfg.sampling_rate.

        `speaker`/`style`: index or name (speakers.txt / styles.txt); default the reference's 2 / 8.
        `dur_pred`: default on when the vocoder has a duration predictor (off, as the reference does,
        when the pitch stream is not at the HuBERT length)."""
        return self.vocode_batch([units], speaker, style, dur_pred)[0]

    def vocode_batch(
        self, items: Sequence[Units], speaker=None, style=None, dur_pred: Optional[bool] = None
    ) -> list[np.ndarray]:
        """Several inputs in padded batches of up to max_batch (similar lengths together); `speaker`
        and `style` are one value or one per item. Returns one audio array per item, in order."""
        if isinstance(items, (str, dict)) or len(items) == 0:
            raise ValueError("vocode_batch expects a non-empty list of inputs")
        n = len(items)
        speakers = list(speaker) if isinstance(speaker, (list, tuple)) else [speaker] * n
        styles = list(style) if isinstance(style, (list, tuple)) else [style] * n
        if len(speakers) != n or len(styles) != n:
            raise ValueError(f"{n} inputs but {len(speakers)} speakers and {len(styles)} styles")
        cfg = self.cfg
        spk = [
            self._index(s, self.speakers, cfg.num_speakers, "speaker", DEFAULT_SPEAKER) if cfg.multispkr else 0
            for s in speakers
        ]
        if not cfg.multistyle and any(s is not None for s in styles):
            raise ValueError(
                "this vocoder has no global styles (multistyle is off); EXPRESSIVE vocoders take "
                "the style from [St..] units, so call without style="
            )
        gst = [
            self._index(s, self.styles, cfg.num_styles, "style", DEFAULT_STYLE) if cfg.multistyle else 0 for s in styles
        ]
        prepared = [self._streams(it, dur_pred) for it in items]
        # durations first (one bucketed pass per group), then repeat every stream on the host
        frames: list[dict] = [None] * n
        needs_dur = [i for i in range(n) if prepared[i][1]]
        for group in self._groups(needs_dur, [len(prepared[i][0]["hubert"]) for i in range(n)]):
            t = half_octave_bucket(max(len(prepared[i][0]["hubert"]) for i in group), FRAME_BUCKET_MIN)
            units, lengths = self._pad([prepared[i][0]["hubert"] for i in group], t)
            dur = np.asarray(self._durations(self.params, units, lengths))
            for row, i in enumerate(group):
                s = prepared[i][0]
                d = dur[row, : len(s["hubert"])]
                frames[i] = {k: None if v is None else np.repeat(v, d) for k, v in s.items()}
        for i in range(n):
            if frames[i] is None:
                frames[i] = prepared[i][0]
        out: list[np.ndarray] = [None] * n
        for group in self._groups(list(range(n)), [len(f["hubert"]) for f in frames]):
            t = half_octave_bucket(max(len(frames[i]["hubert"]) for i in group), FRAME_BUCKET_MIN)
            units, lengths = self._pad([frames[i]["hubert"] for i in group], t)
            pitch = self._pad([frames[i]["pitch"] for i in group], t)[0] if cfg.num_f0_tokens else None
            sty = self._pad([frames[i]["style"] for i in group], t)[0] if cfg.num_style_tokens else None
            b = units.shape[0]
            spk_b = np.zeros(b, np.int32)
            gst_b = np.zeros(b, np.int32)
            spk_b[: len(group)] = [spk[i] for i in group]
            gst_b[: len(group)] = [gst[i] for i in group]
            audio, valid = self._generate(self.params, units, lengths, pitch, sty, spk_b, gst_b)
            audio, valid = np.asarray(audio), np.asarray(valid)
            for row, i in enumerate(group):
                out[i] = audio[row, : valid[row]].astype(np.float32)
        return out

    def _groups(self, idx: list[int], lengths: list[int]) -> list[list[int]]:
        """Indices sorted by length, cut into groups of at most max_batch."""
        idx = sorted(idx, key=lambda i: lengths[i])
        return [idx[j : j + self.max_batch] for j in range(0, len(idx), self.max_batch)]

    def _pad(self, rows: list[np.ndarray], t: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows -> [batch bucket, t] int32 (zeros after each row and in the padding rows) and lengths."""
        b = pow2_bucket(len(rows))
        out = np.zeros((b, t), np.int32)
        lengths = np.zeros(b, np.int32)
        for r, a in enumerate(rows):
            out[r, : len(a)] = a
            lengths[r] = len(a)
        return out, lengths


def _check_range(arr: np.ndarray, n: int, name: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"{name} unit {bad} out of range: this vocoder's {name} embedding has ids 0..{n - 1}")
