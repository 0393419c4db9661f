"""PrepareConfig: the settings of a corpus preparation (the schema of `python -m spiritlm_jax.prepare`;
each field's `# comment` is its line in `--help`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from spiritlm_jax.data.sources import FORMATS

RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    out: str = ""  # output corpus directory (required)
    manifest: tuple[str, ...] = ()  # JSONL manifests of recordings (repeat --manifest for several)
    text: tuple[str, ...] = ()  # text files, one example per non-empty line, .txt or .txt.gz (repeatable)
    audio_dir: tuple[str, ...] = ()  # folders of x.wav|x.flac + x.txt, or LibriSpeech *.trans.txt (repeatable)
    align: Optional[str] = None  # align entries with text but no words: pocketsphinx | ctc:DIR (docs/alignment.md)
    tokenizer: str = "mel:demo"  # speech tokenizer: mel:DIR | mel:demo | base:DIR | expressive:DIR
    sp_model: Optional[str] = None  # SentencePiece model: copied to out/tokenizer.model, counts text tokens
    shard_size: int = 1000  # manifest entries per audio unit (one speech + one aligned shard)
    text_shard_size: int = 10000  # text lines per text shard
    workers: int = 0  # worker processes (spawned, or Beam's local runner processes); 0 = in this process
    runner: str = "local"  # local | beam (Apache Beam, the [beam] extra; docs/beyond_one_machine.md)
    beam_option: tuple[str, ...] = ()  # Beam pipeline option key=value (repeatable), e.g. runner=DataflowRunner
    batch_size: int = 16  # recordings per tokenizer call
    format: str = "array_record"  # shard format: array_record | jsonl.gz | jsonl
    align_tolerance: float = 0.1  # seconds a word may end past the audio's end
    transcripts_as_text: bool = False  # also emit manifest transcripts as text examples
    overwrite: bool = False  # start over when out/ holds a different preparation
    progress: bool = True  # show a progress bar (--no-progress to hide it)

    def __post_init__(self):
        if not self.out:
            raise ValueError("out (the output directory) is required")
        if not self.manifest and not self.text and not self.audio_dir:
            raise ValueError("nothing to prepare: give at least one manifest, audio folder or text file")
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {sorted(FORMATS)}")
        if self.shard_size < 1 or self.text_shard_size < 1 or self.batch_size < 1 or self.workers < 0:
            raise ValueError("shard_size, text_shard_size and batch_size must be >= 1, workers >= 0")
        if self.runner not in RUNNERS:
            raise ValueError(f"runner {self.runner!r} is not one of {', '.join(RUNNERS)}")
        if self.align_tolerance < 0:
            raise ValueError(f"align_tolerance must be >= 0, got {self.align_tolerance}")
