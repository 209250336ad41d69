"""Real early exit of Uni-AdaFocus-TSM (the official TSM variant's 2 exits: glance only, or the
full model): the model cut at its exits equals the full model, the runner without exits gives
the full model's predictions, frames and boxes, with a threshold it gives the offline
simulation's exits and sends no candidate frame of a video that exits after the glance, the two
steps' GFLOPs add up to the full model's (24.2 for the paper's SSv2 128² 8 + 16 model), and the
benchmark section runs on the tiny TSM model."""

import jax
import numpy as np
import pytest

from adafocus_jax import early_exit, flops, models
from adafocus_jax.data.transforms import normalize_jnp
from test_uni_tsm import tsm_setup


class RecordingCandidates(np.ndarray):
    """uint8 candidates `[N, N_c, S, S, 3]` that log every (video, candidate) pair the runner
    gathers (`candidates[ids[:, None], indices]`)."""

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and all(
                isinstance(k, np.ndarray) for k in key):
            rows, cols = np.broadcast_arrays(*key)
            self.log.extend(zip(rows.ravel().tolist(), cols.ravel().tolist()))
        return np.asarray(super().__getitem__(key))


@pytest.fixture(scope="module")
def tsm():
    config, model, variables = tsm_setup()
    videos, labels = early_exit.load_split(config, "train", max_videos=10)
    runner = early_exit.UniTSMOnlineRunner(model, variables)
    full = jax.jit(lambda v, g, f: model.apply(v, normalize_jnp(g), normalize_jnp(f)))(
        variables, *videos)
    step_probs = np.asarray(jax.nn.softmax(full.step_logits, -1))
    return config, model, variables, runner, videos, step_probs, full


def test_load_split_gives_glance_and_candidates(tsm):
    config, _, _, _, videos, _, _ = tsm
    c = config.model
    assert isinstance(videos, tuple) and len(videos) == 2
    assert videos[0].shape == (10, c.num_glance_frames, c.input_size, c.input_size, 3)
    assert videos[1].shape == (10, c.num_candidate_frames, c.input_size, c.input_size, 3)
    assert videos[0].dtype == videos[1].dtype == np.uint8


def test_tsm_exit_methods_equal_the_full_model(tsm):
    """exit_glance → step_logits[:, 0]; exit_policy → the full model's frames and action;
    exit_tsm_local → the prediction (= step_logits[:, 1]) and the box."""
    _, model, variables, _, (glance, candidates), _, full = tsm
    apply = jax.jit(lambda v, *a, method: model.apply(v, *a, method=method),
                    static_argnames="method")
    out = apply(variables, normalize_jnp(glance), method="exit_glance")
    want = np.asarray(full.step_logits)
    np.testing.assert_allclose(out["logits"], want[:, 0], rtol=1e-5, atol=1e-5)
    idx, actions = apply(variables, out["maps"], out["pooled"], method="exit_policy")
    np.testing.assert_array_equal(idx, full.frame_indices)
    np.testing.assert_allclose(actions, full.actions, rtol=1e-6, atol=1e-6)
    assert actions.shape == (len(glance), 1, 4)      # one box per video
    chosen = normalize_jnp(candidates[np.arange(len(glance))[:, None], np.asarray(idx)])
    logits, top = apply(variables, chosen, actions, out["glance_logits"],
                        method="exit_tsm_local")
    np.testing.assert_allclose(logits, full.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, want[:, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.floor(top).astype(np.int32), full.patch_offsets)


def test_tsm_runner_without_exit_equals_the_full_model(tsm):
    config, _, _, runner, videos, step_probs, full = tsm
    out = runner.run(videos, [np.inf, np.inf], batch_size=4, compaction="none")
    assert out["exit_step"].tolist() == [1] * 10
    np.testing.assert_array_equal(out["prediction"], np.asarray(full.logits).argmax(-1))
    np.testing.assert_array_equal(out["prediction"], runner.full(videos, 4))
    np.testing.assert_allclose(out["confidence"], step_probs[:, 1].max(-1), rtol=1e-5)
    np.testing.assert_array_equal(out["frame_indices"], full.frame_indices)
    np.testing.assert_array_equal(out["patch_offsets"], full.patch_offsets)
    assert out["rows_processed"] == 3 * 4 * 2      # 3 batches (10 videos, padded to 12), 2 steps


@pytest.mark.parametrize("compaction", ["compact", "masked"])
def test_tsm_exits_match_the_offline_simulation(tsm, compaction):
    config, _, _, runner, (glance, candidates), step_probs, full = tsm
    conf = early_exit.step_confidences(step_probs)
    threshold = float(np.median(conf[:, 0]))       # 10 videos: no video sits on the median
    want = early_exit.simulate_exit(conf, [threshold, -np.inf])
    assert 0 < want.sum() < len(want)
    recorded = candidates.view(RecordingCandidates)
    recorded.log = []
    out = runner.run((glance, recorded), [threshold, -np.inf], batch_size=4,
                     compaction=compaction)
    np.testing.assert_array_equal(out["exit_step"], want)
    rows = np.arange(len(want))
    np.testing.assert_array_equal(out["prediction"], step_probs[rows, want].argmax(-1))
    idx, offsets = np.asarray(full.frame_indices), np.asarray(full.patch_offsets)
    went_on = want == 1
    np.testing.assert_array_equal(out["frame_indices"][went_on], idx[went_on])
    np.testing.assert_array_equal(out["patch_offsets"][went_on], offsets[went_on])
    assert (out["frame_indices"][~went_on] == -1).all()
    assert (out["patch_offsets"][~went_on] == -1).all()
    processed = {(v, int(f)) for v in np.where(went_on)[0] for f in idx[v]}
    if compaction == "compact":
        # Only the chosen candidates of the videos past exit 0 were read, and they were pooled
        # across the input batches: step 1 ran in full batches of 4, the rest padded to 1, 2 or
        # 4 rows (glance batches: 4 + 4 + 2).
        assert set(recorded.log) == processed
        went = int(went_on.sum())
        last = {0: 0, 1: 1, 2: 2, 3: 4}[went % 4]
        assert out["rows_processed"] == 10 + went // 4 * 4 + last
    else:
        assert processed <= set(recorded.log)


def test_tsm_step_gflops_add_up_to_the_full_model(tsm):
    _, model, _, runner, _, _, _ = tsm
    costs = runner.step_gflops()
    assert costs.shape == (2,) and (costs > 0).all()
    assert costs.sum() == pytest.approx(flops.count_gflops(model)[0], rel=1e-9)
    # The paper's SSv2 model, 128² patches, 8 glance + 16 chosen frames (traced abstractly):
    # 24.2 GFLOPs in all; exit 0 = 8 MobileNetV2-TSM frames at 224² (0.2995 GFLOPs each, the
    # official cost table) + its two heads (1280 → 174 each).
    official = models.create_model(models.uni_model_config("sthv2", 128))
    costs = early_exit.uni_tsm_step_gflops(official)
    assert abs(costs.sum() - 24.2) < 0.05
    assert costs[0] == pytest.approx(8 * 0.2995 + 2 * 8 * 1280 * 174 / 1e9, rel=0.002)
    assert costs.sum() == pytest.approx(flops.count_gflops(official)[0], rel=1e-9)


def test_tsm_make_runner_refusals_and_benchmark(tsm):
    config, model, variables, runner, videos, _, _ = tsm
    assert isinstance(early_exit.make_runner(model, variables), early_exit.UniTSMOnlineRunner)
    with pytest.raises(ValueError, match="UniTSMOnlineRunner"):
        early_exit.UniOnlineRunner(model, variables)
    with pytest.raises(ValueError, match="tuple of uint8 glance frames"):
        runner.run(videos[0], [0.5, 0.5], batch_size=4)
    with pytest.raises(ValueError, match="candidates"):
        runner.run((videos[0], videos[1][:, :5]), [0.5, 0.5], batch_size=4)
    with pytest.raises(ValueError, match="thresholds must have 2 entries"):
        runner.run(videos, [0.5] * 3, batch_size=4)
    # early_exit.benchmark (`python -m adafocus_jax.benchmark --early_exit`) on the TSM model:
    # the measured runs' exits and accuracy are the simulated ones (it checks them itself).
    costs = runner.step_gflops()
    sec = early_exit.benchmark(config, variables, model, fit_split="train", test_split="val",
                               num_budgets=3, batch_size=4, repeats=1, timing_videos=8,
                               single_videos=2, measure=("mid",))
    assert sec["num_steps"] == 2 and sec["step_gflops"] == pytest.approx(costs.tolist())
    assert sec["full"]["gflops"] == pytest.approx(costs.sum())
    assert sec["curve"][0]["exit_histogram"][1] == 0           # glance-only budget: all exit at 0
    assert sum(sec["curve"][-1]["exit_histogram"]) == sec["num_videos"]
    (mid,) = sec["measured"]
    assert mid["mean_frames"] == pytest.approx(
        config.model.num_focus_frames * (mid["gflops"] - costs[0]) / costs[1], rel=1e-6)
