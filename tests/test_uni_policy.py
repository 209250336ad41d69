"""Uni-AdaFocus policy maths against hand-computed values: quantile frame sampling, the removal
draws and the Monte-Carlo surrogate (`adafocus_jax.rl`), the boxes, the time interpolation of the
actions and the proxy crop's gradients (`adafocus_jax.crop`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import crop as crop_lib
from adafocus_jax import rl


# --------------------------------------------------------------------------------------------------
# Quantile sampling. The CDF nodes, thresholds and quantiles of each case are worked out in the
# comments; the expected indices are not produced by the code under test.


@pytest.mark.parametrize("weights, n, u, expected", [
    # CDF nodes (0, .1, .7, .9, 1); thresholds (.125, .375, .625, .875) fall in bins 1, 1, 1, 2:
    # x = .25 + (q - .1) / .6 / 4 = .2604, .3646, .4688 and x = .5 + (.875 - .7) / .2 / 4 = .7188;
    # times 8 = 2.08, 2.92, 3.75, 5.75 → 2, 2, 3, 5; the duplicate 2 pushes on: 2, 3, 4, 5.
    ((0.1, 0.6, 0.2, 0.1), 8, 0.5, (2, 3, 4, 5)),
    # All mass in the last bin: x = .75 + q / 4 → 6.25, 6.75, 7.25, 7.75 → 6, 6, 7, 7 → pushed to
    # 6, 7, 8, 9 → clipped to at most N - K + i = 4, 5, 6, 7.
    ((0.0, 0.0, 0.0, 1.0), 8, 0.5, (4, 5, 6, 7)),
    # Uniform weights: the quantile is the threshold (i + u_i) / 4 = .025, .475, .5, .875 → × 8 =
    # 0.2, 3.8, 4.0, 7.0 → 0, 3, 4, 7 (stratified offsets u given per frame).
    ((0.25, 0.25, 0.25, 0.25), 8, (0.1, 0.9, 0.0, 0.5), (0, 3, 4, 7)),
])
def test_quantile_frame_indices_hand_computed(weights, n, u, expected):
    w = jnp.asarray([weights], jnp.float32)
    offsets = jnp.asarray([u], jnp.float32) if isinstance(u, tuple) else u
    got = rl.quantile_frame_indices(w, n, len(expected), offsets)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), [expected])


def test_quantile_frame_indices_fewer_glance_positions_than_frames():
    # G = 2 bins, K = 3 of N = 7 frames, u = .5: thresholds 1/6, 1/2, 5/6; CDF nodes (0, .75, 1).
    # Bin 0: x = .5 q / .75 → .1111, .3333 → × 7 = 0.78, 2.33; bin 1: x = .5 + (5/6 - .75)/.25/2
    # = .6667 → 4.67. Indices 0, 2, 4.
    got = rl.quantile_frame_indices(jnp.asarray([[0.75, 0.25]]), 7, 3)
    np.testing.assert_array_equal(np.asarray(got), [[0, 2, 4]])


def test_quantile_frame_indices_batched_rows_are_independent_and_distinct():
    rng = np.random.default_rng(0)
    w = jax.nn.softmax(jnp.asarray(rng.normal(size=(64, 16)) * 3, jnp.float32), axis=-1)
    u = rl.stratified_offsets(jax.random.key(3), (64, 16))
    got = np.asarray(rl.quantile_frame_indices(w, 48, 16, u))
    assert got.shape == (64, 16)
    assert (np.diff(got, axis=1) > 0).all() and got.min() >= 0 and got.max() < 48
    one = np.asarray(rl.quantile_frame_indices(w[5:6], 48, 16, u[5:6]))
    np.testing.assert_array_equal(one, got[5:6])


def test_quantile_frame_indices_rejects_bad_shapes():
    with pytest.raises(ValueError, match="weights must be"):
        rl.quantile_frame_indices(jnp.ones((4,)), 8, 4)
    with pytest.raises(ValueError, match="K=9"):
        rl.quantile_frame_indices(jnp.ones((1, 4)) / 4, 8, 9)


# --------------------------------------------------------------------------------------------------
# The Monte-Carlo surrogate. Weights (.5, .3, .2) over 3 glance frames.

W = (0.5, 0.3, 0.2)
LOGITS = ((1.0, 0.0), (0.0, 2.0), (3.0, 1.0))   # [G = 3, K = 2]


def test_removal_keep_masks_remove_r_frames_with_sequential_probabilities():
    samples = 20000
    keep = np.asarray(rl.removal_keep_masks(jax.random.key(0), jnp.asarray([W]), 3, samples))
    assert keep.shape == (3 * samples, 1, 3)
    keep = keep.reshape(3, samples, 3)
    np.testing.assert_array_equal(keep.sum(-1), np.array([3, 2, 1])[:, None] * np.ones(samples))
    # One removal: frame j goes with probability w_j.
    np.testing.assert_allclose(1 - keep[1].mean(0), W, atol=0.015)
    # Two removals without replacement: frame j stays if the other two go, in either order:
    # keep 0: .3·.2/.7 + .2·.3/.8 = .160714; keep 1: .5·.2/.5 + .2·.5/.8 = .325;
    # keep 2: .5·.3/.5 + .3·.5/.7 = .514286.
    np.testing.assert_allclose(keep[2].mean(0), (0.160714, 0.325, 0.514286), atol=0.015)


def test_mc_surrogate_given_masks_value_and_gradients():
    w, logits = jnp.asarray([W]), jnp.asarray([LOGITS])
    keep = jnp.asarray([[[1.0, 1.0, 1.0]], [[1.0, 0.0, 1.0]]])          # [M = 2, B = 1, G = 3]
    # Mask 1: .5·(1, 0) + .3·(0, 2) + .2·(3, 1) = (1.1, .8); mask 2: (.5·(1, 0) + .2·(3, 1)) / .7
    # = (1.571429, .285714); mean (1.335714, .542857).
    out = rl.mc_surrogate_logits(logits, w, keep)
    np.testing.assert_allclose(np.asarray(out), [[1.335714, 0.542857]], rtol=1e-5)
    # The normaliser is a constant: d out_0 / d w_t = mean_m m_t l_t0 / norm_m
    # = ((1 + 1/.7) / 2, 0, (3 + 3/.7) / 2); d out_0 / d l_t0 = mean_m m_t w_t / norm_m
    # = ((.5 + .5/.7) / 2, .3 / 2, (.2 + .2/.7) / 2).
    gw, gl = jax.grad(lambda w_, l_: rl.mc_surrogate_logits(l_, w_, keep)[0, 0],
                      argnums=(0, 1))(w, logits)
    np.testing.assert_allclose(np.asarray(gw), [[1.214286, 0.0, 3.642857]], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gl)[0, :, 0], [0.607143, 0.15, 0.242857], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(gl)[0, :, 1], 0.0)


def test_mc_surrogate_estimate_matches_exact_expectation():
    # R = 2: no removal, or one frame j removed with probability w_j. Exact expectation:
    # ½ [Σ w l + Σ_j w_j Σ_{t≠j} w_t l_t / (1 - w_j)]; class 0 (l = 1, 0, 3):
    # ½ [1.1 + .5·1.2 + .3·1.571429 + .2·.625] = 1.148214; class 1 (l = 0, 2, 1):
    # ½ [.8 + .5·1.6 + .3·.285714 + .2·.75] = .917857.
    w, logits = jnp.asarray([W]), jnp.asarray([LOGITS])
    keep = rl.removal_keep_masks(jax.random.key(1), w, 2, 20000)
    out = rl.mc_surrogate_logits(logits, w, keep)
    np.testing.assert_allclose(np.asarray(out), [[1.148214, 0.917857]], atol=0.01)


def test_mc_surrogate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must be"):
        rl.mc_surrogate_logits(jnp.zeros((1, 3, 2)), jnp.ones((1, 3)), jnp.ones((2, 1, 4)))
    with pytest.raises(ValueError, match="num_removals"):
        rl.removal_keep_masks(jax.random.key(0), jnp.ones((1, 3)) / 3, 4, 2)


# --------------------------------------------------------------------------------------------------
# Spatial policy: boxes, time interpolation, the crops.


def test_uni_boxes_by_hand():
    actions = jnp.asarray([[0.5, 0.25, 0.0, 1.0]])
    # Frames (224², P = 128): sides 96 + 128·(0, 1) = (96, 224); top-left (.5·(224 − 96),
    # .25·(224 − 224)) = (64, 0).
    top, side = crop_lib.uni_boxes(actions, 224, 128, 128)
    np.testing.assert_allclose(np.asarray(side), [[96.0, 224.0]])
    np.testing.assert_allclose(np.asarray(top), [[64.0, 0.0]])
    # The 7×7 glance map, output 128 // 32 = 4 cells: sides 4·(96, 224)/128 = (3, 7) cells;
    # top-left (.5·(7 − 3), .25·0) = (2, 0).
    top, side = crop_lib.uni_boxes(actions, 7, 4, 128)
    np.testing.assert_allclose(np.asarray(side), [[3.0, 7.0]])
    np.testing.assert_allclose(np.asarray(top), [[2.0, 0.0]])
    # The random-patch action: scale (P − 96) / (224 − 96) gives side P.
    s = (160 - 96) / 128
    _, side = crop_lib.uni_boxes(jnp.asarray([[0.1, 0.9, s, s]]), 224, 160, 160)
    np.testing.assert_allclose(np.asarray(side), [[160.0, 160.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="actions must be"):
        crop_lib.uni_boxes(jnp.zeros((1, 2)), 224, 128, 128)


@pytest.mark.parametrize("g, n", [(16, 48), (3, 7), (4, 4)])
def test_interpolate_actions_matches_torch(g, n):
    torch = pytest.importorskip("torch")
    actions = np.random.default_rng(g).uniform(size=(2, g, 4)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(actions).permute(0, 2, 1), n, mode="linear",
        align_corners=False).permute(0, 2, 1).numpy()
    got = crop_lib.interpolate_actions(jnp.asarray(actions), n)
    assert got.shape == (2, n, 4)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


@pytest.mark.parametrize("image, out, patch, side_range", [
    (40, 24, 24, (16.0, 40.0)),      # frames: boxes 16…40 px resampled to 24² (down and up)
    (7, 4, 128, (96.0, 224.0)),      # the official proxy crop of the 7×7 glance map
])
def test_uni_crop_matches_torch_grid_sample_float64(image, out, patch, side_range):
    torch = pytest.importorskip("torch")
    import torch_reference as ref
    rng = np.random.default_rng(3)
    b, t, c = 2, 3, 5
    frames = rng.normal(size=(b, t, image, image, c))
    actions = rng.uniform(size=(b, t, 4))
    actions[0, 0] = (0.0, 1.0, 0.0, 0.0)     # smallest box in a corner
    actions[1, 2] = (1.0, 0.0, 1.0, 0.3)     # full-height box
    with jax.enable_x64(True):
        top, side = crop_lib.uni_boxes(jnp.asarray(actions), image, out, patch, side_range)
        got = crop_lib.bilinear_crop(jnp.asarray(frames), top.astype(jnp.float64), out,
                                     side.astype(jnp.float64))
    assert got.shape == (b, t, out, out, c)
    images = torch.from_numpy(frames.reshape(b * t, image, image, c)).permute(0, 3, 1, 2)
    want = ref.uni_grid_patches(images, torch.from_numpy(actions.reshape(b * t, 4)), out, patch,
                                side_range)
    want = want.permute(0, 2, 3, 1).numpy().reshape(b, t, out, out, c)
    # uni_boxes works in float32 (like the official code): coordinates agree to ~1e-6 cells.
    np.testing.assert_allclose(np.asarray(got), want, atol=5e-5)


def test_proxy_crop_gradients_match_finite_differences():
    """The proxy of the spatial policy: crop the 7×7 map with the box of each action, mean-pool,
    a linear head; its gradient w.r.t. centre (y, x) and scale (s_y, s_x) vs central differences."""
    rng = np.random.default_rng(4)
    b, g, c, k = 2, 3, 6, 4
    maps = rng.normal(size=(b, g, 7, 7, c))
    head = rng.normal(size=(c, k))
    with jax.enable_x64(True):
        maps_j, head_j = jnp.asarray(maps), jnp.asarray(head)

        def loss(actions):
            scale = actions[..., 2:] * (128 / 128) + 96 / 128       # uni_boxes in float64
            side = 4 * scale
            top = actions[..., :2] * (7 - side)
            crops = crop_lib.bilinear_crop(maps_j, top, 4, side)    # [B, G, 4, 4, C]
            logits = crops.mean(axis=(1, 2, 3)) @ head_j            # [B, K]
            return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

        loss = jax.jit(loss)
        actions = jnp.asarray(rng.uniform(0.1, 0.9, size=(b, g, 4)) + 0.0123)
        grad = jax.grad(loss)(actions)
        assert bool(jnp.all(grad != 0))
        eps = 1e-6
        for idx in np.ndindex(*actions.shape):
            d = jnp.zeros_like(actions).at[idx].set(eps)
            fd = (loss(actions + d) - loss(actions - d)) / (2 * eps)
            np.testing.assert_allclose(float(grad[idx]), float(fd), rtol=1e-5, atol=1e-8)
        # The float32 path of the model (uni_boxes) gives the same gradient to float32 precision.

        def loss32(actions):
            top, side = crop_lib.uni_boxes(actions, 7, 4, 128)
            crops = crop_lib.bilinear_crop(maps_j.astype(jnp.float32), top, 4, side)
            logits = crops.mean(axis=(1, 2, 3)) @ head_j.astype(jnp.float32)
            return jnp.sum(jax.nn.log_softmax(logits)[:, 0])
        grad32 = jax.grad(loss32)(actions.astype(jnp.float32))
        np.testing.assert_allclose(np.asarray(grad32), np.asarray(grad), rtol=1e-3, atol=1e-5)
