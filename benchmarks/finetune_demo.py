"""Few-shot prompting vs LoRA vs full fine-tuning on the demo corpus: ASR WER and TTS unit error rate.

    python benchmarks/finetune_demo.py prepare --out bench/ft            # items, shots, audio, pairs
    python -m spiritlm_jax.evaluate fewshot --task asr --checkpoint runs/demo --items bench/ft/asr_items.jsonl \
        --shots-from bench/ft/asr_shots.jsonl --shots 3 --max-new-tokens 32 --out bench/ft/fewshot_asr
    python -m spiritlm_jax.finetune base=runs/demo data.train=bench/ft/pairs_train.jsonl lora.rank=8 ... out_dir=A
    python -m spiritlm_jax.finetune base=runs/demo data.train=bench/ft/pairs_train.jsonl lora.rank=0 ... out_dir=B
    python benchmarks/finetune_demo.py score --out bench/ft --base runs/demo --lora A --full B

Held-out items: the demo corpus' aligned eval examples short enough that the few-shot prompts
(3 shots) plus the answer fit the tiny model's 256-token context (ASR: those `evaluate fewshot`
could run). Their audio is re-synthesised with the corpus' own espeak-ng pipeline
(tools/build_demo_corpus.py `synth_aligned`, the item's voice and rate), since the corpus keeps
units, not audio. ASR: every method hears that audio through the bundle's speech tokenizer;
few-shot is `evaluate fewshot` (the paper's prompt, greedy); fine-tuned runs get the pair prompt
(`generate --output-modality text` of the audio); WER is evaluation.fewshot.error_rates. TTS:
few-shot uses the paper's TTS prompt (inference.fewshot.tts_segments, the shots' corpus units);
the fine-tuned runs get the text alone; unit error rate = edit distance between the generated and
the reference deduplicated HuBERT units / reference length. 95 % intervals: 2000 bootstrap
resamples of items.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiritlm_jax.data import pairs  # noqa: E402
from spiritlm_jax.data.pipeline import DEMO_CORPUS  # noqa: E402
from spiritlm_jax.data.sources import read_examples, write_jsonl  # noqa: E402
from spiritlm_jax.tokens import merge_units, units_to_string  # noqa: E402

SHOTS, ASR_NEW, TTS_NEW, CTX = 3, 32, 80, 256


def _units(ex) -> str:
    return units_to_string(hubert=ex["hubert"])


def _text(ex) -> str:
    return " ".join(w[0] for w in ex["words"])


def prepare(out: Path) -> None:
    from spiritlm_jax.speech.vocoder import write_wav
    from tools.build_demo_corpus import synth_aligned

    out.mkdir(parents=True, exist_ok=True)
    train = read_examples(DEMO_CORPUS / "train" / "aligned.jsonl.gz")
    held = read_examples(DEMO_CORPUS / "eval" / "aligned.jsonl.gz")
    n_units = lambda ex: len(merge_units(hubert=ex["hubert"]))  # noqa: E731
    # shots: short train examples of at least 3 words, distinct texts
    cands = sorted((ex for ex in train if len(ex["words"]) >= 3), key=n_units)
    shots, seen = [], set()
    for ex in cands:
        if _text(ex) not in seen:
            shots.append(ex)
            seen.add(_text(ex))
        if len(shots) == SHOTS:
            break
    shot_tokens = sum(n_units(s) + 2 * len(s["words"]) + 12 for s in shots)
    items = [ex for ex in held if shot_tokens + n_units(ex) + ASR_NEW + 16 <= CTX]  # ASR: the query's units too
    tts_items = [ex for ex in held if shot_tokens + 2 * len(ex["words"]) + TTS_NEW + 16 <= CTX]
    audio_dir = out / "audio"
    audio_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)

    def synth(ex, name):
        voice, speed = re.match(r"espeak-(.+)-(\d+)/", ex["id"]).groups()
        with tempfile.TemporaryDirectory() as tmp:
            audio, _ = synth_aligned(_text(ex), voice, int(speed), rng, Path(tmp))
        path = audio_dir / f"{name}.wav"
        write_wav(path, audio)
        return str(path)

    asr_items = [{"id": f"item{i}", "audio": synth(ex, f"item{i}"), "text": _text(ex)} for i, ex in enumerate(items)]
    asr_shots = [{"id": f"shot{i}", "audio": synth(ex, f"shot{i}"), "text": _text(ex)} for i, ex in enumerate(shots)]
    write_jsonl(out / "asr_items.jsonl", asr_items)
    write_jsonl(out / "asr_shots.jsonl", asr_shots)
    meta = {
        "items": [{"id": a["id"], "text": a["text"], "units": _units(ex)} for a, ex in zip(asr_items, items)],
        "shots": [{"text": _text(s), "units": _units(s)} for s in shots],
        "tts_items": [{"text": _text(ex), "units": _units(ex)} for ex in tts_items],
    }
    (out / "heldout.json").write_text(json.dumps(meta, indent=1))
    train_pairs = pairs.preset_examples("asr", DEMO_CORPUS) + pairs.preset_examples("tts", DEMO_CORPUS)
    n = write_jsonl(out / "pairs_train.jsonl", train_pairs)
    print(f"shot prompt ~{shot_tokens} tokens; {len(items)} ASR / {len(tts_items)} TTS held-out items of {len(held)}")
    print(f"{len(shots)} shots, {n} training pairs -> {out}")


def _edit(a, b) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[len(b)]


def _hubert(s: str) -> list[int]:
    return [int(x) for x in re.findall(r"\[Hu(\d+)\]", s)]


def _boot(per_item_err, per_item_len, seed=0, n=2000):
    """(ratio of sums, 95 % interval) over items, bootstrap resampling items."""
    e, ln = np.asarray(per_item_err, float), np.asarray(per_item_len, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), (n, len(e)))
    stats = e[idx].sum(1) / np.maximum(ln[idx].sum(1), 1)
    return float(e.sum() / ln.sum()), (float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5)))


def _wer_items(refs, hyps):
    import jiwer

    from spiritlm_jax.evaluation.fewshot import normalize_text

    errs, lens = [], []
    for r, h in zip(refs, hyps):
        r, h = normalize_text(r), normalize_text(h)
        o = jiwer.process_words(r, h)
        errs.append(o.substitutions + o.deletions + o.insertions)
        lens.append(len(r.split()))
    return errs, lens


def _generate(lm, prompts, modality, new):
    from spiritlm_jax.inference import GenerationConfig

    outs, _ = lm.generate_batch(None, modality, GenerationConfig(max_new_tokens=new), prompts=prompts)
    return outs


def _new_ids(lm, prompts, modality, new):
    """Greedy new ids per prompt (speech: EOS ends it), forced to `modality`."""
    from spiritlm_jax.inference import GenerationConfig
    from spiritlm_jax.inference.generation_config import resolve_generation_config
    from spiritlm_jax.model.decode import generate_tokens

    gen = resolve_generation_config(GenerationConfig(max_new_tokens=new), {})
    mask = lm.allowed_tokens(modality)
    eos = gen.eos_ids(lm.tokenizer.eos_id)
    return generate_tokens(
        lm.model, lm.params, [p.ids for p in prompts], gen.sampling(new), eos_ids=eos, logit_mask=mask
    )


def score(out: Path, base: str, runs: dict[str, str]) -> None:
    from spiritlm_jax.inference import SpiritLM
    from spiritlm_jax.inference.fewshot import tts_segments
    from spiritlm_jax.tokens import Modality, Segment, build_prompt

    meta = json.loads((out / "heldout.json").read_text())
    items = [json.loads(ln) for ln in (out / "asr_items.jsonl").read_text().splitlines()]
    # few-shot ASR: evaluate fewshot's results; the items whose few-shot prompt fit the context
    lines = (out / "fewshot_asr" / "results.jsonl").read_text().splitlines()
    res = {json.loads(ln)["id"]: json.loads(ln) for ln in lines}
    items = [it for it in items if "error" not in res[it["id"]]]
    refs_text = [it["text"] for it in items]
    tts_texts = [m["text"] for m in meta["tts_items"]]
    refs_units = [_hubert(m["units"]) for m in meta["tts_items"]]
    rows = {}
    hyps = [res[it["id"]]["prediction"] for it in items]
    rows.setdefault("few-shot (3 shots)", {})["asr"] = _boot(*_wer_items(refs_text, hyps))
    # few-shot TTS on the base
    lm = SpiritLM.from_checkpoint(base)
    shots = [(s["text"], s["units"]) for s in meta["shots"]]
    prompts = [build_prompt(lm.tokenizer, tts_segments(shots, t), Modality.SPEECH) for t in tts_texts]
    gen = _new_ids(lm, prompts, "speech", TTS_NEW)
    rows["few-shot (3 shots)"]["tts"] = _tts(lm, gen, refs_units)
    for name, run in runs.items():
        lm = SpiritLM.from_checkpoint(run)
        cache = pairs.UnitCache(None, lm.speech_tokenizer.encode_string)
        asr_prompts = [
            build_prompt(lm.tokenizer, [Segment(Modality.SPEECH, cache.units(Path(it["audio"])))], Modality.TEXT)
            for it in items
        ]
        outs = _generate(lm, asr_prompts, "text", ASR_NEW)
        hyps = [o[0].content if o else "" for o in outs]
        rows.setdefault(name, {})["asr"] = _boot(*_wer_items(refs_text, hyps))
        tts_prompts = [build_prompt(lm.tokenizer, [Segment(Modality.TEXT, t)], Modality.SPEECH) for t in tts_texts]
        rows[name]["tts"] = _tts(lm, _new_ids(lm, tts_prompts, "speech", TTS_NEW), refs_units)
        print(name, "asr examples:", list(zip(refs_text[:3], hyps[:3])), file=sys.stderr)
    (out / "scores.json").write_text(json.dumps({"n_asr": len(items), "n_tts": len(tts_texts), "rows": rows}, indent=1))
    print(f"| method | ASR WER (95 % CI), {len(items)} items | TTS unit error rate (95 % CI), {len(tts_texts)} items |")
    print("|---|---|---|")
    for name, r in rows.items():
        a, t = r["asr"], r["tts"]
        print(f"| {name} | {a[0]:.3f} ({a[1][0]:.3f}–{a[1][1]:.3f}) | {t[0]:.3f} ({t[1][0]:.3f}–{t[1][1]:.3f}) |")


def _tts(lm, gen, refs_units):
    errs, lens = [], []
    for ids, ref in zip(gen, refs_units):
        units = _hubert(lm.tokenizer.decode([int(i) for i in ids]))
        dedup = [u for k, u in enumerate(units) if k == 0 or u != units[k - 1]]
        errs.append(_edit(dedup, ref))
        lens.append(len(ref))
    return _boot(errs, lens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("prepare", "score"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--base")
    ap.add_argument("--lora")
    ap.add_argument("--full")
    a = ap.parse_args(argv)
    if a.stage == "prepare":
        prepare(Path(a.out))
    else:
        score(Path(a.out), a.base, {k: v for k, v in (("LoRA r=8", a.lora), ("full", a.full)) if v})
    return 0


if __name__ == "__main__":
    sys.exit(main())
