"""Train the demo corpus' vocoder (spiritlm_jax/data/demo/vocoder/) on CPU, reproducibly.

    apt-get install asterisk-core-sounds-en-wav
    python tools/build_demo_vocoder.py [--work runs/demo_vocoder] [--steps 3400] [--gan-start 3000]
    python tools/build_demo_vocoder.py --measure-only      # the numbers and pictures of docs/vocoder_training.md

The demo corpus' speech-only examples are the Asterisk prompts (one voice); their ids name the wav
files, so the recordings of the corpus' train split train the vocoder and those of its eval split are
held out. Units: the demo's log-mel k-means tokenizer (mel:demo), recomputed from the audio at the
start (the same units the corpus holds). The run is an ordinary `python -m spiritlm_jax.train_vocoder`
run (resumable: rerun the same command after an interruption); its vocoder/ is copied into the
package. Seeds are fixed (init, segment sampling); on one CPU backend the run is deterministic.

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


def config(work: Path, steps: int, gan_start: int) -> VocoderTrainConfig:
    train, held = manifests(work)
    return VocoderTrainConfig(
        data=VocoderDataConfig(manifest=(str(train),), eval_manifest=(str(held),), tokenizer="mel:demo", eval_items=4),
        optim=VocoderOptimConfig(lr=5e-4),
        loss=LossConfig(gan_start=gan_start),
        checkpoint=VocoderCheckpointConfig(every=500),
        steps=steps,
        log_every=50,
        eval_every=1000,
        out_dir=str(work / "run"),
    )


def train(work: Path, steps: int, gan_start: int) -> None:
    from spiritlm_jax.vocoder_training.loop import run

    cfg = config(work, steps, gan_start)
    t = time.time()
    run(cfg)
    print(f"trained in {time.time() - t:.0f} s", flush=True)
    if SHIPPED.exists():
        shutil.rmtree(SHIPPED)
    shutil.copytree(Path(cfg.out_dir) / "vocoder", SHIPPED)
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    print(f"shipped {SHIPPED} ({size / 1e6:.2f} MB)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "runs" / "demo_vocoder"))
    ap.add_argument("--steps", type=int, default=3400)
    ap.add_argument("--gan-start", type=int, default=3000, help="mel-only steps before the discriminators join")
    ap.add_argument("--measure-only", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if not args.measure_only:
        train(work, args.steps, args.gan_start)
    from tools.demo_vocoder_measure import measure

    measure(work, SHIPPED, DOCS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
