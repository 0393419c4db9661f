"""Padded-length buckets: the static shapes jitted code is compiled for (pure Python, no JAX).

Variable lengths (audio samples, unit frames, batch rows, prompt tokens) are padded up to a bucket
so that a new length recompiles only when it reaches a new bucket. Three rules, each written once:

- `pow2_bucket`: the next power of two (within [minimum, maximum]): at most 2x padding, one compile
  per doubling. Batch sizes, feature rows, HuBERT/style sample counts, LM prompt lengths.
- `half_octave_bucket`: minimum * {1, 1.5, 2, 3, 4, 6, ...}: at most 50% padding, two compiles per
  doubling. Vocoder frames.
- `quarter_octave_bucket`: a multiple of 1/8 of the next power of two: at most 25% padding, four
  compiles per doubling. FCPE / pitch sample counts.
"""

from __future__ import annotations

from typing import Optional


def pow2_bucket(n: int, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """Smallest power of two >= n, at least `minimum` (and at most `maximum` when given)."""
    b = max(minimum, 1 << max(n - 1, 0).bit_length())
    return b if maximum is None else min(maximum, b)


def half_octave_bucket(n: int, minimum: int = 1) -> int:
    """Smallest of minimum * {1, 1.5, 2, 3, 4, 6, ...} (powers of two and their 1.5x) that is >= n."""
    b = minimum
    while True:
        if n <= b:
            return b
        if n <= b * 3 // 2:
            return b * 3 // 2
        b *= 2


def quarter_octave_bucket(n: int, minimum: int = 1) -> int:
    """At least `minimum`, rounded up to a multiple of 1/8 of the next power of two (4 buckets per
    octave: <= 25% padding; about 30 compiles from 1 s to 100 s of 16 kHz audio)."""
    n = max(n, minimum)
    step = max((1 << (n - 1).bit_length()) // 8, 1)
    return -(-n // step) * step
