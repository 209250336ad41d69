"""From policy actions to patch offsets, and the batched crop (adafocus_v1.md §2.7).

The official crop takes the top-left corner `floor(a · (H − P))` computed in float32, with
`a[..., 0]` the row and `a[..., 1]` the column, and slices `P × P` pixels. Discrete actions index a
row-major k×k grid of fractions `(i/(k−1), j/(k−1))`. Everything here is jit-compatible and batched:
no Python loop over videos or frames.

`crop_patches` takes integer offsets (V1); `bilinear_crop` is the differentiable AdaFocusV2 crop
(float boxes `v2_top_left`, PyTorch `grid_sample` semantics, an einsum of two interpolation
matrices), through which the local network's loss trains the policy. Uni-AdaFocus boxes have a
free side per axis (`uni_boxes`, 96…224 px at the official size) and one action per glance frame,
interpolated in time to the candidate frames (`interpolate_actions`); the same `bilinear_crop`
resamples them from the frames (detached actions, for the local network) and from the glance
feature maps (the proxy crop that trains the spatial policy).
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


def v2_top_left(actions: jnp.ndarray, image_size: int, patch_size: int) -> jnp.ndarray:
    """AdaFocusV2 boxes: `[..., 2]` actions in [0, 1] (row, col) → float top-left `a · (H − P)`.

    Unlike `continuous_offsets` nothing is rounded, so the crop stays differentiable in `a`.
    """
    return actions.astype(jnp.float32) * jnp.float32(image_size - patch_size)


def uni_boxes(actions: jnp.ndarray, image_size: float, out_size: int, patch_size: int,
              side_range: tuple[float, float] = (96.0, 224.0)) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Uni-AdaFocus boxes from actions `[..., 4]` in [0, 1]: (row, col, row scale, col scale).

    Per axis the box side at the frame's scale is `lo + (hi − lo) · s` pixels (`side_range` =
    (lo, hi), 96…224 at 224² frames), i.e. `out_size · side / patch_size` units of an image of
    `image_size` units: the frame itself (`image_size` = S, `out_size` = P) or its glance feature
    map (`image_size` = 7, `out_size` = P // 32, the proxy crop). The box's top-left is
    `a · (image_size − side)`, so a box that fits stays inside the image.

    Args:
      actions: `[..., 4]` (y, x, s_y, s_x).
      image_size: side of the image the box lives on (pixels or feature cells).
      out_size: side of the resampled output.
      patch_size: P, the patch size the action's scale refers to.
      side_range: (lo, hi) box sides in frame pixels for s = 0 and s = 1.

    Returns:
      (top_left `[..., 2]`, side `[..., 2]`) float32, in units of `image_size`, for
      `bilinear_crop(..., out_size, box_size=side)`.
    """
    if actions.shape[-1] != 4:
        raise ValueError(f"uni_boxes: actions must be [..., 4] (y, x, s_y, s_x), got "
                         f"{actions.shape}")
    lo, hi = (float(v) for v in side_range)
    actions = actions.astype(jnp.float32)
    scale = actions[..., 2:] * ((hi - lo) / patch_size) + lo / patch_size
    side = out_size * scale
    return actions[..., :2] * (image_size - side), side


def interpolate_actions(actions: jnp.ndarray, num_frames: int) -> jnp.ndarray:
    """Actions per glance frame `[B, G, D]` → per candidate frame `[B, N, D]` by linear
    interpolation in time (PyTorch `interpolate(mode='linear', align_corners=False)`): frame i
    reads glance position (i + ½) · G / N − ½, clamped to [0, G − 1]."""
    b, g, d = actions.shape
    src = (jnp.arange(num_frames, dtype=jnp.float32) + 0.5) * (g / num_frames) - 0.5
    src = jnp.maximum(src, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), g - 1)
    hi = jnp.minimum(lo + 1, g - 1)
    frac = (src - lo.astype(jnp.float32))[None, :, None]
    return (1.0 - frac) * actions[:, lo] + frac * actions[:, hi]


def interpolation_matrix(coords: jnp.ndarray, size: int, dtype=jnp.float32) -> jnp.ndarray:
    """Bilinear weights `[..., P, size]` that sample a 1-D signal of `size` pixels at `coords`
    `[..., P]` (pixel centres at integers), with zeros outside the signal.

    Built exactly like `grid_sample`'s bilinear kernel: x0 = floor(x), weight 1 − (x − x0) on x0 and
    x − x0 on x0 + 1; a neighbour outside [0, size) contributes zero (zero padding). The gradient
    w.r.t. `coords` flows through the fractional part only, so at integer positions it is the
    forward difference I[x0 + 1] − I[x0], as in PyTorch.
    """
    x0 = jnp.floor(jax.lax.stop_gradient(coords))
    frac = (coords - x0).astype(dtype)[..., None]
    x0 = x0.astype(jnp.int32)
    # one_hot of an index outside [0, size) is an all-zero row: exactly the zero padding.
    return (1 - frac) * jax.nn.one_hot(x0, size, dtype=dtype) + \
        frac * jax.nn.one_hot(x0 + 1, size, dtype=dtype)


def bilinear_crop(frames: jnp.ndarray, top_left: jnp.ndarray, patch_size: int,
                  box_size: float | jnp.ndarray | None = None) -> jnp.ndarray:
    """Differentiable crop: resamples the box `[top, top + side)²` of every frame to `P × P`.

    Equals PyTorch's `affine_grid` + `grid_sample` (bilinear, zero padding, align_corners=False)
    with the AdaFocusV2 affine matrix (scale side/H, translation −1 + (2·top + side)/H): output
    pixel j samples input coordinate `top + (j + 0.5) · side / P − 0.5`. Separable: two
    interpolation matrices `[N, P, H]`, `[N, P, W]` contracted with the frames (two batched
    matmuls, no gather), so it is jit- and TPU-friendly and gradients flow to `top_left` (and
    `box_size`) as in `grid_sample`.

    Args:
      frames: `[B, T, H, W, C]` float.
      top_left: `[B, S, 2]` float (row, col) of the box in pixels per policy step: S = 1 (one box
        per video, Sth-Sth), S = T (one per frame, ActivityNet) or any divisor of T (each step
        covers T / S consecutive frames, see `expand_to_frames`).
      patch_size: P, the output size.
      box_size: side of the box in pixels: a scalar, `[B, S]` (square boxes) or `[B, S, 2]` (row
        and column sides, Uni-AdaFocus); defaults to P (a plain crop).

    Returns:
      `[B, T, P, P, C]` in the dtype of `frames`.
    """
    b, t, h, w, c = frames.shape
    if top_left.ndim != 3 or top_left.shape[0] != b or top_left.shape[-1] != 2:
        raise ValueError(f"top_left must be [B={b}, S, 2], got {top_left.shape}")
    steps = top_left.shape[1]
    # Coordinates in float32, or float64 when the boxes are float64 (parity tests under x64).
    dtype = jnp.promote_types(top_left.dtype, jnp.float32)
    side = jnp.asarray(patch_size if box_size is None else box_size, dtype)
    if side.ndim < 3:
        side = jnp.broadcast_to(side, (b, steps))[..., None]
    side = jnp.broadcast_to(side, (b, steps, 2))
    corner = expand_to_frames(top_left.astype(dtype), t)                 # [B, T, 2]
    side = expand_to_frames(side, t)                                     # [B, T, 2]
    # top + (j + 0.5)·side/P − 0.5, written as ((2j + 1)·side − P) / 2P so that with side = P it
    # is exactly top + j (no rounding below an integer, which would flip floor() and the gradient).
    odd = 2 * jnp.arange(patch_size, dtype=dtype) + 1                    # [P]
    offset = (odd * side[..., None] - patch_size) / (2 * patch_size)     # [B, T, 2, P]
    coords = corner[..., None] + offset                                  # [B, T, 2, P]
    rows = interpolation_matrix(coords[:, :, 0], h, frames.dtype)         # [B, T, P, H]
    cols = interpolation_matrix(coords[:, :, 1], w, frames.dtype)         # [B, T, P, W]
    out = jnp.einsum("btph,bthwc->btpwc", rows, frames)
    return jnp.einsum("btqw,btpwc->btpqc", cols, out)
