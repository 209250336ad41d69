"""DepthwiseConv (shifted multiply-adds) against XLA's grouped convolution, the function it replaces."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax.models.layers import DepthwiseConv, conv


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
