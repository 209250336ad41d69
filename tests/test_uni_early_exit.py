"""Real early exit of Uni-AdaFocus (17 exits officially): the model cut at its exits equals the
full model, the runner without exits gives the full model's predictions, frames and boxes, with
thresholds it gives the offline simulation's exits and never sends a frame past the exit, the
per-step GFLOPs add up to the full model's, and the benchmark section runs on a Uni model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import early_exit, flops, models
from adafocus_jax import data as data_lib
from adafocus_jax.data.transforms import normalize_jnp
from adafocus_jax.models import uni as uni_models
from test_uni import uni_setup
from train_helpers import random_variables, tiny_config


class RecordingFrames(np.ndarray):
    """uint8 frames `[N, N_c, S, S, 3]` that log every (video, candidate) pair read one frame
    per video (the runner's local steps read `frames[ids, candidates]`)."""

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and all(
                isinstance(k, np.ndarray) and k.ndim == 1 for k in key):
            self.log.extend(zip(key[0].tolist(), key[1].tolist()))
        return np.asarray(super().__getitem__(key))


def _frames(config, n=10, split="train"):
    source = data_lib.create_source(config.data, split)
    return np.stack([source.get(i % len(source), None)["glance"] for i in range(n)])


@pytest.fixture(scope="module")
def uni():
    config, model, variables = uni_setup()
    runner = early_exit.UniOnlineRunner(model, variables)
    frames = _frames(config)
    full = jax.jit(lambda v, x: model.apply(v, normalize_jnp(x)))(variables, frames)
    step_probs = np.asarray(jax.nn.softmax(full.step_logits, -1))[:, runner.exit_positions]
    return config, model, variables, runner, frames, step_probs, full


def test_exit_methods_equal_the_full_model(uni):
    """exit_glance / exit_policy / exit_local (traced index; an int index at the last step) =
    step_logits[:, G - 1:], with the same frames and boxes as __call__."""
    config, model, variables, runner, frames, _, full = uni
    c = config.model
    g, k = c.num_glance_frames, c.num_focus_frames
    x = normalize_jnp(frames)
    g_idx = np.asarray(uni_models.glance_indices(c.num_candidate_frames, g, 1))[0]
    out = jax.jit(lambda v, x: model.apply(v, x, method="exit_glance"))(variables, x[:, g_idx])
    want = np.asarray(full.step_logits)
    np.testing.assert_allclose(out["logits"], want[:, g - 1], rtol=1e-5, atol=1e-5)
    idx, actions = jax.jit(lambda v, m, p: model.apply(v, m, p, method="exit_policy"))(
        variables, out["maps"], out["pooled"])
    np.testing.assert_array_equal(idx, full.frame_indices)
    np.testing.assert_allclose(actions, full.actions, rtol=1e-6, atol=1e-6)
    local = jax.jit(lambda v, i, *a: model.apply(v, i, *a, method="exit_local"))
    local_int = jax.jit(lambda v, *a: model.apply(v, k - 1, *a, method="exit_local"))
    running = jnp.full((len(frames), c.classifier.hidden_dim), -jnp.inf)
    rows = np.arange(len(frames))
    for i in range(k):
        frame = x[rows, np.asarray(idx)[:, i]]
        if i == k - 1:   # the int index (a static head, as the FLOPs count traces it)
            _, logits_int, _ = local_int(variables, frame, actions[:, i], running,
                                         out["global_state"])
        running, logits, top = local(variables, jnp.int32(i), frame, actions[:, i], running,
                                     out["global_state"])
        np.testing.assert_allclose(logits, want[:, g + i], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.floor(top).astype(np.int32), full.patch_offsets[:, i])
    np.testing.assert_allclose(logits_int, logits, rtol=1e-6, atol=1e-6)


def test_runner_without_exit_equals_the_full_model(uni):
    config, model, variables, runner, frames, step_probs, full = uni
    k = config.model.num_focus_frames
    assert runner.num_steps == k + 1 and runner.exit_positions.tolist() == list(range(5, 10))
    out = runner.run(frames, [np.inf] * (k + 1), batch_size=4, compaction="none")
    assert out["exit_step"].tolist() == [k] * len(frames)
    np.testing.assert_array_equal(out["prediction"], np.asarray(full.logits).argmax(-1))
    np.testing.assert_array_equal(out["prediction"], runner.full(frames, 4))
    np.testing.assert_allclose(out["confidence"], step_probs[:, -1].max(-1), rtol=1e-5)
    np.testing.assert_array_equal(out["frame_indices"], full.frame_indices)
    np.testing.assert_array_equal(out["patch_offsets"], full.patch_offsets)
    assert out["rows_processed"] == 3 * 4 * (k + 1)   # 3 batches (10 videos, padded to 12)


@pytest.mark.parametrize("compaction", ["compact", "masked"])
def test_uni_exits_match_the_offline_simulation(uni, compaction):
    config, model, variables, runner, frames, step_probs, full = uni
    k = config.model.num_focus_frames
    conf = early_exit.step_confidences(step_probs)
    # Thresholds between the videos' confidences (10 videos: no video sits on a median).
    thresholds = [*np.median(conf[:, :-1], axis=0), -np.inf]
    want = early_exit.simulate_exit(conf, thresholds)
    assert len(set(want.tolist())) > 2 and 0 in want
    recorded = frames.view(RecordingFrames)
    recorded.log = []
    out = runner.run(recorded, thresholds, batch_size=4, compaction=compaction)
    np.testing.assert_array_equal(out["exit_step"], want)
    rows = np.arange(len(frames))
    np.testing.assert_array_equal(out["prediction"], step_probs[rows, want].argmax(-1))
    idx, offsets = np.asarray(full.frame_indices), np.asarray(full.patch_offsets)
    processed = set()
    for v, e in enumerate(want):      # exit e: local frames 0…e-1 went through the network
        np.testing.assert_array_equal(out["frame_indices"][v, :e], idx[v, :e])
        np.testing.assert_array_equal(out["patch_offsets"][v, :e], offsets[v, :e])
        assert (out["frame_indices"][v, e:] == -1).all()
        assert (out["patch_offsets"][v, e:] == -1).all()
        processed |= {(v, int(f)) for f in idx[v, :e]}
    if compaction == "compact":
        # Only the frames before each video's exit were read for the local network.
        assert set(recorded.log) == processed
        assert out["rows_processed"] < 3 * 4 * (k + 1)
    else:
        assert processed <= set(recorded.log)


def test_uni_step_gflops_add_up_to_the_full_model():
    # Official ActivityNet network, P = 128 (traced abstractly, nothing computed).
    model = models.create_model(models.uni_model_config("actnet", 128))
    costs = early_exit.uni_step_gflops(model)
    full, _ = flops.count_gflops(model)
    assert costs.shape == (17,)
    # The runner computes one global head (4096 → 200) where the full pass computes 16.
    assert costs.sum() + 15 * 4096 * 200 / 1e9 == pytest.approx(full, rel=1e-9)
    assert abs(costs.sum() - 27.2) < 0.1                                # the paper's total
    # The official cost table (ops/early_exit_uni_adafocus.py): exit 0 = 16 MobileNetV2 frames
    # (0.2995 GFLOPs each, without fc) + the global MLP on 16 steps (1280 → 4096) + a head; step 1
    # adds the policies (0.8225 spatial + 0.0041 temporal); every local frame = ResNet-50 at 128²
    # (1.3346, without fc) + the local MLP (2048 → 4096) + a head (8192 → 200).
    assert costs[0] == pytest.approx(16 * 0.2995 + (16 * 1280 * 4096 + 4096 * 200) / 1e9,
                                     rel=0.002)
    assert costs[1] - costs[2] == pytest.approx(0.8225 + 0.0041, rel=0.002)
    assert costs[2] == pytest.approx(1.3346 + (2048 * 4096 + 8192 * 200) / 1e9, rel=0.002)
    np.testing.assert_allclose(costs[3:], costs[2], rtol=1e-12)


def test_make_runner_and_refusals(uni):
    config, model, variables, runner, frames, _, _ = uni
    assert isinstance(early_exit.make_runner(model, variables), early_exit.UniOnlineRunner)
    v1_model = models.create_model(tiny_config("actnet"))
    v1_variables = random_variables(v1_model, *models.dummy_inputs(v1_model.config))
    assert isinstance(early_exit.make_runner(v1_model, v1_variables), early_exit.OnlineRunner)
    with pytest.raises(ValueError, match="version = 'uni'"):
        early_exit.UniOnlineRunner(v1_model, v1_variables)
    with pytest.raises(ValueError, match="candidate frames"):
        runner.run(frames[:, :6], [0.5] * runner.num_steps, batch_size=4)
    with pytest.raises(ValueError, match="thresholds must have 5 entries"):
        runner.run(frames, [0.5] * 3, batch_size=4)


def test_uni_benchmark_section():
    """early_exit.benchmark (the entry point of `python -m adafocus_jax.benchmark --early_exit`)
    on the tiny Uni model: 5 exits, the measured runs' accuracy/cost equal the simulated ones."""
    config, model, variables = uni_setup()
    costs = early_exit.uni_step_gflops(model)
    budget = float(costs[0] + costs[1])          # one local frame per video on average
    sec = early_exit.benchmark(config, variables, model, fit_split="train", test_split="val",
                               num_budgets=3, batch_size=4, repeats=1, timing_videos=8,
                               single_videos=2, measure=("mid", budget))
    assert sec["num_steps"] == 5 and sec["step_gflops"] == pytest.approx(costs.tolist())
    assert sec["curve"][-1]["exit_histogram"] == [0, 0, 0, 0, 12]   # full budget: no exit
    assert sec["full"]["gflops"] == pytest.approx(costs.sum())
    mid, given = sec["measured"]
    match = [c for c in sec["curve"] if c["thresholds"] == mid["thresholds"]]
    assert match and mid["accuracy"] == match[0]["accuracy"]
    assert given["budget"] == budget
    for m in (mid, given):
        assert set(m["ms_per_video"]) == {"full", "stepwise_no_exit", "exit_compact",
                                          "exit_masked"}
        assert m["rows_processed_timed"]["compact"] <= m["rows_processed_timed"]["masked"]
    with pytest.raises(ValueError, match="unknown point 'fast'"):
        early_exit.benchmark(config, variables, model, measure=("fast",))
