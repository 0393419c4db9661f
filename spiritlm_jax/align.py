"""`python -m spiritlm_jax.align`: word times for recordings with transcripts, ready for `prepare`
(docs/alignment.md).

    python -m spiritlm_jax.align --manifest in.jsonl --out aligned.jsonl --aligner pocketsphinx --workers 2
    python -m spiritlm_jax.align --audio-dir LibriSpeech/dev-clean --out aligned.jsonl --aligner ctc:ctc_model

Keys come from a YAML file (`--config F`), `key=value` or `--key value` (`--manifest` and `--audio-dir`
repeat; `--flag` / `--no-flag` for booleans). Exit status: 0 nothing skipped, 3 finished but some
inputs skipped (bad_files.jsonl), 2 bad arguments or settings (nothing done), 1 a failed
Beam batch (named; finished batches kept, rerun to resume).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from spiritlm_jax.alignment import run as library
from spiritlm_jax.alignment.run import AlignConfig, AlignFailed, align_manifest
from spiritlm_jax.config import run_cli

PROG = "python -m spiritlm_jax.align"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


def work(cfg: AlignConfig) -> int:
    try:
        s = align_manifest(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AlignFailed as e:  # runner=beam: a batch failed; finished batches are kept, a rerun resumes
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    sec = s["seconds"]
    rate = f", {s['audio_seconds'] / sec:.1f} audio-s/s" if sec > 0 and s["audio_seconds"] else ""
    print(
        f"{cfg.out}: {s['aligned']} aligned now, {s['kept']} had words, {s['already_done']} done before; "
        f"{s['bad']} bad inputs ({s['bad_files']}); {sec:.1f} s{rate}"
    )
    return EXIT_SKIPPED if s["bad"] else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(AlignConfig, argv, PROG, work, description=__doc__ + "\n" + library.__doc__)


if __name__ == "__main__":
    sys.exit(main())
