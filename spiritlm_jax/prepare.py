"""`python -m spiritlm_jax.prepare`: build a training corpus from a manifest of recordings and text
files (shards per kind, corpus.json, bad_files.jsonl; resumable). docs/prepare.md has examples.

    python -m spiritlm_jax.prepare --manifest data.jsonl --text books.txt --out corpus/ \\
        --tokenizer mel:demo --sp-model tokenizer.model --workers 4

Keys come from a YAML file (`--config F`), `key=value` or `--key value` (`--manifest` and `--text`
repeat for several files; `--flag` / `--no-flag` for booleans). Exit status: 0 nothing skipped,
3 finished but some inputs skipped (bad_files.jsonl), 2 bad arguments or settings or --out in use
(nothing done), 1 a worker process died (finished units kept; rerun to resume).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from spiritlm_jax.config import run_cli
from spiritlm_jax.data import prepare as library
from spiritlm_jax.data.prepare import PrepareConfig, prepare
from spiritlm_jax.data.prepare.run import PrepareFailed

PROG = "python -m spiritlm_jax.prepare"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


def work(cfg: PrepareConfig) -> int:
    try:
        summary = prepare(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad arguments or settings, a directory in use
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PrepareFailed as e:  # a worker died: finished units are kept, a rerun resumes
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # e.g. a full disk while writing a shard: one line, finished units are kept
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; the finished units are kept: rerun to resume", file=sys.stderr)
        return EXIT_FAILED
    run = summary.pop("_run")
    sec = run["seconds"]
    rate = (
        (
            f"{run['files'] / sec:.2f} files/s, {run['audio_seconds'] / 3600 / sec:.2e} audio-h/s, "
            f"{run['audio_seconds'] / sec:.0f}x real time"
        )
        if sec > 0 and run["files"]
        else "no audio tokenized"
    )
    print(
        f"{cfg.out}: {summary['counts']} examples, {summary['hours']} h; {summary['bad_files']} bad inputs "
        f"(bad_files.jsonl); {run['units_done_now']} shards done in this run ({rate})"
    )
    return EXIT_SKIPPED if summary["bad_files"] else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(PrepareConfig, argv, PROG, work, description=__doc__ + "\n" + library.__doc__)


if __name__ == "__main__":
    sys.exit(main())
