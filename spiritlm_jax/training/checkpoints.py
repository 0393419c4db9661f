"""Training checkpoints: Orbax CheckpointManager over {state, data iterator state, run config}.

Layout: <run>/checkpoints/<step>/{state, data, meta}. Saves are asynchronous and atomic (Orbax
writes to a temporary directory and renames), so a process killed mid-save leaves the previous
checkpoint as the latest. Restoring takes abstract arrays carrying the *current* mesh's shardings,
so a run can resume on a different mesh shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from spiritlm_jax.config import to_dict


def manager(directory: str | Path, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=("state", "data", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict[str, Any], cfg) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave({"config": to_dict(cfg), "step": int(step)}),
        ),
    )


def abstract_like(state_shapes, shardings):
    """ShapeDtypeStructs with the target shardings: what `restore` places the arrays onto."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, shardings)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
    out = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore(),
        ),
    )
    return out["state"], out["data"], out["meta"]


def _read_only(directory: str | Path) -> ocp.CheckpointManager:
    path = Path(directory).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    return ocp.CheckpointManager(path, item_names=("state", "data", "meta"),
                                 options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def _pick_step(mngr: ocp.CheckpointManager, directory, step: int | None) -> int:
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint found in {directory}")
    return step


def read_meta(directory: str | Path, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """(step, meta) of the latest (or given) checkpoint in a run's checkpoint directory."""
    mngr = _read_only(directory)
    step = _pick_step(mngr, directory, step)
    return step, mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_params(directory: str | Path, step: int | None = None):
    """(params, meta) of a training checkpoint, on the default device, for generation/export.

    Restores the whole state (optimizer moments included) and keeps the parameters: simple, and
    fine up to ~1B parameters on one host; larger runs export with the mesh they trained on.
    """
    mngr = _read_only(directory)
    step = _pick_step(mngr, directory, step)
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return out["state"]["params"], out["meta"]
