"""What a training run directory promises, for any trainer that writes one (the LM loop here, the
vocoder trainer too). The caller holds `locking.lock_dir(out_dir)` for the whole run; these functions
decide how a run starts and keep the directory from ever pairing one run's weights with another's
config or metrics (docs/reliability.md):

- `check_start`: `resume=true` continues the latest checkpoint; `resume=false` into a directory that
  already holds a run is refused (`RunDirError`, exit 2) unless `fresh=true`, which deletes only the
  trainer's own files (`RunDirPolicy.tool_files`; broken_checkpoints/ is kept) and starts from step 0.
- `check_resume_config`: before anything is touched, the new config is compared with the one saved in
  the checkpoint: a change of a shape key (`shape_keys`, e.g. `model`) is an error; any other change
  outside `free_keys` needs `allow_changes=true` and is then recorded (`record_changes`).
- `restore_with_fallback`: a checkpoint that cannot be read is named, moved to `broken_checkpoints/`
  and the previous one is tried (out-of-memory errors are raised, never taken for damage); none
  readable is an error with a one-line instruction.
- `truncate_metrics`: the metrics records of steps after the restored one are dropped (they are
  replayed), so metrics.jsonl holds each step once.
- `one_line`: an exception's one-line summary, with the OSError (e.g. ENOSPC) of its chain first.

    policy = RunDirPolicy(tool_files=(...), shape_keys=("model",), free_keys=("steps", "mesh", ...))
    mode = check_start(out_dir, policy, resume=cfg.checkpoint.resume, fresh=cfg.checkpoint.fresh,
                       steps=all_steps)                       # "fresh" | "resume"
    changes = check_resume_config(saved_config, to_dict(cfg), policy, allow_changes=..., where=...)
    step, restored = restore_with_fallback(out_dir / "checkpoints", steps, restore_fn, policy, log)
    write the config; record_changes(out_dir, policy, step, changes); truncate_metrics(out_dir, policy, step)
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

from spiritlm_jax.config import ConfigError

T = TypeVar("T")
BROKEN_DIR = "broken_checkpoints"
CHANGES_FILE = "config_changes.jsonl"


class RunDirError(ConfigError):
    """The run directory cannot be used the way the config asks (nothing was changed; exit 2)."""


@dataclasses.dataclass(frozen=True)
class RunDirPolicy:
    """How one trainer uses its run directory."""

    tool_files: tuple[str, ...]  # names under out_dir this trainer writes (fresh=true deletes only these)
    shape_keys: tuple[str, ...]  # dotted prefixes whose change makes a checkpoint unusable ("model")
    free_keys: tuple[str, ...]  # dotted prefixes that may change on resume without allow_changes
    checkpoints: str = "checkpoints"  # the checkpoint directory under out_dir
    metrics: str = "metrics.jsonl"  # JSON lines with a "step" key

    @property
    def all_files(self) -> tuple[str, ...]:
        """What `fresh` deletes. broken_checkpoints/ is kept: moved-aside checkpoints are only ever
        deleted by the user."""
        return tuple(dict.fromkeys((*self.tool_files, self.checkpoints, self.metrics, CHANGES_FILE)))


# ----- errors in one line -------------------------------------------------------------------------


def _chain(e: BaseException) -> Iterable[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def find_os_error(e: BaseException) -> Optional[OSError]:
    """The first OSError with an errno in the exception's cause/context chain (or its text)."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno:
            return x
    return None


def one_line(e: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message` (an OSError in the chain, e.g. ENOSPC, named first)."""
    os_err = find_os_error(e)
    if os_err is not None:
        return f"{os.strerror(os_err.errno)} ([Errno {os_err.errno}] {errno.errorcode.get(os_err.errno, '')})"
    text = str(e).strip().splitlines()
    if any("No space left on device" in ln for ln in str(e).splitlines()):
        return "No space left on device ([Errno 28] ENOSPC)"
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:limit]}"


def close_quietly(mngr) -> None:
    """Close a checkpoint manager (its background threads end) after the run; a save error here
    was already reported (or is reported by the caller's own check)."""
    try:
        mngr.close()
    except Exception:  # noqa: BLE001
        pass


# ----- configs ------------------------------------------------------------------------------------


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for every key whose value differs (a missing key reads as None)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def show_changes(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in diff.items())


def check_resume_config(
    saved: dict[str, Any],
    new: dict[str, Any],
    policy: RunDirPolicy,
    allow_changes: bool,
    where: str,
    allow_flag: str = "checkpoint.allow_changes=true",
) -> dict[str, tuple[Any, Any]]:
    """The accepted changes (outside free_keys) between the checkpoint's config and the new one;
    `RunDirError` for a shape change, or for any other change without `allow_changes`."""
    diff = config_diff(saved, new)
    shape = {k: v for k, v in diff.items() if _under(k, policy.shape_keys)}
    if shape:
        raise RunDirError(
            f"{where} was trained with another shape: {show_changes(shape)}. A checkpoint cannot be resumed with "
            "a different architecture: use a new out_dir (init.checkpoint can start from its weights)"
        )
    changed = {k: v for k, v in diff.items() if not _under(k, policy.free_keys)}
    if changed and not allow_changes:
        raise RunDirError(
            f"the config differs from the one {where} was trained with: {show_changes(changed)}. Rerun with the "
            f"saved values (config.yaml), or pass {allow_flag} to resume with the new ones (recorded in "
            f"{CHANGES_FILE})"
        )
    return changed


def record_changes(out_dir: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Append the accepted config changes of a resume to config_changes.jsonl."""
    if not changes:
        return
    rec = {
        "step": int(step),
        "time": time.time(),
        "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
    }
    with open(Path(out_dir) / CHANGES_FILE, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----- starting -----------------------------------------------------------------------------------


def existing_run(out_dir: Path, policy: RunDirPolicy, steps: Iterable[int]) -> Optional[str]:
    """What shows that out_dir already holds a run (checkpoints or metrics), else None."""
    steps = sorted(steps)
    if steps:
        return f"checkpoints up to step {steps[-1]}"
    metrics = Path(out_dir) / policy.metrics
    if metrics.is_file() and metrics.stat().st_size > 0:
        return f"{policy.metrics}"
    return None


def clear_run_files(out_dir: Path, policy: RunDirPolicy) -> list[str]:
    """Delete this trainer's files (and only those) under out_dir; returns the names removed."""
    removed = []
    for name in policy.all_files:
        p = Path(out_dir) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def check_start(
    out_dir: Path,
    policy: RunDirPolicy,
    resume: bool,
    fresh: bool,
    steps: Iterable[int],
    log: Callable[[str], None] = print,
    fresh_flag: str = "checkpoint.fresh=true",
    resume_flag: str = "checkpoint.resume=true",
) -> str:
    """ "resume" (continue the latest checkpoint, if any) or "fresh" (step 0). `fresh` clears this
    trainer's files first; `resume=false` into an existing run is a `RunDirError` (nothing touched)."""
    found = existing_run(out_dir, policy, steps)
    if fresh:
        if found:
            removed = clear_run_files(out_dir, policy)
            log(f"fresh run: removed {', '.join(removed)} from {out_dir}")
        return "fresh"
    if found and not resume:
        raise RunDirError(
            f"{out_dir} already holds a run ({found}); training it again from step 0 would mix two runs. "
            f"Resume it ({resume_flag}), choose a new out_dir, or pass {fresh_flag} to delete this run's "
            "checkpoints and metrics first"
        )
    return "resume"


def is_resource_error(e: BaseException) -> bool:
    """Out of host or device memory (or a full disk): the machine's problem, not the checkpoint's."""
    if isinstance(e, MemoryError):
        return True
    err = find_os_error(e)
    if err is not None and err.errno in (errno.ENOMEM, errno.ENOSPC):
        return True
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def quarantine(ckpt_dir: Path, step: int, policy: RunDirPolicy) -> Path:
    """Move checkpoint `step` out of the checkpoint directory into <run>/broken_checkpoints/."""
    src = Path(ckpt_dir) / str(step)
    dest_root = Path(ckpt_dir).parent / BROKEN_DIR
    dest_root.mkdir(exist_ok=True)
    dest = dest_root / str(step)
    n = 1
    while dest.exists():
        dest, n = dest_root / f"{step}.{n}", n + 1
    os.replace(src, dest)
    return dest


def restore_with_fallback(
    ckpt_dir: Path,
    steps: Iterable[int],
    restore: Callable[[int], T],
    policy: RunDirPolicy,
    log: Callable[[str], None] = print,
    can_move: bool = True,
    fresh_flag: str = "checkpoint.fresh=true",
) -> tuple[int, T]:
    """Restore the newest checkpoint that reads; each one that does not is named, moved to
    broken_checkpoints/ (by the process that owns the directory, `can_move`) and the previous one
    tried. `RunDirError` (one line) when none can be restored. ConfigErrors from `restore` pass."""
    steps = sorted(steps, reverse=True)
    failures = []
    for step in steps:
        try:
            return step, restore(step)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001  a broken checkpoint raises anything; it is named, not fatal
            if is_resource_error(e):
                raise  # out of memory is not a broken checkpoint: never move a good one aside
            where = Path(ckpt_dir) / str(step)
            moved = quarantine(ckpt_dir, step, policy) if can_move else where
            failures.append(str(where))
            log(f"warning: checkpoint {where} cannot be restored ({one_line(e)}); moved to {moved}")
    raise RunDirError(
        f"no checkpoint of {ckpt_dir} can be restored ({', '.join(failures)}: moved to "
        f"{Path(ckpt_dir).parent / BROKEN_DIR}); pass {fresh_flag} to start this run over"
    )


# ----- metrics --------------------------------------------------------------------------------------


def truncate_metrics(out_dir: Path, policy: RunDirPolicy, step: int) -> int:
    """Keep the metrics records of steps <= `step` (the restored one); atomic. Returns how many went."""
    path = Path(out_dir) / policy.metrics
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            ok = int(rec["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False  # a line cut by a kill
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as f:
            f.write("".join(ln + "\n" for ln in keep))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
