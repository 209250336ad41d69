"""ResNet-50 (v1.5, torchvision layout), the local network f_L, with optional TSM (NHWC).

PyTorch pads symmetrically (3 for the 7x7 stem, 1 for 3x3 convs and the max-pool); 'SAME' would
pad strided layers asymmetrically and change every feature, so all padding here is explicit. Stride
sits on the 3x3 conv (v1.5). With `shift_segments`, conv1 of every bottleneck sees a temporally
shifted input (TSM "blockres", shift_div 8), the shortcut the unshifted one.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adafocus_jax.models.layers import BatchNorm, conv, input_filter, max_pool, spatial_mean
from adafocus_jax.models.temporal_shift import temporal_shift


class Bottleneck(nn.Module):
    """1x1 → 3x3 (stride) → 1x1 (×4 channels) bottleneck with a projection shortcut in block 0.

    Attributes:
      width: channels of the 1x1/3x3 convs (output has 4 × width).
      stride: stride of the 3x3 conv and of the projection shortcut.
      downsample: whether the shortcut is a 1x1 conv + BN (first block of each stage).
      shift_segments: frames per video for TSM, or None.
    """
    width: int
    stride: int = 1
    downsample: bool = False
    shift_segments: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """`[N, H, W, C_in]` → `[N, H / stride, W / stride, 4 * width]`."""
        y = x if self.shift_segments is None else temporal_shift(x, self.shift_segments)
        y = conv(self.width, 1, dtype=self.dtype, name="conv1")(y)
        y = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn1")(y))
        y = conv(self.width, 3, self.stride, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn2")(y))
        y = conv(self.width * 4, 1, dtype=self.dtype, name="conv3")(y)
        y = BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn3")(y)
        shortcut = x
        if self.downsample:
            shortcut = conv(self.width * 4, 1, self.stride, dtype=self.dtype,
                            name="downsample_conv")(x)
            shortcut = BatchNorm(use_running_average=not train, dtype=self.dtype,
                                 name="downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ResNet feature extractor (ResNet-50 by default) with an optional `fc` head.

    Attributes:
      num_classes: size of the `fc` head, or None (the Sth-Sth focuser has none; the ActivityNet
        one has it but uses it only for its own pre-training, stage 0).
      stage_sizes: bottlenecks per stage ((3, 4, 6, 3) = ResNet-50).
      width: channels of the stem and of the first stage's bottleneck (64 = ResNet-50).
      shift_segments: frames per video for TSM (12 for Something-Something), or None.
      head_dropout: dropout on the pooled features before `fc` in train mode (AdaFocusV2).
      head_stop_gradient: `fc` reads `stop_gradient` of the features (AdaFocusV2 Sth-Sth `new_fc`).
      reg_head: a second head `reg_fc` on the non-detached features, output `reg_logits`
        (AdaFocusV2 Sth-Sth `new_new_fc`).
      input_grey, input_highpass: a fixed filter on the input (`layers.input_filter`: the
        channels' mean, then the input minus its local mean over this box width; off = the
        official network).
    """
    num_classes: int | None = None
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    shift_segments: int | None = None
    head_dropout: float = 0.0
    head_stop_gradient: bool = False
    reg_head: bool = False
    input_grey: bool = False
    input_highpass: int = 0
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        return self.width * 8 * 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, with_logits: bool = True):
        """Runs the network on a batch of images / patches.

        Args:
          x: `[N, H, W, 3]` normalised patches (video-major when TSM is on).
          train: BatchNorm with batch statistics.
          with_logits: also apply `fc` (always done while initialising).

        Returns:
          dict with `feature_map` `[N, H/32, W/32, 4 * 8 * width]` (after the last block;
          rounded up), `pooled` `[N, 4 * 8 * width]` (2048 for ResNet-50; its spatial mean) and,
          with a head, `logits` `[N, num_classes]` and `head_features` (`pooled` after the
          dropout). The same keys as `MobileNetV2`'s, so either can be the glance network.
        """
        x = input_filter(x, self.input_grey, self.input_highpass)
        y = conv(self.width, 7, 2, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn1")(y))
        # Max-pool pads with -inf, exactly like PyTorch's MaxPool2d(3, 2, padding=1).
        y = max_pool(y, 3, 2, 1)
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                y = Bottleneck(self.width * 2 ** stage,
                               stride=2 if stage > 0 and block == 0 else 1,
                               downsample=block == 0,
                               shift_segments=self.shift_segments, dtype=self.dtype,
                               name=f"layer{stage + 1}_{block}")(y, train)
        pooled = spatial_mean(y)
        out = {"feature_map": y, "pooled": pooled}
        if self.num_classes is not None and (with_logits or self.is_initializing()):
            h = pooled
            if self.head_dropout:
                h = nn.Dropout(self.head_dropout, deterministic=not train)(h)
            out["head_features"] = h
            head_in = jax.lax.stop_gradient(h) if self.head_stop_gradient else h
            out["logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(head_in)
            if self.reg_head:
                out["reg_logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="reg_fc")(h)
        return out
