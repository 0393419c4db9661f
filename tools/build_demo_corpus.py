"""Build the embedded demo corpus (spiritlm_jax/data/demo/) from openly licensed offline sources.

    apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en espeak-ng
    python tools/build_demo_corpus.py [--out spiritlm_jax/data/demo] [--max-aligned 400] [--k 100] [--vocab 512]

- speech-only: the Asterisk English prompts (voice: Allison Smith; CC-BY-SA-3.0), 8 kHz, resampled to
  16 kHz by the audio loader. Their transcripts (core-sounds-en.txt) are not time-aligned, so the
  recordings are speech-only examples and the transcripts text-only examples.
- aligned speech+text: transcripts synthesised word by word with espeak-ng (two of four voice/rate
  settings per prompt),
  joined with seeded pauses of 60-200 ms, so every word's start/end time is exact by construction. The
  synthetic audio is band-limited through 8 kHz like the prompts, so both kinds share one unit space.
- text-only: the transcripts plus tests/data/english.txt (written for this project, MIT).
- units: k-means (K=100) over 25 Hz log-mel frames (spiritlm_jax.speech.features defaults) of all the
  audio, trained here: NOT HuBERT (no pretrained HuBERT is available offline).
- text: a 512-piece SentencePiece BPE model trained on the corpus text.
The examples go through `spiritlm_jax.data.prepare` (the same path as a real corpus), then every 20th
example of each kind goes to the eval split. Deterministic: sorted inputs, fixed seeds, one
SentencePiece thread, gzip without timestamps; the same packages give the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
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

from spiritlm_jax.data.prepare import PrepareConfig, prepare  # noqa: E402
from spiritlm_jax.data.sources import KINDS, read_examples  # noqa: E402
from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.audio import SAMPLE_RATE, load_audio  # noqa: E402
from spiritlm_jax.speech.features import FeatureConfig, LibrosaFeatures  # noqa: E402
from spiritlm_jax.speech.kmeans import kmeans_config, train_kmeans  # noqa: E402
from spiritlm_jax.speech.quantizer import KMEANS_FILE, KMEANS_SPEC  # noqa: E402

TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOUNDS = Path("/usr/share/asterisk/sounds/en")
OWN_TEXT = ROOT / "tests" / "data" / "english.txt"
VOICES = (("en-us", 165), ("en", 150), ("en-us", 185), ("en-gb-x-rp", 160))  # (espeak-ng voice, words/min)
PAUSE_S = (0.06, 0.2)
EVAL_EVERY = 20
OUTPUTS = ("train", "eval", "quantizer", "tokenizer.model", "corpus.json")  # what a rebuild replaces


def clean_transcript(text: str) -> str:
    text = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", text)
    return re.sub(r"\s+", " ", text).strip()


def read_prompts(transcripts: Path = TRANSCRIPTS, sounds: Path = SOUNDS) -> list[tuple[str, Path, str]]:
    """(name, wav path, transcript) of every prompt with a wav and a transcript of >= 2 words, sorted."""
    if not transcripts.is_file():
        raise FileNotFoundError(f"{transcripts} missing: apt-get install asterisk-core-sounds-en")
    if not sounds.is_dir():
        raise FileNotFoundError(f"{sounds} missing: apt-get install asterisk-core-sounds-en-wav")
    out = {}
    with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if ":" not in line or line.startswith(";"):
                continue
            name, text = (s.strip() for s in line.split(":", 1))
            text = clean_transcript(text)
            wav = sounds / f"{name}.wav"
            if wav.is_file() and len(text.split()) >= 2:
                out[name] = (name, wav, text)
    return [out[k] for k in sorted(out)]


def espeak_word(word: str, voice: str, speed: int, tmp: Path) -> np.ndarray:
    """One word synthesised by espeak-ng, band-limited through 8 kHz, silence trimmed, at 16 kHz."""
    import librosa

    wav = tmp / "word.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), word], check=True, capture_output=True)
    audio = load_audio(wav, sample_rate=8000)  # the prompts' telephone band
    audio = librosa.resample(audio, orig_sr=8000, target_sr=SAMPLE_RATE, res_type="soxr_hq").astype(np.float32)
    trimmed, _ = librosa.effects.trim(audio, top_db=35)
    return trimmed if len(trimmed) else audio


def synth_aligned(text: str, voice: str, speed: int, rng: np.random.Generator, tmp: Path):
    """(16 kHz audio, [[word, start_s, end_s], ...]) with exact times: words concatenated with pauses."""
    words = re.findall(r"[A-Za-z0-9']+", text)
    pieces, times = [], []
    t = 0.0
    for w in words:
        pause = np.zeros(int(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE)), np.float32)
        pieces.append(pause)
        t += len(pause) / SAMPLE_RATE
        a = espeak_word(w, voice, speed, tmp)
        times.append([w, round(t, 4), round(t + len(a) / SAMPLE_RATE, 4)])
        pieces.append(a)
        t += len(a) / SAMPLE_RATE
    pieces.append(np.zeros(int(PAUSE_S[1] * SAMPLE_RATE), np.float32))
    audio = np.concatenate(pieces)
    return 0.5 * audio / max(float(np.abs(audio).max()), 1e-6), times


def write_jsonl_gz(path: Path, examples: list[dict]) -> None:
    """Deterministic .jsonl.gz (no timestamp or name in the gzip header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as g:
        for ex in examples:
            g.write((json.dumps(ex, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8"))
    path.write_bytes(buf.getvalue())


def train_sentencepiece(lines: list[str], vocab: int, path: Path) -> Path:
    """SentencePiece BPE model written to `path`; trained from memory so no temp path ends up in the
    model's trainer spec (byte-identical rebuilds)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab,
        model_type="bpe",
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        character_coverage=1.0,
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
        byte_fallback=False,
        split_digits=True,
    )
    path.write_bytes(model.getvalue())
    return path


def prepare_examples(
    manifest: Path, text: Path, quantizer: Path, sp_model: Path, prepared: Path, progress: bool = True
) -> tuple[dict, dict[str, list[dict]]]:
    """`prepare` (JSONL shards) of a manifest and a text file with a k-means quantizer: (summary,
    {kind: examples in shard order}). Any rejected input is an error: a built corpus has none. The
    examples' `audio` paths are dropped: the built corpus ships without its recordings (the synthetic
    ones live in a temporary folder), and the paths would make two builds differ."""
    summary = prepare(
        PrepareConfig(
            out=str(prepared),
            manifest=(str(manifest),),
            text=(str(text),),
            tokenizer=f"mel:{quantizer}",
            sp_model=str(sp_model),
            format="jsonl",
            progress=progress,
        )
    )
    if summary["bad_files"]:
        raise RuntimeError(f"corpus inputs rejected: {(prepared / 'bad_files.jsonl').read_text()}")
    examples = {k: [ex for p in sorted((prepared / k).glob("*.jsonl")) for ex in read_examples(p)] for k in KINDS}
    return summary, {k: [{f: v for f, v in ex.items() if f != "audio"} for ex in exs] for k, exs in examples.items()}


def write_splits(out: Path, examples: dict[str, list[dict]], eval_every: int) -> dict:
    """<out>/train and <out>/eval shards per kind (every `eval_every`-th example held out); the counts."""
    counts = {}
    for kind, exs in examples.items():
        train = [e for i, e in enumerate(exs) if i % eval_every != eval_every - 1]
        ev = [e for i, e in enumerate(exs) if i % eval_every == eval_every - 1]
        write_jsonl_gz(out / "train" / f"{kind}.jsonl.gz", train)
        write_jsonl_gz(out / "eval" / f"{kind}.jsonl.gz", ev)
        counts[kind] = {"train": len(train), "eval": len(ev)}
    return counts


def build(
    out: Path,
    prompts: list[tuple[str, Path, str]],
    own_text: list[str],
    max_aligned: int = 400,
    k: int = 100,
    vocab: int = 512,
    seed: int = 0,
    kmeans_steps: int = 300,
    voices_per_prompt: int = 2,
    progress: bool = True,
) -> dict:
    """Build the corpus into `out` (replacing its OUTPUTS) and return corpus.json's content."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(prompts), min(max_aligned, len(prompts)), replace=False).tolist())
    feats = LibrosaFeatures(FeatureConfig())  # the defaults: what MelUnitTokenizer rebuilds from kmeans.yaml
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        manifest = []
        for name, wav, text in prompts:
            manifest.append({"audio": str(wav), "text": text, "id": name, "source": "asterisk-core-sounds-en"})
        import soundfile as sf

        (tmp / "synth").mkdir()
        jobs = [
            (i, VOICES[(n * voices_per_prompt + j) % len(VOICES)])
            for n, i in enumerate(chosen)
            for j in range(voices_per_prompt)
        ]
        for i, (voice, speed) in tqdm(jobs, desc="espeak-ng", disable=not progress):
            name, _, text = prompts[i]
            audio, words = synth_aligned(text, voice, speed, rng, tmp)
            path = tmp / "synth" / f"{len(manifest):05d}.wav"
            sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
            manifest.append(
                {"audio": str(path), "words": words, "id": f"espeak-{voice}-{speed}/{name}", "source": "espeak-ng"}
            )
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in manifest))
        texts = list(dict.fromkeys([t for _, _, t in prompts] + own_text))
        (tmp / "demo_text.txt").write_text("\n".join(texts) + "\n")

        # units: k-means over the log-mel frames of all the audio
        x = np.concatenate(
            [feats(load_audio(e["audio"])) for e in tqdm(manifest, desc="log-mel", disable=not progress)]
        )
        res = train_kmeans(x, k, seed=seed, steps=kmeans_steps, batch_size=min(4096, len(x)), progress=progress)
        for name in OUTPUTS:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        training = {"seed": seed, "steps": kmeans_steps, "files": len(manifest), "source": "demo corpus audio"}
        save_component(
            out / "quantizer",
            KMEANS_SPEC,
            {"centroids": res.centroids},
            {KMEANS_FILE: kmeans_config(res, feats.params(), training)},
        )
        sp_model = train_sentencepiece(texts, vocab, out / "tokenizer.model")

        # examples through the preparation path (same tokenizer a user would apply)
        summary, examples = prepare_examples(
            tmp / "manifest.jsonl", tmp / "demo_text.txt", out / "quantizer", sp_model, tmp / "prepared", progress
        )
        for ex in examples["text"]:  # ids: file line numbers
            ex["source"] = "asterisk-transcript" if ex["text"] in {t for _, _, t in prompts} else "spiritlm_jax"
        counts = write_splits(out, examples, EVAL_EVERY)
    corpus = {
        "counts": counts,
        "hours": summary["hours"],
        "tokens": summary["tokens"],
        "tokens_note": summary["tokens_note"],
        "words": summary["words"],
        "units": f"log-mel k-means, K={k}, 25 Hz (NOT HuBERT units); quantizer/",
        "layout": {"text_vocab_size": vocab, "expressive": False},
        "sources": {
            "speech": "Debian asterisk-core-sounds-en-wav (Allison Smith), CC-BY-SA-3.0",
            "aligned": "espeak-ng synthesis of the Asterisk transcripts, word times exact",
            "text": "Asterisk transcripts (CC-BY-SA-3.0) + tests/data/english.txt (MIT, written for this project)",
        },
        "kmeans": {"k": k, "seed": seed, "inertia_per_frame": round(res.inertia_per_row, 4), "frames": res.n_rows},
    }
    (out / "corpus.json").write_text(json.dumps(corpus, indent=2) + "\n")
    return corpus


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "spiritlm_jax" / "data" / "demo"))
    ap.add_argument("--max-aligned", type=int, default=400, help="prompts also synthesised with word times")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--voices-per-prompt", type=int, default=2, help="espeak-ng voice/rate settings per prompt")
    args = ap.parse_args(argv)
    prompts = read_prompts()
    own = [ln.strip() for ln in OWN_TEXT.read_text().splitlines() if ln.strip()]
    print(f"{len(prompts)} transcribed prompts, {len(own)} own text lines")
    corpus = build(
        Path(args.out), prompts, own, args.max_aligned, args.k, args.vocab, voices_per_prompt=args.voices_per_prompt
    )
    print(json.dumps(corpus, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
