"""One save/load for every component (LM, HuBERT, quantizers, FCPE, F0 VQ-VAE, style, vocoder).

A component directory holds

    DIR/params/        the parameter pytree (Orbax StandardCheckpointer)
    DIR/<name>.yaml    one YAML file per config of the component (spiritlm_jax.config format)

A `ComponentSpec` says which config files a kind of component has and how to build the parameter
tree its module expects (`abstract_params`, an `eval_shape` of the module's init: nothing is
allocated). `save_component` checks the params against it before writing anything;
`load_component` checks the stored shapes against it before restoring, so a wrong config or a
mis-shaped checkpoint is one error naming the parameter, never a failure deep inside JAX.

This module knows files and pytrees only; the specs of the concrete components live with the code
that knows them (speech modules, the bundle for the LM).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from spiritlm_jax.config import from_dict, read_yaml, save_config

PARAMS_DIR = "params"


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """What a kind of component directory holds.

    kind: a name for messages ("HuBERT tokenizer", "HiFi-GAN vocoder").
    configs: {file name: config dataclass}; e.g. {"hubert.yaml": HubertConfig}.
    abstract_params: {file name: config} -> the expected params pytree (ShapeDtypeStructs).
    optional: config files that may be absent (they load as None).
    hint: how to make such a directory (shown when one is missing).
    """

    kind: str
    configs: dict[str, type]
    abstract_params: Callable[[dict[str, Any]], Any]
    optional: tuple[str, ...] = ()
    hint: str = ""


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_shapes(params) -> dict[str, tuple[int, ...]]:
    """{"layers/attn/q/kernel": shape, ...}: the flat view used for checks and messages."""
    leaves = jax.tree_util.tree_leaves_with_path(params, is_leaf=lambda x: hasattr(x, "shape"))
    return {_path_str(p): tuple(np.shape(leaf)) for p, leaf in leaves}


def check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], what: str) -> None:
    """ValueError naming the first missing, unexpected or mis-shaped parameter (expected vs found)."""
    for key in sorted(expected.keys() | found.keys()):
        if key not in found:
            raise ValueError(f"{what}: missing parameter {key} (expected shape {tuple(expected[key])})")
        if key not in expected:
            raise ValueError(f"{what}: unexpected parameter {key} (shape {tuple(found[key])}) for this config")
        if tuple(found[key]) != tuple(expected[key]):
            raise ValueError(f"{what}: parameter {key} has shape {tuple(found[key])}, expected {tuple(expected[key])}")


def stored_shapes(params_path: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of an Orbax params directory, read from its metadata (no array is loaded)."""
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(Path(params_path).absolute())
    tree = getattr(meta, "item_metadata", meta)  # orbax >= 0.11: StepMetadata.item_metadata
    tree = getattr(tree, "tree", tree)  # TreeMetadata.tree
    return tree_shapes(tree)


def save_component(directory: str | Path, spec: ComponentSpec, params, configs: dict[str, Any]) -> Path:
    """Write DIR/params + one YAML per config, after checking `params` against the spec.
    Refuses to overwrite an existing params/ (choose a new directory)."""
    d = Path(directory).absolute()
    unknown = sorted(set(configs) - set(spec.configs))
    if unknown:
        raise ValueError(f"{spec.kind}: unknown config file(s) {unknown} (expected {sorted(spec.configs)})")
    full = {n: configs.get(n) for n in spec.configs}
    check_shapes(tree_shapes(params), tree_shapes(spec.abstract_params(full)), f"{spec.kind} params to save in {d}")
    if (d / PARAMS_DIR).exists():
        raise FileExistsError(f"{d / PARAMS_DIR} already exists; choose a new output directory")
    d.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        # jax arrays are saved as they are (sharded ones by each process); anything else as numpy
        ckptr.save(d / PARAMS_DIR, jax.tree.map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), params))
        ckptr.wait_until_finished()
    for name, cfg in configs.items():
        if cfg is not None:
            save_config(cfg, d / name)
    return d


def read_configs(directory: str | Path, spec: ComponentSpec) -> dict[str, Any]:
    """{file name: config} of a component directory; a missing required file names itself."""
    d = Path(directory).absolute()
    if not d.is_dir():
        raise FileNotFoundError(f"{spec.kind} directory {d} does not exist")
    missing = [n for n in spec.configs if n not in spec.optional and not (d / n).is_file()]
    missing += [] if (d / PARAMS_DIR).is_dir() else [PARAMS_DIR + "/"]
    if missing:
        need = " + ".join([n for n in spec.configs if n not in spec.optional] + [PARAMS_DIR + "/"])
        raise FileNotFoundError(
            f"{d} is not a {spec.kind} directory ({need}; missing {', '.join(missing)})"
            + (f"; {spec.hint}" if spec.hint else "")
        )
    return {n: from_dict(cls, read_yaml(d / n)) if (d / n).is_file() else None for n, cls in spec.configs.items()}


def load_component(
    directory: str | Path, spec: ComponentSpec, shardings=None, dtype: Optional[str] = None
) -> tuple[Any, dict[str, Any]]:
    """(params, {file name: config}) of a component directory, shape-checked against the spec
    before anything is restored. `shardings` (a pytree like the params) restores onto a mesh;
    `dtype` casts the stored arrays on restore."""
    d = Path(directory).absolute()
    configs = read_configs(d, spec)
    abstract = spec.abstract_params(configs)
    check_shapes(stored_shapes(d / PARAMS_DIR), tree_shapes(abstract), f"{d / PARAMS_DIR} vs its config")
    if shardings is not None:
        if jax.tree.structure(shardings) != jax.tree.structure(abstract):
            raise ValueError(f"shardings for {d} do not have the structure of its parameters")
        target = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, dtype or s.dtype, sharding=sh), abstract, shardings
        )
    else:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype or s.dtype, sharding=device), abstract)
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(d / PARAMS_DIR, target)
    return params, configs
