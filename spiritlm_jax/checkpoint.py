"""TEMPORARY: the old component directory helpers, kept only for the speech components until the
speech helper's branch (which moves them to spiritlm_jax.io.save_component/load_component) is
merged; then this file is deleted. The LM lives in spiritlm_jax.bundle; shapes in spiritlm_jax.io.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from spiritlm_jax.config import from_dict, read_yaml, save_config
from spiritlm_jax.io import PARAMS_DIR, tree_shapes  # noqa: F401  (tree_shapes: speech/vocoder.py)


def save_params_dir(directory: str | Path, params, configs: dict[str, Any]) -> Path:
    """DIR/params (Orbax) + one YAML file per config; callers check shapes first."""
    d = Path(directory).absolute()
    if (d / PARAMS_DIR).exists():
        raise FileExistsError(f"{d / PARAMS_DIR} already exists; choose a new output directory")
    d.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(d / PARAMS_DIR, jax.tree.map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), params))
        ckptr.wait_until_finished()
    for name, cfg in configs.items():
        save_config(cfg, d / name)
    return d


def restore_params_dir(directory: str | Path, configs: dict[str, type], what: str, hint: str = "",
                       optional: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """(params, {file name: config}) from a `save_params_dir` directory."""
    d = Path(directory).absolute()
    missing = [n for n in configs if n not in optional and not (d / n).is_file()]
    missing += [] if (d / PARAMS_DIR).is_dir() else [PARAMS_DIR + "/"]
    if missing:
        need = " + ".join([n for n in configs if n not in optional] + [PARAMS_DIR + "/"])
        raise FileNotFoundError(f"{d} is not a converted {what} ({need}; missing {', '.join(missing)})"
                                + (f"; {hint}" if hint else ""))
    cfgs = {n: from_dict(cls, read_yaml(d / n)) if (d / n).is_file() else None for n, cls in configs.items()}
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(d / PARAMS_DIR)
    return params, cfgs
