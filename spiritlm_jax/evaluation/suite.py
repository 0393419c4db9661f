"""Suites: a YAML list of evaluation runs, each built directly into its task's config (`config.from_dict`);
a failing run is reported, not fatal. Writes <out>/suite.json and suite.md."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
import traceback
import typing
from pathlib import Path
from typing import Callable

import yaml

from spiritlm_jax.config import from_dict
from spiritlm_jax.evaluation.tasks import TASKS


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """`python -m spiritlm_jax.evaluate suite SUITE.yaml --out DIR`."""

    suite: str  # YAML: a list of {task, args, name} (or {runs: [...], defaults: {...}})
    out: str  # folder for suite.json and suite.md


def _argv(task: str, args: dict, where: str) -> list[str]:
    """The equivalent command line of a run (for the log and suite.json)."""
    argv = [task]
    for key, value in args.items():
        flag = "--" + str(key).replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, dict):
                raise ValueError(f"{where}: arg {key!r} is a mapping; give a value or a list of values")
            if v is True:
                argv.append(flag)
            elif v is not False and v is not None:
                argv += [flag, str(v)]
    return argv


def suite_runs(spec, source: str = "suite") -> list[dict]:
    """[{task, name, args, argv, out}] from a suite spec: a list of runs, or {runs: [...], defaults: {...}}
    where defaults are args given to every run (a run's own args win)."""
    defaults = {}
    if isinstance(spec, dict):
        unknown = set(spec) - {"runs", "defaults"}
        if unknown:
            raise ValueError(f"{source}: unknown top-level key(s) {sorted(unknown)}; use 'runs' and 'defaults'")
        defaults = spec.get("defaults") or {}
        spec = spec.get("runs")
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"{source}: expected a non-empty list of runs (or a mapping with 'runs')")
    if not isinstance(defaults, dict):
        raise ValueError(f"{source}: 'defaults' must be a mapping of args")
    runs = []
    for i, run in enumerate(spec, 1):
        where = f"{source}: run {i}"
        if not isinstance(run, dict) or "task" not in run:
            raise ValueError(f"{where}: expected a mapping with 'task' (and 'args', 'name'), got {run!r}")
        unknown = set(run) - {"task", "args", "name"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; use task, args, name")
        if run["task"] == "suite":
            raise ValueError(f"{where}: a suite cannot run another suite")
        args = {str(k).replace("-", "_"): v for k, v in {**defaults, **(run.get("args") or {})}.items()}
        runs.append(
            {
                "task": str(run["task"]),
                "name": str(run.get("name") or f"{i}-{run['task']}"),
                "args": args,
                "argv": _argv(str(run["task"]), args, where),
                "out": args.get("out"),
            }
        )
    return runs


def run_config(task: str, args: dict):
    """The task's config from a run's args (None values left out; a scalar for a list key becomes a list)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    schema = TASKS[task][0]
    hints = typing.get_type_hints(schema)
    data = {}
    for k, v in args.items():
        if v is None:
            continue
        if typing.get_origin(hints.get(k)) is list and not isinstance(v, list):
            v = [v]
        data[k] = v
    return from_dict(schema, data)


def run_one(task: str, args: dict, progress: Callable) -> tuple[int, str | None]:
    """Build and run one task; (exit code, error message or None). Never exits the process."""
    try:
        cfg = run_config(task, args)
        return TASKS[task][1](cfg, progress), None
    except (ValueError, FileNotFoundError) as e:
        return 2, str(e)
    except Exception as e:  # noqa: BLE001 - a suite reports a crashed run and goes on
        traceback.print_exc()
        return 1, f"{type(e).__name__}: {e}"


def run_suite(cfg: SuiteConfig, progress: Callable = print) -> int:
    path = Path(cfg.suite)
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    runs = suite_runs(spec, str(path))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, run in enumerate(runs, 1):
        progress(f"[suite {i}/{len(runs)}] {run['name']}: python -m spiritlm_jax.evaluate {shlex.join(run['argv'])}")
        t0 = time.time()
        rc, error = run_one(run["task"], run["args"], progress)
        res = {
            "name": run["name"],
            "task": run["task"],
            "argv": run["argv"],
            "rc": rc,
            "status": "ok" if rc == 0 else "failed",
            "seconds": round(time.time() - t0, 1),
            "error": error,
            "summary": {},
            "report": None,
        }
        report = Path(run["out"]) / "report.json" if run["out"] else None
        if rc == 0 and report is not None and report.is_file():
            res["report"] = str(report)
            res["summary"] = json.loads(report.read_text()).get("summary", {})
        if error:
            print(f"[suite {i}/{len(runs)}] {run['name']} failed: {error}", file=sys.stderr, flush=True)
        results.append(res)
    failed = sum(r["rc"] != 0 for r in results)
    (out / "suite.json").write_text(json.dumps({"suite": str(path), "runs": results, "failed": failed}, indent=2))
    lines = [f"# Suite {path.name}", "", "| run | task | status | seconds | results |", "|---|---|---|---|---|"]
    for r in results:
        metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r["summary"].items())
        detail = metrics if r["rc"] == 0 else (r["error"] or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['name']} | {r['task']} | {r['status']} | {r['seconds']} | {detail} |")
    (out / "suite.md").write_text("\n".join(lines) + "\n")
    progress(f"suite: {len(results) - failed}/{len(results)} runs ok; summary {out / 'suite.md'}")
    return 0 if failed == 0 else 1
