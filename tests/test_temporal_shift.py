"""The temporal shift against a hand-worked example with PyTorch TSM's channel layout."""

import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax.models.temporal_shift import temporal_shift


def test_shift_hand_checked():
    # 1 video, 3 frames, 1x1 pixels, 8 channels, fold_div 4 → fold = 2.
    # Value = 10·(frame + 1) + channel, so every entry says where it came from.
    x = np.array([[10 * (t + 1) + c for c in range(8)] for t in range(3)], np.float32)
    out = np.asarray(temporal_shift(jnp.asarray(x).reshape(3, 1, 1, 8), 3, fold_div=4))
    expected = np.array([
        # ch 0-1 from frame t+1 | ch 2-3 from frame t-1 | ch 4-7 unchanged
        [20, 21, 0, 0, 14, 15, 16, 17],
        [30, 31, 12, 13, 24, 25, 26, 27],
        [0, 0, 22, 23, 34, 35, 36, 37],
    ], np.float32)
    np.testing.assert_array_equal(out.reshape(3, 8), expected)


def test_shift_keeps_videos_apart():
    x = jnp.arange(2 * 2 * 16, dtype=jnp.float32).reshape(4, 1, 1, 16) + 1
    out = temporal_shift(x, 2)  # fold = 2 with the default fold_div 8
    # Frame 1 of video 0 must not receive video 1's frame 0 in the "from next" channels.
    np.testing.assert_array_equal(out[1, 0, 0, :2], 0)
    np.testing.assert_array_equal(out[2, 0, 0, 2:4], 0)
    np.testing.assert_array_equal(out[2, 0, 0, :2], x[3, 0, 0, :2])


def test_shift_rejects_partial_videos():
    with pytest.raises(ValueError, match="whole videos"):
        temporal_shift(jnp.zeros((5, 1, 1, 8)), 2)
