"""STSP (speech-text sentiment preservation, SPEC.md §7): prompts with a positive / negative / neutral
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

from spiritlm_jax.data.sources import iter_jsonl
from spiritlm_jax.evaluate.report import JsonlCache, fmt_ci, fmt_number, write_report

DIRECTIONS = {"T2T": ("text", "text"), "T2S": ("text", "speech"), "S2S": ("speech", "speech"),
              "S2T": ("speech", "text")}
FEWSHOT_FILES = {"T2T": "t2t.jsonl", "T2S": "t2s.jsonl", "S2T": "s2t.jsonl", "S2S": "s2s.jsonl"}
SENTIMENTS = ("positive", "negative", "neutral")
EMOTION_TO_SENTIMENT = {"happy": "positive", "amused": "positive", "angry": "negative", "sad": "negative",
                        "default": "neutral", "neutral": "neutral"}
LABEL_TO_SENTIMENT = {**{s: s for s in SENTIMENTS}, "pos": "positive", "neg": "negative", "neu": "neutral",
                      **EMOTION_TO_SENTIMENT}
MANIFEST_FIELDS = {"id", "wav_path", "emotion", "sentiment", "asr", "split", "speaker"}
FEWSHOT_REQUIRED = {"prompt", "generation", "sentiment"}
FEWSHOT_FIELDS = FEWSHOT_REQUIRED | {"id", "emotion", "split", "speaker"}
SAMPLE_RATE = 16000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
PINNED = ("shots", "seed", "temperature", "top_p", "text_new_tokens", "speech_new_tokens", "manifest")


@dataclasses.dataclass
class StspItem:
    id: str
    sentiment: str
    wav: Optional[str] = None
    text: Optional[str] = None
    emotion: Optional[str] = None


# ----- data -----------------------------------------------------------------------------------
def release_root(manifest: Path) -> Optional[Path]:
    """The release root when `manifest` lies under <root>/manifest/ next to <root>/data."""
    for parent in Path(manifest).absolute().parents:
        if parent.name == "manifest" and (parent.parent / "data").is_dir():
            return parent.parent
    return None


def default_data_root(manifest: Path) -> Path:
    root = release_root(manifest)
    return root / "data" if root is not None else Path(manifest).absolute().parent


def default_fewshot_dir(manifest: Path) -> Optional[Path]:
    root = release_root(manifest)
    return root / "manifest" / "few_shot" if root is not None else None


def _gold(raw: dict, where: str) -> str:
    if raw.get("sentiment") is not None:
        s = str(raw["sentiment"]).lower()
        if s not in SENTIMENTS:
            raise ValueError(f"{where}: sentiment must be one of {list(SENTIMENTS)}, got {raw['sentiment']!r}")
        return s
    emotion = str(raw.get("emotion", "")).lower()
    if emotion not in EMOTION_TO_SENTIMENT:
        raise ValueError(f"{where}: no 'sentiment', and emotion {raw.get('emotion')!r} does not map to one "
                         f"(known: {sorted(EMOTION_TO_SENTIMENT)})")
    return EMOTION_TO_SENTIMENT[emotion]


def load_manifest(path: str | Path, data_root: Optional[str | Path] = None) -> list[StspItem]:
    """An STSP evaluation manifest -> items; format errors name the line and the field."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else default_data_root(path)
    items, seen = [], set()
    for where, raw in iter_jsonl(path, "STSP manifest"):
        unknown = set(raw) - MANIFEST_FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(MANIFEST_FIELDS)}")
        if "id" not in raw:
            raise ValueError(f"{where}: missing 'id'")
        item_id = str(raw["id"])
        if item_id in seen:
            raise ValueError(f"{where}: id {item_id} appears twice")
        seen.add(item_id)
        wav = raw.get("wav_path")
        if wav is not None and not Path(wav).is_absolute():
            wav = str(root / wav)
        text = raw.get("asr")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: 'asr' must be a string, got {type(text).__name__}")
        items.append(StspItem(item_id, _gold(raw, where), wav, text, raw.get("emotion")))
    if not items:
        raise ValueError(f"STSP manifest {path} has no items")
    return items


def load_fewshot_pool(path: str | Path) -> list[dict]:
    """Few-shot examples ({prompt, generation, sentiment, where}); errors name the line."""
    pool = []
    for where, raw in iter_jsonl(Path(path), "few-shot manifest"):
        unknown = set(raw) - FEWSHOT_FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(FEWSHOT_FIELDS)}")
        missing = FEWSHOT_REQUIRED - set(raw)
        if missing:
            raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
        pool.append({"prompt": str(raw["prompt"]), "generation": str(raw["generation"]),
                     "sentiment": _gold(raw, where), "where": where})
    if not pool:
        raise ValueError(f"few-shot manifest {path} has no examples")
    return pool


# ----- prompts --------------------------------------------------------------------------------
def _segment(lm, content: str, modality: str, half: Optional[str], data_root: Optional[Path], what: str) -> str:
    """'[Text]...' or '[Speech][Hu..]...' for one prompt/generation part (relative wav paths are under
    `data_root`; None: the path is used as it is)."""
    if modality == "text":
        return "[Text]" + content
    from spiritlm_jax.speech.audio import load_audio

    path = Path(content) if data_root is None or Path(content).is_absolute() else data_root / content
    try:
        wav = load_audio(path)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{what}: {e}") from e
    if half == "first":
        wav = wav[: len(wav) // 2]
    elif half == "second":
        wav = wav[len(wav) // 2:]
    return "[Speech]" + lm.encode_speech(wav, what)


def fewshot_prefix(lm, pool: Sequence[dict], direction: str, shots: int, seed: int,
                   data_root: Path) -> tuple[str, list]:
    """The balanced k-shot prefix (k/3 examples per sentiment, shuffled) and where each example is from."""
    if shots == 0:
        return "", []
    if shots < 0 or shots % 3:
        raise ValueError("few-shot prompts are balanced over 3 sentiments: shots must be 0 or a multiple of 3, "
                         f"got {shots}")
    rng = np.random.default_rng(seed)
    chosen = []
    for s in SENTIMENTS:
        cands = [e for e in pool if e["sentiment"] == s]
        if len(cands) < shots // 3:
            src = pool[0]["where"].rsplit(":", 1)[0] if pool else "the few-shot pool"
            raise ValueError(f"{src}: {len(cands)} {s} example(s); {shots}-shot prompts need {shots // 3}")
        chosen += [cands[int(i)] for i in rng.choice(len(cands), shots // 3, replace=False)]
    chosen = [chosen[int(i)] for i in rng.permutation(len(chosen))]
    in_mod, out_mod = DIRECTIONS[direction]
    parts = [_segment(lm, e["prompt"], in_mod, "first", data_root, f"few-shot example {e['where']} (prompt)")
             + _segment(lm, e["generation"], out_mod, "second", data_root,
                        f"few-shot example {e['where']} (generation)")
             for e in chosen]
    return "\n".join(parts) + "\n", [e["where"] for e in chosen]


def query_prompt(lm, item: StspItem, direction: str, prefix: str = "") -> str:
    """0-shot: the reference's prompt (GenerationInput + output marker); k-shot: prefix + the query in
    the examples' template + the output marker."""
    from spiritlm_jax.generation import ContentType, GenerationInput, OutputModality

    in_mod, out_mod = DIRECTIONS[direction]
    content = item.text if in_mod == "text" else item.wav
    if content is None:
        raise ValueError(f"no {'asr' if in_mod == 'text' else 'wav_path'} in the manifest for a {in_mod} prompt")
    if not prefix:
        kind = ContentType.TEXT if in_mod == "text" else ContentType.SPEECH
        return lm.build_prompt([GenerationInput(content, kind)], OutputModality[out_mod.upper()])
    body = _segment(lm, content, in_mod, None, None, f"audio of item {item.id}")
    return prefix + body + ("[Text]" if out_mod == "text" else "[Speech]")


# ----- classifiers ----------------------------------------------------------------------------
def resolve_labels(names: Sequence[str], label_map: Optional[dict], source: str) -> list[Optional[str]]:
    """Sentiment (or None = ignored) per class index; unknown names are an error naming them."""
    label_map = {str(k).lower(): str(v).lower() for k, v in (label_map or {}).items()}
    bad_values = {k: v for k, v in label_map.items() if v not in SENTIMENTS + ("ignore",)}
    if bad_values:
        raise ValueError(f"label map {bad_values}: values must be positive, negative, neutral or ignore")
    lower = [str(n).lower() for n in names]
    extra = set(label_map) - set(lower)
    if extra:
        raise ValueError(f"label map names {sorted(extra)}, which {source} does not have (its labels: {list(names)})")
    out, unknown = [], []
    for name, low in zip(names, lower):
        s = label_map.get(low, LABEL_TO_SENTIMENT.get(low))
        if s is None:
            unknown.append(name)
        out.append(None if s == "ignore" else s)
    if unknown:
        raise ValueError(f"{source}: label(s) {unknown} of config.id2label do not map to positive/negative/neutral; "
                         f"give a label map, e.g. {unknown[0]}=negative (or {unknown[0]}=ignore)")
    if all(s is None for s in out):
        raise ValueError(f"{source}: the label map ignores every class")
    return out


def parse_label_map(pairs: Optional[Sequence[str]]) -> dict:
    out = {}
    for p in pairs or ():
        if "=" not in p:
            raise ValueError(f"label map entry {p!r}: expected NAME=positive|negative|neutral|ignore")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _device(device: Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class _HFClassifier:
    def _setup_labels(self, config, label_map, source):
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.sentiment_of = resolve_labels(self.label_names, label_map, source)
        self._keep = [i for i, s in enumerate(self.sentiment_of) if s is not None]

    def _pick(self, logits) -> tuple[str, str]:
        row = np.asarray(logits, np.float64).reshape(-1)
        i = self._keep[int(np.argmax(row[self._keep]))]
        return self.sentiment_of[i], self.label_names[i]

    def __call__(self, x) -> str:
        return self.predict(x)[0]


class HFTextClassifier(_HFClassifier):
    """AutoModelForSequenceClassification + AutoTokenizer from local folders."""

    def __init__(self, model_dir: str | Path, tokenizer_dir: Optional[str | Path] = None,
                 label_map: Optional[dict] = None, device: Optional[str] = None, max_length: int = 512):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"text classifier folder {model_dir} does not exist")
        self.torch, self.device = torch, _device(device)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
        self.model.eval().to(self.device)
        tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else model_dir
        hint = "the STSP release's text classifier has none, so pass its tokenizer's folder (--text-tokenizer)"
        # transformers builds an empty-vocabulary tokenizer from a folder without tokenizer files, which
        # would silently map every word to <unk>: look for the files first
        if not any((tok_dir / f).is_file() for f in TOKENIZER_FILES):
            raise ValueError(f"{tok_dir}: cannot load a tokenizer (none of {list(TOKENIZER_FILES)}); {hint}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{tok_dir}: cannot load a tokenizer ({e}); {hint}") from None
        n_tok, n_model = len(self.tokenizer), int(self.model.config.vocab_size)
        if not n_model // 2 <= n_tok <= n_model:
            raise ValueError(f"{tok_dir}: the tokenizer has {n_tok} tokens but the model {model_dir} {n_model} "
                             "embedding rows; is it the model's own tokenizer?")
        limits = [max_length, getattr(self.tokenizer, "model_max_length", None),
                  getattr(self.model.config, "max_position_embeddings", None)]
        self.max_length = min(int(v) for v in limits if v)
        self._setup_labels(self.model.config, label_map, f"text classifier {model_dir}")

    def predict(self, text: str) -> tuple[str, str]:
        if not isinstance(text, str):
            raise ValueError(f"the text classifier takes a string, got {type(text).__name__}")
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            logits = self.model(**enc).logits[0].float().cpu().numpy()
        return self._pick(logits)


class HFAudioClassifier(_HFClassifier):
    """AutoModelForAudioClassification (e.g. Wav2Vec2ForSequenceClassification) + its feature
    extractor from a local folder; input: 16 kHz mono float audio."""

    def __init__(self, model_dir: str | Path, label_map: Optional[dict] = None, device: Optional[str] = None):
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"audio classifier folder {model_dir} does not exist")
        self.torch, self.device = torch, _device(device)
        self.model = AutoModelForAudioClassification.from_pretrained(model_dir, local_files_only=True)
        self.model.eval().to(self.device)
        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{model_dir}: cannot load a feature extractor ({e})") from None
        self.sampling_rate = int(getattr(self.feature_extractor, "sampling_rate", SAMPLE_RATE))
        self._setup_labels(self.model.config, label_map, f"audio classifier {model_dir}")

    def predict(self, audio) -> tuple[str, str]:
        wav = np.asarray(audio, np.float32).reshape(-1)
        if wav.size == 0:
            raise ValueError("the audio is empty")
        if self.sampling_rate != SAMPLE_RATE:
            import librosa

            wav = librosa.resample(wav, orig_sr=SAMPLE_RATE, target_sr=self.sampling_rate, res_type="soxr_hq")
        feats = self.feature_extractor(wav, sampling_rate=self.sampling_rate, return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            logits = self.model(**feats).logits[0].float().cpu().numpy()
        return self._pick(logits)


def _classify(clf, x) -> tuple[str, str]:
    """A classifier with predict() -> (sentiment, raw), or a plain callable -> sentiment."""
    got = clf.predict(x) if hasattr(clf, "predict") else clf(x)
    sent, raw = got if isinstance(got, tuple) else (got, got)
    if sent not in SENTIMENTS:
        raise ValueError(f"the classifier returned {sent!r}, not one of {list(SENTIMENTS)}")
    return sent, raw


# ----- scoring --------------------------------------------------------------------------------
def accuracy_stats(records: dict, items: Sequence[StspItem], prompt_errors: dict, n_boot: int = 1000,
                   seed: int = 0) -> dict:
    hits, bad, confusion = [], [], {s: {t: 0 for t in SENTIMENTS} for s in SENTIMENTS}
    for it in items:
        rec = records.get(it.id)
        err = prompt_errors.get(it.id) or (rec or {}).get("error") or (None if rec else "not run")
        if err:
            bad.append({"id": it.id, "error": err})
            continue
        hits.append(int(rec["correct"]))
        confusion[rec["gold"]][rec["pred"]] += 1
    out = {"n": len(hits), "bad": len(bad), "bad_items": bad[:20], "confusion": confusion, "accuracy": None}
    if hits:
        h = np.asarray(hits, np.float64)
        boot = h[np.random.default_rng(seed).integers(0, len(h), (n_boot, len(h)))].mean(1)
        out["accuracy"] = float(h.mean())
        out["accuracy_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return out


def _check_pinned(out: Path, settings: dict) -> None:
    path = out / "run.json"
    pinned = {k: settings.get(k) for k in PINNED}
    if path.is_file():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in pinned.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds a run with other settings {diff} (old, new); use another --out "
                             "or delete the folder to start over")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pinned, indent=2))


def _write_audio(path: Path, audio: np.ndarray, rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, np.float32), rate, subtype="FLOAT")  # exact: the classifier's input


def classify_prompts(items, form: str, clf, out: Path, progress: Callable) -> dict:
    """The classifier's accuracy on the prompts themselves (its ceiling on this data)."""
    from spiritlm_jax.speech.audio import load_audio

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
            sent, raw = _classify(clf, x)
            cache.add({"id": it.id, "gold": it.sentiment, "pred": sent, "label": raw, "correct": sent == it.sentiment})
        except Exception as e:  # noqa: BLE001 - one item the classifier cannot take is counted, not fatal
            cache.add({"id": it.id, "gold": it.sentiment, "error": f"item {it.id}: {type(e).__name__}: {e}"})
        if k % 50 == 0 or k == len(todo):
            progress(f"prompts ({form}): {k}/{len(todo)} classified")
    return accuracy_stats(cache.records, items, errors)


def run_stsp(lm, items: Sequence[StspItem], out: str | Path, directions: Sequence[str] = tuple(DIRECTIONS),
             text_classifier=None, audio_classifier=None, shots: int = 0, fewshot_dir: Optional[str | Path] = None,
             data_root: Optional[str | Path] = None, seed: int = 0, batch_size: int = 8, temperature: float = 0.8,
             top_p: float = 0.95, text_new_tokens: int = 50, speech_new_tokens: int = 300, speaker: int = 2,
             save_audio: bool = False, manifest: Optional[str] = None, progress: Callable = print) -> dict:
    """Generate, classify and score; writes <out>/report.{json,md,png}; returns the report dict."""
    from spiritlm_jax.generation import GenerationConfig, OutputModality

    out = Path(out)
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"unknown direction(s) {unknown}; use some of {list(DIRECTIONS)}")
    if shots and fewshot_dir is None and manifest:
        fewshot_dir = default_fewshot_dir(Path(manifest))
    check_requirements(directions, text_classifier is not None, audio_classifier is not None, shots, fewshot_dir)
    if any(DIRECTIONS[d][1] == "speech" for d in directions) and lm.vocoder is None:
        raise ValueError("speech-output directions need a vocoder (give --vocoder or a checkpoint with vocoder/)")
    if any(DIRECTIONS[d][0] == "speech" for d in directions) and lm.speech_tokenizer is None:
        raise ValueError("speech-input directions need a speech tokenizer, and this checkpoint has none")
    root = Path(data_root) if data_root is not None else (default_data_root(Path(manifest)) if manifest else Path("."))
    _check_pinned(out, dict(shots=shots, seed=seed, temperature=temperature, top_p=top_p,
                            text_new_tokens=text_new_tokens, speech_new_tokens=speech_new_tokens,
                            manifest=str(Path(manifest).resolve()) if manifest else None))
    rate = int(getattr(getattr(lm.vocoder, "cfg", None), "sampling_rate", SAMPLE_RATE))
    ctx = lm.model.cfg.max_seq_len
    rows, shots_used = {}, {}
    for direction in directions:
        d_index = list(DIRECTIONS).index(direction)  # seeds do not depend on which directions run
        in_mod, out_mod = DIRECTIONS[direction]
        clf = text_classifier if out_mod == "text" else audio_classifier
        new_tokens = text_new_tokens if out_mod == "text" else speech_new_tokens
        cfg = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=new_tokens)
        cache = JsonlCache(out / f"{direction}.jsonl")
        todo = [it for it in items if it.id not in cache]
        prefix = ""
        if shots:
            pool = load_fewshot_pool(Path(fewshot_dir) / FEWSHOT_FILES[direction])
            prefix, shots_used[direction] = fewshot_prefix(lm, pool, direction, shots, seed, root)
        prompt_errors, ready = {}, []
        for it in todo:
            try:
                p = query_prompt(lm, it, direction, prefix)
                n_tok = len(lm.tokenizer.encode(p, bos=True))
                if n_tok + new_tokens > ctx:
                    raise ValueError(f"the prompt has {n_tok} tokens; with {new_tokens} new tokens it exceeds the "
                                     f"model's context of {ctx}")
                ready.append((it, p))
            except (ValueError, FileNotFoundError) as e:
                prompt_errors[it.id] = f"item {it.id}: {e}"
        if prompt_errors:
            first = next(iter(prompt_errors.values()))
            progress(f"{direction}: {len(prompt_errors)} item(s) cannot be prompted, e.g. {first}")
        done = 0
        for b in range(0, len(ready), batch_size):
            batch = ready[b:b + batch_size]
            prompts = [p for _, p in batch]
            prompts += prompts[-1:] * (batch_size - len(batch))  # a full last batch: one compiled shape
            outs, _ = lm.generate_batch(None, OutputModality[out_mod.upper()], cfg, speaker_id=speaker,
                                        seed=seed * 1_000_003 + d_index * 10_007 + b // batch_size,
                                        prompts=prompts)
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
                            from spiritlm_jax.speech.audio import load_audio

                            content = load_audio(content, input_sample_rate=rate)
                        if save_audio:
                            wav = out / "audio" / direction / f"{it.id}.wav"
                            _write_audio(wav, content, SAMPLE_RATE)
                            rec["audio"] = str(wav)
                    sent, raw = _classify(clf, content)
                    rec.update(pred=sent, label=raw, correct=sent == it.sentiment)
                except Exception as e:  # noqa: BLE001 - one bad output is counted, not fatal
                    rec["error"] = f"item {it.id}: {type(e).__name__}: {e}"
                cache.add(rec)
            done += len(batch)
            progress(f"{direction} ({shots}-shot): {done}/{len(ready)} generated and classified")
        rows[direction] = accuracy_stats(cache.records, items, prompt_errors)
        r = rows[direction]
        progress(f"{direction}: accuracy {fmt_number(r['accuracy'])} over {r['n']} items, {r['bad']} bad")
    accs = [rows[d]["accuracy"] for d in directions if rows[d]["accuracy"] is not None]
    average = float(np.mean(accs)) if accs else None
    prompt_rows = {}
    for form, clf in (("text", text_classifier), ("speech", audio_classifier)):
        if clf is not None:
            prompt_rows[f"prompts ({form})"] = classify_prompts(items, form, clf, out, progress)
    table = dict(rows)
    table["average"] = {"n": sum(rows[d]["n"] for d in directions), "bad": sum(rows[d]["bad"] for d in directions),
                        "accuracy": average}
    table.update(prompt_rows)
    summary = {d: rows[d]["accuracy"] for d in directions}
    summary["average"] = average
    summary.update({k.replace(" (", "_").rstrip(")"): v["accuracy"] for k, v in prompt_rows.items()})
    extra = {"shots": shots, "seed": seed, "few_shot_examples": shots_used,
             "sampling": {"temperature": temperature, "top_p": top_p, "text_new_tokens": text_new_tokens,
                          "speech_new_tokens": speech_new_tokens}}
    title = f"STSP {shots}-shot" + (f" ({Path(manifest).name})" if manifest else "")
    write_report(out, "stsp", title, table, STSP_COLUMNS, chart_key="accuracy", chart_label="accuracy",
                 chance=1 / 3, summary=summary, extra=extra, first_column="direction",
                 notes=["Average: mean over the directions. Prompt rows: the classifiers' accuracy on the prompts "
                        "themselves (their ceiling on this data). Chance is 1/3."])
    return json.loads((out / "report.json").read_text())


STSP_COLUMNS = [("n", "n", fmt_number), ("bad", "bad", fmt_number), ("accuracy", "accuracy", fmt_number),
                ("95% CI", "accuracy_ci95", fmt_ci)]


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
