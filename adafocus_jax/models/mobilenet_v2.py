"""MobileNetV2, the glance network f_G (NHWC), in both official layouts.

One Flax tree serves both official checkpoints: the TSM/tonylins layout used for Something-Something
(temporal shift in the residual branch of blocks 3, 5, 6, 8, 9, 10, 12, 13, 15, 16) and the torchvision
layout used for ActivityNet / FCVID / Mini-Kinetics (no shift). Only parameter names differ between
the two PyTorch files; `adafocus_jax.convert` maps both onto the names used here.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adafocus_jax.models.layers import (BatchNorm, conv, input_filter, make_divisible,
                                        spatial_mean)
from adafocus_jax.models.temporal_shift import temporal_shift

# (expansion t, output channels c, repeats n, first stride s) of the 17 inverted-residual blocks.
BLOCK_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1))


def block_specs(width_mult: float = 1.0):
    """Per block (1-based index as in the official `features.i`): (in, out, hidden, stride, residual).

    The list is the same in both official layouts; `hidden = in * t`.
    """
    specs = []
    in_ch = make_divisible(32 * width_mult)
    for t, c, n, s in BLOCK_SETTINGS:
        out_ch = make_divisible(c * width_mult)
        for i in range(n):
            stride = s if i == 0 else 1
            specs.append((in_ch, out_ch, in_ch * t, stride, stride == 1 and in_ch == out_ch))
            in_ch = out_ch
    return specs


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand → BN → ReLU6] → 3x3 depthwise → BN → ReLU6 → 1x1 project → BN.

    With `shift_segments`, the residual branch input is temporally shifted first (TSM "blockres");
    the identity path keeps the unshifted input, as in the official code.

    Attributes:
      out_channels, hidden_channels, stride: block shape.
      residual: add the input to the output (stride 1 and equal channels).
      shift_segments: frames per video for the temporal shift, or None for no shift.
    """
    out_channels: int
    hidden_channels: int
    stride: int
    residual: bool
    shift_segments: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """`[N, H, W, C_in]` → `[N, H / stride, W / stride, C_out]`."""
        y = x
        if self.shift_segments is not None:
            y = temporal_shift(y, self.shift_segments)
        if self.hidden_channels != x.shape[-1]:
            y = conv(self.hidden_channels, 1, dtype=self.dtype, name="expand_conv")(y)
            y = BatchNorm(use_running_average=not train, dtype=self.dtype, name="expand_bn")(y)
            y = nn.relu6(y)
        y = conv(self.hidden_channels, 3, self.stride, groups=self.hidden_channels,
                 dtype=self.dtype, name="depthwise_conv")(y)
        y = BatchNorm(use_running_average=not train, dtype=self.dtype, name="depthwise_bn")(y)
        y = nn.relu6(y)
        y = conv(self.out_channels, 1, dtype=self.dtype, name="project_conv")(y)
        y = BatchNorm(use_running_average=not train, dtype=self.dtype, name="project_bn")(y)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor with an optional linear head.

    Attributes:
      num_classes: size of the linear head (`classifier`), or None for no head.
      width_mult: channel multiplier (1.0 = the official networks; small values for tests).
      last_channel: channels of the final 1x1 conv; None = the official rule (1280 for width ≤ 1).
      shift_segments: frames per video for TSM (8 for Something-Something), or None (no shift).
      classifier_dropout: dropout before the head in train mode (0.2 in the torchvision layout, used
        only when the glance network is pre-trained on its own; 0 for the TSM layout).
      head_stop_gradient: the head reads `stop_gradient` of the (dropped-out) features, so its loss
        trains only the head (AdaFocusV2 Sth-Sth `new_fc`).
      reg_head: a second head `reg_classifier` on the same non-detached features, output
        `reg_logits` (AdaFocusV2 Sth-Sth `new_new_fc`, which carries the training signal).
      input_grey, input_highpass: a fixed filter on the input (`layers.input_filter`: the
        channels' mean, then the input minus its local mean over this box width; off = the
        official network).
    """
    num_classes: int | None = None
    width_mult: float = 1.0
    last_channel: int | None = None
    shift_segments: int | None = None
    classifier_dropout: float = 0.0
    head_stop_gradient: bool = False
    reg_head: bool = False
    input_grey: bool = False
    input_highpass: int = 0
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        if self.last_channel is not None:
            return self.last_channel
        return make_divisible(1280 * max(1.0, self.width_mult))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, with_logits: bool = True):
        """Runs the network on a batch of frames.

        Args:
          x: `[N, H, W, 3]` normalised frames (N = videos × frames when TSM is on, video-major).
          train: BatchNorm with batch statistics and dropout on.
          with_logits: also apply the linear head (always done while initialising, so the
            head's parameters exist).

        Returns:
          dict with `feature_map` `[N, ceil(H/32), ceil(W/32), last_channel]` (after the last ReLU6),
          `pooled` `[N, last_channel]` (spatial mean) and, with a head, `logits` `[N, num_classes]`
          and `head_features` `[N, last_channel]` (what the heads read: `pooled` after the
          dropout; Uni-AdaFocus-TSM's temporal policy reads it too).
        """
        x = input_filter(x, self.input_grey, self.input_highpass)
        y = conv(make_divisible(32 * self.width_mult), 3, 2, dtype=self.dtype, name="stem_conv")(x)
        y = nn.relu6(BatchNorm(use_running_average=not train, dtype=self.dtype, name="stem_bn")(y))
        for index, (in_ch, out_ch, hidden, stride, residual) in enumerate(
                block_specs(self.width_mult), 1):
            # TSM sits only in blocks that both expand and have a residual connection.
            shift = self.shift_segments if residual and hidden != in_ch else None
            y = InvertedResidual(out_ch, hidden, stride, residual, shift, dtype=self.dtype,
                                 name=f"block{index}")(y, train)
        y = conv(self.num_features, 1, dtype=self.dtype, name="head_conv")(y)
        feature_map = nn.relu6(BatchNorm(use_running_average=not train, dtype=self.dtype,
                                         name="head_bn")(y))
        pooled = spatial_mean(feature_map)
        out = {"feature_map": feature_map, "pooled": pooled}
        if self.num_classes is not None and (with_logits or self.is_initializing()):
            h = nn.Dropout(self.classifier_dropout, deterministic=not train)(pooled)
            out["head_features"] = h
            head_in = jax.lax.stop_gradient(h) if self.head_stop_gradient else h
            out["logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(head_in)
            if self.reg_head:
                out["reg_logits"] = nn.Dense(self.num_classes, dtype=self.dtype,
                                             name="reg_classifier")(h)
        return out
