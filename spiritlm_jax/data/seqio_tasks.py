"""seqio integration (optional extra): a `seqio.Vocabulary` for the Spirit LM tokenizer and seqio
Tasks over a prepared corpus, for users on the T5X/seqio stack. Training with `spiritlm_jax.train`
uses the Grain pipeline (pipeline.py); nothing else in the package imports this module, seqio or
TensorFlow.

    from spiritlm_jax.data.seqio_tasks import register_tasks
    names = register_tasks("path/to/corpus")          # or "demo", or a DataConfig
    ds = seqio.get_mixture_or_task(names["mixture"]).get_dataset({"targets": 4096}, split="train")

Vocabulary (`SpiritVocabulary`): encode/decode of mixed strings such as `[Text]hello[Speech][Hu3]`
with the same ids as `SpiritTokenizer` (no BOS/EOS on encode, as seqio vocabularies do). The
TensorFlow versions are graph ops (tensorflow-text's SentencePiece op, RE2 splitting at the special
tokens, lookup tables), so they run inside tf.data without Python. Decode (python and tf alike)
stops at the first EOS (seqio's rule), drops BOS/EOS as `SpiritTokenizer.decode` does, maps ids
with no token (negative, the layout's padding rows, past the vocabulary) to `<unk>`, and drops id 0,
which seqio reserves for padding. In LLaMA-2's and the demo's SentencePiece models `<unk>` IS id 0,
so those ids vanish too; LLaMA's byte fallback never encodes text to `<unk>`.

Tasks (`register_tasks`): `<prefix>_text`, `<prefix>_speech`, `<prefix>_interleaved` (the corpus'
"aligned" shards) and the mixture `<prefix>_mixture` with the DataConfig weights (default 1/3 each;
zero-weight kinds and kinds without shards are left out). Each task yields the sequences the Grain
path builds from the same shards (interleave.encode_example):

1. source (`SpiritCorpusSource`): one element per example, `targets` = the Spirit LM string of its
   sequence without BOS/EOS (`[Text]...`, `[Speech][Hu..]...`, or the interleaved spans), plus `id`,
   `index` (position in the kind's shards) and `kind` (0 text, 1 speech, 2 interleaved). Span lengths
   come from `example_rng(cfg.seed, 0, index, kind)`: Grain's epoch-0 draw. `shard_info` p of P takes
   the contiguous block [p*N//P, (p+1)*N//P) of each kind, as Grain's process sharding does.
2. `seqio.preprocessors.tokenize` (the vocabulary's encode_tf; keeps `targets_pretokenized`), then
   BOS prepended and `seqio.preprocessors.append_eos` (EOS once, at the end of the whole example, as
   Grain), then `seqio.CacheDatasetPlaceholder()` (everything before it is deterministic).
3. `split_windows` (needs the sequence length): an example longer than `sequence_length["targets"]`
   becomes windows exactly as `interleave.windows` cuts them (speech windows each start with BOS
   [Speech]; text and interleaved examples are cut into consecutive pieces; EOS only on the last), so
   seqio's trimming never drops tokens. `append_eos_after_trim` is NOT used: it would cut long
   examples and put an EOS on every one, which the Grain path never does.

Packing is left to the feature converter (T5X's DecoderFeatureConverter packs with its own rules;
Grain's next-fit packing is not reproduced). Differences from Grain: seqio shuffles with a buffer,
mixes by sampling (Grain's mixture is an exact deterministic interleaving), and every epoch repeats
the epoch-0 span draws (register with another `seed` for other draws).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence, Union

try:
    import seqio
    import tensorflow as tf
    import tensorflow_text as tf_text
except ImportError as e:  # the optional extra is not installed
    raise ImportError(
        f"spiritlm_jax.data.seqio_tasks needs the optional seqio extra (seqio, TensorFlow, tensorflow-text): "
        f'pip install -e ".[seqio]"  (import failed: {e})'
    ) from e

import numpy as np

from spiritlm_jax.data.batch import LOSS_GROUP_IDS
from spiritlm_jax.data.interleave import TEXT, _streams, example_rng, interleave, tokenizer_streams
from spiritlm_jax.data.pipeline import DEMO_CORPUS, DataConfig, load_tokenizer
from spiritlm_jax.data.sources import ExampleSource, shard_files
from spiritlm_jax.tokens import SPEECH_MARKER, TEXT_MARKER, TOKEN_PATTERN_ASCII, SpiritTokenizer, merge_units
from spiritlm_jax.tokens import merged_to_string as _units_string

TASK_KINDS = {"text": "text", "speech": "speech", "interleaved": "aligned"}  # task suffix -> shard kind
SPLITS = ("train", "eval")
_CHUNK = 64  # examples per Python call of the source generator
_SPECIAL_RE2 = TOKEN_PATTERN_ASCII  # anything that looks like a Spirit LM token (RE2 syntax, ASCII digits)


# ----- vocabulary ---------------------------------------------------------------------------------
class SpiritVocabulary(seqio.Vocabulary):
    """`seqio.Vocabulary` over `SpiritTokenizer`: SentencePiece text plus the Spirit LM special tokens.

    `tokenizer` is a SpiritTokenizer, a SentencePiece `tokenizer.model` file, or a directory with
    `tokenizer.model` (and optionally the Hugging Face tokenizer files, see SpiritTokenizer.from_dir).
    vocab_size is the layout's padded size (the model's embedding rows)."""

    def __init__(self, tokenizer: Union[SpiritTokenizer, str, Path], expressive: Optional[bool] = None):
        if not isinstance(tokenizer, SpiritTokenizer):
            p = Path(tokenizer)
            if p.is_dir():
                tokenizer = SpiritTokenizer.from_dir(p, expressive)
            else:
                tokenizer = SpiritTokenizer(p, expressive=expressive)
        self.tokenizer = tokenizer
        self._sp_bytes = tokenizer.path.read_bytes()
        super().__init__(extra_ids=0)

    # -- ids
    @property
    def bos_id(self) -> Optional[int]:
        return self.tokenizer.bos_id

    @property
    def eos_id(self) -> Optional[int]:
        return self.tokenizer.eos_id

    @property
    def unk_id(self) -> Optional[int]:
        u = self.tokenizer.sp.unk_id()
        return u if u >= 0 else None

    @property
    def _base_vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def layout(self):
        return self.tokenizer.layout

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, SpiritVocabulary)
            and self._sp_bytes == other._sp_bytes
            and self.layout == other.layout
            and self._token_table() == other._token_table()
        )

    def __hash__(self) -> int:
        return hash((self._sp_bytes, self.layout))

    def __str__(self) -> str:
        return (
            f"SpiritVocabulary({self.tokenizer.path}, text_vocab_size={self.layout.text_vocab_size}, "
            f"expressive={self.layout.expressive}, vocab_size={self.vocab_size})"
        )

    def _token_table(self) -> dict[str, int]:
        """Every token the string splitter recognises: Spirit LM tokens and added literal tokens."""
        tok = self.tokenizer
        return {**tok._token_to_id, **tok._extra}  # same package: the tokenizer's own tables

    # -- python
    def _encode(self, s: str) -> Sequence[int]:
        return self.tokenizer.encode(s, bos=False, eos=False)

    @functools.cached_property
    def _has_token(self) -> np.ndarray:
        """[vocab_size] bool: the id has a token (a piece, a Spirit LM token or an added literal)."""
        has = np.zeros(self.vocab_size, bool)
        has[: self.tokenizer.num_pieces] = True
        has[list(self.tokenizer._id_to_token)] = True
        return has

    def _clean(self, ids) -> list[int]:
        """Ids with no token (negative, padding rows, past the vocabulary) -> unk (dropped without one),
        then seqio padding (id 0) dropped. In LLaMA-2's and the demo's models unk is id 0, so both go."""
        has = self._has_token
        out = []
        for i in np.asarray(ids, np.int64).reshape(-1).tolist():
            if not (0 <= i < self.vocab_size and has[i]):
                if self.unk_id is None:
                    continue
                i = self.unk_id
            if i != self.pad_id:
                out.append(i)
        return out

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(self._clean(ids), skip_special_tokens=True)

    # -- tensorflow
    @functools.cached_property
    def _tf(self) -> dict:
        """TensorFlow resources, built eagerly on first use (init_scope: the first use may be inside a
        tf.data function being traced, and the resources must outlive that graph)."""
        with tf.init_scope():
            return self._build_tf()

    def _build_tf(self) -> dict:
        tok = self.tokenizer
        table = self._token_table()
        literals = sorted(tok._extra, key=len, reverse=True)
        pattern = "|".join([_SPECIAL_RE2] + [r"\Q" + t + r"\E" for t in literals])
        keys = tf.constant(list(table), tf.string)
        vals = tf.constant(list(table.values()), tf.int32)
        lookup = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, vals), default_value=-1)
        # id -> how decode writes it: "" for text pieces (decoded in runs by SentencePiece), else the token.
        names = [""] * self.vocab_size
        is_text = np.zeros(self.vocab_size, bool)
        for i in range(tok.num_pieces):
            if tok.sp.is_control(i):
                names[i] = tok.sp.id_to_piece(i)
            else:
                is_text[i] = True
        for i, t in tok._id_to_token.items():
            names[i] = t
        return {
            "pattern": pattern,
            "lookup": lookup,
            "sp": tf_text.SentencepieceTokenizer(model=self._sp_bytes, out_type=tf.int32),
            "names": tf.constant(names, tf.string),
            "is_text": tf.constant(is_text),
            "has_token": tf.constant(self._has_token),
        }

    @tf.autograph.experimental.do_not_convert  # plain graph code: skip autograph's slow conversion
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """String scalar -> int32 [n]; string [b] -> int32 ragged [b, None]. Unknown tokens such as
        `[Hu9999]` or `[Pi3]` in a BASE layout raise InvalidArgumentError (ValueError in python).

        Splitting: every special token is wrapped in byte 0xFF, which never occurs in UTF-8 text, and
        the strings are split there (a few ops; tensorflow-text's regex_split builds ~6x more graph)."""
        s = tf.convert_to_tensor(s, tf.string)
        if self.tokenizer.whole_string:  # one SentencePiece pass over the whole string: through python
            return self._encode_tf_py(s)
        r = self._tf
        marked = tf.strings.regex_replace(tf.reshape(s, [-1]), f"({r['pattern']})", b"\xff\\1\xff")
        pieces = tf.strings.split(marked, sep=b"\xff")  # [b, pieces], text and special pieces alternate
        p = pieces.flat_values
        special = tf.strings.regex_full_match(p, r["pattern"])
        special_ids = r["lookup"].lookup(p)
        check = tf.debugging.assert_non_negative(
            tf.boolean_mask(special_ids, special),
            message="encode_tf: a special token ([HuN]/[PiN]/[StN]) is malformed, out of range or "
            "not part of this vocabulary's layout (pitch/style exist only in EXPRESSIVE)",
        )
        with tf.control_dependencies([check]):
            text = r["sp"].tokenize(tf.where(special, "", p))  # [pieces, None]: special pieces -> no ids
        # lay the ids out flat: piece k takes one slot if special, else its text ids
        text_len = tf.cast(text.row_lengths(), tf.int32)
        piece_len = tf.where(special, 1, text_len)
        piece_start = tf.cumsum(piece_len, exclusive=True)
        text_row = tf.cast(text.value_rowids(), tf.int32)
        text_pos = (
            tf.gather(piece_start, text_row)
            + tf.range(tf.size(text.values))
            - tf.gather(tf.cast(text.row_starts(), tf.int32), text_row)
        )
        flat = tf.scatter_nd(
            tf.concat([text_pos, tf.boolean_mask(piece_start, special)], 0)[:, tf.newaxis],
            tf.concat([text.values, tf.boolean_mask(special_ids, special)], 0),
            tf.reduce_sum(piece_len)[tf.newaxis],
        )
        if s.shape.rank == 0:
            return flat
        lengths = tf.math.unsorted_segment_sum(
            piece_len, tf.cast(pieces.value_rowids(), tf.int32), tf.cast(pieces.nrows(), tf.int32)
        )
        return tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)

    @tf.autograph.experimental.do_not_convert
    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """int ids [n] -> string scalar; [b, n] (dense or ragged) -> string [b]. Same text as `decode`."""
        r = self._tf
        ids = ids if isinstance(ids, tf.RaggedTensor) else tf.convert_to_tensor(ids)
        rank = ids.shape.rank
        if self.tokenizer.whole_string:  # the reference tokenizer's decode rule: through python
            return self._decode_tf_py(ids, rank)
        if rank == 1:
            ids = ids[tf.newaxis]
        if rank not in (1, 2):
            raise ValueError(f"decode_tf expects ids of rank 1 or 2, got shape {ids.shape}")
        rt = ids if isinstance(ids, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(ids)
        nrows = rt.nrows(out_type=tf.int32)
        v = tf.cast(rt.values, tf.int32)
        row = tf.cast(rt.value_rowids(), tf.int32)
        # ids without a token -> unk (dropped without one), then seqio padding dropped, BOS/EOS skipped
        in_range = (v >= 0) & (v < self.vocab_size)
        bad = tf.logical_not(in_range) | tf.logical_not(tf.gather(r["has_token"], tf.where(in_range, v, 0)))
        if self.unk_id is None:
            drop = bad
        else:
            v = tf.where(bad, self.unk_id, v)
            drop = tf.zeros_like(bad)
        drop |= tf.equal(v, self.pad_id)
        for i in (self.bos_id, self.eos_id):
            if i is not None:
                drop |= tf.equal(v, i)
        keep = tf.logical_not(drop)
        v, row = tf.boolean_mask(v, keep), tf.boolean_mask(row, keep)
        # segments: a maximal run of text pieces in one row, or one other token
        is_text = tf.gather(r["is_text"], v)
        n = tf.size(v)
        prev_row = tf.concat([[-1], row], 0)[:-1]
        prev_text = tf.concat([[False], is_text], 0)[:-1]
        new = tf.not_equal(row, prev_row) | tf.logical_not(is_text) | tf.logical_not(prev_text)
        seg = tf.cumsum(tf.cast(new, tf.int32)) - 1
        nseg = tf.reduce_sum(tf.cast(new, tf.int32))
        runs = tf.RaggedTensor.from_value_rowids(tf.boolean_mask(v, is_text), tf.boolean_mask(seg, is_text), nrows=nseg)
        run_text = r["sp"].detokenize(runs)  # "" for the non-text segments
        first = tf.boolean_mask(tf.range(n), new)
        seg_str = tf.where(tf.gather(is_text, first), run_text, tf.gather(r["names"], tf.gather(v, first)))
        out = tf.strings.unsorted_segment_join(seg_str, tf.gather(row, first), num_segments=nrows)
        return out[0] if rank == 1 else out

    def _encode_tf_py(self, s):
        """`_encode_tf` for whole-string tokenizers (docs/tokens.md): SpiritTokenizer.encode per string.
        (Splitting at the special tokens and encoding segments in the graph is exact only for normalizers
        that keep whitespace, as LLaMA's; python is exact for every model.)"""
        rank = s.shape.rank
        flat = tf.reshape(s, [-1])

        def run(strings):
            rows = []
            for x in strings.numpy().tolist():
                try:
                    rows.append(self.tokenizer.encode(x.decode("utf-8"), bos=False, eos=False))
                except ValueError as e:
                    raise ValueError(
                        "encode_tf: a special token ([HuN]/[PiN]/[StN]) is malformed, out of range or not part "
                        f"of this vocabulary's layout (pitch/style exist only in EXPRESSIVE): {e}"
                    ) from None
            return np.asarray([i for r in rows for i in r], np.int32), np.asarray([len(r) for r in rows], np.int64)

        values, lengths = tf.py_function(run, [flat], (tf.int32, tf.int64))
        values.set_shape([None])
        lengths.set_shape([None])
        out = tf.RaggedTensor.from_row_lengths(values, lengths, validate=False)
        return out[0] if rank == 0 else out

    def _decode_tf_py(self, ids, rank):
        if rank not in (1, 2):
            raise ValueError(f"decode_tf expects ids of rank 1 or 2, got shape {ids.shape}")
        rt = ids[tf.newaxis] if rank == 1 else ids
        rt = rt if isinstance(rt, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(rt)

        def run(values, splits):
            v, sp = values.numpy().tolist(), splits.numpy().tolist()
            return np.asarray([self._decode(v[a:b]).encode() for a, b in zip(sp[:-1], sp[1:])], object)

        out = tf.py_function(run, [tf.cast(rt.values, tf.int64), rt.row_splits], tf.string)
        out.set_shape([None])
        return out[0] if rank == 1 else out


# ----- examples -> Spirit LM strings -------------------------------------------------------------
def render_example(
    ex: dict, tok: SpiritTokenizer, rng: np.random.Generator, text_span=(10, 30), speech_span=(5, 15)
) -> str:
    """Example -> the Spirit LM string of its sequence without BOS/EOS. Tokenizing it (splitting at the
    special tokens as atomic pieces, SpiritTokenizer.encode) gives exactly `interleave.encode_example`'s ids between
    BOS and EOS, with the same rng draws and the same validation."""
    if not isinstance(ex, dict):
        raise ValueError(f"an example must be a dict, got {type(ex).__name__}")
    kind = ex.get("kind")
    streams = tokenizer_streams(tok)
    if kind == "text":
        text = ex.get("text")
        if not isinstance(text, str):
            raise ValueError("text example needs a string 'text'")
        return TEXT_MARKER + text
    if kind == "speech":
        merged = merge_units(**_streams(ex, streams))
        if not any(k == "hubert" for _, k, _ in merged):
            raise ValueError("speech example has no 'hubert' units")
        return SPEECH_MARKER + _units_string(merged)
    if kind == "aligned":
        return "".join(
            TEXT_MARKER + content if span.modality == TEXT else SPEECH_MARKER + _units_string(content)
            for span, content in interleave(ex, rng, text_span, speech_span, streams)
        )
    raise ValueError(f"example kind {kind!r} is not one of {sorted(LOSS_GROUP_IDS)}")


class SpiritCorpusSource(seqio.DataSource):
    """One kind's shards of a prepared corpus (sources.shard_files layouts) as a seqio DataSource.

    Elements: {"targets": Spirit LM string (no BOS/EOS), "id": str, "index": int64, "loss_group": int32}.
    Sharding (`shard_info`) takes the contiguous block [p*N//P, (p+1)*N//P), as the Grain path does;
    `shuffle` permutes the order within the block (seeded by `seed`); the sequence of an example does
    not depend on either."""

    def __init__(
        self,
        corpus: Union[str, Path],
        kind: str,
        tokenizer: SpiritTokenizer,
        *,
        splits: Sequence[str],
        seed: int = 0,
        text_span=(10, 30),
        speech_span=(5, 15),
    ):
        self.corpus, self.kind, self.tok = Path(corpus), kind, tokenizer
        self.seed, self.text_span, self.speech_span = int(seed), tuple(text_span), tuple(speech_span)
        self._sources: dict[str, ExampleSource] = {}
        super().__init__(splits=splits)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"SpiritCorpusSource({str(self.corpus)!r}, kind={self.kind!r}, splits={self.splits})"

    def list_shards(self, split: str) -> Sequence[str]:
        return [str(f) for f in shard_files(self.corpus, split, self.kind)]

    def _source(self, split: str) -> ExampleSource:
        if split not in self.splits:
            raise ValueError(f"{self}: no split {split!r} (splits: {self.splits})")
        if split not in self._sources:  # JSONL shards are read into memory: only when first needed
            self._sources[split] = ExampleSource(shard_files(self.corpus, split, self.kind))
        return self._sources[split]

    def num_input_examples(self, split: str) -> int:
        return len(self._source(split))

    def example_string(self, split: str, index: int) -> tuple[str, str]:
        """(`targets` string, example id) of example `index` of `split`; errors name the shard and record."""
        src = self._source(split)
        ex = src[index]
        if ex.get("kind") != self.kind:
            raise ValueError(f"{src.describe(index)}: example of kind {ex.get('kind')!r} in the {self.kind!r} shards")
        rng = example_rng(self.seed, 0, index, LOSS_GROUP_IDS[self.kind])
        try:
            return render_example(ex, self.tok, rng, self.text_span, self.speech_span), str(ex.get("id", ""))
        except (ValueError, KeyError, TypeError) as e:
            where = f"{src.describe(index)} (id {ex.get('id')!r}, kind {self.kind!r})"
            raise ValueError(f"bad example {where}: {e}") from None

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        *,
        sequence_length=None,
        use_cached=False,
        num_epochs=1,
    ) -> tf.data.Dataset:
        src = self._source(split)
        n = len(src)
        p, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
        start, stop = n * p // count, n * (p + 1) // count
        group_id = LOSS_GROUP_IDS[self.kind]
        seed = None if seed is None else int(seed)

        def generate():  # chunks of examples: from_generator costs ~1 ms per element it yields
            order = np.arange(start, stop)
            if shuffle:
                order = np.random.default_rng(seed).permutation(order)
            for c in range(0, len(order), _CHUNK):
                chunk = order[c : c + _CHUNK]
                rendered = [self.example_string(split, i) for i in chunk.tolist()]
                yield {
                    "targets": [t for t, _ in rendered],
                    "id": [i for _, i in rendered],
                    "index": chunk.astype(np.int64),
                    "loss_group": np.full(len(chunk), group_id, np.int32),
                }

        return tf.data.Dataset.from_generator(
            generate,
            output_signature={
                "targets": tf.TensorSpec((None,), tf.string),
                "id": tf.TensorSpec((None,), tf.string),
                "index": tf.TensorSpec((None,), tf.int64),
                "loss_group": tf.TensorSpec((None,), tf.int32),
            },
        ).unbatch()


# ----- preprocessors -------------------------------------------------------------------------------
def prepend_bos(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
    """BOS before every output feature's tokens (the SentencePiece model's BOS; no-op without one)."""

    @tf.autograph.experimental.do_not_convert
    def fn(ex):
        ex = dict(ex)
        for k, feat in output_features.items():
            bos = feat.vocabulary.bos_id
            if k in ex and bos is not None:
                ex[k] = tf.concat([tf.constant([bos], ex[k].dtype), ex[k]], 0)
        return ex

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def split_windows(
    dataset: tf.data.Dataset, sequence_length=None, output_features=None, speech_prefix: Optional[Sequence[int]] = None
) -> tf.data.Dataset:
    """Cut `targets` longer than sequence_length["targets"] into windows as `interleave.windows` does:
    consecutive pieces, or, with `speech_prefix` (BOS [Speech]), pieces that each start with the prefix
    (the units split, none repeated). Other features repeat on every window. No-op without a length."""
    length = (sequence_length or {}).get("targets")
    if not length:
        return dataset
    prefix = list(speech_prefix or [])
    if length <= len(prefix):
        raise ValueError(f"sequence_length['targets'] = {length} leaves no room after a {len(prefix)}-token prefix")
    step = length - len(prefix)

    @tf.autograph.experimental.do_not_convert
    def fn(ex):
        t = ex["targets"]
        pre = tf.constant(prefix, t.dtype) if prefix else None
        body = t[len(prefix) :]
        rows = tf.RaggedTensor.from_row_starts(body, tf.range(0, tf.size(body), step))
        if prefix:
            nrows = rows.nrows()
            pres = tf.RaggedTensor.from_tensor(
                tf.tile(pre[tf.newaxis], [nrows, 1]), row_splits_dtype=rows.row_splits.dtype
            )
            rows = tf.concat([pres, rows], axis=1)
        nrows = rows.nrows()
        out = {k: tf.repeat(v[tf.newaxis], nrows, axis=0) for k, v in ex.items() if k != "targets"}
        out["targets"] = rows
        return tf.data.Dataset.from_tensor_slices(out)

    return dataset.flat_map(fn)


# ----- registration --------------------------------------------------------------------------------
def _as_config(data: Union[DataConfig, str, Path]) -> DataConfig:
    if isinstance(data, DataConfig):
        return data
    return DataConfig(corpus=str(data))


def register_tasks(
    data: Union[DataConfig, str, Path] = "demo",
    prefix: str = "spiritlm",
    *,
    splits: Sequence[str] = SPLITS,
    overwrite: bool = False,
) -> dict[str, str]:
    """Register seqio Tasks over a prepared corpus (the shards `python -m spiritlm_jax.prepare` writes).

    `data`: a corpus directory, "demo", or a DataConfig (its corpus, tokenizer, expressive, weights,
    seed, text_span and speech_span are used). Registers `<prefix>_text`, `<prefix>_speech`,
    `<prefix>_interleaved` for the kinds that have shards in some split of `splits`, and the mixture
    `<prefix>_mixture` over those with a non-zero weight. Returns {"text"/"speech"/"interleaved"/
    "mixture": registered name}. An existing registration of a name is an error unless `overwrite`."""
    cfg = _as_config(data)
    if cfg.aligned_as != "interleaved":
        raise ValueError(
            f"seqio tasks: aligned_as={cfg.aligned_as!r} is an ablation of the Grain pipeline only "
            "(data/interleave.py); the seqio tasks build the interleaved recipe"
        )
    corpus = cfg.corpus_dir
    if not corpus.is_dir():
        raise FileNotFoundError(
            f"seqio tasks: corpus {corpus} is not a directory (expected a prepared corpus: "
            f"<corpus>/<split>/<kind>*.jsonl[.gz]|.array_record and tokenizer.model)"
        )
    try:
        tok = load_tokenizer(cfg)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"seqio tasks: corpus {corpus}: {e}") from None
    vocab = SpiritVocabulary(tok)
    feature = seqio.Feature(vocab, add_eos=tok.eos_id is not None, dtype=tf.int32, rank=1)
    speech_prefix = ([tok.bos_id] if tok.bos_id is not None else []) + tok.lead_ids + [tok.layout.speech_marker_id]
    names: dict[str, str] = {}
    rates = []
    for (task_kind, kind), weight in zip(TASK_KINDS.items(), cfg.weights):
        task_splits = [s for s in splits if shard_files(corpus, s, kind)]
        if not task_splits:
            continue
        name = f"{prefix}_{task_kind}"
        if overwrite:
            seqio.TaskRegistry.remove(name)
        source = SpiritCorpusSource(
            corpus, kind, tok, splits=task_splits, seed=cfg.seed, text_span=cfg.text_span, speech_span=cfg.speech_span
        )
        windows = functools.partial(split_windows, speech_prefix=speech_prefix if kind == "speech" else None)
        seqio.TaskRegistry.add(
            name,
            source=source,
            output_features={"targets": feature},
            preprocessors=[
                seqio.preprocessors.tokenize,
                prepend_bos,
                seqio.preprocessors.append_eos,
                seqio.CacheDatasetPlaceholder(),
                windows,
            ],
        )
        names[task_kind] = name
        if weight > 0:
            rates.append((name, float(weight)))
    if not names:
        raise ValueError(
            f"seqio tasks: {corpus} has no shards for any kind in splits {tuple(splits)} "
            f"(expected <corpus>/<split>/<kind>*.jsonl[.gz]|.array_record, kinds text/speech/aligned; "
            f"see spiritlm_jax/data/sources.py)"
        )
    if not rates:
        raise ValueError(
            f"seqio tasks: every kind with shards has weight 0 (weights text/speech/aligned = {cfg.weights})"
        )
    mixture = f"{prefix}_mixture"
    if overwrite:
        seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, rates)
    names["mixture"] = mixture
    return names


__all__ = [
    "SpiritVocabulary",
    "SpiritCorpusSource",
    "render_example",
    "prepend_bos",
    "split_windows",
    "register_tasks",
    "TASK_KINDS",
    "DEMO_CORPUS",
]
