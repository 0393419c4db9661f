"""STSP (speech-text sentiment preservation, docs/reference.md): prompts with a positive / negative / neutral
sentiment, in speech or text; the model continues them in speech or text; a sentiment classifier
labels each continuation; the score is the share of continuations whose label is the prompt's.

Data: the reference's release (stsp.tar.gz -> stsp_data/{data, manifest, model}).
- Evaluation manifests (e.g. manifest/emov/emov.test.jsonl), one JSON object a line, fields
  id, wav_path, emotion, sentiment, asr, split, speaker (any others are an error naming the line).
  `sentiment` is the gold label; without it `emotion` is mapped (happy/amused -> positive, angry/sad ->
  negative, neutral/default -> neutral). Speech prompts read `wav_path` (relative to the data root),
  text prompts `asr`.
- Few-shot pools (manifest/few_shot/{t2t,t2s,s2t,s2s}.jsonl): fields prompt, generation, sentiment
  (+ optional id, emotion, split, speaker). Speech fields are wav paths; as the reference, a speech
  example's prompt is the first half of its wav and its generation the second half of its wav.
- The data root defaults to `<root>/data` when the manifest lies under `<root>/manifest/` (the release
  layout), else the manifest's folder; the few-shot folder to `<root>/manifest/few_shot`.

Directions T2T, T2S, S2S, S2T; sampling as the paper: temperature 0.8, top-p 0.95, 50 new tokens for
text output, 300 for speech output (the reference code; the paper says 200-300). k-shot prompts
(k a multiple of 3) hold k/3 examples of each sentiment, drawn with the run's seed, in a shuffled
order, "\\n"-joined as the reference ("[Text]p[Speech]g\\n..."), followed by the query in the same
template. Differences from the reference, on purpose: the query is appended to the few-shot prompt
(the reference passes the few-shot prompt *instead of* the query, so its few-shot runs ignore the
item); examples are shuffled rather than grouped by sentiment (which put every positive example last).

Classifiers (`SentimentClassifier`): `predict(x) -> (sentiment, raw label)` with x a string (text) or a
16 kHz float array (audio). `HFTextClassifier` / `HFAudioClassifier` run local Hugging Face model
folders through PyTorch (the `eval` extra; imported only when one is built); their config.id2label
names are mapped to positive/negative/neutral (sentiment names, the EXPRESSO emotions above); names
that do not map are an error unless a label map names them (`LABEL_0=negative`, or `=ignore` to leave
that class out of the argmax, like the reference's emotions_to_predict).

Resume: finished items are appended to <out>/<direction>.jsonl (and prompts_{text,speech}.jsonl for
the classifiers' accuracy on the prompts) and skipped on the next run; <out>/run.json pins the
settings that change results (shots, seed, sampling), so a resumed run cannot mix them. Items that
fail before generation (missing audio, no `asr`, prompt too long) are counted as bad with the reason,
not cached, and retried on the next run; failures after generation are cached.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from spiritlm_jax.evaluation.names import checkpoint_fingerprint, inside
from spiritlm_jax.evaluation.report import JsonlCache, fmt_number
from spiritlm_jax.evaluation.stsp.classifiers import HFAudioClassifier, HFTextClassifier, classify, parse_label_map
from spiritlm_jax.evaluation.stsp.manifest import (
    DIRECTIONS,
    FEWSHOT_FILES,
    SAMPLE_RATE,
    StspItem,
    default_data_root,
    default_fewshot_dir,
    load_fewshot_pool,
    load_manifest,
)
from spiritlm_jax.evaluation.stsp.prompts import build_query, fewshot_segments
from spiritlm_jax.evaluation.stsp.report import accuracy_stats, write_stsp_report
from spiritlm_jax.inference import (
    DEFAULT_SPEAKER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    GenerationConfig,
    OutputModality,
    SpiritLM,
)
from spiritlm_jax.model.decode import check_context_length
from spiritlm_jax.speech.audio import load_audio

PINNED = ("shots", "seed", "temperature", "top_p", "text_new_tokens", "speech_new_tokens", "manifest", "checkpoint")


@dataclasses.dataclass(frozen=True)
class StspConfig:
    """The settings of an STSP run (those in PINNED are pinned in <out>/run.json)."""

    shots: int = 0  # 0, 3, 6 or 9: balanced few-shot prompts
    seed: int = 0
    batch_size: int = 8
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    text_new_tokens: int = 50
    speech_new_tokens: int = 300
    speaker: int = DEFAULT_SPEAKER
    save_audio: bool = False  # keep speech outputs as <out>/audio/<direction>/<id>.wav
    fewshot_dir: Optional[str] = None  # folder with t2t/t2s/s2t/s2s.jsonl (default: the release's)
    data_root: Optional[str] = None  # folder wav_path is relative to (default: the release's data/)
    manifest: Optional[str] = None  # the evaluation manifest (for defaults, the pin and the title)
    checkpoint: Optional[dict] = None  # what identifies the model (names.checkpoint_fingerprint), for the pin


def _check_pinned(out: Path, settings: dict) -> None:
    path = out / "run.json"
    pinned = {k: settings.get(k) for k in PINNED}
    if path.is_file():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in pinned.items() if old.get(k) != v}
        if diff:
            raise ValueError(
                f"{out} holds a run with other settings {diff} (old, new); use another --out "
                "or delete the folder to start over"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pinned, indent=2))


def _write_audio(path: Path, audio: np.ndarray, rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, np.float32), rate, subtype="FLOAT")  # exact: the classifier's input


def classify_prompts(items, form: str, clf, out: Path, progress: Callable) -> dict:
    """The classifier's accuracy on the prompts themselves (its ceiling on this data)."""
    cache = JsonlCache(out / f"prompts_{form}.jsonl")
    errors = {}
    todo = [it for it in items if it.id not in cache]
    for k, it in enumerate(todo, 1):
        try:
            if form == "text":
                if it.text is None:
                    raise ValueError("no 'asr' in the manifest")
                x = it.text
            else:
                if it.wav is None:
                    raise ValueError("no 'wav_path' in the manifest")
                x = load_audio(it.wav)
        except (ValueError, FileNotFoundError) as e:
            errors[it.id] = f"item {it.id}: {e}"
            continue
        try:
            sent, raw = classify(clf, x)
            cache.add({"id": it.id, "gold": it.sentiment, "pred": sent, "label": raw, "correct": sent == it.sentiment})
        except Exception as e:  # noqa: BLE001 - one item the classifier cannot take is counted, not fatal
            cache.add({"id": it.id, "gold": it.sentiment, "error": f"item {it.id}: {type(e).__name__}: {e}"})
        if k % 50 == 0 or k == len(todo):
            progress(f"prompts ({form}): {k}/{len(todo)} classified")
    return accuracy_stats(cache.records, items, errors)


def run_stsp(
    lm,
    items: Sequence[StspItem],
    out: str | Path,
    directions: Sequence[str] = tuple(DIRECTIONS),
    text_classifier=None,
    audio_classifier=None,
    cfg: Optional[StspConfig] = None,
    progress: Callable = print,
    **settings,
) -> dict:
    """Generate, classify and score; writes <out>/report.{json,md,png}; returns the report dict.
    `settings` are StspConfig fields overriding `cfg` (e.g. shots=3)."""
    cfg = dataclasses.replace(cfg or StspConfig(), **settings)
    out = Path(out)
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"unknown direction(s) {unknown}; use some of {list(DIRECTIONS)}")
    fewshot_dir, manifest = cfg.fewshot_dir, cfg.manifest
    if cfg.shots and fewshot_dir is None and manifest:
        fewshot_dir = default_fewshot_dir(Path(manifest))
    check_requirements(directions, text_classifier is not None, audio_classifier is not None, cfg.shots, fewshot_dir)
    if any(DIRECTIONS[d][1] == "speech" for d in directions) and lm.vocoder is None:
        raise ValueError("speech-output directions need a vocoder (give --vocoder or a checkpoint with vocoder/)")
    if any(DIRECTIONS[d][0] == "speech" for d in directions) and lm.speech_tokenizer is None:
        raise ValueError("speech-input directions need a speech tokenizer, and this checkpoint has none")
    if cfg.data_root is not None:
        root = Path(cfg.data_root)
    else:
        root = default_data_root(Path(manifest)) if manifest else Path(".")
    _check_pinned(
        out,
        dict(
            shots=cfg.shots,
            seed=cfg.seed,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            text_new_tokens=cfg.text_new_tokens,
            speech_new_tokens=cfg.speech_new_tokens,
            manifest=str(Path(manifest).resolve()) if manifest else None,
            checkpoint=cfg.checkpoint,
        ),
    )
    rate = int(getattr(getattr(lm.vocoder, "cfg", None), "sampling_rate", SAMPLE_RATE))
    ctx = lm.model.cfg.max_seq_len
    rows, shots_used = {}, {}
    for direction in directions:
        d_index = list(DIRECTIONS).index(direction)  # seeds do not depend on which directions run
        in_mod, out_mod = DIRECTIONS[direction]
        clf = text_classifier if out_mod == "text" else audio_classifier
        new_tokens = cfg.text_new_tokens if out_mod == "text" else cfg.speech_new_tokens
        gen_cfg = GenerationConfig(
            do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=new_tokens
        )
        cache = JsonlCache(out / f"{direction}.jsonl")
        todo = [it for it in items if it.id not in cache]
        prefix = []
        if cfg.shots:
            pool = load_fewshot_pool(Path(fewshot_dir) / FEWSHOT_FILES[direction])
            prefix, shots_used[direction] = fewshot_segments(lm, pool, direction, cfg.shots, cfg.seed, root)
        prompt_errors, ready = {}, []
        for it in todo:
            try:
                p = build_query(lm, it, direction, prefix)
                check_context_length(len(p.ids), new_tokens, ctx, what="the prompt")
                ready.append((it, p))
            except (ValueError, FileNotFoundError) as e:
                prompt_errors[it.id] = f"item {it.id}: {e}"
        if prompt_errors:
            first = next(iter(prompt_errors.values()))
            progress(f"{direction}: {len(prompt_errors)} item(s) cannot be prompted, e.g. {first}")
        done = 0
        batch_size = cfg.batch_size
        for b in range(0, len(ready), batch_size):
            batch = ready[b : b + batch_size]
            prompts = [p for _, p in batch]
            prompts += prompts[-1:] * (batch_size - len(batch))  # a full last batch: one compiled shape
            outs, _ = lm.generate_batch(
                None,
                OutputModality[out_mod.upper()],
                gen_cfg,
                speaker_id=cfg.speaker,
                seed=cfg.seed * 1_000_003 + d_index * 10_007 + b // batch_size,
                prompts=prompts,
            )
            for (it, _), o in zip(batch, outs):
                rec = {"id": it.id, "gold": it.sentiment}
                try:
                    if not o:
                        raise ValueError(f"the model generated no {out_mod}")
                    content = o[0].content
                    if out_mod == "text":
                        rec["generation"] = content
                    else:
                        content = np.asarray(content, np.float32)
                        rec["audio_seconds"] = round(content.size / rate, 3)
                        if rate != SAMPLE_RATE:  # the classifiers take 16 kHz
                            content = load_audio(content, input_sample_rate=rate)
                        if cfg.save_audio:
                            wav = inside(out / "audio" / direction, it.id, ".wav")  # ids from the manifest
                            _write_audio(wav, content, SAMPLE_RATE)
                            rec["audio"] = str(wav)
                    sent, raw = classify(clf, content)
                    rec.update(pred=sent, label=raw, correct=sent == it.sentiment)
                except Exception as e:  # noqa: BLE001 - one bad output is counted, not fatal
                    rec["error"] = f"item {it.id}: {type(e).__name__}: {e}"
                cache.add(rec)
            done += len(batch)
            progress(f"{direction} ({cfg.shots}-shot): {done}/{len(ready)} generated and classified")
        rows[direction] = accuracy_stats(cache.records, items, prompt_errors)
        r = rows[direction]
        progress(f"{direction}: accuracy {fmt_number(r['accuracy'])} over {r['n']} items, {r['bad']} bad")
    prompt_rows = {}
    for form, clf in (("text", text_classifier), ("speech", audio_classifier)):
        if clf is not None:
            prompt_rows[f"prompts ({form})"] = classify_prompts(items, form, clf, out, progress)
    sampling = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": GenerationConfig().top_k,  # transformers' default, implicit in the reference's sampling
        "text_new_tokens": cfg.text_new_tokens,
        "speech_new_tokens": cfg.speech_new_tokens,
    }
    write_stsp_report(out, rows, directions, prompt_rows, cfg.shots, cfg.seed, shots_used, sampling, manifest)
    return json.loads((out / "report.json").read_text())


def check_requirements(directions, has_text_clf: bool, has_audio_clf: bool, shots: int, fewshot_dir) -> None:
    """Fail fast (before loading a model) on a run that cannot finish."""
    for d in directions:
        out_mod = DIRECTIONS[d][1] if d in DIRECTIONS else None
        if out_mod == "text" and not has_text_clf:
            raise ValueError(f"direction {d} ends in text: give a text classifier (--text-classifier DIR)")
        if out_mod == "speech" and not has_audio_clf:
            raise ValueError(f"direction {d} ends in speech: give an audio classifier (--audio-classifier DIR)")
    if shots:
        if shots < 0 or shots % 3:
            raise ValueError(f"shots must be 0 or a multiple of 3 (balanced over 3 sentiments), got {shots}")
        if fewshot_dir is None:
            raise ValueError("few-shot runs need the few-shot folder (--few-shot-dir, the release's manifest/few_shot)")
        for d in directions:
            path = Path(fewshot_dir) / FEWSHOT_FILES.get(d, "?")
            if not path.is_file():
                raise FileNotFoundError(f"few-shot manifest {path} for direction {d} does not exist")


@dataclasses.dataclass(frozen=True)
class StspRunConfig:
    """`python -m spiritlm_jax.evaluate stsp`: an STSP run from a checkpoint and a manifest."""

    checkpoint: str  # training run, converted model directory or converted tree
    manifest: str  # STSP manifest JSONL (id, wav_path, emotion, sentiment, asr, split, speaker)
    out: str  # output folder (report, per-item caches)
    vocoder: Optional[str] = None  # a converted vocoder folder (default: the checkpoint's)
    data_root: Optional[str] = None  # folder wav_path is relative to (default: the release's data/)
    direction: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "T2T, T2S, S2S, S2T (repeat --direction; default: all four)"}
    )
    shots: int = StspConfig.shots  # 0, 3, 6 or 9: balanced few-shot prompts
    few_shot_dir: Optional[str] = None  # folder with t2t/t2s/s2t/s2s.jsonl (default: the release's)
    text_classifier: Optional[str] = None  # local HF sequence-classification model folder
    text_tokenizer: Optional[str] = None  # its tokenizer folder (default: the model folder)
    text_label_map: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "NAME=positive|negative|neutral|ignore (repeat)"}
    )
    audio_classifier: Optional[str] = None  # local HF audio-classification model folder
    audio_label_map: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "NAME=positive|negative|neutral|ignore (repeat)"}
    )
    classifier_device: Optional[str] = None  # torch device (default: cuda when available)
    seed: int = StspConfig.seed
    batch_size: int = StspConfig.batch_size
    temperature: float = StspConfig.temperature
    top_p: float = StspConfig.top_p
    text_new_tokens: int = StspConfig.text_new_tokens
    speech_new_tokens: int = StspConfig.speech_new_tokens
    speaker: int = StspConfig.speaker
    save_audio: bool = StspConfig.save_audio  # keep speech outputs as <out>/audio/<direction>/<id>.wav
    limit: int = 0  # only the first N items (smoke runs)

    def __post_init__(self):
        bad = [d for d in self.direction if d not in DIRECTIONS]
        if bad:
            raise ValueError(f"direction: invalid choice: {bad[0]!r} (choose from {', '.join(DIRECTIONS)})")


def run_stsp_command(cfg: StspRunConfig, progress: Callable = print) -> int:
    """Check, load the classifiers and the checkpoint, run, print the summary."""
    directions = cfg.direction or list(DIRECTIONS)
    fewshot_dir = cfg.few_shot_dir or (default_fewshot_dir(Path(cfg.manifest)) if cfg.shots else None)
    check_requirements(directions, bool(cfg.text_classifier), bool(cfg.audio_classifier), cfg.shots, fewshot_dir)
    items = load_manifest(cfg.manifest, cfg.data_root)
    if cfg.limit:
        items = items[: cfg.limit]
    progress(f"{len(items)} STSP items from {cfg.manifest}; directions {directions}, {cfg.shots}-shot")
    text_clf = audio_clf = None
    if cfg.text_classifier:
        text_clf = HFTextClassifier(
            cfg.text_classifier, cfg.text_tokenizer, parse_label_map(cfg.text_label_map), cfg.classifier_device
        )
    if cfg.audio_classifier:
        audio_clf = HFAudioClassifier(cfg.audio_classifier, parse_label_map(cfg.audio_label_map), cfg.classifier_device)
    lm = SpiritLM.from_checkpoint(cfg.checkpoint, **({"vocoder": cfg.vocoder} if cfg.vocoder else {}))
    settings = StspConfig(
        shots=cfg.shots,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        text_new_tokens=cfg.text_new_tokens,
        speech_new_tokens=cfg.speech_new_tokens,
        speaker=cfg.speaker,
        save_audio=cfg.save_audio,
        fewshot_dir=fewshot_dir,
        data_root=cfg.data_root,
        manifest=cfg.manifest,
        checkpoint=checkpoint_fingerprint(cfg.checkpoint),
    )
    report = run_stsp(lm, items, cfg.out, directions, text_clf, audio_clf, settings, progress=progress)
    progress(
        "summary: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in report["summary"].items())
    )
    progress(f"report: {Path(cfg.out) / 'report.md'}")
    return 0
