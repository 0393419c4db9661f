"""Build the embedded demo corpus (spiritlm_jax/data/demo/) from openly licensed offline sources.

    apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en espeak-ng
    python tools/build_demo_corpus.py [--out spiritlm_jax/data/demo] [--max-aligned 400]

- speech-only: the Asterisk English prompts (Allison Smith, CC-BY-SA-3.0), 8 kHz, resampled to 16 kHz.
- aligned speech+text: the prompts' transcripts synthesised word by word with espeak-ng (GPL-3,
  output unrestricted) and joined with fixed 80 ms pauses, so every word's start/end time is exact.
- text-only: the transcripts plus tests/data/english.txt (written for this project, MIT).
- units: k-means (K=100) over 25 Hz log-mel frames of all the audio, trained here (NOT HuBERT: no
  pretrained HuBERT is available offline). Text: a 512-piece SentencePiece BPE model trained here.
Deterministic: fixed seeds, sorted inputs. Every 20th item of each kind goes to the eval split.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiritlm_jax.data.kmeans import assign, save_quantizer, train_kmeans  # noqa: E402
from spiritlm_jax.data.sources import write_jsonl  # noqa: E402
from spiritlm_jax.speech.audio import load_audio  # noqa: E402
from spiritlm_jax.speech.features import HOP, SAMPLE_RATE, log_mel  # noqa: E402

TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOUNDS = Path("/usr/share/asterisk/sounds/en")
PAUSE_S = 0.08


def read_transcripts() -> list[tuple[str, str]]:
    if not TRANSCRIPTS.is_file():
        raise FileNotFoundError(f"{TRANSCRIPTS} missing: apt-get install asterisk-core-sounds-en")
    out = []
    for line in gzip.open(TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        if ":" not in line or line.startswith(";"):
            continue
        name, text = line.split(":", 1)
        text = re.sub(r"\(.*?\)|\[.*?\]", "", text).strip()
        text = re.sub(r"\s+", " ", text)
        if (SOUNDS / f"{name.strip()}.wav").is_file() and len(text.split()) >= 2:
            out.append((name.strip(), text))
    return sorted(out)


def espeak_word(word: str, tmp: Path) -> np.ndarray:
    wav = tmp / "w.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(wav), word], check=True,
                   capture_output=True)
    import librosa

    audio = load_audio(wav)
    trimmed, _ = librosa.effects.trim(audio, top_db=35)
    return trimmed if len(trimmed) else audio


def synth_aligned(text: str, tmp: Path) -> tuple[np.ndarray, list[list]]:
    words = [w for w in re.findall(r"[A-Za-z0-9']+", text)]
    pieces, times, t = [], [], PAUSE_S
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    pieces.append(pause)
    for w in words:
        a = espeak_word(w, tmp)
        times.append([w, round(t, 4), round(t + len(a) / SAMPLE_RATE, 4)])
        pieces += [a, pause]
        t += len(a) / SAMPLE_RATE + PAUSE_S
    return np.concatenate(pieces), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "spiritlm_jax" / "data" / "demo"))
    ap.add_argument("--max-aligned", type=int, default=400)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=512)
    args = ap.parse_args()
    from tqdm import tqdm

    out = Path(args.out)
    items = read_transcripts()
    print(f"{len(items)} transcribed prompts")
    speech_audio = {name: load_audio(SOUNDS / f"{name}.wav") for name, _ in tqdm(items, desc="load prompts")}
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(items), min(args.max_aligned, len(items)), replace=False))
    aligned_audio, aligned_words = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in tqdm(chosen, desc="espeak-ng"):
            name, text = items[i]
            aligned_audio[name], aligned_words[name] = synth_aligned(text, Path(tmp))

    feats = {("s", n): log_mel(a) for n, a in speech_audio.items()}
    feats.update({("a", n): log_mel(a) for n, a in aligned_audio.items()})
    x = np.concatenate(list(feats.values()))
    centroids, inertia = train_kmeans(x, args.k, seed=0, progress=True)
    units = {key: assign(f, centroids).tolist() for key, f in feats.items()}

    texts = [t for _, t in items]
    own = [ln.strip() for ln in (ROOT / "tests" / "data" / "english.txt").read_text().splitlines() if ln.strip()]
    own = list(dict.fromkeys(own))
    examples = {
        "text": [{"kind": "text", "id": n, "text": t, "source": "asterisk-transcript"} for n, t in items]
        + [{"kind": "text", "id": f"own-{i}", "text": t, "source": "spiritlm_jax"} for i, t in enumerate(own)],
        "speech": [{"kind": "speech", "id": n, "hubert": units[("s", n)], "source": "asterisk"} for n, _ in items],
        "aligned": [{"kind": "aligned", "id": n, "text": " ".join(w[0] for w in aligned_words[n]),
                     "words": aligned_words[n], "hubert": units[("a", n)], "source": "espeak-ng"}
                    for n in sorted(aligned_words)],
    }
    if out.exists():
        shutil.rmtree(out)
    counts = {}
    for kind, exs in examples.items():
        train = [e for i, e in enumerate(exs) if i % 20 != 19]
        ev = [e for i, e in enumerate(exs) if i % 20 == 19]
        write_jsonl(out / "train" / f"{kind}.jsonl.gz", train)
        write_jsonl(out / "eval" / f"{kind}.jsonl.gz", ev)
        counts[kind] = {"train": len(train), "eval": len(ev)}

    import sentencepiece as spm

    corpus_txt = out / "_sp_text.txt"
    corpus_txt.write_text("\n".join(texts + own) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus_txt), model_prefix=str(out / "tokenizer"), vocab_size=args.vocab, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    corpus_txt.unlink()
    (out / "tokenizer.vocab").unlink()
    save_quantizer(out / "quantizer", centroids, {"features": "log_mel", "n_mels": int(x.shape[1]), "hop": HOP,
                                                  "sample_rate": SAMPLE_RATE, "inertia_per_frame": inertia / len(x)})
    hours = {"speech": sum(len(a) for a in speech_audio.values()) / SAMPLE_RATE / 3600,
             "aligned": sum(len(a) for a in aligned_audio.values()) / SAMPLE_RATE / 3600}
    summary = {"counts": counts, "hours": hours, "units": f"log-mel k-means, K={args.k}, 25 Hz",
               "layout": {"text_vocab_size": args.vocab, "expressive": False}}
    (out / "corpus.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
