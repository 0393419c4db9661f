"""Few-shot ASR, TTS and intent classification (docs/reference.md, paper App. B) over any checkpoint.

    python -m spiritlm_jax.evaluate fewshot --task asr --checkpoint DIR --items test.jsonl \
        --shots-from train.jsonl --shots 10 --out eval/asr
    python -m spiritlm_jax.evaluate fewshot --task tts ... --transcriber whisper:/models/whisper-small
    python -m spiritlm_jax.evaluate fewshot --task intent ... --shots 30

Manifests (JSONL, one example per line, unknown fields are errors, audio paths relative to the
manifest's folder): asr/tts `{"id", "audio", "text"}` (a TTS test item needs only "text"), intent
`{"id", "audio", "intent"}`. Shots are drawn once per run from `--shots-from` with `--seed` (intent:
balanced over labels, round robin) and reused for every test item; their ids go to shots.json.

Prompts come from `spiritlm_jax.inference.fewshot` (segments for the one prompt builder). ASR and intent
continue in TEXT (greedy by default), TTS in
SPEECH; TTS speech is vocoded, written to <out>/audio/<id>.wav (the id made a safe file name,
evaluation/names.py) and transcribed by a `Transcriber`
(`--transcriber whisper:DIR` for a local Hugging Face Whisper directory, or `module:factory` for your
own). Scores: ASR/TTS word and character error rates (jiwer, corpus level, on lower-cased text
without punctuation), intent accuracy (exact label match).

Every finished item is appended to <out>/results.jsonl, so a rerun resumes; an item whose audio fails
to load or whose prompt exceeds the context is recorded with its error, counted as bad and left out
of the scores. Writes report.json / report.md / report.png.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from spiritlm_jax.data.sources import iter_jsonl
from spiritlm_jax.evaluation.names import checkpoint_fingerprint, inside
from spiritlm_jax.evaluation.report import JsonlCache, fmt_number, write_report
from spiritlm_jax.inference import (
    DEFAULT_SPEAKER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    GenerationConfig,
    OutputModality,
    SpiritLM,
)
from spiritlm_jax.inference.fewshot import (
    DEFAULT_FORMAT,
    OUTPUT,
    FewShotFormat,
    asr_segments,
    intent_segments,
    parse_intent,
    parse_transcript,
    strip_end_word,
    tts_segments,
)
from spiritlm_jax.model.decode import check_context_length
from spiritlm_jax.speech.vocoder import write_wav
from spiritlm_jax.tokens import Prompt, build_prompt

TASKS = ("asr", "tts", "intent")
FIELDS = {"asr": {"id", "audio", "text"}, "tts": {"id", "audio", "text"}, "intent": {"id", "audio", "intent"}}


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    audio: Optional[str] = None
    text: Optional[str] = None
    intent: Optional[str] = None

    @property
    def target(self) -> str:
        return self.intent if self.intent is not None else self.text


def load_examples(path, task: str, need_audio: bool = True) -> list[Example]:
    """Read a manifest for `task`; errors name the line and the field."""
    if task not in TASKS:
        raise ValueError(f"unknown few-shot task {task!r}; choose from {', '.join(TASKS)}")
    path = Path(path)
    fields, out, seen = FIELDS[task], [], set()
    for where, raw in iter_jsonl(path, "manifest"):
        unknown = set(raw) - fields
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} for task {task} (allowed: {sorted(fields)})")
        required = (fields - {"audio"}) | ({"audio"} if need_audio else set())
        missing = [f for f in sorted(required) if not raw.get(f)]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        ex_id = str(raw["id"])
        if ex_id in seen:
            raise ValueError(f"{where}: duplicate id {ex_id!r}")
        seen.add(ex_id)
        audio = raw.get("audio")
        if audio and not Path(audio).is_absolute():
            audio = str(path.parent / audio)
        out.append(Example(ex_id, audio, raw.get("text"), raw.get("intent")))
    if not out:
        raise ValueError(f"manifest {path} has no examples")
    return out


def pick_shots(pool: Sequence[Example], n: int, seed: int, balanced: bool = False) -> list[Example]:
    """`n` examples of `pool`, seeded; `balanced` cycles over the labels (sorted) so each appears."""
    if n > len(pool):
        raise ValueError(f"{n} shots asked for but the shot manifest has {len(pool)} examples")
    rng = np.random.default_rng(seed)
    if not balanced:
        return [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]
    by_label: dict[str, list[Example]] = {}
    for ex in pool:
        by_label.setdefault(ex.target, []).append(ex)
    queues = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(by_label.items())}
    picked: list[Example] = []
    while len(picked) < n:
        for k in queues:
            if queues[k] and len(picked) < n:
                picked.append(queues[k].pop(0))
    order = rng.permutation(len(picked))  # labels interleaved in a seeded order, not sorted
    return [picked[i] for i in order]


def normalize_text(s: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), single spaces: what WER is computed on."""
    return " ".join(re.sub(r"[^\w\s']", " ", s.lower()).split())


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    """Corpus-level WER and CER (jiwer) on normalised text; an empty hypothesis counts as all deletions."""
    import jiwer

    refs = [normalize_text(r) for r in refs]
    hyps = [normalize_text(h) for h in hyps]
    if not refs:
        return {"wer": None, "cer": None}
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


# ----- transcribers (TTS scoring) ------------------------------------------------------------------


class Transcriber(Protocol):
    def __call__(self, audio_16k: np.ndarray) -> str: ...


class WhisperTranscriber:
    """A local Hugging Face Whisper directory (model + processor files), run through PyTorch on the
    CPU (`eval` extra). English transcription, greedy."""

    def __init__(self, model_dir, max_new_tokens: int = 128):
        try:
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as e:
            raise ValueError("the Whisper transcriber needs transformers and torch: pip install -e '.[eval]'") from e
        d = Path(model_dir)
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"{d} is not a Hugging Face Whisper directory (no config.json)")
        self.processor = WhisperProcessor.from_pretrained(d)
        self.model = WhisperForConditionalGeneration.from_pretrained(d).eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, audio_16k: np.ndarray) -> str:
        import torch

        feats = self.processor(np.asarray(audio_16k, np.float32), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = self.model.generate(feats.input_features, max_new_tokens=self.max_new_tokens)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


def load_transcriber(spec: Optional[str]) -> Optional[Transcriber]:
    """ "whisper:DIR", or "package.module:factory" (factory() returns a callable audio -> text)."""
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    if kind == "whisper" and arg:
        return WhisperTranscriber(arg)
    if arg:
        import importlib

        try:
            factory = getattr(importlib.import_module(kind), arg)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"transcriber {spec!r}: cannot import {arg} from {kind} ({e})") from None
        return factory()
    raise ValueError(f"transcriber {spec!r}: use whisper:DIR or package.module:factory")


# ----- the run -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FewShotConfig:
    task: str = "asr"
    shots: int = 10
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 0  # 0: task default (asr 128, intent 16, tts 400)
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = False
    speaker_id: int = DEFAULT_SPEAKER
    stop_speech: Optional[str] = None  # TTS: a recording of the end word ("stop")
    fmt: FewShotFormat = DEFAULT_FORMAT

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown few-shot task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.shots < 0 or self.batch_size < 1:
            raise ValueError("shots must be >= 0 and batch_size >= 1")

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens or {"asr": 128, "intent": 16, "tts": 400}[self.task]


def _prompt(lm, cfg: FewShotConfig, shots: list, item: Example, encode: Callable) -> Prompt:
    if cfg.task == "asr":
        segments = asr_segments(shots, encode(item.audio, f"item {item.id} audio"), fmt=cfg.fmt)
    elif cfg.task == "intent":
        segments = intent_segments(shots, encode(item.audio, f"item {item.id} audio"), fmt=cfg.fmt)
    else:
        segments = tts_segments(
            shots, item.text, fmt=cfg.fmt, stop_speech=cfg.stop_speech and encode(cfg.stop_speech, "stop speech")
        )
    return build_prompt(lm.tokenizer, segments, OUTPUT[cfg.task])


def run_fewshot(
    lm,
    items: Sequence[Example],
    pool: Sequence[Example],
    out,
    cfg: FewShotConfig,
    transcriber: Optional[Transcriber] = None,
    log=print,
    checkpoint: Optional[str] = None,
) -> dict:
    """Run (or resume) one few-shot evaluation; returns the report's row for the task. `checkpoint`
    (the directory `lm` came from) is pinned with the shots, so results of another model are not reused."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.task == "tts" and transcriber is None:
        raise ValueError(
            "TTS is scored by transcribing the generated speech: give a transcriber "
            "(--transcriber whisper:DIR or module:factory)"
        )
    if cfg.task == "tts" and lm.vocoder is None:
        raise ValueError("TTS needs a vocoder in the checkpoint (or --vocoder)")
    chosen = pick_shots(pool, cfg.shots, cfg.seed, balanced=cfg.task == "intent")
    setup = {
        "task": cfg.task,
        "shots": [ex.id for ex in chosen],
        "seed": cfg.seed,
        "format": dataclasses.asdict(cfg.fmt),
        **({"checkpoint": checkpoint_fingerprint(checkpoint)} if checkpoint is not None else {}),
    }
    setup_file = out / "shots.json"
    if setup_file.is_file() and json.loads(setup_file.read_text()) != setup:
        raise ValueError(
            f"{out} holds results of a different run (checkpoint, task, shots, seed or format differ); use a new --out"
        )
    setup_file.write_text(json.dumps(setup, indent=2))

    encoded: dict = {}

    def encode(audio, what):
        if audio not in encoded:
            encoded[audio] = lm.encode_speech(audio, what)
        return encoded[audio]

    shots = []
    for ex in chosen:  # a bad shot would spoil every prompt: fatal, naming it
        units = encode(ex.audio, f"shot {ex.id} audio")
        shots.append((units, ex.target) if cfg.task != "tts" else (ex.text, units))

    modality = OutputModality.SPEECH if cfg.task == "tts" else OutputModality.TEXT
    gen_cfg = GenerationConfig(
        max_new_tokens=cfg.new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, do_sample=cfg.do_sample
    )
    ctx = lm.model.cfg.max_seq_len
    cache = JsonlCache(out / "results.jsonl")
    todo = [it for it in items if it.id not in cache]
    log(f"{cfg.task}: {len(items) - len(todo)} of {len(items)} items already done, {len(todo)} to run")
    for start in range(0, len(todo), cfg.batch_size):
        batch, prompts = [], []
        for it in todo[start : start + cfg.batch_size]:
            try:
                p = _prompt(lm, cfg, shots, it, encode)
                check_context_length(
                    len(p.ids),
                    cfg.new_tokens,
                    ctx,
                    what=f"item {it.id}: the prompt",
                    new="new tokens (use fewer shots)",
                )
            except (ValueError, FileNotFoundError) as e:
                cache.add({"id": it.id, "reference": it.target, "error": str(e)})
                log(f"  bad item {it.id}: {e}")
                continue
            batch.append(it)
            prompts.append(p)
        if not batch:
            continue
        outs, _ = lm.generate_batch(
            None, modality, gen_cfg, speaker_id=cfg.speaker_id, seed=cfg.seed + start, prompts=prompts
        )
        for it, o in zip(batch, outs):
            rec = {"id": it.id, "reference": it.target}
            if cfg.task == "tts":
                audio = o[0].content if o else np.zeros(0, np.float32)
                wav = inside(out / "audio", it.id, ".wav")  # ids come from the manifest: "../x" stays in
                wav.parent.mkdir(exist_ok=True)
                write_wav(wav, audio)
                try:
                    heard = transcriber(audio) if audio.size else ""
                except Exception as e:  # noqa: BLE001  one item's transcription failure is counted, not fatal
                    rec.update(error=f"transcriber failed: {type(e).__name__}: {e}", audio=str(wav))
                    log(f"  bad item {it.id}: {rec['error']}")
                else:
                    rec.update(transcript=heard, prediction=strip_end_word(heard, cfg.fmt), audio=str(wav))
            else:
                text = o[0].content if o else ""
                rec.update(
                    generated=text,
                    prediction=parse_transcript(text, cfg.fmt) if cfg.task == "asr" else parse_intent(text),
                )
            cache.add(rec)
        log(f"{cfg.task}: {min(start + cfg.batch_size, len(todo))}/{len(todo)} items")
    return score_results([cache.records[it.id] for it in items if it.id in cache], cfg.task)


def score_results(records: Sequence[dict], task: str) -> dict:
    good = [r for r in records if "error" not in r]
    row = {"n": len(good), "bad": len(records) - len(good)}
    if task == "intent":
        hits = [normalize_text(r["prediction"]) == normalize_text(r["reference"]) for r in good]
        row["accuracy"] = float(np.mean(hits)) if hits else None
    else:
        row.update(error_rates([r["reference"] for r in good], [r["prediction"] for r in good]))
    return row


COLUMNS = {
    "intent": [("n", "n", fmt_number), ("bad", "bad", fmt_number), ("accuracy", "accuracy", fmt_number)],
    "asr": [("n", "n", fmt_number), ("bad", "bad", fmt_number), ("WER", "wer", fmt_number), ("CER", "cer", fmt_number)],
}
COLUMNS["tts"] = COLUMNS["asr"]


def write_fewshot_report(out, cfg: FewShotConfig, row: dict, name: Optional[str] = None) -> None:
    key = "accuracy" if cfg.task == "intent" else "wer"
    write_report(
        Path(out),
        f"fewshot_{cfg.task}",
        name or f"few-shot {cfg.task} ({cfg.shots}-shot)",
        {cfg.task: row},
        COLUMNS[cfg.task],
        chart_key=key,
        chart_label="accuracy" if key == "accuracy" else "word error rate",
        chance=None,
        summary={f"{cfg.task}_{key}": row.get(key)},
        extra={
            "config": {
                "shots": cfg.shots,
                "seed": cfg.seed,
                "max_new_tokens": cfg.new_tokens,
                "do_sample": cfg.do_sample,
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
            }
        },
        first_column="task",
    )


# ----- the command (`python -m spiritlm_jax.evaluate fewshot`) -------------------------------------


@dataclasses.dataclass(frozen=True)
class FewShotRunConfig:
    """`python -m spiritlm_jax.evaluate fewshot`: few-shot ASR / TTS / intent over a checkpoint."""

    task: str  # asr, tts or intent
    checkpoint: str  # training run, converted model directory or converted tree
    items: str  # test manifest (JSONL)
    shots_from: str  # manifest the shots are drawn from (JSONL)
    out: str  # output folder (results.jsonl, report)
    variant: Optional[str] = None  # base / expressive, for a converted tree holding both
    shots: int = 10
    name: Optional[str] = None  # report title
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 0  # 0: task default (asr 128, intent 16, tts 400)
    sample: bool = False  # sample (temperature/top-p) instead of greedy
    temperature: float = DEFAULT_TEMPERATURE  # with --sample
    top_p: float = DEFAULT_TOP_P  # with --sample
    speaker: int = DEFAULT_SPEAKER
    stop_speech: Optional[str] = None  # TTS: a recording of the end word 'stop'
    transcriber: Optional[str] = None  # TTS: whisper:DIR or package.module:factory

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: invalid choice: {self.task!r} (choose from {', '.join(TASKS)})")


def run_fewshot_command(args: FewShotRunConfig, progress: Callable = print) -> int:
    """Load the manifests, the transcriber and the checkpoint, run, write the report."""
    cfg = FewShotConfig(
        task=args.task,
        shots=args.shots,
        seed=args.seed,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature if args.sample else 1.0,
        top_p=args.top_p if args.sample else 1.0,
        do_sample=args.sample,
        speaker_id=args.speaker,
        stop_speech=args.stop_speech,
    )
    items = load_examples(args.items, args.task, need_audio=args.task != "tts")
    pool = load_examples(args.shots_from, args.task)
    transcriber = load_transcriber(args.transcriber)
    lm = SpiritLM.from_checkpoint(args.checkpoint, variant=args.variant)
    row = run_fewshot(lm, items, pool, args.out, cfg, transcriber, log=progress, checkpoint=args.checkpoint)
    write_fewshot_report(args.out, cfg, row, args.name)
    shown = {k: fmt_number(v) for k, v in row.items()}
    progress(f"{args.task}: {shown}; report: {Path(args.out) / 'report.md'}")
    return 0
