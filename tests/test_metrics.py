"""Tests for adafocus_jax.metrics: top-k, cross-entropy and the official mAP (by hand and against
scikit-learn)."""

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


def test_map_multi_label_and_absent_class():
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.3]])
    labels = np.array([[0, 1, -1], [1, -1, -1]])
    # multi_label: class 0 AP 1, class 1 (positives at ranks 1, 2) AP 1; class 2 has no positive
    # and is left out of the mean (and counted).
    got = metrics.mean_average_precision_detail(scores, labels, multi_label=True)
    assert got == (100.0, 2, 1)
    # single label: only the first label counts: video 0 is class 0, video 1 class 1.
    # Class 0 scores: 0.9 (v0, pos), 0.2 -> AP 1; class 1: 0.9 (v1, pos), 0.8 -> AP 1.
    got = metrics.mean_average_precision_detail(scores, labels, multi_label=False)
    assert got == (100.0, 2, 1)


def test_map_with_an_absent_class_against_a_hand_computation():
    """Classes 0 and 2 occur, class 1 does not (e.g. a max_eval_batches subset). The official
    remap would turn label 2 into column 1 and score class 2's videos with class 1's scores."""
    scores = np.array([[0.6, 0.1, 0.3],    # v0, label 0
                       [0.2, 0.7, 0.1],    # v1, label 2
                       [0.5, 0.2, 0.3],    # v2, label 0
                       [0.1, 0.3, 0.6]])   # v3, label 2
    labels = np.array([0, 2, 0, 2])
    # Class 0 ranking by its column: v0 0.6 (pos), v2 0.5 (pos), v1, v3 -> AP = (1 + 1) / 2 = 1.
    # Class 2 ranking: v3 0.6 (pos), v0 0.3, v2 0.3, v1 0.1 (pos, rank 4) -> AP = (1 + 2/4) / 2.
    expected = 100 * (1.0 + 0.75) / 2
    got = metrics.mean_average_precision_detail(scores, labels, multi_label=False)
    assert got.map == pytest.approx(expected, rel=1e-12)
    assert (got.num_present, got.num_absent) == (2, 1)
    # The same against scikit-learn, class by class over the present classes.
    truth = np.eye(3)[labels]
    sk = 100 * np.mean([average_precision_score(truth[:, c], scores[:, c]) for c in (0, 2)])
    assert got.map == pytest.approx(sk, rel=1e-12)
    assert metrics.mean_average_precision(scores, labels, multi_label=False) == got.map


def test_map_rejects_labels_outside_the_score_columns():
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 3\)"):
        metrics.mean_average_precision(np.zeros((2, 3)), np.array([0, 3]), multi_label=False)


def test_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same N"):
        metrics.mean_average_precision(np.zeros((3, 2)), np.zeros((4,)), multi_label=False)


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
