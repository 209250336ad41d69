"""Small building blocks shared by the networks: PyTorch-equivalent conv and batch norm settings."""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
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
def _bn_train_fwd(x, scale, bias, epsilon):
    """Train-mode batch norm over all axes but the last: (y, (mean, var)) and the residuals."""
    c = x.shape[-1]
    x32 = x.reshape(-1, c).astype(jnp.promote_types(x.dtype, jnp.float32))
    n = x32.shape[0]
    mean = jnp.sum(x32, axis=0) / n
    # Flax's "fast variance" (E[x²] − E[x]²), as nn.BatchNorm computed it before this function.
    var = jnp.maximum(jnp.sum(x32 * x32, axis=0) / n - mean * mean, 0.0)
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x - mean) * (inv * scale) + bias
    return (y, (mean, var)), (x, mean, inv, scale)


def _bn_train_bwd(epsilon, residuals, cotangents):
    # Closed-form batch-norm gradient; the cotangent of the returned statistics is ignored (they
    # only feed the running averages, under stop_gradient at the call site).
    del epsilon
    x, mean, inv, scale = residuals
    grad = cotangents[0]
    c = x.shape[-1]
    n = x.size // c
    g32 = grad.astype(inv.dtype)
    x_hat = (x.astype(inv.dtype) - mean) * inv
    sum_g = jnp.sum(g32.reshape(-1, c), axis=0)
    sum_g_x_hat = jnp.sum((g32 * x_hat).reshape(-1, c), axis=0)
    dx = (inv * scale / n) * (n * g32 - sum_g - x_hat * sum_g_x_hat)
    return dx.astype(x.dtype), sum_g_x_hat.astype(scale.dtype), sum_g.astype(scale.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon):
    """Train-mode batch norm of `x` `[..., C]` over all leading axes with `scale`, `bias` `[C]`:
    (y `[..., C]` in the promoted dtype, (batch mean, biased batch variance) `[C]` float32).

    A custom VJP with the closed-form gradient. Why: autodiff of the mean/variance reductions gave
    XLA:CPU reductions with fused producers, which it rewrites into slow tree reductions
    (reduce-window): half of the stage-1 train step's time on a 2-core CPU. This form computes
    four plain per-channel sums per BN (two forward, two backward); forward values and gradients
    equal autodiff's to float32 rounding (tests/test_layers.py).
    """
    return _bn_train_fwd(x, scale, bias, epsilon)[0]


batch_norm_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class BatchNorm(nn.Module):
    """PyTorch-equivalent BatchNorm over the last axis of `[..., C]` inputs (the same variables as
    `flax.linen.BatchNorm`: params `scale`/`bias`, batch_stats `mean`/`var`, all float32).

    Eval mode (`use_running_average`): `(x − mean)·(rsqrt(var + ε)·scale) + bias`, Flax's exact
    expression. Train mode: `batch_norm_train` (batch statistics, closed-form gradient), running
    averages updated with momentum 0.9 (outside initialisation). The output has `dtype` if given,
    else the promoted dtype of `x` and the float32 parameters (Flax's rule).
    """
    use_running_average: bool | None = None
    momentum: float = 0.9       # PyTorch's 0.1, counted the other way round (comment at the top)
    epsilon: float = 1e-5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None) -> jnp.ndarray:
        use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                             use_running_average)
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        if use_running_average:
            y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
        else:
            y, (mean, var) = batch_norm_train(x, scale, bias, self.epsilon)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
        return jnp.asarray(y, self.dtype or jnp.result_type(x, scale))


def window_taps(x: jnp.ndarray, kh: int, kw: int, sh: int, sw: int):
    """The kh·kw strided views of a padded `[N, H, W, C]` input that a (kh, kw) window with strides
    (sh, sw) reads: yields (i, j, `[N, H_out, W_out, C]`) with H_out = (H − kh) // sh + 1."""
    n, h, w, c = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, jax.lax.slice(x, (0, i, j, 0),
                                      (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                                      (1, sh, sw, 1))


class DepthwiseConv(nn.Conv):
    """A depthwise conv (`feature_group_count == features ==` input channels) computed as k·k
    shifted multiply-adds instead of a grouped `lax.conv_general_dilated`.

    Same parameters as the `nn.Conv` it replaces (`kernel` `[kh, kw, 1, C]`, optional `bias` `[C]`,
    same initialisers), so checkpoints and parameter trees are unchanged; same function (explicit
    padding and strides only). Why: XLA:CPU lowers grouped convolutions with one group per channel
    to a slow generic loop; the shifted form is 5-30x faster at MobileNetV2's shapes, forward and
    backward (benchmarks/inference.py), and is plain elementwise work that XLA fuses on every
    backend.
    """

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        """`[N, H, W, C]` → `[N, H_out, W_out, C]`, H_out = (H + pad_lo + pad_hi − kh) // stride + 1."""
        channels = inputs.shape[-1]
        if not (self.features == self.feature_group_count == channels):
            raise ValueError(f"DepthwiseConv {self.name}: needs features == feature_group_count == "
                             f"input channels, got {self.features}, {self.feature_group_count}, "
                             f"{channels}")
        if isinstance(self.padding, str) or self.kernel_dilation not in (None, 1, (1, 1)) or \
                self.input_dilation not in (None, 1, (1, 1)):
            raise ValueError(f"DepthwiseConv {self.name}: only explicit padding, no dilation")
        kh, kw = self.kernel_size
        sh, sw = (self.strides, self.strides) if isinstance(self.strides, int) else self.strides
        kernel = self.param("kernel", self.kernel_init, (kh, kw, 1, channels), self.param_dtype)
        bias = (self.param("bias", self.bias_init, (channels,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        (pt, pb), (pl, pr) = self.padding
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        out = None
        for i, j, tap in window_taps(x, kh, kw, sh, sw):
            tap = tap * kernel[i, j, 0]
            out = tap if out is None else out + tap
        return out if bias is None else out + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """A 1×1 convolution, `[N, H, W, C]` × `[C, D]` → `[N, ceil(H/s), ceil(W/s), D]` (no padding).

    The forward pass is XLA's convolution (fast on every backend); the backward pass is two
    matmuls, dx = dy · Wᵀ (scattered back to the strided positions) and dW = Σ x_s ⊗ dy, instead
    of the convolutions autodiff derives. Why: XLA:CPU computes the weight gradient of a 1×1
    convolution as a convolution whose window is the whole feature map, 2–3× slower than the
    same contraction as a matmul at ResNet-50's shapes (benchmarks/train_step.py).
    """
    return jax.lax.conv_general_dilated(x, kernel[None, None], (stride, stride), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _pointwise_conv_fwd(x, kernel, stride):
    return pointwise_conv(x, kernel, stride), (x, kernel)


def _pointwise_conv_bwd(stride, residuals, grad):
    x, kernel = residuals
    strided = x[:, ::stride, ::stride] if stride > 1 else x
    d_kernel = jnp.einsum("nhwc,nhwd->cd", strided, grad,
                          preferred_element_type=jnp.float32).astype(kernel.dtype)
    d_strided = jnp.einsum("nhwd,cd->nhwc", grad, kernel,
                           preferred_element_type=jnp.float32).astype(x.dtype)
    if stride == 1:
        return d_strided, d_kernel
    return jnp.zeros_like(x).at[:, ::stride, ::stride].set(d_strided), d_kernel


pointwise_conv.defvjp(_pointwise_conv_fwd, _pointwise_conv_bwd)


class PointwiseConv(nn.Conv):
    """A 1×1 convolution (`kernel_size == (1, 1)`, no padding, no groups) through
    `pointwise_conv`: the same parameters as the `nn.Conv` it replaces (`kernel` `[1, 1, C, D]`,
    optional `bias` `[D]`, same initialisers) and the same forward computation; only the
    gradient is computed differently (matmuls)."""

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        """`[N, H, W, C]` → `[N, ceil(H/s), ceil(W/s), features]`."""
        channels = inputs.shape[-1]
        if tuple(self.kernel_size) != (1, 1) or self.feature_group_count != 1 or \
                self.padding not in ("VALID", ((0, 0), (0, 0))):
            raise ValueError(f"PointwiseConv {self.name}: needs a 1×1 kernel, one group and no "
                             f"padding, got {self.kernel_size}, {self.feature_group_count}, "
                             f"{self.padding}")
        sh, sw = (self.strides, self.strides) if isinstance(self.strides, int) else self.strides
        if sh != sw:
            raise ValueError(f"PointwiseConv {self.name}: needs equal strides, got {self.strides}")
        kernel = self.param("kernel", self.kernel_init, (1, 1, channels, self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        out = pointwise_conv(x, kernel[0, 0], int(sh))
        return out if bias is None else out + bias


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int) -> jnp.ndarray:
    """PyTorch's `MaxPool2d(window, stride, padding)` (−inf padding), `[N, H, W, C]` →
    `[N, H_out, W_out, C]`, H_out = (H + 2·padding − window) // stride + 1, as the maximum of the
    window² strided slices.

    Same values as `nn.max_pool`; the gradient differs only in ties, which `jnp.maximum` shares
    among the tied elements where `reduce_window` gives it to one (after a ReLU the tied zeros get
    no gradient either way). Why: XLA:CPU differentiates `reduce_window` max with an argmax-tracking window
    reduction (index tensors of the whole input), several times slower than these fused
    elementwise selects at ResNet-50's stem shapes.
    """
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                constant_values=-jnp.inf)
    out = None
    for _, _, tap in window_taps(x, window, window, stride, stride):
        out = tap if out is None else jnp.maximum(out, tap)
    return out


def conv(features: int, kernel: int, stride: int = 1, *, groups: int = 1, bias: bool = False,
         dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
    """A conv with PyTorch's symmetric padding `kernel // 2` (never 'SAME', which pads asymmetrically
    for strided convs and would shift every output by half a pixel). `groups == features > 1`
    means depthwise (the input must have `features` channels): `DepthwiseConv`; a 1×1 kernel
    without groups is a `PointwiseConv` (the same function, a faster gradient)."""
    pad = kernel // 2
    if groups == features and groups > 1:
        cls = DepthwiseConv
    elif kernel == 1 and groups == 1:
        cls = PointwiseConv
    else:
        cls = nn.Conv
    return cls(features, (kernel, kernel), strides=(stride, stride),
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


def box_highpass(x: jnp.ndarray, width: int, passes: int = 2) -> jnp.ndarray:
    """`x` minus its local mean: a fixed high-pass filter, `[N, H, W, C]` → `[N, H, W, C]`.

    The local mean is a `width` × `width` box blur (running sums along each axis, edges
    repeated) applied `passes` times (two passes: a tent close to a Gaussian of σ ≈ width / 2.4).
    It removes what varies slowly across the image (smooth backgrounds, illumination, colour
    casts) and keeps edges and strokes: a small network trained from scratch on a few hundred
    videos otherwise fits each video's background colours instead of the object (README "Your
    own videos"). `width` must be odd (a centred box); 0 returns `x`.
    """
    if width <= 0:
        return x
    if width % 2 == 0:
        raise ValueError(f"box_highpass: width must be odd (a centred box), got {width}")
    blur = x
    for _ in range(passes):
        for axis in (1, 2):
            n = blur.shape[axis]
            pad = [(0, 0)] * blur.ndim
            pad[axis] = (width // 2 + 1, width // 2)
            sums = jnp.cumsum(jnp.pad(blur, pad, mode="edge"), axis=axis)
            blur = (jax.lax.slice_in_dim(sums, width, width + n, axis=axis) -
                    jax.lax.slice_in_dim(sums, 0, n, axis=axis)) / width
    return x - blur


def input_filter(x: jnp.ndarray, grey: bool = False, highpass: int = 0) -> jnp.ndarray:
    """The fixed (untrained) input filter of a network, `[N, H, W, C]` → `[N, H, W, C]`.

    `grey`: every channel replaced by the mean of the channels (the shape stays, so the stem and
    checkpoints do not change). `highpass`: then `box_highpass` with that box width (0 = none).
    Both off is the identity (the official networks). Why a small network trained from scratch on
    a few hundred videos wants them: README "Your own videos" — without them it fits each video's
    background and object colours instead of the object's shape.
    """
    if grey:
        x = jnp.broadcast_to(jnp.mean(x, axis=-1, keepdims=True), x.shape)
    return box_highpass(x, highpass)
