"""Compile-only mode of every trainer: the very jitted train step, compiled ahead of time for a TPU
topology that is not attached (`compile.topology=v5e:16x16`), to learn before paying for a pod
whether it fits, with what headroom, and which collectives it runs.

A trainer hands `compile_for_topology` a `build(devices, num_hosts) -> Target` callback that builds
its mesh from the topology's devices exactly as a run on that pod would and returns its jitted step
with abstract arguments (`jax.ShapeDtypeStruct`s carrying the run's shardings): nothing is read,
initialised or allocated. The TPU compiler (libtpu, the `[tpu]` extra) then lowers and compiles it
on this host and reports the per-device memory, or fails with the out-of-memory error the pod would
give, which becomes `DoesNotFit` (a one-line `ConfigError`: exit 2).

Sizes are per device (one TPU chip on v5e / v5p / v6e; one TensorCore on v4, whose topologies list
two devices per chip). Collective counts are instructions in the compiled HLO (an op inside the
scanned layer loop counts once), bytes are their results' sizes per device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from spiritlm_jax.config import ConfigError

GIB = 1024**3
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_OOM = re.compile(r"\(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclasses.dataclass(frozen=True)
class CompileConfig:
    """`topology` set: compile the train step for that pod, report, and exit (nothing is trained)."""

    topology: Optional[str] = None  # compile only, for this TPU pod: v5e:16x16, v5p:4x4x4, v6e:16x16, v4:4x4x4, ...
    num_slices: int = 1  # slices of `topology` joined over DCN (the data axis spans them)
    report: Optional[str] = None  # write the compile report (JSON) to this file

    def __post_init__(self):
        if self.num_slices < 1:
            raise ValueError(f"num_slices must be >= 1, got {self.num_slices}")


HELP = (
    "Compile only: compile.topology=v5e:16x16 [compile.num_slices=2] [compile.report=r.json] compiles the train "
    "step for that TPU pod on this host (needs the [tpu] extra: pip install -e '.[tpu]'), prints the per-chip "
    "memory, collectives and model FLOPs, and exits 0 if it fits, 2 if not. The global batch is the one the run "
    "would have there: data.batch_size x the topology's number of hosts (x num_slices) for the LM trainer "
    "(data.batch_size is per process), data.batch_size for the vocoder trainer (global)."
)


@dataclasses.dataclass
class Target:
    """What a trainer compiles: its jitted step, abstract arguments and what the report names."""

    step: Any  # the jitted step (jax.jit(...) with the run's shardings)
    args: tuple  # ShapeDtypeStructs with shardings; the first is the train state
    global_batch: int
    seq_len: int  # tokens (LM) or unit frames (vocoder) per sequence
    knobs: str  # what would make it smaller, named as config keys
    model_flops_per_step: Optional[float] = None  # the project's FLOP convention; None: XLA's cost analysis
    mesh: str = ""  # the mesh, in words
    mesh_devices: int = 0  # devices the step runs on (0: all of the topology's)
    context: Callable[[], Any] = dataclasses.field(default=lambda: _Null())  # entered around lowering


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class DoesNotFit(ConfigError):
    """The step needs more memory per device than the topology's chips have."""


def _need_libtpu() -> None:
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        import jax

        raise ConfigError(
            "compile.topology needs libtpu, the TPU compiler (it runs on any host): "
            f'pip install -e ".[tpu]"  (or pip install "jax[tpu]=={jax.__version__}")'
        )


def topology_devices(topology: str, num_slices: int = 1) -> tuple[list, int]:
    """(compile-only devices of the pod, number of hosts) for a topology name such as v5e:16x16."""
    import jax
    from jax.experimental import topologies

    family, _, shape = topology.partition(":")
    if family in GPU_TARGETS:  # jax's deviceless GPU compile: the CUDA plugin and a target description
        _need_cuda_plugin()
        try:
            desc = topologies.get_topology_desc(platform="cuda", target_config=GPU_TARGETS[family], topology=shape)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                f"compile.topology={topology!r}: jax {jax.__version__}: {_first_line(e)} (GPU topologies are "
                f"{'|'.join(GPU_TARGETS)}:1xHxG, H hosts of G GPUs)"
            ) from None
    else:
        _need_libtpu()
        # libtpu's start-up looks for a TPU VM's metadata; on any other host it only needs to be told
        # there is none (else it prints two screens of warnings). Only set in compile-only mode.
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        # no TPU is used: other processes (a test worker, another compile) may hold libtpu at the same time
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        try:
            desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, num_slices=num_slices)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                f"compile.topology={topology!r}: {_first_line(e)} (names: v5e:16x16, v5p:4x4x4, v6e:16x16, v4:4x4x4, "
                "tpu7x:2x2x1, ...)"
            ) from None
    devices = list(desc.devices)
    hosts = len({(getattr(d, "slice_index", 0) or 0, d.process_index) for d in devices})
    return devices, hosts


def _need_cuda_plugin() -> None:
    import importlib.util

    if importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
        import jax

        raise ConfigError(
            "a GPU compile.topology needs jax's CUDA plugin (no GPU is needed): "
            f'pip install "jax-cuda12-plugin=={jax.__version__}" "jax-cuda12-pjrt=={jax.__version__}"'
        )


# What XLA's GPU compiler needs to know of a GPU it cannot see (GpuTargetConfigProto text; the figures
# of an H100 SXM 80 GB as its CUDA driver reports them).
GPU_TARGETS = {
    "h100": """
gpu_device_info {
  cuda_compute_capability { major: 9 minor: 0 }
  core_count: 132  fpus_per_core: 128  clock_rate_ghz: 1.98
  threads_per_block_limit: 1024  threads_per_warp: 32  threads_per_core_limit: 2048
  block_dim_limit_x: 2147483647  block_dim_limit_y: 65535  block_dim_limit_z: 65535
  shared_memory_per_block: 49152  shared_memory_per_block_optin: 232448  shared_memory_per_core: 233472
  registers_per_core_limit: 65536  registers_per_block_limit: 65536
  memory_bandwidth: 3352320000000  l2_cache_size: 52428800  device_memory_size: 84978434048
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
""",
}
GPU_MEM_FRACTION = 0.75  # of a GPU's memory a JAX process uses (XLA_PYTHON_CLIENT_MEM_FRACTION's default)


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(e).__name__


def available_hbm_bytes(device) -> Optional[int]:
    """The HBM the compiler lets one device use, asked of the compiler itself: a program that needs
    far more is compiled and its out-of-memory message read (milliseconds)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    if device.platform != "tpu":  # XLA's GPU compiler does not refuse a program that is too large
        for target in GPU_TARGETS.values():
            if device.device_kind in target:
                m = re.search(r"device_memory_size:\s*(\d+)", target)
                return int(int(m.group(1)) * GPU_MEM_FRACTION)
        return None
    s = NamedSharding(Mesh(np.asarray([device]), ("x",)), P())
    try:
        jax.jit(lambda x: (x * 2).sum(), in_shardings=s).lower(
            jax.ShapeDtypeStruct((1 << 40,), jnp.float32, sharding=s)
        ).compile()
    except Exception as e:  # noqa: BLE001
        m = _OOM.search(str(e))
        if m:
            return int(float(m.group(3)) * _UNITS[m.group(4)])
    return None


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """{op: {"count", "bytes"}} of the collectives in compiled HLO text (async start/done pairs count
    once; bytes: the op's result per device)."""
    out = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
    pat = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo_text.splitlines():
        m = pat.search(line)
        if not m:
            continue
        shapes = re.findall(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64|f8\w*)\[([\d,]*)\]", m.group(1))
        sizes = [_nbytes(dt, dims) for dt, dims in shapes]
        out[m.group(2)]["count"] += 1
        out[m.group(2)]["bytes"] += max(sizes) if m.group(3) else sum(sizes)
    return out


def _nbytes(dtype: str, dims: str) -> int:
    width = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s64": 8, "u64": 8, "f64": 8}
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return n * (1 if dtype.startswith("f8") else width.get(dtype, 4))


def _report_line(name: str, b: float, hbm: Optional[int]) -> str:
    share = f"  ({b / hbm:6.1%} of HBM)" if hbm else ""
    return f"  {name:<34} {b / GIB:8.2f} GiB{share}"


def compile_for_topology(
    ccfg: CompileConfig, build: Callable[[Sequence[Any], int], Target], log: Callable[[str], None] = print
) -> dict:
    """Compile `build`'s step for `ccfg.topology`; print and (compile.report) write the report.
    Returns the report; raises DoesNotFit (one line) when the step needs more HBM than a device has."""
    devices, hosts = topology_devices(ccfg.topology, ccfg.num_slices)
    kind = devices[0].device_kind
    hbm = available_hbm_bytes(devices[0])
    try:
        target = build(devices, hosts)
    except ValueError as e:  # a mesh or batch that does not divide over this pod
        raise ConfigError(f"compile.topology={ccfg.topology}: {e}") from None
    log(
        f"compiling for {ccfg.topology} x {ccfg.num_slices} slice(s): {len(devices)} devices ({kind}), {hosts} hosts; "
        f"mesh {target.mesh}; global batch {target.global_batch} x {target.seq_len}"
    )
    base = {
        "topology": ccfg.topology,
        "num_slices": ccfg.num_slices,
        "devices": len(devices),
        "device_kind": kind,
        "global_batch": target.global_batch,
        "seq_len": target.seq_len,
    }
    try:
        with target.context():
            compiled = target.step.lower(*target.args).compile()
    except Exception as e:  # noqa: BLE001  XLA's RESOURCE_EXHAUSTED: one line, never a traceback
        m = _OOM.search(str(e))
        if "RESOURCE_EXHAUSTED" not in str(e) and not m:  # e.g. cuDNN attention without the cuDNN library
            raise ConfigError(f"compiling for {ccfg.topology} failed: {type(e).__name__}: {_first_line(e)}") from None
        need = float(m.group(1)) * _UNITS[m.group(2)] if m else None
        avail = float(m.group(3)) * _UNITS[m.group(4)] if m else hbm
        _write(ccfg, {**base, "per_device_bytes": None, "hbm_bytes": avail, "fits": False, "collectives": None,
                      "model_flops_per_step": target.model_flops_per_step})  # fmt: skip
        short = f"short by {(need - avail) / GIB:.2f} GiB per device ({need / GIB:.2f} GiB of temporaries, " \
            f"{avail / GIB:.2f} GiB HBM)" if need and avail else _first_line(e)  # fmt: skip
        raise DoesNotFit(f"the train step does not fit {ccfg.topology}: {short}; try {target.knobs}") from None
    mem = compiled.memory_analysis()
    per = {
        "arguments": int(mem.argument_size_in_bytes),
        "temporaries": int(mem.temp_size_in_bytes),
        "outputs": int(mem.output_size_in_bytes),
        "aliased": int(mem.alias_size_in_bytes),
        "code": int(mem.generated_code_size_in_bytes),
    }
    per["total"] = per["arguments"] + per["temporaries"] + per["outputs"] - per["aliased"] + per["code"]
    flops = target.model_flops_per_step
    flops_src = "6N + 12LSd per token"
    if flops is None:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0)) * (target.mesh_devices or len(devices)) if cost else None
        flops_src = "XLA cost analysis x devices"
    coll = collectives(compiled.as_text())
    fits = hbm is None or per["total"] <= hbm
    report = {**base, "per_device_bytes": per, "hbm_bytes": hbm, "fits": fits, "collectives": coll,
              "model_flops_per_step": flops}  # fmt: skip
    log(f"per device ({kind}):")
    log(_report_line("parameters + optimizer state", per_device_state_bytes(target.args[0]), hbm))
    log(_report_line("arguments (the above + the batch)", per["arguments"], hbm))
    log(_report_line("temporaries", per["temporaries"], hbm))
    log(_report_line("outputs", per["outputs"], hbm) + f"  ({per['aliased'] / GIB:.2f} GiB aliased to arguments)")
    log(_report_line("generated code", per["code"], hbm))
    log(_report_line("total", per["total"], hbm))
    if hbm:
        log(f"  HBM {hbm / GIB:.2f} GiB, headroom {(hbm - per['total']) / GIB:.2f} GiB ({1 - per['total'] / hbm:.1%})")
    log(
        "collectives in the compiled HLO: "
        + ", ".join(f"{op} {c['count']} ({c['bytes'] / GIB:.2f} GiB)" for op, c in coll.items() if c["count"])
    )
    if flops is not None:
        n = target.mesh_devices or len(devices)
        log(f"model FLOPs per step: {flops:.4g} ({flops_src}); {flops / n:.4g} per device")
    _write(ccfg, report)
    log(f"fits: {'yes' if fits else 'no'}" + (f"; report: {ccfg.report}" if ccfg.report else ""))
    if not fits:
        raise DoesNotFit(
            f"the train step does not fit {ccfg.topology}: short by {(per['total'] - hbm) / GIB:.2f} GiB per device "
            f"({per['total'] / GIB:.2f} of {hbm / GIB:.2f} GiB); try {target.knobs}"
        )
    return report


def _write(ccfg: CompileConfig, report: dict) -> None:
    if ccfg.report:
        path = Path(ccfg.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def per_device_state_bytes(abstract_tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (parameters + optimizer state)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(abstract_tree):
        shard = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shard, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total
