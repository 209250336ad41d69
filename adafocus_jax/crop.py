"""From policy actions to patch offsets, and the batched crop (adafocus_v1.md §2.7).

The official crop takes the top-left corner `floor(a · (H − P))` computed in float32, with
`a[..., 0]` the row and `a[..., 1]` the column, and slices `P × P` pixels. Discrete actions index a
row-major k×k grid of fractions `(i/(k−1), j/(k−1))`. Everything here is jit-compatible and batched:
no Python loop over videos or frames.

`crop_patches` takes integer offsets; `bilinear_crop` is the differentiable variant (AdaFocusV2-style,
`jax.image.scale_and_translate`) for sub-pixel boxes.
"""

import jax
import jax.numpy as jnp
import numpy as np


def continuous_offsets(actions: jnp.ndarray, image_size: int, patch_size: int) -> jnp.ndarray:
    """`[..., 2]` actions in [0, 1] (row, col) → int32 top-left offsets `floor(a · (H − P))`.

    The product is taken in float32 exactly like the official code, so offsets are bit-identical.
    """
    span = jnp.float32(image_size - patch_size)
    return jnp.floor(actions.astype(jnp.float32) * span).astype(jnp.int32)


def grid_offset_table(grid_size: int, image_size: int, patch_size: int) -> np.ndarray:
    """Offsets `[k², 2]` of the k×k action grid (row-major: index i·k + j → row i, column j).

    The fractions i/(k−1) are formed in double precision, then rounded to float32 before the
    float32 product, as the official tables are.
    """
    if grid_size < 2:
        raise ValueError(f"grid_size must be ≥ 2, got {grid_size}")
    fractions = np.array([i / (grid_size - 1) for i in range(grid_size)], dtype=np.float32)
    span = np.float32(image_size - patch_size)
    axis = np.floor(fractions * span).astype(np.int32)
    rows, cols = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)


def grid_offsets(indices: jnp.ndarray, grid_size: int, image_size: int,
                 patch_size: int) -> jnp.ndarray:
    """`[...]` integer grid actions → `[..., 2]` int32 offsets."""
    table = jnp.asarray(grid_offset_table(grid_size, image_size, patch_size))
    return table[indices]


def random_offsets(rng: jax.Array, shape: tuple[int, ...], image_size: int,
                   patch_size: int) -> jnp.ndarray:
    """Uniform random offsets `[*shape, 2]` as the official random-patch baselines draw them.

    Both official samplers (`floor(U[0,1) · (H − P))` and `randint(0, H − P)`) use an exclusive
    upper bound, so the last offset H − P is never drawn; with P == H the only offset is 0.
    """
    high = max(image_size - patch_size, 1)
    return jax.random.randint(rng, (*shape, 2), 0, high, dtype=jnp.int32)


def center_offsets(shape: tuple[int, ...], image_size: int, patch_size: int) -> jnp.ndarray:
    """The centre patch's offsets `[*shape, 2]`."""
    return jnp.full((*shape, 2), (image_size - patch_size) // 2, jnp.int32)


def oracle_offsets(boxes: jax.Array, patch_size: int, image_size: int,
                   policy_steps: int) -> jax.Array:
    """Patch offsets centred on a known target box (a perfect locator; synthetic data).

    Args:
      boxes: int `[B, T, 4]` target box per frame, (y0, x0, y1, x1), exclusive ends.
      patch_size: P; image_size: S (square frames).
      policy_steps: St, 1 (one patch per video: centred on the mean box centre) or T (per frame).

    Returns:
      int32 `[B, St, 2]` top-left offsets, clipped into [0, S - P].
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"oracle_offsets: boxes must be [B, T, 4], got {boxes.shape}")
    if policy_steps not in (1, boxes.shape[1]):
        raise ValueError(f"oracle_offsets: {policy_steps} policy steps for {boxes.shape[1]} "
                         f"frames (expected 1 or {boxes.shape[1]})")
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0                  # [B, T, 2]
    if policy_steps == 1:
        centres = jnp.mean(centres, axis=1, keepdims=True)
    top_left = jnp.floor(centres - patch_size / 2.0 + 0.5).astype(jnp.int32)
    return jnp.clip(top_left, 0, image_size - patch_size)


def target_offsets(rng: jax.Array, boxes: jnp.ndarray, patch_size: int,
                   image_size: int) -> jnp.ndarray:
    """Uniformly random per-frame patch offsets among those whose patch holds the whole box.

    Per axis the top-left is drawn uniformly from [max(0, end - P), min(start, S - P)] (a box larger
    than P, or one outside the frame, falls back to the centred patch), so the target lands
    anywhere inside the patch: object-centric pre-training crops, as ImageNet's are.

    Args:
      rng: PRNG key.
      boxes: int `[B, T, 4]` (y0, x0, y1, x1), exclusive ends.
      patch_size: P; image_size: S.

    Returns:
      int32 `[B, T, 2]` top-left offsets.
    """
    boxes = jnp.asarray(boxes, jnp.int32)
    low = jnp.maximum(boxes[..., 2:] - patch_size, 0)
    high = jnp.minimum(boxes[..., :2], image_size - patch_size)
    centred = oracle_offsets(boxes, patch_size, image_size, boxes.shape[1])
    ok = low <= high
    low, high = jnp.where(ok, low, centred), jnp.where(ok, high, centred)
    u = jax.random.uniform(rng, low.shape)
    drawn = low + jnp.floor(u * (high - low + 1).astype(jnp.float32)).astype(jnp.int32)
    return jnp.minimum(drawn, high)


def expand_to_frames(offsets: jnp.ndarray, num_frames: int) -> jnp.ndarray:
    """Offsets per policy step `[B, S, 2]` → per frame `[B, T, 2]`.

    S = 1: one location for the whole clip (Sth-Sth); S = T: one per frame (ActivityNet); otherwise
    each step covers T / S consecutive frames.
    """
    steps = offsets.shape[1]
    if num_frames % steps:
        raise ValueError(f"{num_frames} frames cannot be split into {steps} policy steps")
    return jnp.repeat(offsets, num_frames // steps, axis=1)


def crop_patches(frames: jnp.ndarray, offsets: jnp.ndarray, patch_size: int) -> jnp.ndarray:
    """Integer crop of one `P × P` patch per frame.

    Args:
      frames: `[B, T, H, W, C]`.
      offsets: `[B, S, 2]` int top-left (row, col) per policy step (see `expand_to_frames`).
      patch_size: P.

    Returns:
      `[B, T, P, P, C]`.
    """
    b, t, h, w, c = frames.shape
    if patch_size > min(h, w):
        raise ValueError(f"patch size {patch_size} exceeds the frame size {h}x{w}")
    per_frame = expand_to_frames(offsets, t)

    def crop_one(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (patch_size, patch_size, c))

    return jax.vmap(jax.vmap(crop_one))(frames, per_frame)


def bilinear_crop(frames: jnp.ndarray, top_left: jnp.ndarray, patch_size: int,
                  box_size: float | jnp.ndarray | None = None) -> jnp.ndarray:
    """Differentiable crop: resamples the box `[top, top + side)²` to `P × P` bilinearly.

    Matches `affine_grid` + `grid_sample(align_corners=False)` for boxes inside the frame; gradients
    flow to `top_left` (and `box_size`).

    Args:
      frames: `[B, T, H, W, C]` float.
      top_left: `[B, T, 2]` float (row, col) of the box in pixels.
      patch_size: P, the output size.
      box_size: side of the box in pixels (scalar or `[B, T]`); defaults to P (a plain crop).

    Returns:
      `[B, T, P, P, C]`.
    """
    b, t, h, w, c = frames.shape
    side = jnp.broadcast_to(jnp.asarray(patch_size if box_size is None else box_size,
                                        jnp.float32), (b, t))

    def crop_one(image, corner, box):
        scale = patch_size / box
        translation = -corner * scale
        return jax.image.scale_and_translate(
            image, (patch_size, patch_size, c), (0, 1), jnp.stack([scale, scale]), translation,
            method="linear", antialias=False)

    return jax.vmap(jax.vmap(crop_one))(frames, top_left.astype(jnp.float32), side)
