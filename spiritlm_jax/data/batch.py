"""What a training batch is: its keys, and the loss groups its per-token `loss_groups` ids name.

A batch is a dict of [B, T] int32 arrays, keys `BATCH_KEYS`: tokens; targets (next token within the
same segment, -1 = no target); segment_ids (1..n per row, 0 padding); positions (restart at 0 per
segment); loss_groups (the id in `LOSS_GROUPS` of the example each token comes from; 0 on padding,
which has no target).

A loss group is what the training metrics report a loss for ("loss_text", ...): text, speech or
interleaved. It is not the example kind (text / speech / aligned: which shards an example comes
from), though each example kind maps to one loss group (`LOSS_GROUP_IDS`).
"""

from __future__ import annotations

LOSS_GROUPS = ("text", "speech", "interleaved")
LOSS_GROUP_IDS = {"text": 0, "speech": 1, "aligned": 2}  # example kind -> id in LOSS_GROUPS
BATCH_KEYS = ("tokens", "targets", "segment_ids", "positions", "loss_groups")


def check_reader_numbers(cfg) -> None:
    """The row/reader fields every data config shares (seq_len, batch_size, num_epochs, read_threads,
    prefetch): ValueError naming the field (the config loader writes the section in front of it)."""
    if cfg.seq_len < 8:
        raise ValueError(f"seq_len must be >= 8, got {cfg.seq_len}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.num_epochs is not None and cfg.num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or null (infinite), got {cfg.num_epochs}")
    if cfg.read_threads < 0:
        raise ValueError(f"read_threads must be >= 0, got {cfg.read_threads}")
    if cfg.prefetch < 1:
        raise ValueError(f"prefetch must be >= 1, got {cfg.prefetch}")
