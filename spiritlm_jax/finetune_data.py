"""`python -m spiritlm_jax.finetune_data --preset asr|tts|continuation --src SRC --out pairs.jsonl`.

Writes prompt -> response examples (the JSONL `python -m spiritlm_jax.finetune` reads, data/pairs.py)
from what users already have: a prepared corpus directory (its aligned examples of `split`: units and
words) or a manifest of {"audio": PATH, "text": TRANSCRIPT} lines.

    asr:           speech -> its transcript          tts: text -> its speech
    continuation:  the first half of the words -> the rest (and, from a corpus, of the units)

`instruction` puts a text segment before the input (e.g. --instruction "Transcribe:").
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Literal, Optional

from spiritlm_jax.config import run_cli
from spiritlm_jax.data.pairs import preset_examples
from spiritlm_jax.data.sources import write_jsonl

PROG = "python -m spiritlm_jax.finetune_data"


@dataclasses.dataclass(frozen=True)
class PairsConfig:
    preset: Literal["asr", "tts", "continuation"]  # the task the examples teach
    src: str  # a prepared corpus directory (aligned examples) or a manifest JSONL ({"audio", "text"})
    out: str  # the JSONL file to write
    split: str = "train"  # the corpus split to read (train / eval)
    instruction: str = ""  # text put before each input (none by default)
    limit: Optional[int] = None  # at most this many examples (the first ones)


def write_pairs(cfg: PairsConfig) -> int:
    try:
        examples = preset_examples(cfg.preset, cfg.src, cfg.split, cfg.instruction)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: --src: {e}", file=sys.stderr)
        return 2
    n = write_jsonl(cfg.out, examples[: cfg.limit] if cfg.limit is not None else examples)
    print(f"{n} {cfg.preset} examples -> {cfg.out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_cli(PairsConfig, argv, PROG, write_pairs, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
