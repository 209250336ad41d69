"""DepthwiseConv (shifted multiply-adds), PointwiseConv (matmul gradients) and BatchNorm (closed-form
gradient) against the XLA convolutions / Flax batch norm they replace."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adafocus_jax.models.layers import (BatchNorm, DepthwiseConv, PointwiseConv, box_highpass,
                                        conv, input_filter, max_pool)


@pytest.mark.parametrize("shape,kernel,stride,bias", [
    ((2, 9, 9, 6), 3, 1, False), ((2, 9, 9, 6), 3, 2, False), ((1, 8, 7, 4), 3, 2, True),
    ((1, 10, 11, 5), 5, 2, False), ((3, 6, 6, 8), 3, 1, True)])
def test_depthwise_matches_grouped_conv(shape, kernel, stride, bias):
    pad = kernel // 2
    kwargs = dict(features=shape[-1], kernel_size=(kernel, kernel), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), feature_group_count=shape[-1], use_bias=bias)
    ours, ref = DepthwiseConv(**kwargs), nn.Conv(**kwargs)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = ref.init(jax.random.key(1), x)
    # Same parameter tree and the same initial values for the same key.
    ours_vars = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(ours_vars) == jax.tree.structure(variables)
    np.testing.assert_array_equal(ours_vars["params"]["kernel"], variables["params"]["kernel"])
    if bias:  # nonzero bias so that it is tested
        variables = {"params": {**variables["params"],
                                "bias": jnp.arange(shape[-1], dtype=jnp.float32)}}
    want = jax.jit(ref.apply)(variables, x)
    got = jax.jit(ours.apply)(variables, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    # Gradients w.r.t. input and kernel agree (training uses the same formulation).
    loss = lambda m: (lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))))
    g_want = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
    g_got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4), g_got, g_want)


def test_depthwise_bfloat16_compute():
    layer = DepthwiseConv(4, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=4,
                          dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 4))
    variables = layer.init(jax.random.key(1), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert layer.apply(variables, x).dtype == jnp.bfloat16


def test_conv_helper_picks_depthwise_and_checks_channels():
    assert isinstance(conv(8, 3, groups=8), DepthwiseConv)
    assert not isinstance(conv(8, 3), DepthwiseConv)
    with pytest.raises(ValueError, match="input channels"):
        conv(8, 3, groups=8, name="dw").init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))


@pytest.mark.parametrize("shape,stride,bias", [((2, 9, 9, 6), 1, False), ((2, 9, 9, 6), 2, True),
                                               ((1, 8, 6, 4), 2, False)])
def test_pointwise_matches_conv_forward_and_gradients(shape, stride, bias):
    kwargs = dict(features=5, kernel_size=(1, 1), strides=(stride, stride),
                  padding=((0, 0), (0, 0)), use_bias=bias)
    ours, ref = PointwiseConv(**kwargs), nn.Conv(**kwargs)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = ref.init(jax.random.key(1), x)
    ours_vars = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(ours_vars) == jax.tree.structure(variables)
    np.testing.assert_array_equal(ours_vars["params"]["kernel"], variables["params"]["kernel"])
    if bias:
        variables = {"params": {**variables["params"], "bias": jnp.arange(5, dtype=jnp.float32)}}
    want, got = jax.jit(ref.apply)(variables, x), jax.jit(ours.apply)(variables, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # The hand-written backward (matmuls) against autodiff of XLA's convolution.
    loss = lambda m: (lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)) * jnp.arange(5.0)))
    g_want = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
    g_got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4), g_got, g_want)
    if stride > 1:   # inputs skipped by the stride get exactly zero gradient
        dx = np.asarray(g_got[1])
        assert np.all(dx[:, 1::stride] == 0) and np.all(dx[:, :, 1::stride] == 0)


def test_pointwise_bfloat16_and_conv_helper():
    assert isinstance(conv(8, 1), PointwiseConv) and not isinstance(conv(8, 3), PointwiseConv)
    layer = PointwiseConv(4, (1, 1), padding=((0, 0), (0, 0)), dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 3))
    variables = layer.init(jax.random.key(1), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert layer.apply(variables, x).dtype == jnp.bfloat16
    grads = jax.grad(lambda v: layer.apply(v, x).astype(jnp.float32).sum())(variables)
    assert grads["params"]["kernel"].dtype == jnp.float32
    with pytest.raises(ValueError, match="1×1 kernel"):
        PointwiseConv(4, (3, 3)).init(jax.random.key(0), x)


@pytest.mark.parametrize("shape", [(2, 9, 9, 3), (1, 8, 7, 2), (1, 36, 36, 4)])
def test_max_pool_matches_reduce_window(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    want = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    got = jax.jit(lambda x: max_pool(x, 3, 2, 1))(x)
    np.testing.assert_array_equal(got, want)
    # Without ties (random normal inputs) the gradients agree exactly.
    weights = jax.random.normal(jax.random.key(1), want.shape)
    g_want = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (3, 3), strides=(2, 2),
                                                     padding=((1, 1), (1, 1))) * weights))(x)
    g_got = jax.jit(jax.grad(lambda x: jnp.sum(max_pool(x, 3, 2, 1) * weights)))(x)
    np.testing.assert_allclose(g_got, g_want, rtol=1e-6, atol=1e-6)
    # bf16 keeps its dtype (the -inf padding is representable).
    assert max_pool(x.astype(jnp.bfloat16), 3, 2, 1).dtype == jnp.bfloat16


@pytest.mark.parametrize("shape", [(4, 5, 6, 16), (64, 7), (3, 2, 5, 5, 8)])
def test_batch_norm_matches_flax_batch_norm(shape):
    """Same variables, eval outputs bit-identical, train outputs / gradients (input, scale, bias)
    and running averages equal to flax.linen.BatchNorm's autodiff within float32 rounding."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape) * 2 + 1, jnp.float32)
    weight = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    ref = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    want_vars = ref.init(jax.random.key(0), x, use_running_average=False)
    got_vars = BatchNorm().init(jax.random.key(0), x, use_running_average=False)
    assert jax.tree.structure(got_vars) == jax.tree.structure(want_vars)
    c = shape[-1]
    variables = {"params": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32),
                            "bias": jnp.asarray(rng.standard_normal(c), jnp.float32)},
                 "batch_stats": {"mean": jnp.asarray(rng.standard_normal(c), jnp.float32),
                                 "var": jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32)}}

    def train_loss(module):
        def loss(params, x):
            y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                      x, use_running_average=False, mutable=["batch_stats"])
            return jnp.sum(y * weight), (y, updates["batch_stats"])
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    (_, (want_y, want_stats)), want_grads = train_loss(ref)(variables["params"], x)
    (_, (got_y, got_stats)), got_grads = train_loss(BatchNorm())(variables["params"], x)
    for want, got in [(want_y, got_y), *zip(jax.tree.leaves(want_grads), jax.tree.leaves(got_grads)),
                      *zip(jax.tree.leaves(want_stats), jax.tree.leaves(got_stats))]:
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)
    assert float(jnp.max(jnp.abs(got_grads[1]))) > 0      # the input gradient is exercised
    want_eval = ref.apply(variables, x, use_running_average=True)
    got_eval = BatchNorm().apply(variables, x, use_running_average=True)
    np.testing.assert_array_equal(got_eval, want_eval)


def test_batch_norm_bfloat16_keeps_float32_statistics():
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 6), jnp.bfloat16) * 3 + 2
    module = BatchNorm(dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(1), x, use_running_average=False)
    y, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(updates))
    want_mean = 0.1 * jnp.mean(x.astype(jnp.float32), axis=(0, 1, 2))   # momentum 0.9 from zeros
    np.testing.assert_allclose(updates["batch_stats"]["mean"], want_mean, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p, x: jnp.sum(module.apply({"params": p, **updates}, x,
                                                       use_running_average=False,
                                                       mutable=["batch_stats"])[0]
                                          .astype(jnp.float32) ** 2), argnums=(0, 1))(
        variables["params"], x)
    assert grads[1].dtype == jnp.bfloat16 and grads[0]["scale"].dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("width", [1, 3, 7])
def test_box_highpass_is_the_input_minus_two_box_blurs(width):
    """Against scipy's box filter (edges repeated), applied twice."""
    from scipy.ndimage import uniform_filter
    x = np.random.default_rng(width).normal(size=(2, 21, 16, 3))
    blur = x
    for _ in range(2):
        blur = uniform_filter(blur, size=(1, width, width, 1), mode="nearest")
    got = np.asarray(box_highpass(jnp.asarray(x, jnp.float32), width))
    np.testing.assert_allclose(got, x - blur, atol=2e-6)
    # What it removes: a constant image and (away from the edges) a linear ramp vanish; width 0
    # is the identity.
    ramp = jnp.broadcast_to(jnp.linspace(-2, 3, 30)[None, :, None, None], (1, 30, 30, 3))
    assert np.abs(np.asarray(box_highpass(jnp.full((1, 9, 9, 3), 5.0), width))).max() < 1e-5
    assert np.abs(np.asarray(box_highpass(ramp, width))[:, width:-width]).max() < 1e-5
    assert box_highpass(ramp, 0) is ramp
    with pytest.raises(ValueError, match="odd"):
        box_highpass(ramp, 4)


def test_input_filter_greys_then_highpasses():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 12, 10, 3)), jnp.float32)
    assert input_filter(x) is x
    grey = np.asarray(input_filter(x, grey=True))
    np.testing.assert_allclose(grey, np.repeat(np.asarray(x).mean(-1, keepdims=True), 3, -1),
                               rtol=1e-6)
    np.testing.assert_allclose(input_filter(x, grey=True, highpass=3),
                               box_highpass(jnp.asarray(grey), 3), rtol=1e-5, atol=1e-6)
    # Grey: a colour-only difference (a pure hue change at equal channel mean) is gone.
    swapped = x[..., ::-1]
    np.testing.assert_allclose(input_filter(swapped, grey=True), grey, rtol=1e-6, atol=1e-6)


def test_networks_apply_the_input_filter():
    """ResNet / MobileNetV2 with `input_grey` / `input_highpass` = the plain network on the
    filtered input."""
    from adafocus_jax.models.mobilenet_v2 import MobileNetV2
    from adafocus_jax.models.resnet import ResNet
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    for plain, filtered in ((ResNet(num_classes=3, stage_sizes=(1, 1, 1, 1), width=4),
                             ResNet(num_classes=3, stage_sizes=(1, 1, 1, 1), width=4,
                                    input_grey=True, input_highpass=5)),
                            (MobileNetV2(num_classes=3, width_mult=0.25, last_channel=16),
                             MobileNetV2(num_classes=3, width_mult=0.25, last_channel=16,
                                         input_grey=True, input_highpass=5))):
        variables = plain.init(jax.random.key(0), x)
        want = plain.apply(variables, input_filter(x, True, 5))["pooled"]
        np.testing.assert_allclose(filtered.apply(variables, x)["pooled"], want, rtol=1e-5,
                                   atol=1e-6)
        unfiltered = plain.apply(variables, x)["pooled"]
        assert np.abs(unfiltered - want).max() > 0.05 * np.abs(want).max()
