"""The training input pipeline on Grain: per-kind streams, a weighted mixture, packing, batching.

Stages (process p of P; every stage is a public `grain` dataset, so the iterator is checkpointable):
1. Sources: per kind (text / speech / aligned) an `ExampleSource` over the corpus shards; process p
   keeps the contiguous block [p*N//P, (p+1)*N//P) of each kind (disjoint blocks whose union is the data).
2. Per-kind streams (`grain.MapDataset.range(...).map(...)`): element j is epoch e = j // n of the
   local block, permuted per epoch by `grain.experimental.index_shuffle` seeded by (seed, kind, e)
   (identity when shuffle is off), read, encoded (interleave.encode_documents with the rng of
   (seed, kind, e, source index), so span lengths re-draw every epoch; one document per example,
   two for `aligned_as="separate"`) and cut into windows of at most seq_len tokens (speech-only
   windows each start with BOS [Speech]). `num_epochs` None = infinite.
3. Mixture: `grain.MapDataset.mix` with the kind weights (zero-weight or empty kinds dropped): a
   deterministic interleaving with exact proportions; it ends when any stream ends (finite epochs).
4. `to_iter_dataset` (reader threads), then packing (`PackedRows`, next-fit: a window that does not
   fit in the rest of the row starts the next row, the rest is padding; documents are never cut
   here, since windows are at most seq_len), then `batch(batch_size, drop_remainder=True)`.

A batch is a dict of [batch_size, seq_len] int32 arrays: tokens; targets (next token within the
same segment, -1 at a segment's last token and on padding); segment_ids (1..n per row, 0 padding);
positions (restart at 0 per segment); loss_groups (0 text, 1 speech, 2 interleaved; 0 on padding,
which has no target): see data/batch.py. Each process yields its local rows; the trainer assembles the global batch
[P * batch_size, seq_len] with `jax.make_array_from_process_local_data` (process p's rows land on its
own devices' slice of the batch axis), see training/loop.py.

State: `it.get_state()` is a small JSON-serialisable dict ({"parent": {"next_index": j}, "window": w}:
the mixture index of the first example not fully packed and how many of its windows are already
out); `it.set_state(s)` on a fresh iterator of the same config continues with exactly the batches
an uninterrupted run gives (examples are re-read and re-encoded deterministically).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import grain
import numpy as np

from spiritlm_jax import paths
from spiritlm_jax.bundle.text_tokenizer import load_text_tokenizer
from spiritlm_jax.config import ConfigError
from spiritlm_jax.data.batch import BATCH_KEYS, LOSS_GROUP_IDS, check_reader_numbers
from spiritlm_jax.data.interleave import Encoded, encode_documents, example_rng, windows
from spiritlm_jax.data.sources import KINDS, ExampleSource, shard_files

DEMO_CORPUS = Path(__file__).parent / "demo"
CORPUS_QUANTIZER = "quantizer"  # a corpus' own k-means speech tokenizer (the demo corpus has one)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    corpus: str = "demo"  # a prepared corpus directory (sources.py layouts); "demo" = the embedded corpus
    tokenizer: Optional[str] = None  # tokenizer directory or SentencePiece model; default <corpus>/tokenizer.model
    expressive: bool = False  # layout with pitch and style tokens (else pitch/style streams are ignored)
    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # text, speech, aligned (interleaved)
    seq_len: int = 256
    batch_size: int = 8  # rows per process per step; the global batch is batch_size x process count
    seed: int = 0
    shuffle: bool = True  # per-epoch permutation of each kind
    num_epochs: Optional[int] = None  # passes over each kind; None = infinite (training default)
    text_span: tuple[int, int] = (10, 30)  # words per text span when interleaving (inclusive)
    speech_span: tuple[int, int] = (5, 15)  # words per speech span when interleaving (inclusive)
    aligned_as: Literal["interleaved", "pairs", "separate"] = "interleaved"  # ablations: data/interleave.py
    read_threads: int = 2  # Grain reader threads (read + JSON + encode); 0 = in the calling thread
    prefetch: int = 64  # examples read ahead

    def __post_init__(self):
        check_reader_numbers(self)
        if len(self.weights) != 3 or any(not w >= 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"weights must be 3 non-negative numbers (text, speech, aligned), got {self.weights}")
        for name in ("text_span", "speech_span"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 1 <= min <= max, got {(lo, hi)}")

    @property
    def corpus_dir(self) -> Path:
        """The corpus folder (a corpus on a bucket: its local copy, downloaded once per process)."""
        return DEMO_CORPUS if self.corpus == "demo" else paths.local_dir(self.corpus)

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer directory or SentencePiece model (default: the corpus directory's tokenizer.model)."""
        return paths.local_copy(self.tokenizer) if self.tokenizer else self.corpus_dir / "tokenizer.model"


def load_tokenizer(cfg: DataConfig):
    """The SpiritTokenizer of the config, found and loaded as a bundle's (bundle.load_text_tokenizer):
    the EXPRESSIVE layout when cfg.expressive, else the BASE one."""
    return load_text_tokenizer(cfg.tokenizer_path, expressive=cfg.expressive)


def corpus_speech_tokenizer(cfg: DataConfig) -> Optional[Path]:
    """The speech tokenizer directory the corpus was prepared with, when known: the corpus' own
    `quantizer/` (k-means), else the directory named by corpus.json's units.tokenizer ("KIND:DIR")."""
    own = cfg.corpus_dir / CORPUS_QUANTIZER
    if own.is_dir():
        return own
    summary = cfg.corpus_dir / "corpus.json"
    spec = (json.loads(summary.read_text()).get("units") or {}).get("tokenizer") if summary.is_file() else None
    if not isinstance(spec, str) or ":" not in spec:
        return None
    arg = spec.partition(":")[2]
    path = DEMO_CORPUS / CORPUS_QUANTIZER if arg == "demo" else Path(arg)
    return path if path.is_dir() else None


def check_vocab(cfg: DataConfig, model_vocab_size: int) -> None:
    """Config errors before compilation: corpus present, tokenizer readable and matching the corpus,
    vocabulary large enough, some training shards."""
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
    summary = cfg.corpus_dir / "corpus.json"
    if summary.is_file():
        layout = json.loads(summary.read_text()).get("layout", {})
        n = layout.get("text_vocab_size")
        if n is not None and int(n) != tok.layout.text_vocab_size:
            raise ConfigError(
                f"data.tokenizer: {cfg.tokenizer_path} has {tok.layout.text_vocab_size} pieces but "
                f"{summary} says the corpus was prepared with {n}"
            )
    if not any(shard_files(cfg.corpus_dir, "train", k) for k in KINDS):
        raise ConfigError(f"data.corpus: {cfg.corpus_dir} has no training shards (see spiritlm_jax/data/sources.py)")


def shard_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Process p's contiguous block [start, stop) of n examples (sizes differ by at most one)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return n * process_index // process_count, n * (process_index + 1) // process_count


def _epoch_seed(seed: int, kind: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, kind, epoch, 0x5EED]).generate_state(1)[0])


class _KindStream:
    """Element j of one kind's stream on this process: {"windows": [Encoded...], "kind", "index", "epoch"}."""

    def __init__(self, cfg: DataConfig, tok, source: ExampleSource, kind: str, start: int, stop: int):
        self.cfg, self.tok, self.source, self.kind = cfg, tok, source, kind
        self.kind_id = LOSS_GROUP_IDS[kind]
        self.start, self.n = start, stop - start
        self.speech_prefix = (
            ([tok.bos_id] if tok.bos_id is not None else []) + tok.lead_ids + [tok.layout.speech_marker_id]
        )

    def __call__(self, j: int) -> dict[str, Any]:
        epoch, r = divmod(int(j), self.n)
        if self.cfg.shuffle:
            seed = _epoch_seed(self.cfg.seed, self.kind_id, epoch)
            r = grain.experimental.index_shuffle(r, max_index=self.n - 1, seed=seed, rounds=4)
        index = self.start + r
        ex = self.source[index]
        if ex.get("kind") != self.kind:
            raise ValueError(
                f"{self.source.describe(index)}: example of kind {ex.get('kind')!r} in the {self.kind!r} shards"
            )
        rng = example_rng(self.cfg.seed, epoch, index, self.kind_id)
        try:
            docs = encode_documents(ex, self.tok, rng, self.cfg.text_span, self.cfg.speech_span, self.cfg.aligned_as)
        except (ValueError, KeyError, TypeError) as e:
            where = f"{self.source.describe(index)} (id {ex.get('id')!r}, kind {self.kind!r})"
            raise ValueError(f"bad example {where}: {e}") from None
        wins = [
            w for d in docs for w in windows(d.enc, self.cfg.seq_len, self.speech_prefix if d.speech_only else None)
        ]
        return {"windows": wins, "kind": self.kind_id, "index": index, "epoch": epoch}


def example_dataset(cfg: DataConfig, split: str = "train", process_index: int = 0, process_count: int = 1):
    """The mixed, encoded, windowed example stream of this process (a grain.MapDataset)."""

    tok = load_tokenizer(cfg)
    streams, weights = [], []
    for kind, w in zip(KINDS, cfg.weights):
        files = shard_files(cfg.corpus_dir, split, kind)
        if w == 0 or not files:
            continue
        src = ExampleSource(files)
        start, stop = shard_range(len(src), process_index, process_count)
        if stop == start:
            raise ValueError(
                f"{len(src)} {kind} examples in {cfg.corpus_dir} ({split}) cannot feed "
                f"{process_count} processes: process {process_index} gets none"
            )
        length = (stop - start) * cfg.num_epochs if cfg.num_epochs else sys.maxsize
        streams.append(grain.MapDataset.range(length).map(_KindStream(cfg, tok, src, kind, start, stop)))
        weights.append(float(w))
    if not streams:
        raise ValueError(
            f"{cfg.corpus_dir} ({split}): no shards of any kind with a non-zero weight "
            f"(weights text/speech/aligned = {cfg.weights})"
        )
    return streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)


def pack_row(windows_: list[Encoded], seq_len: int) -> dict[str, np.ndarray]:
    """One row from consecutive windows (total length <= seq_len): tokens, targets, segment ids,
    positions, loss_groups; padding is 0 with target -1. A window's `is_target` (fine-tuning pairs)
    leaves -1 wherever the next token is not a target (the prompt)."""
    row = {k: np.zeros(seq_len, np.int32) for k in BATCH_KEYS}
    is_target = np.zeros(seq_len, bool)
    used = 0
    for seg, w in enumerate(windows_, 1):
        n = len(w.tokens)
        if used + n > seq_len:
            raise ValueError(f"windows hold more than seq_len {seq_len} tokens")
        row["tokens"][used : used + n] = w.tokens
        row["loss_groups"][used : used + n] = w.loss_groups
        row["segment_ids"][used : used + n] = seg
        row["positions"][used : used + n] = np.arange(n)
        is_target[used : used + n] = True if w.is_target is None else w.is_target
        used += n
    seg = row["segment_ids"]
    same = (seg[1:] == seg[:-1]) & (seg[1:] > 0) & is_target[1:]  # a token that may not be predicted: no target
    row["targets"][:] = -1
    row["targets"][:-1][same] = row["tokens"][1:][same]
    return row


class PackedRows(grain.IterDataset):
    """Next-fit packing of the windows of a stream of examples into rows of seq_len tokens."""

    def __init__(self, parent: grain.IterDataset, seq_len: int):
        super().__init__(parent)
        self.seq_len = seq_len

    def __iter__(self) -> "_PackedRowsIterator":
        return _PackedRowsIterator(self._parent.__iter__(), self.seq_len)


class _PackedRowsIterator(grain.DatasetIterator):
    """State: the parent's state before the first example not fully packed, and its next window."""

    def __init__(self, parent: grain.DatasetIterator, seq_len: int):
        super().__init__(parent)
        self.seq_len = seq_len
        self._pending = None  # (parent state before the example, example, next window)

    def _pull(self):
        before = self._parent.get_state()
        return (before, next(self._parent), 0)

    def __next__(self) -> dict[str, np.ndarray]:
        placed: list[Encoded] = []
        used = 0
        while used < self.seq_len:
            if self._pending is None:
                try:
                    self._pending = self._pull()
                except StopIteration:
                    if not placed:
                        raise
                    break
            before, ex, w = self._pending
            win = ex["windows"][w]
            if len(win.tokens) > self.seq_len - used:
                break  # starts the next row
            placed.append(win)
            used += len(win.tokens)
            self._pending = None if w + 1 == len(ex["windows"]) else (before, ex, w + 1)
        return pack_row(placed, self.seq_len)

    def get_state(self) -> dict[str, Any]:
        if self._pending is None:
            return {"parent": self._parent.get_state(), "window": 0}
        before, _, w = self._pending
        return {"parent": before, "window": w}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "parent" not in state or "window" not in state:
            raise ValueError(f"not a data iterator state: {state!r}")
        self._parent.set_state(state["parent"])
        self._pending = None
        if int(state["window"]) > 0:
            self._pending = self._pull()[:2] + (int(state["window"]),)


def batch_iterator(ds, cfg):
    """Examples (a grain.MapDataset of {"windows": [Encoded...]}) -> a checkpointable iterator
    (grain.DatasetIterator: next(), get_state(), set_state()) of packed batches. `cfg` gives
    seq_len, batch_size, read_threads and prefetch (a DataConfig or a fine-tuning PairDataConfig)."""
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch))
    ds = PackedRows(ds, cfg.seq_len)
    ds = ds.batch(cfg.batch_size, drop_remainder=True)
    return ds.__iter__()


def build_iterator(cfg: DataConfig, split: str = "train", process_index: int = 0, process_count: int = 1):
    """A checkpointable iterator of the corpus' batches (see `batch_iterator`)."""
    return batch_iterator(example_dataset(cfg, split, process_index, process_count), cfg)


class _PairStream:
    """Element j of the fine-tuning pairs on this process (as `_KindStream`): one window, whose
    `is_target` marks the response and EOS (data/pairs.py)."""

    def __init__(self, source: ExampleSource, start: int, stop: int, seed: int, shuffle: bool):
        self.source, self.start, self.n, self.seed, self.shuffle = source, start, stop - start, seed, shuffle

    def __call__(self, j: int) -> dict[str, Any]:
        epoch, r = divmod(int(j), self.n)
        if self.shuffle:
            r = grain.experimental.index_shuffle(
                r, max_index=self.n - 1, seed=_epoch_seed(self.seed, 0, epoch), rounds=4
            )
        index = self.start + r
        ex = self.source[index]
        try:
            tokens = np.asarray(ex["tokens"], np.int32)
            n_prompt, group = int(ex["n_prompt"]), int(ex["group"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.source.describe(index)}: not an encoded fine-tuning example ({e})") from None
        win = Encoded(tokens, np.full(tokens.shape, group, np.int32), np.arange(len(tokens)) >= n_prompt)
        return {"windows": [win], "kind": group, "index": index, "epoch": epoch}


def pair_dataset(
    files,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
    process_index: int = 0,
    process_count: int = 1,
):
    """The encoded fine-tuning pairs of `files` (JSONL of data/pairs.py records) for this process's
    contiguous block, permuted per epoch (a grain.MapDataset; `batch_iterator` packs it)."""
    src = ExampleSource(files)
    start, stop = shard_range(len(src), process_index, process_count)
    if stop == start:
        raise ValueError(
            f"{len(src)} examples cannot feed {process_count} processes: process {process_index} gets none"
        )
    length = (stop - start) * num_epochs if num_epochs else sys.maxsize
    return grain.MapDataset.range(length).map(_PairStream(src, start, stop, seed, shuffle))


def build_train_iterator(cfg: DataConfig, process_index: int = 0, process_count: int = 1):
    return build_iterator(cfg, "train", process_index, process_count)


def build_eval_batches(cfg: DataConfig, n: int, process_index: int = 0, process_count: int = 1) -> list[dict]:
    """The first `n` batches of the held-out split, unshuffled (same every call); [] without one.

    The stream repeats, so every process returns exactly n batches (multi-host lockstep)."""
    if n <= 0 or not any(shard_files(cfg.corpus_dir, "eval", k) for k in KINDS):
        return []
    it = build_iterator(dataclasses.replace(cfg, shuffle=False, num_epochs=None), "eval", process_index, process_count)
    return [next(it) for _ in range(n)]
