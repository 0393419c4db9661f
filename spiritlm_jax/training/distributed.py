"""Multi-host set-up before anything touches the devices."""

from __future__ import annotations

import os

import jax


def maybe_initialize_distributed(mode: str) -> None:
    """Multi-host set-up: explicit env vars (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
    or jax's own cluster detection (TPU pods, SLURM, Open MPI) when mode is "on" or a cluster is seen."""
    if mode == "off":
        return
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env:
        if env.get("JAX_PLATFORMS", "") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
        return
    in_cluster = (
        len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    )
    if mode == "on" or in_cluster:
        jax.distributed.initialize()
