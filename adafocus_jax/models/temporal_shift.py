"""Temporal shift (TSM) with the official PyTorch channel semantics.

The official TSM shifts the FIRST `C // fold_div` channels backwards in time (frame t takes the values
of frame t+1) and the NEXT `C // fold_div` channels forwards (frame t takes frame t-1), zero-filling
at the clip ends; the remaining channels pass through. Some JAX ports permute this layout, which is
harmless when training from scratch but wrong for PyTorch TSM weights, so the order here is exact.
"""

import jax.numpy as jnp


def temporal_shift(x: jnp.ndarray, num_segments: int, fold_div: int = 8) -> jnp.ndarray:
    """Shifts part of the channels along time.

    Args:
      x: `[N * T, H, W, C]` activations, video-major (row index = n * T + t), T = `num_segments`.
      num_segments: frames per video T; the batch must hold whole videos.
      fold_div: 1 / fraction of channels shifted in each direction (8 in AdaFocus).

    Returns:
      `[N * T, H, W, C]`: channels `[0, C//fold_div)` from frame t+1, `[C//fold_div, 2*C//fold_div)`
      from frame t-1, zeros where the source frame is outside the clip, the rest unchanged.
    """
    nt, h, w, c = x.shape
    if nt % num_segments:
        raise ValueError(
            f"temporal_shift: batch axis {nt} is not a multiple of num_segments={num_segments}; "
            "the batch must contain whole videos.")
    fold = c // fold_div
    v = x.reshape(nt // num_segments, num_segments, h, w, c)
    zeros = jnp.zeros_like(v[:, :1, :, :, :fold])
    from_next = jnp.concatenate([v[:, 1:, :, :, :fold], zeros], axis=1)
    from_prev = jnp.concatenate([zeros, v[:, :-1, :, :, fold:2 * fold]], axis=1)
    out = jnp.concatenate([from_next, from_prev, v[:, :, :, :, 2 * fold:]], axis=-1)
    return out.reshape(nt, h, w, c)
