"""Evaluation with several views per video (multi-clip / multi-crop testing).

A view source wraps the tiny random-video source and returns V views per video, `glance` (and
`focus`) `[V, T, S, S, 3]`, the layout of `frames.py` with `eval_num_clips * eval_num_crops > 1`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sklearn.metrics import average_precision_score

from adafocus_jax import evaluate
from adafocus_jax import data as data_lib
from adafocus_jax.data.transforms import normalize
from train_helpers import setup


class ViewSource:
    """V views of each video of `base`: view v is the video rolled by `shifts[v]` pixels along
    the width (all zeros: V identical views)."""

    def __init__(self, base, shifts):
        self.base, self.shifts = base, tuple(shifts)

    def __len__(self):
        return len(self.base)

    def get(self, index, rng=None):
        example = dict(self.base.get(index, rng))
        for key in ("glance", "focus"):
            if key in example:
                example[key] = np.stack([np.roll(example[key], s, axis=2) for s in self.shifts])
        return example


def _eval(config, model, variables, source, patch_mode):
    return evaluate.evaluate_model(config, model, variables, source, patch_mode=patch_mode,
                                   batch_size=8)


@pytest.mark.parametrize("dataset,patch_mode", [("actnet", "glancer"), ("sthv2", "center")])
def test_identical_views_give_the_single_view_result(dataset, patch_mode):
    """3 identical views (glance and, for Sth-Sth, separate focus frames): every metric of the
    one-view evaluation, 12 videos in batches of 8 (padding rows included)."""
    config, model, variables = setup(dataset)
    base = data_lib.create_source(config.data, "val")
    single = _eval(config, model, variables, base, patch_mode)
    multi = _eval(config, model, variables, ViewSource(base, (0, 0, 0)), patch_mode)
    assert multi["num_videos"] == single["num_videos"] == len(base)
    assert multi["top1"] == single["top1"] and multi["top5"] == single["top5"]
    assert multi["loss"] == pytest.approx(single["loss"], rel=1e-5)
    if config.eval.metric == "map":
        assert multi["map"] == pytest.approx(single["map"], abs=1e-4)


def test_different_views_average_softmax_probabilities():
    """3 different views: top-1, loss and mAP from the mean of the per-view softmax probabilities,
    recomputed view by view with the glance network."""
    config, model, variables = setup("actnet")
    base = data_lib.create_source(config.data, "val")
    shifts = (0, 5, 17)
    source = ViewSource(base, shifts)
    result = _eval(config, model, variables, source, "glancer")
    apply = jax.jit(lambda v, g: model.apply(v, g, False, method="glancer_logits"))
    examples = [source.get(i) for i in range(len(source))]
    labels = np.array([int(e["label"]) for e in examples])
    probs = np.mean([np.asarray(jax.nn.softmax(apply(variables, jnp.asarray(normalize(
        np.stack([e["glance"][v] for e in examples])))), -1)) for v in range(len(shifts))], axis=0)
    # The views really differ (otherwise this test would not test the averaging).
    one_view = np.asarray(jax.nn.softmax(apply(variables, jnp.asarray(normalize(
        np.stack([e["glance"][1] for e in examples])))), -1))
    assert np.abs(one_view - probs).max() > 1e-4
    top1 = 100.0 * np.mean(np.argmax(probs, -1) == labels)
    assert result["top1"] == pytest.approx(top1)
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    expected_map = 100 * np.mean([average_precision_score(labels == c, probs[:, c])
                                  for c in sorted(set(labels.tolist()))])
    assert result["map"] == pytest.approx(expected_map, abs=1e-3)


def test_mismatched_view_counts_are_an_error():
    config, model, variables = setup("sthv2")

    class Broken(ViewSource):
        def get(self, index, rng=None):
            example = super().get(index, rng)
            example["focus"] = example["focus"][0]          # glance has 3 views, focus none
            return example

    source = Broken(data_lib.create_source(config.data, "val"), (0, 0, 0))
    with pytest.raises(ValueError, match=r"glance has 3 views .* but focus has shape"):
        _eval(config, model, variables, source, "center")
