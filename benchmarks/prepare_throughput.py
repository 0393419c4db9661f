"""Throughput of `prepare` on CPU: the local runner (in this process) against `--runner beam` on Beam's
DirectRunner with 1 and 2 worker processes (multi_processing), same manifest, same tokenizer.

    nice -n 10 python benchmarks/prepare_throughput.py [--n 192] [--shard-size 8] [--tokenizer mel:demo]

The manifest cycles through the real recordings shipped for the tests (tests/data/*.wav, 8 kHz
telephone prompts, and amfm_decompy's sample.wav, 16 kHz), n entries in all. Prints per run: the
wall time and recordings/s end to end (Beam's start-up included: its worker processes import JAX
and load the tokenizer), and recordings/s per worker process while working (files / the summed
`seconds` of the units a run did, from the done records), with the ratio to the local runner.
Needs the [beam] extra for the Beam rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

from spiritlm_jax.data.prepare import PrepareConfig, prepare
from spiritlm_jax.data.prepare.plan import STATE_DIR, read_done

ROOT = Path(__file__).resolve().parents[1]


def recordings() -> list[Path]:
    amfm = Path(importlib.util.find_spec("amfm_decompy").origin).parent / "sample.wav"
    return sorted((ROOT / "tests" / "data").glob("*.wav")) + [amfm]


def run_one(manifest: Path, out: Path, args, runner: str, workers: int) -> dict:
    cfg = PrepareConfig(
        out=str(out),
        manifest=(str(manifest),),
        tokenizer=args.tokenizer,
        shard_size=args.shard_size,
        runner=runner,
        workers=workers,
        progress=False,
    )
    t0 = time.perf_counter()
    summary = prepare(cfg)
    wall = time.perf_counter() - t0
    done = read_done(out / STATE_DIR / "done.jsonl")
    files = sum(r["files"] for r in done.values())
    busy = sum(r["seconds"] for r in done.values())
    n_ok = summary["counts"]["speech"] + summary["counts"]["aligned"]
    return {"wall_s": wall, "files": files, "ok": n_ok, "busy_s": busy, "per_process": files / busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=192)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--tokenizer", default="mel:demo")
    args = ap.parse_args()
    recs = recordings()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        manifest = d / "manifest.jsonl"
        manifest.write_text(
            "".join(json.dumps({"audio": str(recs[i % len(recs)]), "id": f"r{i}"}) + "\n" for i in range(args.n))
        )
        runs = [("local", 0, "local runner, in process")]
        if importlib.util.find_spec("apache_beam") is not None:
            runs += [
                ("beam", 1, "beam DirectRunner, 1 worker process"),
                ("beam", 2, "beam DirectRunner, 2 worker processes"),
            ]
        results = {}
        for runner, workers, label in runs:
            r = run_one(manifest, d / f"out-{runner}-{workers}", args, runner, workers)
            results[label] = r
            ref = results["local runner, in process"]
            print(
                f"{label:40s} wall {r['wall_s']:6.1f} s  {r['files'] / r['wall_s']:6.2f} rec/s end to end "
                f"({r['files'] / r['wall_s'] / max(workers, 1):6.2f} per process; "
                f"x{(r['files'] / r['wall_s']) / (ref['files'] / ref['wall_s']):.2f} of local)  "
                f"{r['per_process']:6.2f} rec/s per process while working "
                f"(x{r['per_process'] / ref['per_process']:.2f})",
                flush=True,
            )
        print(
            f"{args.n} recordings ({len(recs)} distinct files), tokenizer {args.tokenizer}, "
            f"shard_size {args.shard_size}"
        )


if __name__ == "__main__":
    main()
