"""Layers shared by the speech models (HuBERT, style encoder, FCPE, F0 VQ-VAE, HiFi-GAN).

Layout NWC (batch, time, channels); kernels [k, in, out] (PyTorch's [out, in, k] transposed).

- `conv1d` / `Conv1d`: PyTorch Conv1d semantics: symmetric zero padding, stride, dilation, groups.
- `valid_mask(lengths, t)`: [B, T] True on each item's valid frames (padded batches).
- `mask_time(x, valid)`: zero the frames past each item's length, which is exactly the zero padding
  an unbatched PyTorch run sees at the end of its signal: a padded batch then gives each item its
  unbatched result.
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def valid_mask(lengths_b, t: int):
    """[B, t] bool: frame i of item b is valid when i < lengths_b[b]."""
    return jnp.arange(t)[None, :] < lengths_b[:, None]


def mask_time(x_btc, valid_bt):
    """`x` [B, T, C] with the frames where `valid_bt` [B, T] is False set to 0."""
    return x_btc * valid_bt[..., None].astype(x_btc.dtype)


def conv1d(
    x_btc,
    kernel_kio,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    precision: Optional[jax.lax.Precision] = None,
):
    """PyTorch Conv1d without bias: `padding` zeros on both sides; the kernel is cast to x's dtype."""
    return jax.lax.conv_general_dilated(
        x_btc,
        kernel_kio.astype(x_btc.dtype),
        (stride,),
        [(padding, padding)],
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups,
        precision=precision,
    )


class Conv1d(nn.Module):
    """PyTorch Conv1d with bias (params "kernel" [k, in, out] and "bias" [out]).

    padding None: "same" length for stride 1, (k * d - d) // 2 (the reference's get_padding)."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: Optional[int] = None
    dilation: int = 1
    precision: Optional[jax.lax.Precision] = None
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x_btc):
        k, d = self.kernel_size, self.dilation
        pad = (k * d - d) // 2 if self.padding is None else self.padding
        w = self.param("kernel", self.kernel_init, (k, x_btc.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        y = conv1d(x_btc, w, self.stride, pad, d, precision=self.precision)
        return y + b.astype(y.dtype)
