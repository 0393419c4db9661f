"""Build the ablation's corpus: topic stories -> espeak-ng speech with exact word times -> units ->
a prepared corpus with three disjoint training pools, and a spoken Topic-StoryCloze folder.

    <out>/stories.json     the pools (story texts, topics, voices): what every later stage reads
    <out>/audio/           the training recordings (16 kHz PCM), inputs of `prepare`
    <out>/quantizer/       log-mel k-means units trained on this corpus' training audio
    <out>/corpus/          the prepared corpus (train/ and eval/ shards, tokenizer.model, quantizer)
    <out>/cloze/           <n>_context / <n>_correct / <n>_incorrect .wav + .txt (held-out stories)
    <out>/corpus.done      written last: the stage is complete

Pools: text-only stories become text examples; speech-only stories become speech examples (audio,
no transcript); aligned stories become aligned examples (audio + word times), used three ways by the
runs (data.aligned_as). Held-out stories make the cloze items and are never trained on.

Speech: each story is read word by word by espeak-ng in one of four voice/rate settings (as the demo
corpus is), with seeded pauses between words and longer ones between sentences, so every word's
start time is exact by construction. Each (word, voice, rate) is synthesised once and reused.
Deterministic for a given seed and package versions.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.interleaving_ablation.stories import cloze_items, make_stories  # noqa: E402
from spiritlm_jax.io import save_component  # noqa: E402
from spiritlm_jax.speech.audio import SAMPLE_RATE  # noqa: E402
from spiritlm_jax.speech.features import FeatureConfig, LibrosaFeatures  # noqa: E402
from spiritlm_jax.speech.kmeans import kmeans_config, train_kmeans  # noqa: E402
from spiritlm_jax.speech.quantizer import KMEANS_FILE, KMEANS_SPEC  # noqa: E402
from tools.build_demo_corpus import (  # noqa: E402
    VOICES,
    espeak_word,
    prepare_examples,
    train_sentencepiece,
    write_splits,
)

WORD_PAUSE_S = (0.06, 0.2)
SENTENCE_PAUSE_S = (0.25, 0.45)
EVAL_SHARE = 40  # every 40th training example of each kind goes to the LM's held-out loss split


@dataclass(frozen=True)
class CorpusConfig:
    n_text: int = 2000  # text-only stories
    n_speech: int = 2000  # speech-only stories
    n_aligned: int = 2000  # aligned stories (audio + word times)
    n_cloze: int = 360  # held-out stories, one cloze item each (30 per topic)
    k: int = 100  # k-means units
    vocab: int = 512  # SentencePiece pieces
    kmeans_frames: int = 200_000  # frames sampled to fit k-means
    kmeans_steps: int = 300
    voices: int = len(VOICES)  # how many of the espeak-ng voice/rate settings are used in turn
    seed: int = 0


class Synth:
    """Word-by-word espeak-ng reading with a cache per (word, voice, rate)."""

    def __init__(self, tmp: Path):
        self.tmp, self.cache = tmp, {}

    def word(self, w: str, voice: str, rate: int) -> np.ndarray:
        key = (w, voice, rate)
        if key not in self.cache:
            self.cache[key] = espeak_word(w, voice, rate, self.tmp)
        return self.cache[key]

    def read(self, sentences, voice: str, rate: int, rng: np.random.Generator):
        """(audio, [[word, start_s, end_s], ...]): the sentences read with exact word times."""
        pieces, words, t = [], [], 0.0
        for si, sentence in enumerate(sentences):
            for wi, w in enumerate(sentence.split()):
                gap = SENTENCE_PAUSE_S if (wi == 0 and si > 0) else WORD_PAUSE_S
                pause = np.zeros(int(round(rng.uniform(*gap) * SAMPLE_RATE)), np.float32)
                a = self.word(w, voice, rate)
                pieces += [pause, a]
                t += len(pause) / SAMPLE_RATE
                words.append([w, round(t, 4), round(t + len(a) / SAMPLE_RATE, 4)])
                t += len(a) / SAMPLE_RATE
        pieces.append(np.zeros(int(WORD_PAUSE_S[1] * SAMPLE_RATE), np.float32))
        audio = np.concatenate(pieces)
        return (0.5 * audio / max(float(np.abs(audio).max()), 1e-6)).astype(np.float32), words


def _pools(cfg: CorpusConfig) -> dict[str, list]:
    n = cfg.n_text + cfg.n_speech + cfg.n_aligned + cfg.n_cloze
    stories = make_stories(n, cfg.seed)
    order = np.random.default_rng(cfg.seed + 1).permutation(n)
    cuts = np.cumsum([cfg.n_text, cfg.n_speech, cfg.n_aligned])
    parts = np.split(order, cuts)
    return {name: [stories[i] for i in sorted(idx)] for name, idx in zip(("text", "speech", "aligned", "cloze"), parts)}


def _voice(cfg: CorpusConfig, i: int) -> tuple[str, int]:
    return VOICES[i % cfg.voices]


def build_corpus(out: str | Path, cfg: CorpusConfig = CorpusConfig(), progress: bool = True) -> dict:
    """Build every output of the module docstring into `out`; returns the summary in corpus.json.
    A complete build (corpus.done) is returned as is; an incomplete one is rebuilt from scratch."""
    import soundfile as sf
    from tqdm import tqdm

    out = Path(out)
    done = out / "corpus.done"
    if done.is_file():
        return json.loads(done.read_text())
    for name in ("audio", "quantizer", "corpus", "cloze", "stories.json"):  # only this builder's outputs
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    pools = _pools(cfg)
    rng = np.random.default_rng(cfg.seed + 2)
    record = {"config": asdict(cfg), "pools": {}}
    with tempfile.TemporaryDirectory() as tmp_s:
        synth = Synth(Path(tmp_s))
        manifest = []
        (out / "audio").mkdir()
        jobs = [(kind, i, s) for kind in ("speech", "aligned") for i, s in enumerate(pools[kind])]
        for kind, i, story in tqdm(jobs, desc="espeak-ng (training pools)", disable=not progress):
            voice, rate = _voice(cfg, i)
            audio, words = synth.read(story.sentences, voice, rate, rng)
            path = out / "audio" / f"{kind}-{i:05d}.wav"
            sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
            entry = {"audio": str(path), "id": f"{kind}-{i:05d}", "voice": f"{voice}-{rate}"}
            manifest.append({**entry, "words": words} if kind == "aligned" else entry)
        (out / "cloze").mkdir()
        items = cloze_items(pools["cloze"], cfg.seed + 3)
        for it in tqdm(items, desc="espeak-ng (cloze items)", disable=not progress):
            voice, rate = _voice(cfg, it.id)
            for role, sentences in (("context", it.context), ("correct", (it.right,)), ("incorrect", (it.wrong,))):
                audio, _ = synth.read(sentences, voice, rate, rng)
                sf.write(out / "cloze" / f"{it.id}_{role}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
                (out / "cloze" / f"{it.id}_{role}.txt").write_text(" ".join(sentences) + "\n")

        # units: k-means over log-mel frames sampled from the training audio
        feats = LibrosaFeatures(FeatureConfig())
        per_file = max(1, cfg.kmeans_frames // max(1, len(manifest)))
        frames = []
        for e in tqdm(manifest, desc="log-mel", disable=not progress):
            x = feats(sf.read(e["audio"], dtype="float32")[0])
            frames.append(x[rng.choice(len(x), min(per_file, len(x)), replace=False)])
        res = train_kmeans(np.concatenate(frames), cfg.k, seed=cfg.seed, steps=cfg.kmeans_steps, progress=progress)
        training = {"seed": cfg.seed, "steps": cfg.kmeans_steps, "files": len(manifest), "source": "ablation audio"}
        save_component(
            out / "quantizer",
            KMEANS_SPEC,
            {"centroids": res.centroids},
            {KMEANS_FILE: kmeans_config(res, feats.params(), training)},
        )
        texts = [s.text for kind in ("text", "speech", "aligned") for s in pools[kind]]
        sp_model = train_sentencepiece(texts, cfg.vocab, out / "tokenizer.model")
        tmp = Path(tmp_s)
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in manifest))
        (tmp / "text.txt").write_text("".join(s.text + "\n" for s in pools["text"]))
        summary, examples = prepare_examples(
            tmp / "manifest.jsonl", tmp / "text.txt", out / "quantizer", sp_model, tmp / "prepared", progress
        )
        corpus = out / "corpus"
        counts = write_splits(corpus, examples, EVAL_SHARE)
        shutil.copy(sp_model, corpus / "tokenizer.model")
        shutil.copytree(out / "quantizer", corpus / "quantizer")
    for kind in ("text", "speech", "aligned", "cloze"):
        record["pools"][kind] = [{"topic": s.topic, "text": s.text} for s in pools[kind]]
    (out / "stories.json").write_text(json.dumps(record, indent=1) + "\n")
    result = {
        "counts": counts,
        "cloze_items": len(items),
        "hours": summary["hours"],
        "tokens": summary["tokens"],
        "words": summary["words"],
        "kmeans": {"k": cfg.k, "inertia_per_frame": round(res.inertia_per_row, 4), "frames": res.n_rows},
        "synthesised_words": len(synth.cache),
    }
    (out / "corpus" / "corpus.json").write_text(json.dumps(result, indent=2) + "\n")
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result
