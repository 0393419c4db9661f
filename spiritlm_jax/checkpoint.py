"""Model checkpoint directories (converted or exported weights), in Orbax.

    DIR/config.yaml     the LlamaConfig (spiritlm_jax.config format)
    DIR/params/         the parameter pytree (orbax StandardCheckpointer)
    DIR/tokenizer.*     tokenizer files, copied from the source when it had them

Training runs use their own CheckpointManager layout (spiritlm_jax/training/checkpoints.py);
`load_model` reads both: a model directory, or a training run directory (latest step).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from spiritlm_jax.config import from_dict, read_yaml, save_config
from spiritlm_jax.model.config import LlamaConfig

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def save_model(directory: str | Path, params, cfg: LlamaConfig, tokenizer_dir: Optional[str | Path] = None) -> Path:
    """Write params + config (+ tokenizer files found in `tokenizer_dir`) to `directory`."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "params").exists():
        raise FileExistsError(f"{directory / 'params'} already exists; choose a new output directory")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "params", params)
        ckptr.wait_until_finished()
    save_config(cfg, directory / "config.yaml")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy(Path(tokenizer_dir) / name, directory / name)
    return directory


def _expected_shapes(cfg: LlamaConfig) -> dict[str, Any]:
    from spiritlm_jax.model.llama import Llama
    import jax.numpy as jnp
    import flax.linen as nn

    abstract = jax.eval_shape(lambda: Llama(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))
    return nn.unbox(abstract["params"])


def load_model(directory: str | Path, shardings=None) -> tuple[LlamaConfig, Any]:
    """(LlamaConfig, params) from a model directory or a training run directory.

    `shardings`: an optional NamedSharding pytree to restore directly onto a mesh.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if (directory / "checkpoints").is_dir() and not (directory / "params").exists():
        return _load_training_run(directory, shardings)
    if not (directory / "config.yaml").is_file():
        raise FileNotFoundError(f"{directory} has no config.yaml (is it a spiritlm_jax model directory?)")
    if not (directory / "params").is_dir():
        raise FileNotFoundError(f"{directory} has no params/ directory")
    cfg = from_dict(LlamaConfig, read_yaml(directory / "config.yaml"))
    expected = _expected_shapes(cfg)
    if shardings is None:
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), expected)
    else:
        target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), expected, shardings)
    with ocp.StandardCheckpointer() as ckptr:
        try:
            params = ckptr.restore(directory / "params", target)
        except (ValueError, KeyError) as e:
            raise ValueError(f"{directory / 'params'} does not match {directory / 'config.yaml'}: {e}") from None
    return cfg, params


def _load_training_run(run_dir: Path, shardings) -> tuple[LlamaConfig, Any]:
    from spiritlm_jax.training.checkpoints import restore_params

    params, meta = restore_params(run_dir / "checkpoints")
    cfg = from_dict(LlamaConfig, meta["config"]["model"])
    if shardings is not None:
        params = jax.device_put(params, shardings)
    return cfg, params


def tree_shapes(params) -> dict[str, tuple[int, ...]]:
    """{"layers/attn/q/kernel": shape, ...}: flat view used by converters for error messages."""
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        flat["/".join(str(getattr(k, "key", k)) for k in path)] = tuple(np.shape(leaf))
    return flat
