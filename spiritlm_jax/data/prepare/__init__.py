"""Corpus preparation: a manifest of recordings (+ text files) -> prepared shards per kind.

    prepare(PrepareConfig(out="corpus/", manifest=("data.jsonl",), text=("books.txt",), workers=4))

(command line: `python -m spiritlm_jax.prepare`, docs/prepare.md.)

Manifest: one JSON object per line, `{"audio": path, "text"?: str, "words"?: [[word, start_s, end_s], ...],
"id"?: str, "source"?: str, "speaker"?: name, "style"?: name}`; relative audio paths are relative to the
manifest's folder; speech and aligned examples keep the (absolute) audio path and the names. An entry
with `words` becomes an aligned example, one without a speech-only example (its `text`, if any, also
becomes a text example with `transcripts_as_text`). Text files (.txt or .txt.gz): one text example per
non-empty line.

Output (`out/`): `{text,speech,aligned}/<kind>-NNNNN.array_record` (or .jsonl.gz) shards in the
example format of docs/data.md, `corpus.json` (counts, hours, tokens and words per kind, layout,
unit type), `bad_files.jsonl` (one {"path", "reason", "entry"} per skipped input), `tokenizer.model`
(a copy of sp_model), and `.prepare/` (plan and done-list, for resuming).

Work is split into units: `audio-NNNNN` (shard_size consecutive manifest entries -> one speech and one
aligned shard) and `text-NNNNN` (text_shard_size lines -> one text shard). A unit's shards are written
under temporary names and renamed, then the unit is appended to `.prepare/done.jsonl` with its
statistics and bad files. A rerun with the same inputs and settings skips done units and rewrites the
rest (a shard of an unfinished unit, complete or not, is rewritten); different inputs or settings are
an error unless `overwrite` (which deletes only the files the earlier preparation wrote); a done unit
whose audio changed (size or modification time) is done again. The output directory is locked for the
run (`locking.lock_dir`); a worker that dies is an error naming its unit (`run.PrepareFailed`).
Workers (`workers` > 0) are spawned processes, each holding its own speech tokenizer; a worker
quantizes `batch_size` recordings per tokenizer call when the tokenizer has `encode_units_batch`.
`runner: beam` runs the same units as an Apache Beam pipeline (`spiritlm_jax.beam_runner`; each unit
then writes `.prepare/done/<unit>.json`), and every input/output path may be gs:// or s3://
(`spiritlm_jax.paths`): docs/beyond_one_machine.md.

A bad input (missing or unreadable audio, empty or shorter than one 80 ms chunk, malformed entry,
words that are not [word, start, end] with 0 <= start <= end, starts not in order, or a word past
the end of the audio by more than `align_tolerance` seconds, a truncated WAV, a line that is not UTF-8,
a truncated .gz) is reported in bad_files.jsonl and skipped.

Speech tokenizers (`tokenizer`): "mel:DIR" (k-means quantizer dir; "mel:demo" = the demo corpus'
log-mel units), "base:DIR" (converted SpeechTokenizer: HuBERT + quantizer), "expressive:DIR" (the same
directory with fcpe/, f0_vqvae/ and style/: HuBERT + pitch + style units), or any
object with `encode_units(wav_16k) -> {"hubert": [T], "pitch"?: [..], "style"?: [..]}` (API only).

Modules, one job each (low -> high): `shards` (shard paths, atomic writes), `config` (PrepareConfig),
`manifest` (reading manifests and text files, fingerprints, word-time checks), `plan` (work units,
the `.prepare/` state), `encode` (speech tokenizers; one unit -> examples -> shards + statistics),
`run` (`prepare`: the driver with workers, progress, summary).
"""

from spiritlm_jax.data.prepare.config import PrepareConfig
from spiritlm_jax.data.prepare.encode import UnitWorker, describe_tokenizer, encode_batch, load_speech_tokenizer
from spiritlm_jax.data.prepare.manifest import check_words, fingerprint, read_manifest, read_text_lines
from spiritlm_jax.data.prepare.plan import STATE_DIR, Unit, plan_units
from spiritlm_jax.data.prepare.run import prepare, summarize
from spiritlm_jax.data.prepare.shards import FORMATS

__all__ = [
    "FORMATS",
    "STATE_DIR",
    "PrepareConfig",
    "Unit",
    "UnitWorker",
    "check_words",
    "describe_tokenizer",
    "encode_batch",
    "fingerprint",
    "load_speech_tokenizer",
    "plan_units",
    "prepare",
    "read_manifest",
    "read_text_lines",
    "summarize",
]
