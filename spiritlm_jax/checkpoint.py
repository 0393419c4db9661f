"""Model checkpoint directories (converted or exported weights), in Orbax.

    DIR/config.yaml     the LlamaConfig (spiritlm_jax.config format)
    DIR/params/         the parameter pytree (orbax StandardCheckpointer)
    DIR/extra.json      optional provenance (e.g. the source's HF config.json), `load_extra`
    DIR/tokenizer.*     tokenizer files, copied from the source when it had them

Shapes are checked against the config on save and before restore (Orbax restores the stored shape
whatever the target says, so a wrong config.yaml would otherwise fail later, deep inside JAX).
Training runs use their own CheckpointManager layout (spiritlm_jax/training/checkpoints.py);
`load_model` reads both: a model directory, or a training run directory (latest step).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from spiritlm_jax.config import from_dict, read_yaml, save_config
from spiritlm_jax.model.config import LlamaConfig

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json")


def save_params_dir(directory: str | Path, params, configs: dict[str, Any]) -> Path:
    """DIR/params (Orbax) + one YAML file per config ({"fcpe.yaml": cfg, ...}): the directory format
    of every converted component. Refuses to overwrite params/; callers check shapes first."""
    d = Path(directory).absolute()
    if (d / "params").exists():
        raise FileExistsError(f"{d / 'params'} already exists; choose a new output directory")
    d.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        # jax arrays are saved as they are (sharded ones by each process); anything else as numpy
        ckptr.save(d / "params", jax.tree.map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), params))
        ckptr.wait_until_finished()
    for name, cfg in configs.items():
        save_config(cfg, d / name)
    return d


def restore_params_dir(directory: str | Path, configs: dict[str, type], what: str, hint: str = "",
                       optional: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """(params, {file name: config}) from a `save_params_dir` directory; a missing file is an error
    naming it (`optional` files may be absent and map to None). `hint` says how to make one."""
    d = Path(directory).absolute()
    missing = [n for n in configs if n not in optional and not (d / n).is_file()]
    missing += [] if (d / "params").is_dir() else ["params/"]
    if missing:
        need = " + ".join([n for n in configs if n not in optional] + ["params/"])
        raise FileNotFoundError(f"{d} is not a converted {what} ({need}; missing {', '.join(missing)})"
                                + (f"; {hint}" if hint else ""))
    cfgs = {n: from_dict(cls, read_yaml(d / n)) if (d / n).is_file() else None for n, cls in configs.items()}
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(d / "params")
    return params, cfgs


def save_model(directory: str | Path, params, cfg: LlamaConfig, extra: Optional[dict] = None,
               tokenizer_dir: Optional[str | Path] = None) -> Path:
    """Write params + config (+ `extra` as JSON, + tokenizer files found in `tokenizer_dir`)."""
    directory = Path(directory).absolute()
    check_shapes(tree_shapes(params), cfg, f"params to save in {directory}")
    save_params_dir(directory, params, {"config.yaml": cfg})
    if extra is not None:
        (directory / "extra.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy(Path(tokenizer_dir) / name, directory / name)
    return directory


def load_extra(directory: str | Path) -> dict:
    """The `extra` dict given to `save_model` ({} when there was none)."""
    path = Path(directory) / "extra.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def expected_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """{"layers/attn/q/kernel": shape, ...} of the parameters `cfg` describes (no allocation)."""
    return tree_shapes(_abstract_params(cfg))


def check_shapes(found: dict[str, tuple[int, ...]], cfg: LlamaConfig, what: str) -> None:
    """ValueError naming the first missing, unexpected or mis-shaped parameter (expected vs found)."""
    expected = expected_shapes(cfg)
    for key in sorted(expected.keys() | found.keys()):
        if key not in found:
            raise ValueError(f"{what}: missing parameter {key} (expected shape {expected[key]})")
        if key not in expected:
            raise ValueError(f"{what}: unexpected parameter {key} (shape {found[key]}) for this config")
        if tuple(found[key]) != tuple(expected[key]):
            raise ValueError(f"{what}: parameter {key} has shape {tuple(found[key])}, expected {expected[key]}")


def load_model(directory: str | Path, shardings=None, param_dtype: Optional[str] = None) -> tuple[LlamaConfig, Any]:
    """(LlamaConfig, params) from a model directory or a training run directory.

    `shardings`: an optional NamedSharding pytree (same structure as params) to restore directly onto
    a mesh; otherwise arrays land on the default device. `param_dtype` ("float32"/"bfloat16") casts
    the stored parameters on restore and is recorded in the returned config.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if (directory / "checkpoints").is_dir() and not (directory / "params").exists():
        cfg, params = _load_training_run(directory, shardings)
        if param_dtype is not None:
            cfg = cfg.replace(param_dtype=param_dtype)
            params = jax.tree.map(lambda x: x.astype(param_dtype), params)
        return cfg, params
    if not (directory / "config.yaml").is_file():
        raise FileNotFoundError(f"{directory} has no config.yaml (is it a spiritlm_jax model directory?)")
    if not (directory / "params").is_dir():
        raise FileNotFoundError(f"{directory} has no params/ directory")
    cfg = from_dict(LlamaConfig, read_yaml(directory / "config.yaml"))
    if param_dtype is not None:
        cfg = cfg.replace(param_dtype=param_dtype)
    abstract = _abstract_params(cfg)
    if shardings is not None:
        if jax.tree.structure(shardings) != jax.tree.structure(abstract):
            raise ValueError(f"shardings for {directory} do not have the structure of its parameters")
        abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)
    else:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
    with ocp.StandardCheckpointer() as ckptr:
        check_shapes(_stored_shapes(ckptr, directory / "params"), cfg,
                     f"{directory / 'params'} vs {directory / 'config.yaml'}")
        params = ckptr.restore(directory / "params", abstract)
    return cfg, params


def _abstract_params(cfg: LlamaConfig):
    import flax.linen as nn

    from spiritlm_jax.model.llama import Llama

    abstract = jax.eval_shape(lambda: Llama(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))
    return nn.unbox(abstract["params"])


def _stored_shapes(ckptr, path: Path) -> dict[str, tuple[int, ...]]:
    meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)  # orbax >= 0.11: StepMetadata.item_metadata
    tree = getattr(tree, "tree", tree)  # TreeMetadata.tree
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {_path_str(p): tuple(leaf.shape) for p, leaf in leaves}


def _load_training_run(run_dir: Path, shardings) -> tuple[LlamaConfig, Any]:
    from spiritlm_jax.training.checkpoints import restore_params

    params, meta = restore_params(run_dir / "checkpoints")
    cfg = from_dict(LlamaConfig, meta["config"]["model"])
    check_shapes(tree_shapes(params), cfg, f"training run {run_dir}")
    if shardings is not None:
        params = jax.device_put(params, shardings)
    return cfg, params


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_shapes(params) -> dict[str, tuple[int, ...]]:
    """{"layers/attn/q/kernel": shape, ...}: flat view used for error messages."""
    return {_path_str(p): tuple(np.shape(leaf)) for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
