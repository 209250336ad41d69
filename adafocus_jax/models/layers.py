"""Small building blocks shared by the networks: PyTorch-equivalent conv and batch norm settings."""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# PyTorch BatchNorm defaults: eps 1e-5, momentum 0.1 (Flax counts momentum the other way round).
#
# One known difference remains: in train mode the running variance is updated with the *biased*
# batch variance (Flax: mean((x - mean)^2) over the n values per channel), where PyTorch uses the
# unbiased one (times n / (n - 1)). Normalisation in the forward pass is identical (both use the
# biased variance). For the conv BNs n = B·H·W is in the thousands, so the difference is
# negligible; for the Sth-Sth policy's BatchNorm1d after the linear layer n is the batch (64), so
# its running variance converges to 63/64 of PyTorch's. Only eval-mode outputs of a model trained
# here are affected; converted PyTorch weights carry their own running statistics.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def conv(features: int, kernel: int, stride: int = 1, *, groups: int = 1, bias: bool = False,
         dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
    """A conv with PyTorch's symmetric padding `kernel // 2` (never 'SAME', which pads asymmetrically
    for strided convs and would shift every output by half a pixel)."""
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=bias,
                   dtype=dtype, name=name)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to a multiple of `divisor`, never going more than 10% below `value`
    (the MobileNetV2 width rule used by both official layouts)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def spatial_mean(x: jnp.ndarray, axes: Sequence[int] = (1, 2)) -> jnp.ndarray:
    """Global average pool of `[N, H, W, C]` → `[N, C]`."""
    return jnp.mean(x, axis=tuple(axes))
