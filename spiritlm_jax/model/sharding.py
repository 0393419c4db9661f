"""Meshes and logical-axis rules: how parameters and activations are placed on devices.

Every parameter and the main activations carry logical axis names (see llama.py). `LOGICAL_RULES`
maps them to the mesh axes `data`, `fsdp`, `tensor`:

- batch is split over data x fsdp (data parallel + fully sharded data parallel),
- the model dimension of weights ("embed") is split over fsdp (ZeRO-3 style; gathered per layer),
- heads, kv heads, the MLP hidden dimension and the vocabulary are split over tensor (Megatron TP).

A weight dimension that the mesh cannot divide evenly is replicated instead (e.g. 3 kv heads on a
tensor axis of 2); `param_shardings` does that fallback so any mesh shape works for any model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
)


def mesh_shape(data: int = -1, fsdp: int = 1, tensor: int = 1, num_devices: int | None = None) -> tuple[int, int, int]:
    """Resolve a (data, fsdp, tensor) request; one entry may be -1 to take the remaining devices."""
    n = num_devices if num_devices is not None else jax.device_count()
    sizes = [data, fsdp, tensor]
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n % known:
            raise ValueError(f"{n} devices cannot be split into data={data} fsdp={fsdp} tensor={tensor}")
        sizes[sizes.index(-1)] = n // known
    if math.prod(sizes) != n:
        raise ValueError(
            f"mesh data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} needs {math.prod(sizes)} devices, have {n}"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor); tensor varies fastest (neighbouring devices).

    On several TPU slices (devices with distinct `slice_index`), (data, fsdp, tensor) describe one
    slice and the slices are the outer part of the data axis: only data parallelism crosses DCN."""
    devices = list(devices) if devices is not None else jax.devices()
    slices = sorted({getattr(d, "slice_index", 0) or 0 for d in devices})
    per_slice = [[d for d in devices if (getattr(d, "slice_index", 0) or 0) == s] for s in slices]
    if len({len(p) for p in per_slice}) != 1:
        raise ValueError(f"slices of unequal size: {[len(p) for p in per_slice]} devices")
    shape = mesh_shape(data, fsdp, tensor, len(per_slice[0]))
    device_array = np.stack([np.asarray(p).reshape(shape) for p in per_slice]).reshape(
        (len(slices) * shape[0], *shape[1:])
    )
    return Mesh(device_array, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _mesh_axes_for(name: str | None, rules) -> tuple[str, ...]:
    if name is None:
        return ()
    for logical, mesh_axes in rules:
        if logical == name:
            if mesh_axes is None:
                return ()
            return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    return ()


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules=LOGICAL_RULES) -> P:
    """PartitionSpec for an array with logical axis `names`; dims the mesh cannot divide are replicated."""
    spec = []
    used: set[str] = set()
    for name, dim in zip(names, shape):
        axes = tuple(a for a in _mesh_axes_for(name, rules) if a not in used and mesh.shape[a] > 1)
        size = math.prod(mesh.shape[a] for a in axes)
        if axes and dim % size == 0:
            used.update(axes)
            spec.append(axes[0] if len(axes) == 1 else axes)
        else:
            spec.append(None)
    return P(*spec)


def param_shardings(boxed_params, mesh: Mesh, rules=LOGICAL_RULES):
    """NamedSharding pytree for (abstract) params that still carry nn.Partitioned metadata."""

    def one(leaf):
        if isinstance(leaf, nn.Partitioned):
            names, shape = leaf.names, leaf.value.shape
        else:
            names, shape = (None,) * len(leaf.shape), leaf.shape
        return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))

    return jax.tree.map(one, boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [B, T, ...] batch: B split over data x fsdp."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def abstract_boxed_params(model: nn.Module, seq_len: int = 8):
    """Shapes and logical names of a model's params without allocating them."""
    import jax.numpy as jnp

    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, seq_len), jnp.int32)))["params"]


class activation_sharding:
    """Context that makes the model's `with_logical_constraint`s bind to `mesh` (use around apply/jit)."""

    def __init__(self, mesh: Mesh, rules=LOGICAL_RULES):
        self.mesh, self.rules = mesh, rules

    def __enter__(self):
        self._mesh_ctx = jax.set_mesh(self.mesh)
        self._mesh_ctx.__enter__()
        self._rules_ctx = nn.logical_axis_rules(self.rules)
        self._rules_ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._rules_ctx.__exit__(*exc)
        self._mesh_ctx.__exit__(*exc)
        return False
