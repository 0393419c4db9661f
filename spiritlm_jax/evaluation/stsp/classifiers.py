"""Sentiment classifiers for STSP: local Hugging Face text / audio classification folders, run through
PyTorch (torch and transformers are imported only when a classifier is built: the `eval` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spiritlm_jax.evaluation.stsp.manifest import LABEL_TO_SENTIMENT, SAMPLE_RATE, SENTIMENTS

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


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
        raise ValueError(
            f"{source}: label(s) {unknown} of config.id2label do not map to positive/negative/neutral; "
            f"give a label map, e.g. {unknown[0]}=negative (or {unknown[0]}=ignore)"
        )
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

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer_dir: Optional[str | Path] = None,
        label_map: Optional[dict] = None,
        device: Optional[str] = None,
        max_length: int = 512,
    ):
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
            raise ValueError(
                f"{tok_dir}: the tokenizer has {n_tok} tokens but the model {model_dir} {n_model} "
                "embedding rows; is it the model's own tokenizer?"
            )
        limits = [
            max_length,
            getattr(self.tokenizer, "model_max_length", None),
            getattr(self.model.config, "max_position_embeddings", None),
        ]
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


def classify(clf, x) -> tuple[str, str]:
    """A classifier with predict() -> (sentiment, raw), or a plain callable -> sentiment."""
    got = clf.predict(x) if hasattr(clf, "predict") else clf(x)
    sent, raw = got if isinstance(got, tuple) else (got, got)
    if sent not in SENTIMENTS:
        raise ValueError(f"the classifier returned {sent!r}, not one of {list(SENTIMENTS)}")
    return sent, raw
