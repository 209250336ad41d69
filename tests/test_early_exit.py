"""Real early exit: the frame-by-frame model equals the full one, fitted thresholds by hand, exits
match the offline simulation, every batching choice gives the same answers."""

import math

import jax
import numpy as np
import pytest

from adafocus_jax import early_exit, flops, models
from adafocus_jax import data as data_lib
from train_helpers import setup


def _frames(config, n=10):
    source = data_lib.create_source(config.data, "train")
    return np.stack([source.get(i % len(source), None)["glance"] for i in range(n)])


@pytest.fixture(scope="module")
def anet():
    config, model, variables = setup("actnet")
    runner = early_exit.OnlineRunner(model, variables)
    frames = _frames(config)
    from adafocus_jax import inference
    full = jax.jit(inference.predict_fn(model))(variables, frames)
    step_probs = np.asarray(jax.nn.softmax(full["step_logits"], -1))
    return config, model, variables, runner, frames, step_probs, np.asarray(full["patch_offsets"])


def test_fit_thresholds_by_hand():
    # 4 videos, 2 steps of cost 1 each (exit after step 0: 1, after step 1: 2), budget 1.5:
    # q ∝ p^k with 0.5·1 + 0.5·2 = 1.5 → p = 1, q = (0.5, 0.5) → ⌊4·0.5⌋ = 2 exit at step 0:
    # the two most confident at step 0 are 0.9 and 0.7 → threshold 0.7.
    conf = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.4], [0.5, 0.6]])
    fit = early_exit.fit_thresholds(conf, [1.0, 1.0], 1.5)
    assert fit.p == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(fit.exit_fractions, [0.5, 0.5], rtol=1e-6)
    assert fit.thresholds[0] == 0.7 and fit.thresholds[1] == -np.inf
    assert fit.expected_gflops == pytest.approx(1.5)
    np.testing.assert_array_equal(early_exit.simulate_exit(conf, fit.thresholds), [0, 1, 0, 1])
    # 3 steps, budget 7/4 with costs 1: q ∝ (1, p, p²) with (1 + 2p + 3p²)/(1 + p + p²) = 7/4
    # → 5p² + p − 3 = 0 → p = (−1 + √61)/10.
    fit3 = early_exit.fit_thresholds(np.random.default_rng(0).random((20, 3)), [1, 1, 1], 1.75)
    assert fit3.p == pytest.approx((math.sqrt(61) - 1) / 10, rel=1e-6)
    # Budgets outside the reachable range clip: everything exits at the first / last step.
    low = early_exit.fit_thresholds(conf, [1.0, 1.0], 0.1)
    assert early_exit.simulate_exit(conf, low.thresholds).tolist() == [0, 0, 0, 0]


def test_geometric_fractions():
    np.testing.assert_allclose(early_exit.geometric_fractions(2.0, 3), np.array([1, 2, 4]) / 7)


def test_online_steps_equal_the_full_model(anet):
    """No exit: the stepwise pipeline gives the full model's per-step predictions and patches."""
    config, model, variables, runner, frames, step_probs, offsets = anet
    out = runner.run(frames, [np.inf] * 3, batch_size=4, compaction="none")
    assert out["exit_step"].tolist() == [2] * len(frames)
    np.testing.assert_array_equal(out["prediction"], step_probs[:, -1].argmax(-1))
    np.testing.assert_allclose(out["confidence"], step_probs[:, -1].max(-1), rtol=1e-5)
    np.testing.assert_array_equal(out["patch_offsets"], offsets)
    assert out["rows_processed"] == 3 * 3 * 4   # 3 batches (10 videos, padded to 12) × 3 steps


@pytest.mark.parametrize("compaction", ["compact", "masked"])
def test_exits_match_the_offline_simulation(anet, compaction):
    config, model, variables, runner, frames, step_probs, offsets = anet
    conf = early_exit.step_confidences(step_probs)
    # Thresholds between the videos' confidences, so that exits spread over the steps.
    thresholds = [np.median(conf[:, 0]), np.median(conf[:, 1]), -np.inf]
    want = early_exit.simulate_exit(conf, thresholds)
    assert len(set(want.tolist())) > 1
    out = runner.run(frames, thresholds, batch_size=4, compaction=compaction)
    np.testing.assert_array_equal(out["exit_step"], want)
    rows = np.arange(len(frames))
    np.testing.assert_array_equal(out["prediction"], step_probs[rows, want].argmax(-1))
    for i, k in enumerate(want):
        np.testing.assert_array_equal(out["patch_offsets"][i, :k + 1], offsets[i, :k + 1])
        assert (out["patch_offsets"][i, k + 1:] == -1).all()
    full_rows = 3 * 3 * 4
    if compaction == "compact":
        assert out["rows_processed"] < full_rows


def test_step_gflops_add_up_to_the_full_model():
    config, model, _ = setup("actnet")
    per_step = early_exit.step_gflops(model)
    full, _ = flops.count_gflops(model)
    assert per_step.shape == (3,)
    assert per_step.sum() == pytest.approx(full, rel=1e-9)


def test_sthsth_model_is_refused():
    config, model, variables = setup("sthv2")
    with pytest.raises(ValueError, match="per_frame"):
        early_exit.OnlineRunner(model, variables)


def test_benchmark_section(tmp_path):
    """The benchmark's early_exit section on the tiny model: schema, a monotone cost axis, the
    measured runs' accuracy/cost equal the simulated ones at their thresholds, the plot is a PNG."""
    from PIL import Image
    config, model, variables = setup("actnet")
    plot = tmp_path / "ee.png"
    sec = early_exit.benchmark(config, variables, model, fit_split="train", test_split="val",
                               num_budgets=4, batch_size=4, repeats=1, timing_videos=8,
                               single_videos=2, measure=("mid",), plot_path=str(plot))
    assert sec["num_videos"] == 12 and sec["num_fit_videos"] == 32 and sec["num_steps"] == 3
    budgets = [c["budget"] for c in sec["curve"]]
    assert budgets == sorted(budgets) and len(budgets) == 4
    assert all(sum(c["exit_histogram"]) == 12 for c in sec["curve"])
    assert sec["curve"][-1]["exit_histogram"] == [0, 0, 12]     # the full budget never exits
    assert sec["curve"][-1]["accuracy"] == sec["full"]["accuracy"]
    (m,) = sec["measured"]
    match = [c for c in sec["curve"] if c["thresholds"] == m["thresholds"]]
    assert match and m["accuracy"] == match[0]["accuracy"]
    assert m["gflops"] == pytest.approx(match[0]["gflops"])
    assert set(m["ms_per_video"]) == {"full", "stepwise_no_exit", "exit_compact", "exit_masked"}
    assert m["rows_processed_timed"]["full"] == 2 * 4 * 3
    assert Image.open(plot).size == (640, 420)
