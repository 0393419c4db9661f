"""Metrics: a JSONL log and TensorBoard event files, written by process 0 only; MFU helpers.

FLOP convention (written next to every MFU we report): training FLOPs per token =
6·N + 12·L·S·d, with N the matmul parameters including the LM head (LlamaConfig.matmul_params),
L layers, S the sequence length, d the model width (attention scores and values, fwd + bwd).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

# Dense bf16 peak FLOP/s per device, by substring of jax's device_kind.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
)


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in kind.lower():
            return peak
    return None


def train_flops_per_token(model_cfg, seq_len: int) -> float:
    return 6.0 * model_cfg.matmul_params() + 12.0 * model_cfg.n_layers * seq_len * model_cfg.d_model


class MetricsWriter:
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
