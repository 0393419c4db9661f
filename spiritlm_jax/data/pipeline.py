"""The training input pipeline: per-kind Grain datasets, a weighted mixture, packing, batching.

Per kind (text / speech / aligned): `grain.MapDataset.source(examples).seed(s).shuffle().repeat()`
then `.random_map(encode)`: shuffling changes every epoch and the interleaving rng is seeded by
(seed, global index), so span lengths are re-drawn every epoch and the same seed gives the same
sequences. The mixture picks the kind of the j-th example from an rng seeded by (seed, process, j).
Process p of P reads indices p, p+P, p+2P, ... of every kind (disjoint parts; their union is the
data); each process builds its local rows and the trainer assembles the global batch from them.

Packing fills rows of `seq_len` tokens greedily in order: an example that does not fit in the rest
of a row starts the next row; one longer than `seq_len` is cut into windows (each its own segment).
Rows carry `segment_ids` (1.. per document, 0 = padding), `positions` (restarting per segment),
`targets` (next token within the segment, -1 elsewhere) and `kinds` (0 text, 1 speech, 2 interleaved).

The iterator state is a small JSON dict {mix_index, counts, carry}: restoring it gives exactly the
batches an uninterrupted run would have produced.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np

from spiritlm_jax.config import ConfigError
from spiritlm_jax.data.interleave import encode_example
from spiritlm_jax.data.sources import KINDS, ExampleSource, shard_files

DEMO_CORPUS = Path(__file__).parent / "demo"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    corpus: str = "demo"  # a prepared corpus directory; "demo" = the embedded demo corpus
    tokenizer: Optional[str] = None  # SentencePiece model; default <corpus>/tokenizer.model
    expressive: bool = False  # layout with pitch and style tokens
    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # text, speech, aligned (interleaved)
    seq_len: int = 256
    batch_size: int = 8  # rows per process per step
    seed: int = 0
    text_span: tuple[int, int] = (10, 30)
    speech_span: tuple[int, int] = (5, 15)

    def __post_init__(self):
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be >= 8, got {self.seq_len}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.weights) != 3 or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"weights must be 3 non-negative numbers (text, speech, aligned), got {self.weights}")
        for name in ("text_span", "speech_span"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 1 <= min <= max, got {(lo, hi)}")

    @property
    def corpus_dir(self) -> Path:
        return DEMO_CORPUS if self.corpus == "demo" else Path(self.corpus)

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.tokenizer) if self.tokenizer else self.corpus_dir / "tokenizer.model"


def load_tokenizer(cfg: DataConfig):
    from spiritlm_jax.tokens import SpiritTokenizer

    return SpiritTokenizer(cfg.tokenizer_path, expressive=cfg.expressive)


def check_vocab(cfg: DataConfig, model_vocab_size: int) -> None:
    """Config errors before compilation: corpus present, tokenizer readable, vocabulary large enough."""
    if not cfg.corpus_dir.is_dir():
        raise ConfigError(f"data.corpus: {cfg.corpus_dir} is not a directory")
    try:
        tok = load_tokenizer(cfg)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.tokenizer: {e}") from None
    if tok.layout.vocab_size > model_vocab_size:
        raise ConfigError(
            f"model.vocab_size={model_vocab_size} is smaller than the token layout's {tok.layout.vocab_size} "
            f"({tok.layout.text_vocab_size} text pieces{' + expressive units' if cfg.expressive else ''})"
        )
    for split in ("train",):
        if not any(shard_files(cfg.corpus_dir, split, k) for k in KINDS):
            raise ConfigError(f"data.corpus: {cfg.corpus_dir / split} has no example shards")


class PackedBatches:
    """Iterator of packed numpy batches with get_state()/set_state() for exact resume."""

    def __init__(self, cfg: DataConfig, split: str = "train", process_index: int = 0, process_count: int = 1):
        import grain

        self.cfg, self.p, self.n_proc = cfg, process_index, process_count
        self.tok = load_tokenizer(cfg)
        weights = np.asarray(cfg.weights, np.float64)
        self.datasets: list[Any] = []
        for k, kind in enumerate(KINDS):
            files = shard_files(cfg.corpus_dir, split, kind)
            if not files or weights[k] == 0:
                weights[k] = 0.0
                self.datasets.append(None)
                continue
            src = ExampleSource(files)
            if len(src) < process_count:
                raise ValueError(f"{files[0].parent}: {len(src)} {kind} examples cannot feed {process_count} processes")
            ds = grain.MapDataset.source(src).seed(cfg.seed + 1000 * k).shuffle().repeat()
            self.datasets.append(ds.random_map(self._encode))
        if weights.sum() == 0:
            raise ValueError(f"{cfg.corpus_dir / split}: no examples of any kind with non-zero weight")
        self.probs = weights / weights.sum()
        self.set_state({"mix_index": 0, "counts": [0, 0, 0], "carry": None})

    def _encode(self, ex: dict, rng: np.random.Generator):
        try:
            return encode_example(ex, self.tok, rng, self.cfg.text_span, self.cfg.speech_span)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"bad example {str(ex.get('id', ''))!r} of kind {ex.get('kind')!r}: {e}") from None

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict:
        carry = None
        if self._carry is not None:
            carry = {"tokens": self._carry[0].tolist(), "kind": int(self._carry[1])}
        return {"mix_index": self._mix_index, "counts": list(self._counts), "carry": carry}

    def set_state(self, state: dict) -> None:
        self._mix_index = int(state["mix_index"])
        self._counts = [int(c) for c in state["counts"]]
        c = state.get("carry")
        self._carry = None if c is None else (np.asarray(c["tokens"], np.int32), int(c["kind"]))

    # -- examples --------------------------------------------------------------------------
    def _next_example(self) -> tuple[np.ndarray, int]:
        if self._carry is not None:
            ex, self._carry = self._carry, None
            return ex
        rng = np.random.default_rng([self.cfg.seed, self.p, self._mix_index])
        k = int(rng.choice(3, p=self.probs))
        self._mix_index += 1
        idx = self._counts[k] * self.n_proc + self.p
        self._counts[k] += 1
        return self.datasets[k][idx]

    def _row(self) -> dict[str, np.ndarray]:
        t = self.cfg.seq_len
        row = {k: np.zeros(t, np.int32) for k in ("tokens", "segment_ids", "positions", "kinds")}
        row["targets"] = np.full(t, -1, np.int32)
        used, seg = 0, 0
        while used < t:
            tokens, kind = self._next_example()
            if len(tokens) > t - used:
                if used > 0 and len(tokens) <= t:  # does not fit here: next row
                    self._carry = (tokens, kind)
                    break
                head, rest = tokens[: t - used], tokens[t - used:]  # longer than a row: cut a window
                if len(rest) > 1:
                    self._carry = (rest, kind)
                tokens = head
            seg += 1
            n = len(tokens)
            row["tokens"][used:used + n] = tokens
            row["segment_ids"][used:used + n] = seg
            row["positions"][used:used + n] = np.arange(n)
            row["kinds"][used:used + n] = kind
            row["targets"][used:used + n - 1] = tokens[1:]
            used += n
        return row

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rows = [self._row() for _ in range(self.cfg.batch_size)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def build_train_iterator(cfg: DataConfig, process_index: int = 0, process_count: int = 1) -> PackedBatches:
    return PackedBatches(cfg, "train", process_index, process_count)


def build_eval_batches(cfg: DataConfig, n: int, process_index: int = 0, process_count: int = 1) -> list[dict]:
    """The first `n` batches of the held-out split (same every call); [] when there is no eval split."""
    if n <= 0 or not any(shard_files(cfg.corpus_dir, "eval", k) for k in KINDS):
        return []
    it = PackedBatches(cfg, "eval", process_index, process_count)
    return [next(it) for _ in range(n)]
