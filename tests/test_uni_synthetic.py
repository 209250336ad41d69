"""Uni-AdaFocus on the synthetic benchmark (configs/synthetic.py:mode=uni): the config and its
stage table, uniformly spaced frames as the equal-cost baseline, which chosen frames and boxes
hold the digit, and the benchmark's `uni_*` rows."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import benchmark, evaluate, flops, metrics, models, stages
from adafocus_jax.data import synthetic
from adafocus_jax.models import AdaFocusOutput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(arg=None):
    spec = importlib.util.spec_from_file_location("synthetic_config",
                                                  os.path.join(ROOT, "configs", "synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny_uni_config():
    """configs/synthetic.py:mode=uni,quick on tiny networks: 64-px frames, 4 candidates (the
    digit in 2 consecutive ones), 2 glanced, 2 chosen, patch 24, boxes 20…28 px."""
    config = load_config("mode=uni,quick")
    m = models.tiny_model_config("actnet")
    m.num_classes, m.glance_size, m.glance_resize, m.patch_size = 10, 32, "linear", 24
    models.to_uni_model_config(m)
    m.num_candidate_frames, m.num_glance_frames, m.num_focus_frames = 4, 2, 2
    m.policy.side_range = (20.0, 28.0)
    m.policy.spatial_hidden = m.policy.temporal_hidden = 4
    m.policy.mc_samples = 4
    m.classifier.hidden_dim = 8
    config.model = m
    d = config.data
    d.input_size = d.scale_size = 64
    d.num_glance_frames = d.num_focus_frames = 4
    d.synthetic.digit_size = 16
    d.synthetic.region_grid = 1
    d.synthetic.num_videos.test = 12          # 2 batches of 8, the second one padded
    config.benchmark.batch_size = 8
    return config


def test_mode_uni_config():
    config = load_config("mode=uni")
    m, d = config.model, config.data
    models.validate_model_config(m)
    assert m.version == "uni" and m.policy.frame_choice == "policy"
    assert (m.num_candidate_frames, m.num_glance_frames, m.num_focus_frames) == (8, 4, 2)
    # The loader delivers the N candidates; the digit is in 2 of them; period-3 strokes (the
    # bilinear crop at continuous boxes erases period 2).
    assert d.num_glance_frames == 8 and d.synthetic.digit_frames == 2
    assert d.synthetic.halftone_period == 3
    assert tuple(m.policy.side_range) == (40.0, 56.0)
    assert config.stage_order == "stage0_glancer,stage0_focuser,uni"
    uni = stages.resolve_recipe(config, "uni")
    assert uni.loss == "uni" and uni.optimizer == "adam" and uni.num_epochs == 10
    assert uni.restore == {"glancer": "stage0_glancer", "focuser": "stage0_focuser"}
    # lr = 1e-3 × the table's multipliers (written in the config, not derived here).
    assert uni.lr == {"glancer": 5e-4, "focuser": 1e-3, "policy": 2e-3, "classifier": 5e-3}
    assert uni.lr_groups == {"policy/aux_fc": 5e-4}
    assert uni.uni == {"norm_ratio": 1.0, "kl_ratio": 0.0}
    # Stage 0 is the V1 recipe's.
    v1 = load_config(None)
    for name in ("stage0_glancer", "stage0_focuser"):
        assert stages.resolve_recipe(config, name) == stages.resolve_recipe(v1, name)
    assert "oracle" not in config.benchmark.variants
    assert "uniform_frames" in config.benchmark.variants
    # Options: the digit in every frame, or in another number of them; quick; errors.
    assert load_config("mode=uni,digit_frames=0").data.synthetic.digit_frames == 0
    assert load_config("digit_frames=3").data.synthetic.digit_frames == 3      # V1 data too
    assert load_config(None).data.synthetic.digit_frames == 0
    assert stages.resolve_recipe(load_config("mode=uni,quick"), "uni").num_epochs == 1
    with pytest.raises(ValueError, match="unknown options"):
        load_config("mode=uni,digit_frames=two")
    source = synthetic.create_source(d, "test")
    ex = source.get(0)
    assert ex["glance"].shape == (8, 144, 144, 3) and int(ex["target_present"].sum()) == 2


def test_uniform_frame_choice_gives_uniformly_spaced_frames():
    config = tiny_uni_config()
    c = config.model
    c.num_candidate_frames, c.num_glance_frames, c.num_focus_frames = 12, 4, 3
    learned = models.create_model(config)
    c.policy.frame_choice = "uniform"
    uniform = models.create_model(config)
    # Frame i of video b holds the number 100 b + i; video 0's weights are uniform, video 1's not.
    frames = (100.0 * np.arange(2)[:, None] + np.arange(12)[None, :]).reshape(2, 12, 1, 1, 1)
    weights = jnp.asarray([[0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]], jnp.float32)
    actions = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 4, 4)), jnp.float32)

    def choose(model):
        return model.apply({}, jnp.asarray(frames, jnp.float32), weights, actions, 0.5,
                           method="policy_frames")

    focus, indices, chosen = choose(uniform)
    # floor((i + 0.5) · 12 / 3) for i = 0, 1, 2, whatever the weights.
    np.testing.assert_array_equal(indices, [[2, 6, 10]] * 2)
    np.testing.assert_array_equal(focus[..., 0, 0, 0], [[2, 6, 10], [102, 106, 110]])
    _, l_indices, l_chosen = choose(learned)
    # The policy's frames: the uniform ones for uniform weights, others for video 1.
    np.testing.assert_array_equal(l_indices[0], [2, 6, 10])
    assert not np.array_equal(l_indices[1], indices[1])
    # Same boxes policy: at the same frames, the same (interpolated) actions.
    np.testing.assert_allclose(l_chosen[0], chosen[0])
    c.policy.frame_choice = "evenly"
    with pytest.raises(ValueError, match="frame_choice='evenly'"):
        models.create_model(config)


def test_target_hits_of_uni_boxes_at_the_chosen_frames():
    """Hand-made output: 144-px frames, P = 48, sides 40…56 px."""
    config = load_config("mode=uni")
    m = config.model
    # Video 0 chose frames 1 and 5; video 1 frames 0 and 7. Actions (y, x, s_y, s_x):
    # side = 40 + 16 s, top = a (144 − side).
    actions = jnp.asarray([[[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 0.0]],
                           [[1.0, 1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]], jnp.float32)
    output = AdaFocusOutput(logits=None, step_logits=None, patch_offsets=None, actions=actions,
                            dist_params=None, values=None, glance_out=None, local_features=None,
                            frame_indices=jnp.asarray([[1, 5], [0, 7]], jnp.int32))
    boxes = np.zeros((2, 8, 4), np.int32)
    # Video 0, frame 1: box 48 px at (48, 48) → [48, 96)²; the digit (50, 60)-(70, 80) inside.
    boxes[0, 1] = (50, 60, 70, 80)
    # Video 0, frame 5: box 56 × 40 at (0, 0) → rows [0, 56), cols [0, 40); digit cols to 41: out.
    boxes[0, 5] = (10, 21, 30, 41)
    # Video 1, frame 0: box 40 × 56 at (104, 88) → [104, 144) × [88, 144); inside.
    boxes[1, 0] = (110, 100, 130, 120)
    # Video 1, frame 7: [48, 96)²; inside, but the frame does not show the digit.
    boxes[1, 7] = (50, 50, 70, 70)
    present = np.zeros((2, 8), bool)
    present[0, [1, 5]] = True
    present[1, 0] = True
    batch = {"target_box": jnp.asarray(boxes), "target_present": jnp.asarray(present)}
    hit, shown = evaluate.target_hits(m, output, batch)
    np.testing.assert_allclose(hit, [0.5, 0.5])
    np.testing.assert_allclose(shown, [1.0, 0.5])
    # Without target_present every frame shows the digit: video 1's second box now counts.
    hit, shown = evaluate.target_hits(m, output, {"target_box": jnp.asarray(boxes)})
    np.testing.assert_allclose(hit, [0.5, 1.0])
    np.testing.assert_allclose(shown, [1.0, 1.0])


def test_patch_hit_fraction_skips_frames_without_the_target():
    offsets = np.asarray([[[0, 0], [10, 10]]], np.int32)
    boxes = np.asarray([[[2, 2, 8, 8], [12, 12, 18, 18]]], np.int32)
    np.testing.assert_allclose(metrics.patch_hit_fraction(offsets, boxes, 8), [1.0])
    np.testing.assert_allclose(
        metrics.patch_hit_fraction(offsets, boxes, 8, np.asarray([[True, False]])), [0.5])
    # Per-step sides (rows, cols): a 6-px-wide box misses the 6-px digit at offset 10 → 12..18.
    sides = np.asarray([[[8, 8], [8, 6]]], np.float32)
    np.testing.assert_allclose(metrics.patch_hit_fraction(offsets, boxes, sides), [0.5])


def test_uni_benchmark_rows(tmp_path, capsys):
    config = tiny_uni_config()
    model = models.create_model(config)
    variables = jax.tree.map(np.asarray, models.init_variables(model, jax.random.key(0)))
    results = benchmark.run(config, str(tmp_path), variables, model=model)
    written = json.loads((tmp_path / "synthetic_benchmark.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert set(written) == {"learned", "uniform_frames", "random", "center", "full_frame",
                            "glance_only", "uni_learned", "uni_uniform_frames", "meta"}
    assert written["uni_learned"] == written["learned"]
    assert written["uni_uniform_frames"] == written["uniform_frames"]
    for name in ("learned", "uniform_frames", "random", "center"):
        assert set(written[name]) == {"accuracy", "gflops", "target_hit", "frame_hit"}
    # Uniform frames are 1 and 3 of the 4 candidates (floor((i + ½) · 4 / 2)): the % of them
    # showing the digit, by hand from the data.
    source = synthetic.create_source(config.data, "test")
    present = np.stack([source.get(i)["target_present"] for i in range(len(source))])
    assert written["uniform_frames"]["frame_hit"] == pytest.approx(
        100.0 * present[:, [1, 3]].mean(), abs=0.01)
    # Equal cost: the same networks, only the frames (or boxes) differ; the model runs both
    # policies whatever its frames or boxes.
    assert written["uniform_frames"]["gflops"] == written["learned"]["gflops"]
    assert written["random"]["gflops"] == written["center"]["gflops"] == \
        written["learned"]["gflops"]
    meta = written["meta"]
    assert meta["mechanism"] == "uni" and meta["digit_frames"] == 2
    assert (meta["num_candidate_frames"], meta["num_glance_frames"], meta["num_focus_frames"]) \
        == (4, 2, 2)
    assert meta["margin_vs_uniform_frames"] == pytest.approx(
        written["learned"]["accuracy"] - written["uniform_frames"]["accuracy"])
    assert meta["passed"] == (meta["margin_vs_random"] >= 15 and meta["margin_vs_center"] >= 15
                              and meta["margin_vs_uniform_frames"] >= 5)
    assert "uniform frames" in capsys.readouterr().out


def test_uni_variant_gflops_and_lists():
    config = tiny_uni_config()
    model = models.create_model(config)
    learned, per_learned = flops.variant_gflops(model, "learned")
    _, per_random = flops.variant_gflops(model, "random")
    _, per_glance = flops.variant_gflops(model, "glance_only")
    _, per_full = flops.variant_gflops(model, "full_frame")
    # The whole-frame heads see all N = 4 candidates; the model's glance network sees G = 2 of
    # them (same head), its local network K = 2 patches of 24² instead of 4 frames of 64².
    assert per_glance["glancer"] == pytest.approx(2.0 * per_learned["glancer"])
    assert 2 * 5.0 < per_full["focuser"] / per_random["focuser"] < 2 * 8.0
    assert learned == pytest.approx(flops.count_gflops(model)[0])
    config.benchmark.variants = "learned,uniform_frames,random,center,full_frame,oracle"
    with pytest.raises(ValueError, match="oracle"):
        benchmark.run(config, "/nonexistent", {})
    config.benchmark.variants = "learned,random,center,full_frame"
    with pytest.raises(ValueError, match="uniform_frames"):
        benchmark.run(config, "/nonexistent", {})
    v1 = load_config("quick")
    v1.benchmark.variants = "learned,uniform_frames,random,center,full_frame"
    with pytest.raises(ValueError, match="chooses its frames"):
        benchmark.run(v1, "/nonexistent", {})
