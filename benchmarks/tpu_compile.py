"""Per-chip memory of a training step on TPU pods, from the TPU compiler (the trainer's compile-only
mode, spiritlm_jax/aot.py): one point per (topology, sequences per chip, remat, attention), each a
`python -m spiritlm_jax.train ... compile.topology=T` run; each result is appended to a JSONL file
as soon as it is known (a long sweep can be stopped and resumed: points already there are skipped).

    python -m benchmarks.tpu_compile --out docs/experiments/tpu_compile_7b.jsonl \\
        --point v5e:16x16,4,full,xla --point v5p:4x4x4,4,full,xla
    python -m benchmarks.tpu_compile --out docs/experiments/tpu_compile_7b.jsonl --table

Sequences per chip -> data.batch_size per host: 4 chips per host on v5e / v5p / v6e / v4 (v4's topology
lists two TensorCores per chip, so per device it is half). Needs the [tpu] extra (libtpu).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHIPS_PER_HOST = 4
GIB = 1024**3


def run_point(config: str, point: str, extra: list[str], timeout: int) -> dict:
    topo, seqs, remat, attention = point.split(",")[:4]
    more = point.split(",")[4:]
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "r.json"
        cmd = [
            sys.executable, "-m", "spiritlm_jax.train", "--config", config, f"compile.topology={topo}",
            f"data.batch_size={int(seqs) * CHIPS_PER_HOST}", f"model.remat={remat}", f"model.attention={attention}",
            f"compile.report={report}", *more, *extra,
        ]  # fmt: skip
        env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            rc, err = p.returncode, p.stderr.strip().splitlines()[-1:] if p.stderr.strip() else []
        except subprocess.TimeoutExpired:
            rc, err = None, [f"timeout after {timeout} s"]
        rec = {"point": point, "seqs_per_chip": int(seqs), "remat": remat, "attention": attention}
        rec["extra"] = more + extra
        rec.update({"rc": rc, "compile_s": round(time.time() - t0, 1), "error": err[0] if err and rc else None})
        rec["report"] = json.loads(report.read_text()) if report.is_file() else None
        return rec


def table(rows: list[dict]) -> str:
    out = [
        "| topology | seqs/chip | tokens/step | remat | attention | args GiB | temps GiB | total GiB | HBM GiB "
        "| headroom | fits | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rep = r.get("report") or {}
        per = rep.get("per_device_bytes") or {}
        hbm = rep.get("hbm_bytes")

        def g(k, per=per):
            return f"{per[k] / GIB:.2f}" if k in per else "-"

        short = re.search(r"short by [\d.]+ GiB", r.get("error") or "")
        fits = "yes" if rep.get("fits") else f"no ({short.group(0)})" if short else (r.get("error") or "no")
        topo = r["point"].split(",")[0] + (" " + " ".join(r["extra"]) if r.get("extra") else "")
        tokens = f"{rep['global_batch'] * rep['seq_len'] / 1e6:.2f} M" if rep.get("global_batch") else "-"
        room = f"{1 - per['total'] / hbm:.0%}" if per and hbm else "-"
        out.append(
            f"| {topo} | {r['seqs_per_chip']} | {tokens} | {r['remat']} | {r['attention']} | {g('arguments')} | "
            f"{g('temporaries')} | {g('total')} | {hbm / GIB if hbm else 0:.2f} | {room} | {fits} | {r['compile_s']} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/spiritlm_base_7b.yaml")
    ap.add_argument("--out", required=True, help="JSONL file the results are appended to")
    ap.add_argument("--point", action="append", default=[], help="topology,seqs_per_chip,remat,attention[,key=value]")
    ap.add_argument("--set", action="append", default=[], help="key=value for every point")
    ap.add_argument("--timeout", type=int, default=1500)
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out")
    args = ap.parse_args()
    out = Path(args.out)
    done = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()] if out.is_file() else []
    if args.table:
        print(table(done))
        return
    seen = {(r["point"], tuple(r.get("extra") or [])) for r in done}
    for point in args.point:
        if (point, tuple(point.split(",")[4:] + args.set)) in seen:
            continue
        rec = run_point(args.config, point, args.set, args.timeout)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(table([rec]).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
