"""Temporal sampling and spatial augmentation with the official AdaFocus/TSM semantics.

Everything here is a pure function of its arguments (randomness only through an explicit
`np.random.Generator`), so each rule can be checked against hand-computed numbers.

Frames are passed either as a uint8 array `[T, H, W, C]` (RGB) or as a list of RGB
`PIL.Image`s of one size; spatial functions return uint8 `[T, S, S, 3]`. Cropping and resizing go
through PIL because the official code uses PIL (`Image.crop`, `Image.resize(..., BILINEAR)`,
which antialiases when it shrinks), so the pixels match theirs bit for bit.

Official behaviour reproduced (reference: adafocus_v1.md §7.2-7.3):
- TSN segment sampling, 1-based frame indices: train draws one random frame per segment,
  evaluation takes segment centres; short videos fall back to frame 1 everywhere (Sth-Sth,
  `short_video="first_frame"`) or to 1..n then the last frame repeated (ActivityNet/FCVID/Mini-K,
  `short_video="repeat_last"`). Uni-AdaFocus-TSM's loader uses fractional segments instead
  (`uniform_segment_indices`, data option `segment_sampling="uniform"`).
- Train: GroupMultiScaleCrop (scales 1, .875, .75, .66; crop sizes within 3 px of the output
  snap to it; width/height scale indices differ by at most `max_distort`; one of 13 fixed offsets),
  bilinear resize to S x S, then a horizontal flip with p = 0.5 where the dataset allows it.
- Eval: shorter side to `scale_size` (torchvision `Resize(int)` rounding), centre crop S.
- ImageNet normalisation (`normalize` on the host, `normalize_jnp` inside jitted steps).

Additions that are not official (off by default): multi-clip x multi-crop evaluation views, a
random translation after the training crop (`random_translate`, data option `translate`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
SHORT_VIDEO_MODES = ("first_frame", "repeat_last")
EVAL_CROP_COUNTS = (1, 3, 10)

Frames = Union[np.ndarray, Sequence[Image.Image]]


# --------------------------------------------------------------------------------------------
# Temporal sampling.


def _short_video_offsets(num_frames: int, num_segments: int, short_video: str) -> np.ndarray:
    """0-based offsets for videos too short for the regular rule."""
    if short_video == "first_frame":
        # TSM / AdaFocus Sth-Sth: every segment reads the first frame.
        return np.zeros((num_segments,), np.int64)
    if short_video == "repeat_last":
        # AR-Net / AdaFocus ActivityNet: every frame once, then the last one repeated.
        offsets = list(range(min(num_frames, num_segments)))
        offsets += [num_frames - 1] * (num_segments - len(offsets))
        return np.asarray(offsets, np.int64)
    raise ValueError(f"short_video must be one of {SHORT_VIDEO_MODES}, got {short_video!r}")


def _check_segment_args(num_frames: int, num_segments: int, clip_index: int,
                        num_clips: int) -> None:
    """ValueError unless n >= 1 frames, T >= 1 segments and 0 <= clip_index < num_clips."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index {clip_index} not in [0, {num_clips})")


def segment_indices(num_frames: int, num_segments: int, rng: np.random.Generator | None = None,
                    *, short_video: str = "first_frame", clip_index: int = 0,
                    num_clips: int = 1) -> np.ndarray:
    """TSN segment sampling; returns 1-based frame indices, int64 `[num_segments]`.

    Args:
      num_frames: n, the number of frames of the video (as in its list file).
      num_segments: T, how many frames to return.
      rng: a Generator for training-time sampling; None for the deterministic evaluation rule.
      short_video: fallback when the regular rule does not apply (see module docstring).
      clip_index, num_clips: evaluation only. Clip c of N shifts every segment's sample point
        to tick * (c + 0.5) / N inside its segment; N = 1 is exactly the official centre rule
        int(tick / 2 + tick * k). (Multi-clip testing is an option the official code lacks.)
    """
    _check_segment_args(num_frames, num_segments, clip_index, num_clips)
    if rng is not None:
        average_duration = num_frames // num_segments
        if average_duration > 0:
            offsets = (np.arange(num_segments, dtype=np.int64) * average_duration
                       + rng.integers(average_duration, size=num_segments))
        elif num_frames > num_segments:
            # Official branch for new_length > 1; unreachable with one frame per segment but kept
            # so the rule reads like the reference.
            offsets = np.sort(rng.integers(num_frames, size=num_segments))
        else:
            offsets = _short_video_offsets(num_frames, num_segments, short_video)
    else:
        if num_frames > num_segments:
            tick = num_frames / float(num_segments)
            # For N = 1 this is tick / 2.0 exactly (x * 0.5 / 1 == x / 2 in IEEE arithmetic), so the
            # float rounding matches the official int(tick / 2.0 + tick * k).
            shift = tick * (clip_index + 0.5) / num_clips
            offsets = np.asarray([int(shift + tick * k) for k in range(num_segments)], np.int64)
        else:
            offsets = _short_video_offsets(num_frames, num_segments, short_video)
    return offsets.astype(np.int64) + 1


SEGMENT_SAMPLINGS = ("tsn", "uniform")


def uniform_segment_indices(num_frames: int, num_segments: int,
                            rng: np.random.Generator | None = None, *, clip_index: int = 0,
                            num_clips: int = 1) -> np.ndarray:
    """Uni-AdaFocus-TSM's segment sampling (its `TSNDataSet`); 1-based int64 `[num_segments]`.

    The video's n frames form T equal segments of n / T frames (fractional); segment k reads
    frame floor((k + u_k) · n / T) with u_k ~ U[0, 1) in training (`rng`) and u = 0.5 at
    evaluation. Unlike `segment_indices` it needs no short-video fallback: T > n repeats frames
    evenly (48 candidates of a 30-frame clip). Clip c of N evaluation clips uses u = (c + ½) / N
    (not official beyond N = 1).
    """
    _check_segment_args(num_frames, num_segments, clip_index, num_clips)
    if rng is not None:
        u = rng.random(num_segments)
    else:
        u = np.full(num_segments, (clip_index + 0.5) / num_clips)
    offsets = np.floor((u + np.arange(num_segments)) / num_segments * num_frames)
    return np.minimum(offsets.astype(np.int64), num_frames - 1) + 1


# --------------------------------------------------------------------------------------------
# Spatial transforms.


@dataclasses.dataclass(frozen=True)
class CropBox:
    """A crop rectangle in pixels: left x, top y, width w, height h (PIL order)."""
    x: int
    y: int
    w: int
    h: int

    @property
    def pil_box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def as_pil_list(frames: Frames) -> list[Image.Image]:
    """uint8 `[T, H, W, 3]` or a list of PIL images -> list of RGB PIL images (no copy for PIL)."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
        return [Image.fromarray(f) for f in frames]
    frames = list(frames)
    if not frames:
        raise ValueError("no frames given")
    size = frames[0].size
    for i, im in enumerate(frames):
        if im.size != size:
            raise ValueError(f"frame {i} has size {im.size}, frame 0 has {size}")
    return frames


def to_array(frames: Sequence[Image.Image]) -> np.ndarray:
    """List of RGB PIL images of one size -> uint8 `[T, H, W, 3]`."""
    w, h = frames[0].size
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for k, im in enumerate(frames):
        if im.size != (w, h):
            raise ValueError(f"frame {k} has size {im.size}, frame 0 has {(w, h)}")
        # tobytes + frombuffer: one copy fewer than np.asarray + np.stack.
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        out[k] = np.frombuffer(rgb.tobytes(), np.uint8).reshape(h, w, 3)
    return out


def multiscale_crop_candidates(image_w: int, image_h: int, input_size: int,
                               scales: Sequence[float] = OFFICIAL_CROP_SCALES,
                               max_distort: int = 1) -> list[tuple[int, int]]:
    """All (crop_w, crop_h) pairs GroupMultiScaleCrop chooses from, in the official order."""
    base_size = min(image_w, image_h)
    sizes = [int(base_size * s) for s in scales]
    # Sizes within 3 px of the output size are snapped to it (avoids a near-identity resize).
    snapped = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    return [(w, h) for i, h in enumerate(snapped) for j, w in enumerate(snapped)
            if abs(i - j) <= max_distort]


# Offsets in units of the (image - crop) // 4 grid step: corners and centre first, then the
# `more_fix_crop` edge centres and quarter points, in the official order.
_FIXED_OFFSET_GRID = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2))
_MORE_FIXED_OFFSET_GRID = ((0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3))


def fixed_crop_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int,
                       more_fix_crop: bool = True) -> list[tuple[int, int]]:
    """The 5 (or 13 with `more_fix_crop`) candidate top-left corners (x, y) of a crop."""
    w_step = (image_w - crop_w) // 4
    h_step = (image_h - crop_h) // 4
    grid = _FIXED_OFFSET_GRID + (_MORE_FIXED_OFFSET_GRID if more_fix_crop else ())
    return [(a * w_step, b * h_step) for a, b in grid]


def sample_multiscale_crop(image_w: int, image_h: int, input_size: int, rng: np.random.Generator,
                           scales: Sequence[float] = OFFICIAL_CROP_SCALES, max_distort: int = 1,
                           more_fix_crop: bool = True) -> CropBox:
    """One GroupMultiScaleCrop draw: a uniform size pair, then a uniform fixed offset."""
    pairs = multiscale_crop_candidates(image_w, image_h, input_size, scales, max_distort)
    crop_w, crop_h = pairs[int(rng.integers(len(pairs)))]
    offsets = fixed_crop_offsets(image_w, image_h, crop_w, crop_h, more_fix_crop)
    x, y = offsets[int(rng.integers(len(offsets)))]
    return CropBox(x, y, crop_w, crop_h)


def crop_and_resize(frames: Frames, box: CropBox, size: int) -> list[Image.Image]:
    """PIL crop then bilinear resize to size x size, the same box for every frame."""
    out = []
    for im in as_pil_list(frames):
        crop = im.crop(box.pil_box)
        out.append(crop if crop.size == (size, size) else crop.resize((size, size), Image.BILINEAR))
    return out


def scaled_size(image_w: int, image_h: int, size: int) -> tuple[int, int]:
    """Output (w, h) of torchvision `Resize(size)` on a PIL image: shorter side -> size."""
    if (image_w <= image_h and image_w == size) or (image_h <= image_w and image_h == size):
        return image_w, image_h
    if image_w < image_h:
        return size, int(size * image_h / image_w)
    return int(size * image_w / image_h), size


def scale_shorter_side(frames: Frames, size: int) -> list[Image.Image]:
    """GroupScale(size): shorter side to `size`, PIL bilinear; unchanged if already that size."""
    frames = as_pil_list(frames)
    target = scaled_size(*frames[0].size, size)
    if target == frames[0].size:
        return frames
    return [im.resize(target, Image.BILINEAR) for im in frames]


def center_crop_box(image_w: int, image_h: int, size: int) -> CropBox:
    """torchvision CenterCrop offsets: int(round((W - S) / 2)), Python's round-half-to-even."""
    return CropBox(int(round((image_w - size) / 2.0)), int(round((image_h - size) / 2.0)), size, size)


def horizontal_flip(frames: Frames) -> list[Image.Image]:
    return [im.transpose(Image.FLIP_LEFT_RIGHT) for im in as_pil_list(frames)]


def random_translate(frames: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift every frame of a clip by the same random (dx, dy), uint8 `[T, S, S, 3]` -> same shape.

    dx, dy are uniform integers in [-max_shift, max_shift] (drawn in that order); the pixels that
    come in at the border are the clip's own, mirrored (`np.pad` "reflect"), so no flat band tells
    the network where the shift went. The pad-and-crop augmentation of small-image training
    (CIFAR): the official multi-scale crop offers only 5 or 13 fixed offsets, too few for a network
    trained from scratch on a few hundred videos not to memorise them (README "Your own videos").
    Not official; 0 returns `frames`.
    """
    if max_shift <= 0:
        return frames
    t, h, w, _ = frames.shape
    if max_shift >= min(h, w):
        raise ValueError(f"random_translate: max_shift {max_shift} must be < the frame size "
                         f"{h}x{w}")
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    k = max_shift
    padded = np.pad(frames, ((0, 0), (k, k), (k, k), (0, 0)), mode="reflect")
    # Content moves by (+dx, +dy): output pixel (y, x) reads input (y - dy, x - dx).
    return np.ascontiguousarray(padded[:, k - dy:k - dy + h, k - dx:k - dx + w])


def train_transform(frames: Frames, rng: np.random.Generator, *, input_size: int = 224,
                    scales: Sequence[float] = OFFICIAL_CROP_SCALES, max_distort: int = 1,
                    more_fix_crop: bool = True, flip: bool = False,
                    translate: int = 0) -> np.ndarray:
    """Official training augmentation of one frame list -> uint8 `[T, S, S, 3]`.

    Draw order: crop size pair, crop offset, then (only when `flip`) one uniform for the flip,
    then (only when `translate` > 0, not official) the shift of `random_translate`.
    """
    frames = as_pil_list(frames)
    box = sample_multiscale_crop(*frames[0].size, input_size, rng, scales, max_distort,
                                 more_fix_crop)
    out = crop_and_resize(frames, box, input_size)
    if flip and rng.random() < 0.5:
        out = horizontal_flip(out)
    return random_translate(to_array(out), translate, rng)


def eval_crop_views(image_w: int, image_h: int, size: int,
                    num_crops: int = 1) -> list[tuple[CropBox, bool]]:
    """(box, flipped) per evaluation crop on an already scaled image.

    1: the official centre crop. 3: start / centre / end of the longer side (centred on the
    shorter side). 10: corners + centre, then the same five flipped (TSN-style oversampling).
    """
    center = center_crop_box(image_w, image_h, size)
    if num_crops == 1:
        return [(center, False)]
    if num_crops == 3:
        if image_w >= image_h:
            xs = (0, center.x, image_w - size)
            return [(CropBox(x, center.y, size, size), False) for x in xs]
        ys = (0, center.y, image_h - size)
        return [(CropBox(center.x, y, size, size), False) for y in ys]
    if num_crops == 10:
        offsets = fixed_crop_offsets(image_w, image_h, size, size, more_fix_crop=False)
        boxes = [CropBox(x, y, size, size) for x, y in offsets]
        return [(b, False) for b in boxes] + [(b, True) for b in boxes]
    raise ValueError(f"num_crops must be one of {EVAL_CROP_COUNTS}, got {num_crops}")


def eval_transform(frames: Frames, *, input_size: int = 224, scale_size: int = 256,
                   num_crops: int = 1) -> np.ndarray:
    """Official evaluation transform -> uint8 `[T, S, S, 3]` (num_crops = 1) or
    `[num_crops, T, S, S, 3]` (num_crops > 1)."""
    scaled = scale_shorter_side(frames, scale_size)
    views = []
    for box, flipped in eval_crop_views(*scaled[0].size, input_size, num_crops):
        crop = [im.crop(box.pil_box) for im in scaled]
        views.append(to_array(horizontal_flip(crop) if flipped else crop))
    return views[0] if num_crops == 1 else np.stack(views)


# --------------------------------------------------------------------------------------------
# Normalisation.


def normalize(frames: np.ndarray) -> np.ndarray:
    """uint8 `[..., 3]` -> float32 `(x / 255 - mean) / std` with the ImageNet statistics."""
    x = np.asarray(frames, np.float32) / 255.0
    return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def normalize_jnp(frames):
    """`normalize` in jax.numpy, for use inside jitted steps: uint8 `[..., 3]` -> float32."""
    import jax.numpy as jnp  # Imported here so host-side data workers never load JAX.
    x = jnp.asarray(frames, jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


def normalize_batch_frames(batch):
    """A batch's uint8 frames → normalised float32 (`glance` `[B, T_G, S, S, 3]`, `focus`
    `[B, T_L, S, S, 3]` or None when the batch has one frame list), inside jitted steps."""
    glance = normalize_jnp(batch["glance"])
    focus = normalize_jnp(batch["focus"]) if "focus" in batch else None
    return glance, focus
