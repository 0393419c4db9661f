"""Train the demo corpus' vocoder (spiritlm_jax/data/demo/vocoder/) on CPU, reproducibly.

    apt-get install asterisk-core-sounds-en-wav
    python tools/build_demo_vocoder.py [--work runs/demo_vocoder] [--steps 5500] [--gan-start 3000] \
        [--unit-features-from 4000]
    python tools/build_demo_vocoder.py --measure-only      # the numbers and pictures of docs/vocoder_training.md

The demo corpus' speech-only examples are the Asterisk prompts (one voice); their ids name the wav
files, so the recordings of the corpus' train split train the vocoder and those of its eval split are
held out. Units: the demo's log-mel k-means tokenizer (mel:demo), recomputed from the audio at the
start (the same units the corpus holds). The run is an ordinary `python -m spiritlm_jax.train_vocoder`
run in two stages on one run directory (resumable: rerun the same command after an interruption):
stage 1, the published HiFi-GAN losses, to step --unit-features-from; stage 2, the same run resumed
with loss.unit_features and loss.unit_consistency (STAGE2; the change is recorded in the run's
config_changes.jsonl) to --steps. Its vocoder/ is copied into the package. Seeds are fixed (init,
segment sampling); on one CPU backend the run is deterministic.

Measurement (`measure`, also run after training): on the held-out recordings, (a) log-mel L1
between the original and the resynthesis from its own units (ground-truth durations), (b) unit
re-encoding agreement (the resynthesis re-tokenized with the same tokenizer, frames whose unit equals
the input's), (c) the same for a Griffin-Lim baseline (units -> k-means centroid log-mels, de-normalised
with the training recordings' mean/std -> mel power -> STFT magnitude -> Griffin-Lim), (d) a
spectrogram picture, and the audio's duration, RMS and peak.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiritlm_jax.data.pipeline import DEMO_CORPUS  # noqa: E402
from spiritlm_jax.vocoder_training.config import (  # noqa: E402
    LossConfig,
    VocoderCheckpointConfig,
    VocoderDataConfig,
    VocoderOptimConfig,
    VocoderTrainConfig,
)

SOUNDS = Path("/usr/share/asterisk/sounds/en")
SHIPPED = DEMO_CORPUS / "vocoder"
DOCS = ROOT / "docs"


def manifests(work: Path) -> tuple[Path, Path]:
    """train.jsonl / eval.jsonl of the demo corpus' speech-only recordings (its own split)."""
    if not SOUNDS.is_dir():
        raise FileNotFoundError(f"{SOUNDS} missing: apt-get install asterisk-core-sounds-en-wav")
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for split in ("train", "eval"):
        with gzip.open(DEMO_CORPUS / split / "speech.jsonl.gz", "rt") as f:
            ids = [json.loads(line)["id"] for line in f]
        path = work / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"audio": str(SOUNDS / f"{i}.wav"), "id": i}) + "\n" for i in ids))
        out.append(path)
    return out[0], out[1]


# stage 2's weights of the L1 on the tokenizer's own frame features and of the re-tokenization cross-entropy
STAGE2 = {"unit_features": 45.0, "unit_consistency": 20.0}


def config(work: Path, steps: int, gan_start: int, stage2: bool = False) -> VocoderTrainConfig:
    train, held = manifests(work)
    return VocoderTrainConfig(
        data=VocoderDataConfig(manifest=(str(train),), eval_manifest=(str(held),), tokenizer="mel:demo", eval_items=4),
        optim=VocoderOptimConfig(lr=5e-4),
        loss=LossConfig(gan_start=gan_start, **(STAGE2 if stage2 else {})),
        checkpoint=VocoderCheckpointConfig(every=500, allow_changes=stage2),
        steps=steps,
        log_every=50,
        eval_every=1000,
        out_dir=str(work / "run"),
    )


def train(work: Path, steps: int, gan_start: int, unit_from: int) -> None:
    """Stage 1: the published HiFi-GAN losses to step `unit_from`; stage 2: the same run resumed with
    loss.unit_features and loss.unit_consistency (STAGE2, recorded in config_changes.jsonl) to `steps`."""
    from spiritlm_jax.vocoder_training.loop import run

    t = time.time()
    run(config(work, min(unit_from, steps), gan_start))
    if steps > unit_from:
        run(config(work, steps, gan_start, stage2=True))
    print(f"trained in {time.time() - t:.0f} s", flush=True)
    cfg = config(work, steps, gan_start)
    if SHIPPED.exists():
        shutil.rmtree(SHIPPED)
    shutil.copytree(Path(cfg.out_dir) / "vocoder", SHIPPED)
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    print(f"shipped {SHIPPED} ({size / 1e6:.2f} MB)", flush=True)


# ----- measurement ----------------------------------------------------------------------------------


def _log_mel(audio: np.ndarray) -> np.ndarray:
    """[frames, 80] log-mel with the training loss' settings (VocoderTrainConfig().mel)."""
    from spiritlm_jax.vocoder_training import step as vstep

    return np.asarray(vstep.log_mel(VocoderTrainConfig(), audio[None].astype(np.float32)))[0]


def _cmvn_stats(wavs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over recordings of each recording's per-band log-mel mean and (floored) std: what undoes
    the tokenizer's per-utterance CMVN on average."""
    from spiritlm_jax.speech.features import STD_FLOOR, mel_power

    means, stds = [], []
    for w in wavs:
        f = np.log(mel_power(w) + 1e-6).astype(np.float64)
        means.append(f.mean(0))
        stds.append(np.maximum(f.std(0), STD_FLOOR))
    return np.mean(means, 0), np.mean(stds, 0)


def griffin_lim(units: np.ndarray, centroids: np.ndarray, mean: np.ndarray, std: np.ndarray, seed: int = 0):
    """Units -> their centroid log-mels (de-normalised) -> mel power on a 10 ms grid (interpolated between
    the 25 Hz frame centres) -> STFT magnitude (librosa NNLS mel inversion, the tokenizer's 720-point
    frames) -> Griffin-Lim (64 iterations) -> audio of len(units) * 640 samples."""
    import librosa

    from spiritlm_jax.speech.features import HOP, SAMPLE_RATE, WINDOW

    logmel_tm = centroids[units] * std + mean  # [T, 40]
    hop = HOP // 4
    n = len(units) * HOP
    centres = HOP * np.arange(len(units)) + WINDOW / 2
    times = hop * np.arange(n // hop + 1)
    fine = np.stack([np.interp(times, centres, logmel_tm[:, b]) for b in range(logmel_tm.shape[1])], 1)
    power = np.maximum(np.exp(fine) - 1e-6, 0.0).T
    mag = librosa.feature.inverse.mel_to_stft(power, sr=SAMPLE_RATE, n_fft=WINDOW, power=2.0)
    rng = np.random.default_rng(seed)
    audio = librosa.griffinlim(
        mag, n_iter=64, hop_length=hop, win_length=WINDOW, n_fft=WINDOW, length=n, random_state=rng
    )
    return audio.astype(np.float32)


def _audio_stats(a: np.ndarray) -> dict:
    return {
        "seconds": round(len(a) / 16000, 3),
        "rms": round(float(np.sqrt(np.mean(a**2))), 4),
        "peak": round(float(np.abs(a).max()), 4),
        "clipped_fraction": float(np.mean(np.abs(a) >= 0.999)),
    }


def measure(work: Path, vocoder_dir: Path, docs: Path) -> dict:
    """The held-out numbers and pictures (module docstring); writes work/measure/*.wav and docs/*.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spiritlm_jax.speech.audio import load_audio
    from spiritlm_jax.speech.hifigan import predict_durations
    from spiritlm_jax.speech.kmeans import MelUnitTokenizer
    from spiritlm_jax.speech.vocoder import Vocoder, write_wav
    from spiritlm_jax.vocoder_training.data import dedup_runs

    train_m, held_m = manifests(work)
    tok = MelUnitTokenizer(DEMO_CORPUS / "quantizer")
    voc = Vocoder.load(vocoder_dir)
    read = lambda m: [json.loads(line)["audio"] for line in m.read_text().splitlines()]  # noqa: E731
    mean, std = _cmvn_stats([load_audio(p) for p in read(train_m)])
    out = work / "measure"
    out.mkdir(parents=True, exist_ok=True)
    rows, examples = [], []
    agree = {"vocoder": [0, 0], "griffin_lim": [0, 0]}
    dur_err, dur_n = 0.0, 0
    for path in read(held_m):
        wav = load_audio(path)
        units = tok.encode_units(wav)["hubert"]
        t = len(units)
        orig = wav[: t * 640]
        res = voc.vocode(units, dur_pred=False)
        gl = griffin_lim(units, tok.centroids, mean, std)
        row = {"id": Path(path).stem, "frames": t}
        m0 = _log_mel(orig)
        for name, a in (("vocoder", res), ("griffin_lim", gl)):
            row[f"{name}_mel_l1"] = float(np.mean(np.abs(_log_mel(a) - m0)))
            re = tok.encode_units(a)["hubert"]
            k = min(len(re), t)
            agree[name][0] += int(np.sum(re[:k] == units[:k]))
            agree[name][1] += k
            row[f"{name}_stats"] = _audio_stats(a)
        row["original_stats"] = _audio_stats(orig)
        uniq, dur, mask = dedup_runs(units[None])
        n = int(mask.sum())
        pred = np.asarray(predict_durations(voc.params, voc.cfg, uniq[:, :n], np.array([n])))[0]
        dur_err += float(np.abs(pred - dur[0, :n]).sum())
        dur_n += n
        rows.append(row)
        examples.append((row["id"], orig, res, gl))
        for name, a in (("original", orig), ("vocoder", res), ("griffin_lim", gl)):
            write_wav(out / f"{row['id'].replace('/', '_')}_{name}.wav", a)
    results = {
        "held_out_recordings": len(rows),
        "mel_l1": {k: float(np.mean([r[f"{k}_mel_l1"] for r in rows])) for k in ("vocoder", "griffin_lim")},
        "unit_agreement": {k: v[0] / max(v[1], 1) for k, v in agree.items()},
        "duration_mae_frames": dur_err / max(dur_n, 1),
        "rms": {
            k: float(np.mean([r[f"{k}_stats"]["rms"] for r in rows])) for k in ("original", "vocoder", "griffin_lim")
        },
        "peak_max": {
            k: float(max(r[f"{k}_stats"]["peak"] for r in rows)) for k in ("original", "vocoder", "griffin_lim")
        },
        "clipped_fraction_max": {
            k: float(max(r[f"{k}_stats"]["clipped_fraction"] for r in rows)) for k in ("vocoder", "griffin_lim")
        },
        "per_recording": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    # (d) spectrograms of one held-out recording
    name, orig, res, gl = max(examples, key=lambda e: len(e[1]))
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, (title, a) in zip(
        axes,
        (("original", orig), ("HiFi-GAN resynthesis (trained here)", res), ("Griffin-Lim from centroid log-mels", gl)),
    ):
        ax.imshow(_log_mel(a).T, origin="lower", aspect="auto", vmin=-11.5, vmax=2.0, cmap="magma")
        ax.set_title(f"{title}: {name}", fontsize=9)
        ax.set_ylabel("mel band")
    axes[-1].set_xlabel("frame (16 ms)")
    fig.tight_layout()
    fig.savefig(docs / "vocoder_training_spectrograms.png", dpi=80)
    plt.close(fig)

    # training curve
    recs = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    tr = [(r["step"], r["mel_l1"]) for r in recs if "mel_l1" in r]
    ev = [(r["step"], r["eval_mel_l1"]) for r in recs if "eval_mel_l1" in r]
    dl = [(r["step"], r["d_loss"]) for r in recs if "d_loss" in r and r["d_loss"] > 0]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*zip(*tr), label="train log-mel L1 (segments)")
    if ev:
        ax.plot(*zip(*ev), "o-", label="held-out log-mel L1 (whole recordings)")
    if dl:
        ax.plot(*zip(*dl), label="discriminator loss")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(docs / "vocoder_training_curve.png", dpi=80)
    plt.close(fig)
    return {k: v for k, v in results.items() if k != "per_recording"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "runs" / "demo_vocoder"))
    ap.add_argument("--steps", type=int, default=5500)
    ap.add_argument("--gan-start", type=int, default=3000, help="mel-only steps before the discriminators join")
    ap.add_argument("--unit-features-from", type=int, default=4000, help="the step where loss.unit_features joins")
    ap.add_argument("--measure-only", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if not args.measure_only:
        train(work, args.steps, args.gan_start, args.unit_features_from)
    results = measure(work, SHIPPED, DOCS)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
