"""The layout of a training run's Orbax checkpoints, shared by training (which writes them) and the
bundle (which reads the LM out of them); it lives here so that reading a run never imports training.

    <run>/checkpoints/<step>/{state, data, meta}
    state: {"step", "params", "opt_state"}      (the train state pytree; the LM's params under "params")
    data:  the data iterator state (JSON)
    meta:  {"config": <the run's TrainConfig as a dict>, "step": step}  (the LlamaConfig under config.model)
"""

from __future__ import annotations

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


def read_only_manager(directory: str | Path) -> ocp.CheckpointManager:
    path = Path(directory).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    return ocp.CheckpointManager(
        path, item_names=ITEM_NAMES, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
    )


def pick_step(mngr: ocp.CheckpointManager, directory, step: Optional[int]) -> int:
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint found in {directory}")
    return step


def restore_params(directory: str | Path, step: Optional[int] = None):
    """(params, meta) of a training checkpoint, on the default device, for generation/export.

    Restores the whole state (optimizer moments included) and keeps the parameters: simple, and
    fine up to ~1B parameters on one host; larger runs export with the mesh they trained on.
    """
    mngr = read_only_manager(directory)
    step = pick_step(mngr, directory, step)
    out = mngr.restore(
        step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(), META_ITEM: ocp.args.JsonRestore()})
    )
    return out[STATE_ITEM][PARAMS_KEY], out[META_ITEM]
