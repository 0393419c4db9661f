"""Units of work on Apache Beam: the `runner: beam` of prepare and align (docs/beyond_one_machine.md).

Imported only inside `prepare` / `align_manifest` when runner=beam, so the local runner needs no Beam.
The pipeline: Create(units) -> Reshuffle (spread over the workers) -> ParDo(UnitDoFn): the worker
state (speech tokenizer, aligner) is built once per DoFn instance in `setup`; each unit gives its
record (main output) and its bad inputs (the "bad" side output) -> both gathered -> `finish(records,
bads)` runs once, at the end. The callables are plain functions of the callers' modules (the same
ones the local runner uses), so the two runners cannot drift.

A unit that raises is reported as one line naming the unit and its input (`UnitFailed`), not as
Beam's traceback.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional

from tqdm import tqdm

_root = logging.getLogger()
_level = _root.level
_root.setLevel(logging.ERROR)  # Beam's import logs "apitools not found" on the root logger
try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
finally:
    _root.setLevel(_level)

_TAG = "<<spiritlm-unit-failed>>"


class UnitFailed(RuntimeError):
    """A unit of a Beam pipeline failed; the message names the unit and the input it was on."""


def pipeline_options(beam_options: Sequence[str], workers: int) -> PipelineOptions:
    """`k=v` strings -> PipelineOptions. Defaults: DirectRunner, in `workers` separate processes
    (multi_processing) when workers > 0; SDK workers log warnings only. A given option wins."""
    opts = {"runner": "DirectRunner", "default_sdk_harness_log_level": "ERROR"}
    if workers > 0:
        opts |= {"direct_running_mode": "multi_processing", "direct_num_workers": str(workers)}
    for o in beam_options:
        k, eq, v = o.partition("=")
        if not eq or not k.strip():
            raise ValueError(f"beam_option {o!r}: expected key=value (e.g. runner=DataflowRunner)")
        opts[k.strip().lstrip("-")] = v
    return PipelineOptions([f"--{k}={v}" for k, v in opts.items()])


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


class UnitDoFn(beam.DoFn):
    """`make_worker()` once per DoFn instance (setup); `run_unit(worker, unit) -> (record, bads)` per
    unit; `where(worker, unit)` names the input a failure happened on."""

    def __init__(self, make_worker: Callable[[], Any], run_unit: Callable, where: Callable):
        self.make_worker, self.run_unit, self.where = make_worker, run_unit, where

    def setup(self):
        try:
            self.worker = self.make_worker()
        except Exception as e:  # noqa: BLE001 (reported as one line)
            raise UnitFailed(f"{_TAG}worker set-up failed: {_one_line(e)}{_TAG}") from None

    def process(self, item):
        index, unit = item
        try:
            record, bads = self.run_unit(self.worker, unit)
        except Exception as e:  # noqa: BLE001 (reported as one line)
            raise UnitFailed(f"{_TAG}{self.where(self.worker, unit)}: {_one_line(e)}{_TAG}") from None
        yield record
        for i, b in enumerate(bads):
            yield beam.pvalue.TaggedOutput("bad", (index, i, b))


def _finish(_, records: list, bads: list, finish: Callable) -> None:
    by_unit: dict[int, list] = {}
    for index, _i, b in sorted(bads, key=lambda t: t[:2]):
        by_unit.setdefault(index, []).append(b)
    finish(records, by_unit)


def _watch(count: Callable[[], int], total: int, initial: int, desc: str, stop: threading.Event) -> None:
    bar = tqdm(total=total, initial=initial, desc=desc, unit="unit")
    try:
        while not stop.wait(1.0):
            try:
                bar.update(max(0, count() - bar.n))
            except OSError:
                pass
        bar.update(max(0, count() - bar.n))
    finally:
        bar.close()


def run_units(
    units: list,
    make_worker: Callable[[], Any],
    run_unit: Callable,
    where: Callable,
    finish: Callable[[list, dict[int, list]], None],
    beam_options: Sequence[str] = (),
    workers: int = 0,
    progress: Optional[tuple[Callable[[], int], int, int, str]] = None,
) -> None:
    """Run every unit on Beam, then `finish(records, {unit index: [bad, ...]})` once. `progress`:
    (count of finished units, total, already done, label) polled for a progress bar."""
    options = pipeline_options(beam_options, workers)
    stop = threading.Event()
    watcher = None
    if progress is not None:
        watcher = threading.Thread(target=_watch, args=(*progress, stop), daemon=True)
        watcher.start()
    beam_log = logging.getLogger("apache_beam")
    beam_level = beam_log.level
    beam_log.setLevel(logging.CRITICAL)  # workers' notices and tracebacks are relayed through it: we say one line
    try:
        with beam.Pipeline(options=options) as p:
            out = (
                p
                | "units" >> beam.Create(list(enumerate(units)))
                | "spread" >> beam.Reshuffle()
                | "work" >> beam.ParDo(UnitDoFn(make_worker, run_unit, where)).with_outputs("bad", main="records")
            )
            records = beam.pvalue.AsList(out.records)
            bads = beam.pvalue.AsList(out.bad)
            _ = p | "end" >> beam.Create([None]) | "finish" >> beam.Map(_finish, records, bads, finish)
    except Exception as e:
        m = re.search(re.escape(_TAG) + "(.*?)" + re.escape(_TAG), str(e), re.S)
        if m:
            raise UnitFailed(" ".join(m.group(1).split())) from None
        raise
    finally:
        beam_log.setLevel(beam_level)
        stop.set()
        if watcher is not None:
            watcher.join()
