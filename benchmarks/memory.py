"""Per-device memory of a training step, from ahead-of-time compilation with abstract arrays.

Nothing is allocated: the train step is lowered with ShapeDtypeStructs carrying the mesh shardings
and compiled; XLA's memory analysis then reports arguments (params + optimizer state + batch),
outputs, temporaries (activations, gradients) and generated code per device. Use it before
launching a 7B run to pick the mesh, remat policy and batch size.

    python benchmarks/memory.py --shape 7b --devices 8 64 256 --fsdp -1 --remat full

On a machine without the target accelerators the step is compiled for fake CPU devices
(--xla_force_host_platform_device_count); CPU and GPU compilers fuse differently, so treat the
numbers as estimates (GPU temporaries are usually smaller; parameters/optimizer state are exact).
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="7b", choices=["tiny", "1b", "7b"])
    ap.add_argument("--devices", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--per-device-batch", type=int, default=4, help="sequences per device (paper: 4)")
    ap.add_argument("--data", type=int, default=1)
    ap.add_argument("--fsdp", type=int, default=-1)
    ap.add_argument("--tensor", type=int, default=1)
    ap.add_argument("--remat", default="full")
    ap.add_argument("--vocab", type=int, default=32512)
    args = ap.parse_args()

    if "jax" not in sys.modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(args.devices)}"
        )
    import jax
    import jax.numpy as jnp

    from benchmarks.llama import SHAPES
    from spiritlm_jax.model.config import LlamaConfig
    from spiritlm_jax.model.llama import Llama
    from spiritlm_jax.model.sharding import activation_sharding, make_mesh
    from spiritlm_jax.training.optim import OptimConfig, lr_schedule, make_optimizer
    from spiritlm_jax.training.step import jit_train_step, make_train_step, state_shardings

    shape = {**SHAPES[args.shape], "vocab_size": args.vocab}
    cfg = LlamaConfig(**shape, dtype="bfloat16", remat=args.remat, max_seq_len=args.seq)
    model = Llama(cfg)
    ocfg = OptimConfig()
    tx = make_optimizer(ocfg, 1000)
    print(
        f"{args.shape}: {cfg.num_params() / 1e9:.2f}B params, seq {args.seq}, {args.per_device_batch} seq/device, "
        f"remat {args.remat}, fp32 params + AdamW moments, bf16 compute ({jax.devices()[0].platform} compiler)"
    )
    print("| devices | mesh (data, fsdp, tensor) | args GiB | temps GiB | outputs GiB (aliased) | total GiB/device |")
    print("|---|---|---|---|---|---|")
    for n in args.devices:
        mesh = make_mesh(args.data, args.fsdp, args.tensor, devices=jax.devices()[:n])
        sh = state_shardings(model, tx, mesh)
        import flax.linen as nn

        from spiritlm_jax.training.step import _boxed_state

        shapes = jax.eval_shape(lambda: nn.unbox(_boxed_state(model, tx, jax.random.PRNGKey(0), 8)))
        abstract = jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h), shapes, sh)
        b = args.per_device_batch * n
        from spiritlm_jax.data.batch import BATCH_KEYS
        from spiritlm_jax.model.sharding import batch_sharding

        bsh = batch_sharding(mesh)
        batch = {k: jax.ShapeDtypeStruct((b, args.seq), jnp.int32, sharding=bsh) for k in BATCH_KEYS}
        with activation_sharding(mesh):
            step = jit_train_step(make_train_step(model, tx, lr_schedule(ocfg, 1000)), sh, mesh)
            compiled = step.lower(abstract, batch).compile()
        m = compiled.memory_analysis()
        gib = 1024**3
        args_b, temp_b, out_b, alias_b = (
            m.argument_size_in_bytes,
            m.temp_size_in_bytes,
            m.output_size_in_bytes,
            m.alias_size_in_bytes,
        )
        total = args_b + temp_b + out_b - alias_b + m.generated_code_size_in_bytes
        print(
            f"| {n} | {mesh.shape['data']}, {mesh.shape['fsdp']}, {mesh.shape['tensor']} | {args_b / gib:.2f} | "
            f"{temp_b / gib:.2f} | {out_b / gib:.2f} ({alias_b / gib:.2f}) | {total / gib:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
