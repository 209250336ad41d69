"""Offsets and crops against the official formula (adafocus_v1.md §2.7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import crop

# §2.7: per-axis integer offsets of the k×k grid for 224-px frames, measured on the official code.
OFFICIAL_GRID_OFFSETS = {
    (4, 96): [0, 42, 85, 128], (4, 128): [0, 32, 64, 96], (4, 144): [0, 26, 53, 80],
    (4, 160): [0, 21, 42, 64], (4, 176): [0, 16, 32, 48], (4, 192): [0, 10, 21, 32],
    (5, 96): [0, 32, 64, 96, 128], (5, 128): [0, 24, 48, 72, 96], (5, 144): [0, 20, 40, 60, 80],
    (5, 160): [0, 16, 32, 48, 64], (5, 176): [0, 12, 24, 36, 48], (5, 192): [0, 8, 16, 24, 32],
    (6, 96): [0, 25, 51, 76, 102, 128], (6, 128): [0, 19, 38, 57, 76, 96],
    (6, 144): [0, 16, 32, 48, 64, 80], (6, 160): [0, 12, 25, 38, 51, 64],
    (6, 176): [0, 9, 19, 28, 38, 48], (6, 192): [0, 6, 12, 19, 25, 32],
    (7, 96): [0, 21, 42, 64, 85, 106, 128], (7, 128): [0, 16, 32, 48, 64, 80, 96],
    (7, 144): [0, 13, 26, 40, 53, 66, 80], (7, 160): [0, 10, 21, 32, 42, 53, 64],
    (7, 176): [0, 8, 16, 24, 32, 40, 48], (7, 192): [0, 5, 10, 16, 21, 26, 32],
    (8, 96): [0, 18, 36, 54, 73, 91, 109, 128], (8, 128): [0, 13, 27, 41, 54, 68, 82, 96],
    (8, 144): [0, 11, 22, 34, 45, 57, 68, 80], (8, 160): [0, 9, 18, 27, 36, 45, 54, 64],
    (8, 176): [0, 6, 13, 20, 27, 34, 41, 48], (8, 192): [0, 4, 9, 13, 18, 22, 27, 32],
}


@pytest.mark.parametrize("grid,patch", sorted(OFFICIAL_GRID_OFFSETS))
def test_grid_offsets_match_official_table(grid, patch):
    axis = OFFICIAL_GRID_OFFSETS[(grid, patch)]
    table = crop.grid_offset_table(grid, 224, patch)
    assert table.shape == (grid * grid, 2)
    # Row-major: index i·k + j → (row i, column j).
    expected = np.array([[axis[i], axis[j]] for i in range(grid) for j in range(grid)])
    np.testing.assert_array_equal(table, expected)
    np.testing.assert_array_equal(
        crop.grid_offsets(jnp.arange(grid * grid), grid, 224, patch), expected)


def test_continuous_offsets_are_float32_floor():
    actions = jnp.array([[0.0, 1.0], [0.5, 0.25], [0.9999999, 0.1]], jnp.float32)
    got = crop.continuous_offsets(actions, 224, 144)
    expected = np.floor(np.asarray(actions, np.float32) * np.float32(80)).astype(np.int32)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 1] == 80  # the maximum offset H − P is reachable by the policy
    assert got[1, 0] == 40 and got[1, 1] == 20


def test_random_offsets_exclusive_upper_bound():
    offsets = crop.random_offsets(jax.random.key(0), (4000,), 224, 176)
    assert offsets.min() == 0 and offsets.max() == 224 - 176 - 1
    np.testing.assert_array_equal(crop.random_offsets(jax.random.key(0), (5,), 64, 64), 0)


def test_crop_patches_row_first_and_per_step():
    b, t, h, w = 2, 4, 10, 12
    frames = jnp.arange(b * t * h * w * 3, dtype=jnp.float32).reshape(b, t, h, w, 3)
    # Two policy steps: each covers two consecutive frames.
    offsets = jnp.array([[[1, 2], [3, 0]], [[0, 5], [6, 6]]], jnp.int32)
    patches = crop.crop_patches(frames, offsets, 4)
    assert patches.shape == (b, t, 4, 4, 3)
    for bi in range(b):
        for ti in range(t):
            r, c = np.asarray(offsets[bi, ti // 2])
            np.testing.assert_array_equal(patches[bi, ti], frames[bi, ti, r:r + 4, c:c + 4])


def test_crop_rejects_bad_shapes():
    frames = jnp.zeros((1, 3, 8, 8, 3))
    with pytest.raises(ValueError, match="cannot be split"):
        crop.crop_patches(frames, jnp.zeros((1, 2, 2), jnp.int32), 4)
    with pytest.raises(ValueError, match="exceeds"):
        crop.crop_patches(frames, jnp.zeros((1, 1, 2), jnp.int32), 9)


def test_bilinear_crop_matches_integer_crop_and_is_differentiable():
    frames = jax.random.normal(jax.random.key(1), (2, 3, 16, 16, 3))
    offsets = jnp.array([[[2, 5]], [[7, 0]]], jnp.int32)
    exact = crop.crop_patches(frames, offsets, 8)
    top_left = crop.expand_to_frames(offsets, 3).astype(jnp.float32)
    smooth = crop.bilinear_crop(frames, top_left, 8)
    np.testing.assert_allclose(smooth, exact, atol=1e-5)
    # Half-pixel shift = average of the two neighbouring integer crops (inside the frame).
    shifted = crop.bilinear_crop(frames, top_left + jnp.array([0.0, 0.5]), 8)
    right = crop.crop_patches(frames, offsets + jnp.array([0, 1]), 8)
    np.testing.assert_allclose(shifted, 0.5 * (exact + right), atol=1e-5)
    grad = jax.grad(lambda tl: crop.bilinear_crop(frames, tl, 8).sum())(top_left + 0.25)
    assert grad.shape == top_left.shape and bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad).sum()) > 0


# --------------------------------------------------------------------------------------------------
# The differentiable AdaFocusV2 crop against PyTorch's affine_grid + grid_sample.


def _torch_crop(frames, top_left, patch, box=None):
    """Reference: every frame through `torch_reference.v2_grid_patches` (NCHW), back to NHWC."""
    import torch
    import torch_reference as ref
    frames = np.asarray(frames)
    b, t, h, w, c = frames.shape
    corner = np.array(crop.expand_to_frames(jnp.asarray(top_left), t)).reshape(b * t, 2)
    images = torch.from_numpy(np.array(frames.reshape(b * t, h, w, c))).permute(0, 3, 1, 2)
    side = None
    if box is not None:
        side = torch.from_numpy(np.array(
            crop.expand_to_frames(jnp.asarray(box)[..., None], t)).reshape(b * t))
    out = ref.v2_grid_patches(images, torch.from_numpy(corner), patch, side)
    return out.permute(0, 2, 3, 1).numpy().reshape(b, t, patch, patch, c)


@pytest.mark.parametrize("steps", [1, 4])   # one box per video (Sth-Sth), one per frame (ActNet)
def test_bilinear_crop_matches_torch_grid_sample_float64(steps):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    b, t, size, patch = 3, 4, 40, 24
    frames = rng.normal(size=(b, t, size, size, 3))
    actions = rng.uniform(size=(b, steps, 2))
    actions[0, 0] = (0.0, 1.0)            # the box touches the frame's edges
    with jax.enable_x64(True):
        top_left = jnp.asarray(actions * (size - patch))   # float64 (v2_top_left is float32)
        got = crop.bilinear_crop(jnp.asarray(frames), top_left, patch)
        assert got.dtype == jnp.float64 and got.shape == (b, t, patch, patch, 3)
        want = _torch_crop(frames, top_left, patch)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-10)
        # Boxes of other sides (up- and down-scaling), some reaching past the frame: zero padding.
        box = rng.uniform(10, 40, size=(b, steps))
        corner = jnp.asarray(rng.uniform(-3, size - 8, size=(b, steps, 2)))
        got = crop.bilinear_crop(jnp.asarray(frames), corner, patch, jnp.asarray(box))
        np.testing.assert_allclose(np.asarray(got), _torch_crop(frames, corner, patch, box),
                                   atol=1e-10)


def test_bilinear_crop_float32_within_1e5_of_torch():
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    b, t, size, patch = 2, 3, 224, 128
    # Smooth frames like real images (pixel-to-pixel steps ≪ 1), so float32 rounding of the
    # ~100-px coordinates (≈1e-5 px) stays below 1e-5 in value.
    coarse = rng.normal(size=(b, t, 8, 8, 3)).astype(np.float32)
    frames = np.asarray(jax.image.resize(coarse, (b, t, size, size, 3), "linear"))
    actions = rng.uniform(size=(b, t, 2)).astype(np.float32)
    top_left = crop.v2_top_left(jnp.asarray(actions), size, patch)
    got = crop.bilinear_crop(jnp.asarray(frames), top_left, patch)
    assert got.dtype == jnp.float32
    want = _torch_crop(frames, np.asarray(top_left), patch)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_bilinear_crop_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    b, t, size, patch = 2, 2, 20, 9
    frames = rng.normal(size=(b, t, size, size, 3))
    weights = rng.normal(size=(b, t, patch, patch, 3))
    with jax.enable_x64(True):
        frames_j, weights_j = jnp.asarray(frames), jnp.asarray(weights)

        def loss(top_left, box):
            return jnp.sum(crop.bilinear_crop(frames_j, top_left, patch, box) * weights_j)

        # Off-grid positions (the loss is piecewise smooth; steps stay inside one piece).
        top_left = jnp.asarray(rng.uniform(1, size - patch - 2, size=(b, 1, 2)) + 0.37)
        box = jnp.asarray(rng.uniform(7, 11, size=(b, 1)) + 0.013)
        g_top, g_box = jax.grad(loss, argnums=(0, 1))(top_left, box)
        eps = 1e-6
        for idx in np.ndindex(*top_left.shape):
            d = jnp.zeros_like(top_left).at[idx].set(eps)
            fd = (loss(top_left + d, box) - loss(top_left - d, box)) / (2 * eps)
            np.testing.assert_allclose(float(g_top[idx]), float(fd), rtol=1e-5, atol=1e-7)
        for idx in np.ndindex(*box.shape):
            d = jnp.zeros_like(box).at[idx].set(eps)
            fd = (loss(top_left, box + d) - loss(top_left, box - d)) / (2 * eps)
            np.testing.assert_allclose(float(g_box[idx]), float(fd), rtol=1e-5, atol=1e-7)
        # At integer positions (every V2 box with top = 0) the gradient is grid_sample's one:
        # the forward difference of the image, summed over the patch.
        g0 = jax.grad(loss)(jnp.zeros((b, 1, 2)), None)
        right = jnp.sum(frames_j[:, :, :patch, 1:patch + 1] * weights_j, axis=(1, 2, 3, 4))
        here = jnp.sum(frames_j[:, :, :patch, :patch] * weights_j, axis=(1, 2, 3, 4))
        np.testing.assert_allclose(np.asarray(g0[:, 0, 1]), np.asarray(right - here), rtol=1e-10)


def test_bilinear_crop_jits_and_rejects_bad_boxes():
    frames = jnp.ones((2, 4, 16, 16, 3))
    fn = jax.jit(lambda f, a: crop.bilinear_crop(f, crop.v2_top_left(a, 16, 8), 8))
    out = fn(frames, jnp.full((2, 1, 2), 0.5))
    np.testing.assert_allclose(out, 1.0, atol=1e-6)   # inside the frame: weights sum to 1
    with pytest.raises(ValueError, match="top_left must be"):
        crop.bilinear_crop(frames, jnp.zeros((2, 2)), 8)
    with pytest.raises(ValueError, match="cannot be split"):
        crop.bilinear_crop(frames, jnp.zeros((2, 3, 2)), 8)


def test_oracle_offsets_by_hand():
    boxes = np.array([[[10, 20, 30, 40], [0, 0, 20, 20], [120, 124, 140, 144]]], np.int32)
    # Centres (20, 30), (10, 10), (130, 134); patch 48 on 144 frames: top-left = centre - 24,
    # clipped into [0, 96].
    per_frame = crop.oracle_offsets(boxes, 48, 144, 3)
    np.testing.assert_array_equal(per_frame, [[[0, 6], [0, 0], [96, 96]]])
    # One patch per video: the mean centre (53.33, 58) - 24 -> (29, 34) after rounding.
    np.testing.assert_array_equal(crop.oracle_offsets(boxes, 48, 144, 1), [[[29, 34]]])
    with pytest.raises(ValueError, match="policy steps"):
        crop.oracle_offsets(boxes, 48, 144, 2)


def test_target_offsets_hold_the_box_and_cover_every_position():
    boxes = np.broadcast_to(np.array([30, 100, 50, 120], np.int32), (4000, 1, 4))
    off = np.asarray(crop.target_offsets(jax.random.key(0), boxes, 48, 144))
    # Rows: [50 - 48, 30] = [2, 30]; columns: [120 - 48, min(100, 96)] = [72, 96].
    assert off[..., 0].min() == 2 and off[..., 0].max() == 30
    assert off[..., 1].min() == 72 and off[..., 1].max() == 96
    assert len(np.unique(off[..., 0])) == 29 and len(np.unique(off[..., 1])) == 25
    # A box larger than the patch falls back to the centred patch.
    big = np.array([[[0, 0, 60, 60]]], np.int32)
    np.testing.assert_array_equal(crop.target_offsets(jax.random.key(1), big, 48, 144),
                                  [[[6, 6]]])
