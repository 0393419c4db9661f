"""`python -m spiritlm_jax.evaluate TASK ...`: one command per task family, and suites of them.

    python -m spiritlm_jax.evaluate likelihood --checkpoint runs/demo --items items.jsonl \\
        --setting T --setting S --out eval/demo
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --zerospeech lexical/dev --setting S --out eval/swuggy
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --storycloze-csv cloze_test_test__spring2016.csv \\
        --setting T --out eval/sc_text          (add --topic for Topic-StoryCloze)
    python -m spiritlm_jax.evaluate likelihood --checkpoint DIR --storycloze-dir sSC --setting S --out eval/ssc
    python -m spiritlm_jax.evaluate stsp --checkpoint DIR --manifest stsp_data/manifest/emov/emov.test.jsonl \\
        --text-classifier stsp_data/model/text_classifier --text-tokenizer ROBERTA_TOKENIZER_DIR \\
        --audio-classifier stsp_data/model/speech_classifier --shots 0 --out eval/stsp0
    python -m spiritlm_jax.evaluate fewshot --task asr --checkpoint DIR --items test.jsonl \\
        --shots-from train.jsonl --shots 10 --out eval/asr10      (also --task tts / intent)
    python -m spiritlm_jax.evaluate suite suite.yaml --out eval/suite

Each command's keys are fields of its config schema (`python -m spiritlm_jax.evaluate TASK --help` lists
them); give them as `--key value`, `key=value` or in `--config FILE.yaml`. Every run writes
<out>/report.json, report.md and report.png (when matplotlib is installed), prints progress, and resumes
where it stopped (likelihood: scores cached per setting in <out>/scores_<setting>.json; stsp and
fewshot: per-item JSONL). See docs/evaluation.md. The library side is `spiritlm_jax.evaluation`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Optional, Sequence

from spiritlm_jax import paths
from spiritlm_jax.config import ConfigError, HelpRequested, parse_cli
from spiritlm_jax.evaluation.suite import SuiteConfig, run_suite, suite_runs
from spiritlm_jax.evaluation.tasks import TASKS
from spiritlm_jax.locking import lock_dir

PROG = "python -m spiritlm_jax.evaluate"
COMMANDS = {**{k: (schema, fn) for k, (schema, fn, _) in TASKS.items()}, "suite": (SuiteConfig, run_suite)}
__all__ = ["main", "suite_runs"]


def _usage() -> str:
    lines = [f"usage: {PROG} {{{','.join(COMMANDS)}}} ...", "", __doc__.strip(), "", "commands:"]
    lines += [f"  {k:<11} {doc}" for k, (_, _, doc) in TASKS.items()]
    lines.append(f"  {'suite':<11} run the commands listed in a YAML file; a failing run is reported, not fatal")
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(message, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    if task not in COMMANDS:
        print(f"{PROG}: error: unknown command {task!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    if task == "suite" and rest and not rest[0].startswith("-") and "=" not in rest[0]:
        rest = ["--suite", rest[0], *rest[1:]]  # `suite FILE.yaml --out DIR`
    schema, run = COMMANDS[task]
    try:
        cfg = parse_cli(schema, rest, f"{PROG} {task}", schema.__doc__ or "")
    except HelpRequested as e:
        print(e)
        return 0
    except ConfigError as e:
        print(f"{PROG} {task}: error: {e}", file=sys.stderr)
        return 2
    out = getattr(cfg, "out", None)
    try:
        # one job per output folder: a second evaluation into the same --out is refused (exit 2);
        # an --out on a bucket is written in a local copy, uploaded at the end (paths.staged_dir)
        with lock_dir(out, "evaluation output") if out else contextlib.nullcontext():
            if out and paths.is_remote(out):
                with paths.staged_dir(out) as local:
                    return run(dataclasses.replace(cfg, out=str(local)), _progress)
            return run(cfg, _progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
