"""Evaluation and training metrics: top-k accuracy, cross-entropy and the official mAP.

* `topk_correct` / `cross_entropy` are per-example `jax.numpy` functions used inside jitted steps;
  `masked_mean` is the one mean that leaves out padding rows and skipped videos (`mask` False).
* `mean_average_precision` is the official `cal_map` (reference spec §8) in NumPy, computed once on the
  host over the whole validation set, correct also when some classes have no positive there.

Training metrics are averaged over a logging window by `adafocus_jax.train.loop.summarize_metrics`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def expand_mask(mask: jax.Array, like: jax.Array) -> jax.Array:
    """A per-video mask `[B]` → `[B, 1, ...]` so it broadcasts against `like` (`[B, S, ...]`)."""
    mask = jnp.asarray(mask)
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """sum(x * mask) / max(sum(mask), 1) in float32, or mean(x) when `mask` is None.

    `x` is `[B, ...]`; `mask` (bool or float) is `[B]` (per video, broadcast over the trailing axes)
    or the shape of `x`.
    """
    if mask is None:
        return jnp.mean(x)
    x = x.astype(jnp.float32)
    w = jnp.broadcast_to(expand_mask(mask, x), x.shape).astype(jnp.float32)
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. `logits` `[..., C]`, int `labels` `[...]` → `[...]`."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where `labels` is among the k largest logits. `[B, C]`, `[B]` → float32 `[B]`.

    Ties are counted in the label's favour only when the label's logit is strictly among the top k
    by rank (a label is correct when fewer than k classes have a strictly larger logit).
    """
    label_logit = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)
    num_better = jnp.sum(logits > label_logit, axis=-1)
    return (num_better < k).astype(jnp.float32)


def patch_hit_fraction(offsets: jax.Array, boxes: jax.Array, patch_size,
                       present: jax.Array | None = None) -> jax.Array:
    """Fraction of frames whose patch holds the whole target box (the synthetic data knows it).

    Args:
      offsets: `[B, St, 2]` top-left (row, col) of the patch per policy step (int, or float for
        Uni-AdaFocus's continuous boxes); St is 1 (one patch per video, broadcast over frames) or
        T (one patch per frame).
      boxes: int `[B, T, 4]` target box per frame, (y0, x0, y1, x1) with exclusive ends.
      patch_size: P, the patch side in pixels, or the sides (rows, cols) per step `[B, St, 2]`
        (Uni-AdaFocus's boxes of free size and aspect).
      present: optional bool `[B, T]`: frames that show the target (synthetic `digit_frames`);
        a frame without it never counts as a hit.

    Returns:
      float32 `[B]`: per video, the fraction of its T frames whose patch contains the box.
    """
    offsets = jnp.asarray(offsets, jnp.float32)
    boxes = jnp.asarray(boxes, jnp.float32)
    if offsets.ndim != 3 or boxes.ndim != 3 or boxes.shape[-1] != 4 or offsets.shape[-1] != 2:
        raise ValueError(f"patch_hit_fraction: offsets {offsets.shape} must be [B, St, 2] and boxes "
                         f"{boxes.shape} [B, T, 4]")
    if offsets.shape[1] not in (1, boxes.shape[1]):
        raise ValueError(f"patch_hit_fraction: {offsets.shape[1]} policy steps for "
                         f"{boxes.shape[1]} frames (expected 1 or {boxes.shape[1]})")
    side = jnp.broadcast_to(jnp.asarray(patch_size, jnp.float32), offsets.shape)
    top, left = offsets[..., 0], offsets[..., 1]
    inside = ((top <= boxes[..., 0]) & (left <= boxes[..., 1])
              & (boxes[..., 2] <= top + side[..., 0]) & (boxes[..., 3] <= left + side[..., 1]))
    if present is not None:
        inside = inside & jnp.asarray(present, bool)
    return jnp.mean(inside.astype(jnp.float32), axis=1)


class MeanAP(NamedTuple):
    """`mean_average_precision_detail`: the mAP in percent over the classes with a positive, and
    how many of the score matrix's classes had a positive (`num_present`) or none (`num_absent`)."""
    map: float
    num_present: int
    num_absent: int


def mean_average_precision_detail(scores: np.ndarray, labels: np.ndarray, *,
                                  multi_label: bool) -> MeanAP:
    """Non-interpolated mAP over a whole evaluation set, in percent (spec §8), with class counts.

    Class c's AP ranks every video by `scores[:, c]` (descending, ties in video order) and averages
    the precision at the ranks of its positives (videos with label c). The mAP is the mean AP over
    the classes that have at least one positive in the set. When every class occurs (the setting of
    the official numbers) this is exactly the official `cal_map`. When some do not (a subset of the
    split: `max_eval_batches`, `on_error=skip`, a small split), the official code remaps the label
    values to their ranks among the present labels, which shifts them against the score columns,
    and averages over all C classes with AP 0 for the absent ones; here each label stays in its
    own column and absent classes are left out (and counted, see `num_absent`).

    Args:
      scores: `[N, C]` class scores (the official code uses softmax probabilities).
      labels: `[N, L]` int labels padded with -1 (or `[N]` single labels), each in [0, C).
      multi_label: use every label of a video (FCVID) instead of only the first (ActivityNet, Mini-K).

    Returns:
      `MeanAP(map, num_present, num_absent)`; `map` is NaN when no class has a positive.

    Raises:
      ValueError for mismatched shapes or a label outside [-1, C).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if scores.ndim != 2 or labels.ndim != 2 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"mean_average_precision: scores {scores.shape} and labels {labels.shape} "
                         "must be [N, C] and [N, L] with the same N")
    num_examples, num_classes = scores.shape
    used = labels if multi_label else labels[:, :1]
    if used.size and (used.min() < -1 or used.max() >= num_classes):
        raise ValueError(f"mean_average_precision: labels must be in [-1, {num_classes}) (-1 = "
                         f"padding), got values in [{used.min()}, {used.max()}]")
    truth = np.zeros((num_examples, num_classes + 1), dtype=np.float64)
    rows = np.repeat(np.arange(num_examples), used.shape[1])
    cols = used.reshape(-1)
    # Padding (-1) goes to an extra column that is dropped.
    truth[rows, np.where(cols >= 0, cols, num_classes)] = 1.0
    truth = truth[:, :num_classes]
    present = truth.sum(axis=0) > 0
    ranks = np.arange(1, num_examples + 1, dtype=np.float64)
    aps = []
    for c in np.flatnonzero(present):
        order = np.argsort(-scores[:, c], kind="stable")
        hits = truth[order, c]
        aps.append(np.sum(np.cumsum(hits) / ranks * hits) / hits.sum())
    value = float(100.0 * np.mean(aps)) if aps else float("nan")
    return MeanAP(value, int(present.sum()), int(num_classes - present.sum()))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, *, multi_label: bool) -> float:
    """The mAP in percent over the classes present in `labels`; see
    `mean_average_precision_detail` (which also counts the absent classes)."""
    return mean_average_precision_detail(scores, labels, multi_label=multi_label).map
