"""The layout of a training run's Orbax checkpoints, shared by training (which writes them) and the
bundle (which reads the LM out of them); it lives here so that reading a run never imports training.

    <run>/checkpoints/<step>/{state, data, meta}
    state: {"step", "params", "opt_state"}      (the train state pytree; the LM's params under "params")
    data:  the data iterator state (JSON)
    meta:  {"config": <the run's TrainConfig as a dict>, "step": step}  (the LlamaConfig under config.model)
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import orbax.checkpoint as ocp

CHECKPOINTS_DIR = "checkpoints"
STATE_ITEM, DATA_ITEM, META_ITEM = "state", "data", "meta"
ITEM_NAMES = (STATE_ITEM, DATA_ITEM, META_ITEM)
PARAMS_KEY = "params"  # where the LM's parameters sit in the train state
MODEL_CONFIG_KEY = "model"  # where the LlamaConfig sits in meta["config"]


def make_meta(config: dict[str, Any], step: int) -> dict[str, Any]:
    """The meta item of a checkpoint: the run config (a dict with the LlamaConfig under "model")."""
    if MODEL_CONFIG_KEY not in config:
        raise ValueError(f"a training checkpoint's config needs a {MODEL_CONFIG_KEY!r} section")
    return {"config": config, "step": int(step)}


def lm_config_dict(meta: dict[str, Any]) -> dict[str, Any]:
    return meta["config"][MODEL_CONFIG_KEY]


def checkpoints_dir(directory: str | Path) -> Optional[Path]:
    """The checkpoints/ directory of a run directory (or the directory itself if it is one), else None."""
    d = Path(directory)
    if (d / CHECKPOINTS_DIR).is_dir():
        return d / CHECKPOINTS_DIR
    if d.name == CHECKPOINTS_DIR and d.is_dir():
        return d
    return None


class _DropReadOnlyNotice(logging.Filter):
    """Orbax warns twice that a read-only manager is read-only, for every reader that asked for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not msg.startswith(("Given directory is read only", "CheckpointManagerOptions.read_only=True"))


def read_only_manager(directory: str | Path) -> ocp.CheckpointManager:
    path = Path(directory).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    flt, loggers = _DropReadOnlyNotice(), [logging.getLogger(n) for n in ("absl", "")]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        return ocp.CheckpointManager(
            path, item_names=ITEM_NAMES, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
        )
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


class _DropOrbaxErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if "orbax" in (record.pathname or ""):
            return False
        # asyncio's "Task exception was never retrieved" for Orbax reads that failed beside the one
        # error the restore raised (a damaged checkpoint fails in several arrays at once)
        return not (record.name == "asyncio" and "orbax" in record.getMessage())


_QUIET_LOGGERS = ("absl", "asyncio", "")


def _from_orbax(unraisable) -> bool:
    """An abandoned Orbax read: raised in Orbax code, or TensorStore completing a read for the event
    loop Orbax already closed."""
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    tb = getattr(exc, "__traceback__", None)
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return "orbax" in repr(getattr(unraisable, "object", ""))


@contextlib.contextmanager
def quiet_orbax_errors(permanent: bool = False) -> Iterator[None]:
    """Orbax logs a failed background save or read with ~1000 lines of tracebacks from several threads
    (and coroutines it abandons print "Exception ignored in ..."); the trainer and the readers report
    the error in one line instead (the error itself is still raised). `permanent` (command lines):
    also for the threads still ending when the process exits."""
    flt = _DropOrbaxErrors()
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    for lg in loggers:
        lg.addFilter(flt)
    previous_hook = sys.unraisablehook

    def hook(unraisable):
        if not _from_orbax(unraisable):
            previous_hook(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if not permanent:
            for lg in loggers:
                lg.removeFilter(flt)
            sys.unraisablehook = previous_hook


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def restore_params(directory: str | Path, step: Optional[int] = None):
    """(params, meta) of a training checkpoint, on the default device, for generation/export.

    Restores the whole state (optimizer moments included) and keeps the parameters: simple, and
    fine up to ~1B parameters on one host; larger runs export with the mesh they trained on.
    Without `step`, the newest readable checkpoint: a broken one (truncated or damaged files) is
    named on stderr and the one before it is used (nothing is moved: readers never change a run).
    """
    mngr = read_only_manager(directory)
    if step is not None:
        return _restore(mngr, step)
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(f"no checkpoint found in {directory}")
    broken = []
    for s in steps:
        try:
            with quiet_orbax_errors():
                out = _restore(mngr, s)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - any damage shows up as some error of Orbax/TensorStore
            broken.append(s)
            print(f"warning: checkpoint {Path(directory) / str(s)} cannot be read ({_first_line(e)})", file=sys.stderr)
            continue
        if broken:
            print(f"warning: using checkpoint step {s} instead of the newest, broken one", file=sys.stderr)
        return out
    raise ValueError(f"no readable checkpoint in {directory} (steps {steps} are all broken)")


def _restore(mngr: ocp.CheckpointManager, step: int):
    out = mngr.restore(
        step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(), META_ITEM: ocp.args.JsonRestore()})
    )
    return out[STATE_ITEM][PARAMS_KEY], out[META_ITEM]
