"""Training checkpoints: Orbax CheckpointManager over {state, data iterator state, run config}.

The item layout (<run>/checkpoints/<step>/{state, data, meta}, params under state["params"]) is
defined in spiritlm_jax.bundle.train_layout, which reads the LM out of a run without importing
training. Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames),
so a process killed mid-save leaves the previous checkpoint as the latest. Restoring takes abstract
arrays carrying the *current* mesh's shardings, so a run can resume on a different mesh shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from spiritlm_jax.bundle.train_layout import DATA_ITEM, ITEM_NAMES, META_ITEM, STATE_ITEM, make_meta
from spiritlm_jax.config import to_dict


def manager(directory: str | Path, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=ITEM_NAMES)


def steps_on_disk(directory: str | Path) -> list[int]:
    """The step directories under `directory` (named by an integer), without opening a manager."""
    d = Path(directory)
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []


def read_meta(directory: str | Path, step: int) -> dict[str, Any]:
    """The meta item of checkpoint `step` (its run config, step, first loss), read as plain JSON;
    ValueError naming the file when it is missing or not JSON."""
    path = Path(directory) / str(step) / META_ITEM / "metadata"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return meta


def save(
    mngr: ocp.CheckpointManager,
    step: int,
    state,
    data_state: dict[str, Any],
    cfg,
    extra: Optional[dict[str, Any]] = None,
) -> None:
    """Save `step` (in the background with async saves). `extra` goes into the meta item (first loss)."""
    meta = {**make_meta(to_dict(cfg), step), **(extra or {})}
    mngr.save(
        step,
        args=ocp.args.Composite(
            **{
                STATE_ITEM: ocp.args.StandardSave(state),
                DATA_ITEM: ocp.args.JsonSave(data_state),
                META_ITEM: ocp.args.JsonSave(meta),
            }
        ),
    )


def abstract_like(state_shapes, shardings):
    """ShapeDtypeStructs with the target shardings: what `restore` places the arrays onto."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, shardings)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
    out = mngr.restore(
        step,
        args=ocp.args.Composite(
            **{
                STATE_ITEM: ocp.args.StandardRestore(abstract_state),
                DATA_ITEM: ocp.args.JsonRestore(),
                META_ITEM: ocp.args.JsonRestore(),
            }
        ),
    )
    return out[STATE_ITEM], out[DATA_ITEM], out[META_ITEM]
