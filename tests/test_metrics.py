"""Tests for adafocus_jax.metrics: top-k, cross-entropy, the official mAP and clu collections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from adafocus_jax import metrics


def test_topk_correct():
    logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = jnp.array([2, 0, 0])
    np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 1), [0, 1, 0])
    np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 2), [1, 1, 0])
    np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 3), [1, 1, 1])


def test_cross_entropy_by_hand():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    np.testing.assert_allclose(metrics.cross_entropy(logits, jnp.array([1])), [np.log(4.0)], rtol=1e-6)


def test_map_hand_example():
    # Class 0: positives at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2 = 5/6.
    # Class 1: one positive at rank 2 -> AP = 1/2.
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.7, 0.9], [0.1, 0.2]])
    labels = np.array([[0, -1], [1, -1], [0, -1], [1, -1]])
    # Labels 0 and 1 both occur, so the official remap is the identity.
    # Class 1 scores sorted: 0.9 (ex2, label 0), 0.7 (ex1, label 1), 0.2 (ex3, label 1), 0.1.
    # Class 1 positives at ranks 2 and 3: AP = (1/2 + 2/3) / 2 = 7/12.
    expected = 100 * (5 / 6 + 7 / 12) / 2
    got = metrics.mean_average_precision(scores, labels, multi_label=False)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_map_matches_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.random((60, 5))
    labels = rng.integers(0, 5, size=60)
    labels[:5] = np.arange(5)  # every class present
    truth = np.eye(5)[labels]
    expected = 100 * np.mean([average_precision_score(truth[:, c], scores[:, c]) for c in range(5)])
    got = metrics.mean_average_precision(scores, labels, multi_label=False)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_map_multi_label_and_missing_class():
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.3]])
    labels = np.array([[0, 1, -1], [1, -1, -1]])
    # multi_label: class 0 AP 1, class 1 (positives ranks 1, 2) AP 1, class 2 absent -> AP 0.
    got = metrics.mean_average_precision(scores, labels, multi_label=True, remap_to_present=False)
    np.testing.assert_allclose(got, 100 * 2 / 3)
    # single label: only the first label counts; class 0 AP 1, class 1 (positive at rank 1) AP 1.
    got = metrics.mean_average_precision(scores, labels, multi_label=False, remap_to_present=False)
    np.testing.assert_allclose(got, 100 * 2 / 3)


def test_map_official_remap_to_present_ranks():
    # Only labels 1 and 2 occur: the official code maps them to columns 0 and 1 (a quirk).
    scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0]])
    labels = np.array([1, 2])
    remapped = metrics.mean_average_precision(scores, labels, multi_label=False)
    plain = metrics.mean_average_precision(scores, labels, multi_label=False, remap_to_present=False)
    np.testing.assert_allclose(remapped, 100 * 2 / 3)   # columns 0, 1 rank their positives first
    # Plain: class 1 ranks its positive 2nd (AP 1/2); class 2 has all-zero scores, stable order puts
    # its positive 2nd too (AP 1/2); class 0 has none (AP 0).
    np.testing.assert_allclose(plain, 100 * (0 + 0.5 + 0.5) / 3)


def test_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same N"):
        metrics.mean_average_precision(np.zeros((3, 2)), np.zeros((4,)), multi_label=False)


def test_collection_average_and_last_value_inside_jit():
    cls = metrics.make_collection(["loss", "lr_focuser"])

    @jax.jit
    def step(loss, lr):
        return cls.single_from_model_output(loss=loss, lr_focuser=lr)

    merged = step(jnp.float32(1.0), jnp.float32(0.1)).merge(step(jnp.float32(3.0), jnp.float32(0.05)))
    out = metrics.to_host_scalars(merged.compute())
    assert out == pytest.approx({"loss": 2.0, "lr_focuser": 0.05})


def test_collection_masked_average():
    cls = metrics.make_collection(["top1"])
    m = cls.single_from_model_output(top1=jnp.array([1.0, 0.0, 1.0]), mask=jnp.array([True, True, False]))
    assert metrics.to_host_scalars(m.compute())["top1"] == pytest.approx(0.5)


def test_patch_hit_fraction_by_hand():
    # Two videos, 3 frames, patch 10; boxes (y0, x0, y1, x1) end-exclusive.
    boxes = np.array([[[2, 2, 8, 8], [2, 2, 8, 8], [5, 5, 12, 12]],
                      [[0, 0, 10, 10], [0, 0, 11, 10], [20, 20, 25, 25]]], np.int32)
    per_frame = np.array([[[0, 0], [3, 0], [2, 2]],       # hit, miss (top 3 > 2), hit (12 <= 12)
                          [[0, 0], [0, 0], [16, 15]]], np.int32)   # hit, miss (11 > 10), hit
    np.testing.assert_allclose(metrics.patch_hit_fraction(per_frame, boxes, 10),
                               [2 / 3, 2 / 3], rtol=1e-6)
    # One patch per video, broadcast over its frames.
    per_video = np.array([[[0, 0]], [[15, 15]]], np.int32)
    np.testing.assert_allclose(metrics.patch_hit_fraction(per_video, boxes, 10), [2 / 3, 1 / 3],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="policy steps"):
        metrics.patch_hit_fraction(np.zeros((2, 2, 2), np.int32), boxes, 10)

