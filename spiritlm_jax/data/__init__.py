"""Data: example formats, word-level interleaving, the Grain input pipeline, corpus preparation.

Public API of the input side (see docs/data.md):
- sources: `write_jsonl`, `write_array_record`, `read_examples`, `shard_files`, `ExampleSource`, `KINDS`
- batch: `BATCH_KEYS`, `LOSS_GROUPS`, `LOSS_GROUP_IDS` (example kind -> loss group id)
- interleave: `encode_example`, `interleave`, `plan_spans`, `windows`, `example_rng`
- pipeline: `DataConfig`, `build_train_iterator`, `build_eval_batches`, `example_dataset`, `check_vocab`,
  `load_tokenizer`

Corpus preparation lives in the prepare/ package; the k-means unit quantizer is in spiritlm_jax.speech.kmeans.
"""

from spiritlm_jax.data.batch import BATCH_KEYS, LOSS_GROUP_IDS, LOSS_GROUPS
from spiritlm_jax.data.interleave import Encoded, encode_example, example_rng, interleave, plan_spans, windows
from spiritlm_jax.data.pipeline import (
    DataConfig,
    build_eval_batches,
    build_iterator,
    build_train_iterator,
    check_vocab,
    example_dataset,
    load_tokenizer,
)
from spiritlm_jax.data.sources import KINDS, ExampleSource, read_examples, shard_files, write_array_record, write_jsonl

__all__ = [
    "BATCH_KEYS",
    "KINDS",
    "LOSS_GROUPS",
    "LOSS_GROUP_IDS",
    "DataConfig",
    "Encoded",
    "ExampleSource",
    "build_eval_batches",
    "build_iterator",
    "build_train_iterator",
    "check_vocab",
    "encode_example",
    "example_dataset",
    "example_rng",
    "interleave",
    "load_tokenizer",
    "plan_spans",
    "read_examples",
    "shard_files",
    "windows",
    "write_array_record",
    "write_jsonl",
]
