"""Helpers shared by the converter scripts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def run_cli(work: Callable[[], Path]) -> int:
    """Run a conversion; print where it wrote (exit 0) or the error, naming the tensor/file (exit 2)."""
    try:
        out = work()
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # ConversionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
