"""Evaluation and training metrics: top-k accuracy, the official mAP, and clu metric collections.

* `topk_correct` / `cross_entropy` are per-example `jax.numpy` functions used inside jitted steps.
* `mean_average_precision` is the official `cal_map` (reference spec §8) in NumPy, computed once on the
  host over the whole validation set.
* `make_collection` builds a `clu.metrics.Collection` class for a set of scalar names, so every stage
  can log its own metrics (loss, accuracy, reward, entropy, learning rates, gradient norms) with the
  same machinery: averages over the logging window, last value for learning rates.
"""

from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics


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


def patch_hit_fraction(offsets: jax.Array, boxes: jax.Array, patch_size: int) -> jax.Array:
    """Fraction of frames whose patch holds the whole target box (the synthetic data knows it).

    Args:
      offsets: int `[B, St, 2]` top-left (row, col) of the patch per policy step; St is 1 (one
        patch per video, broadcast over frames) or T (one patch per frame).
      boxes: int `[B, T, 4]` target box per frame, (y0, x0, y1, x1) with exclusive ends.
      patch_size: P, the patch side in pixels.

    Returns:
      float32 `[B]`: per video, the fraction of its T frames whose P×P patch contains the box.
    """
    offsets = jnp.asarray(offsets, jnp.int32)
    boxes = jnp.asarray(boxes, jnp.int32)
    if offsets.ndim != 3 or boxes.ndim != 3 or boxes.shape[-1] != 4 or offsets.shape[-1] != 2:
        raise ValueError(f"patch_hit_fraction: offsets {offsets.shape} must be [B, St, 2] and boxes "
                         f"{boxes.shape} [B, T, 4]")
    if offsets.shape[1] not in (1, boxes.shape[1]):
        raise ValueError(f"patch_hit_fraction: {offsets.shape[1]} policy steps for "
                         f"{boxes.shape[1]} frames (expected 1 or {boxes.shape[1]})")
    top, left = offsets[..., 0], offsets[..., 1]
    inside = ((top <= boxes[..., 0]) & (left <= boxes[..., 1])
              & (boxes[..., 2] <= top + patch_size) & (boxes[..., 3] <= left + patch_size))
    return jnp.mean(inside.astype(jnp.float32), axis=1)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, *, multi_label: bool,
                           remap_to_present: bool = True) -> float:
    """The official non-interpolated mAP over a whole evaluation set, in percent (spec §8).

    Args:
      scores: `[N, C]` class scores (the official code uses softmax probabilities).
      labels: `[N, L]` int labels padded with -1 (or `[N]` single labels).
      multi_label: use every label of a video (FCVID) instead of only the first (ActivityNet, Mini-K).
      remap_to_present: the official `cal_map` first maps label values to their ranks among the
        labels present in the set (`assumes_starts_zero=False`); this is the identity when every
        class occurs, which is the case the official numbers were computed on. Pass False for the
        plain mapping.

    Returns:
      100 * mean over all C classes of the average precision; a class with no positive scores 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if scores.ndim != 2 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"mean_average_precision: scores {scores.shape} and labels {labels.shape} "
                         "must be [N, C] and [N, L] with the same N")
    num_examples, num_classes = scores.shape
    used = labels if multi_label else labels[:, :1]
    if remap_to_present:
        present = np.unique(used[used >= 0])
        mapped = np.where(used >= 0, np.searchsorted(present, np.maximum(used, 0)), -1)
    else:
        mapped = used
    truth = np.zeros((num_examples, num_classes + 1), dtype=np.float64)
    rows = np.repeat(np.arange(num_examples), mapped.shape[1])
    cols = mapped.reshape(-1)
    # Padding (-1) goes to an extra column that is dropped, as in the official code.
    truth[rows, np.where(cols >= 0, cols, num_classes)] = 1.0
    truth = truth[:, :num_classes]

    aps = np.zeros(num_classes)
    ranks = np.arange(1, num_examples + 1, dtype=np.float64)
    for c in range(num_classes):
        order = np.argsort(-scores[:, c], kind="stable")
        hits = truth[order, c]
        precision = np.cumsum(hits) / ranks
        aps[c] = np.sum(precision * hits) / max(hits.sum(), 1.0)
    return float(100.0 * aps.mean())


def make_collection(names: Iterable[str], last_value_prefixes: Sequence[str] = ("lr_",)):
    """A `clu.metrics.Collection` class with one metric per scalar name.

    Names starting with one of `last_value_prefixes` (learning rates) keep their last value; all other
    names are averaged over the steps merged into the collection (weighted by their mask if a `mask`
    output is given).

    Args:
      names: the scalar outputs that the step returns (Python identifiers, e.g. `lr_focuser`).
      last_value_prefixes: name prefixes reported as their last value.

    Returns:
      A Collection class; use `cls.single_from_model_output(**outputs)` in the step and
      `merge` / `compute` on the host.
    """
    fields = {}
    for name in sorted(set(names)):
        if not name.isidentifier():
            raise ValueError(f"make_collection: metric name {name!r} must be a Python identifier")
        if any(name.startswith(p) for p in last_value_prefixes):
            fields[name] = clu_metrics.LastValue.from_output(name)
        else:
            fields[name] = clu_metrics.Average.from_output(name)
    return clu_metrics.Collection.create(**fields)


def to_host_scalars(computed: dict) -> dict[str, float]:
    """`Collection.compute()` output → plain Python floats (for writers, logs and JSON)."""
    return {k: float(np.asarray(v)) for k, v in computed.items()}
