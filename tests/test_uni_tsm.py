"""Uni-AdaFocus-TSM (Something-Something): the model's shapes and frame choices, one box per
video, the loss terms, which terms train which module, the official recipe of configs/sthv2.py
and sthv1.py (`mode=uni`), FLOPs against the paper, one sharded step on 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import flops, models, parallel, rl, stages, train
from adafocus_jax import uni as uni_lib
from adafocus_jax.data import frames as frames_lib
from adafocus_jax.data import transforms
from test_uni import RNGS, _ce, _norm
from train_helpers import config_module, host_batch, random_variables, tiny_config, to_host


@functools.lru_cache(maxsize=None)
def tsm_setup():
    """configs/tiny.py:sthv2,mode=uni: G = 6 TSM glance frames, K = 4 of N = 12 candidates,
    boxes 16…64 px on 64² frames, patch 32."""
    config = tiny_config("sthv2,mode=uni")
    model = models.create_model(config)
    return config, model, random_variables(model, *models.dummy_inputs(config.model))


def _inputs(config, batch=2, seed=0):
    c = config.model
    s = c.input_size
    rng = np.random.default_rng(seed)
    glance = rng.normal(size=(batch, c.num_glance_frames, s, s, 3))
    candidates = rng.normal(size=(batch, c.num_candidate_frames, s, s, 3))
    return jnp.asarray(glance, jnp.float32), jnp.asarray(candidates, jnp.float32)


# --------------------------------------------------------------------------------------------------
# The model.


def test_tsm_config_is_the_tsm_variant():
    config, model, variables = tsm_setup()
    c = config.model
    assert models.is_uni_tsm(c) and c.glancer.temporal_shift and c.focuser.temporal_shift
    assert (config.data.num_glance_frames, config.data.num_focus_frames) == (6, 12)
    assert config.data.separate_focus_frames
    assert models.dummy_inputs(c)[1].shape == (1, 12, 64, 64, 3)
    # The spatial policy's last conv spans all G glance maps (2 × 2 cells at 64²): one action per
    # video, as the official (G, 7, 7) Conv3d.
    assert variables["params"]["policy"]["spatial"]["out"]["kernel"].shape[:3] == (6, 2, 2)
    # The AdaFocusV2 Sth-Sth heads on both networks; the classifier sums logits (no parameters).
    assert {"classifier", "reg_classifier"} <= set(variables["params"]["glancer"])
    assert {"fc", "reg_fc"} <= set(variables["params"]["focuser"])
    assert "classifier" not in variables["params"]


def test_tsm_outputs_shapes_and_choices():
    config, model, variables = tsm_setup()
    c = config.model
    b, g, n, k = 2, c.num_glance_frames, c.num_candidate_frames, c.num_focus_frames
    glance, cand = _inputs(config)
    # One compile: the policy's boxes, the centre box and the glance network alone.
    apply = jax.jit(lambda v, x, y: (model.apply(v, x, y),
                                     model.apply(v, x, y, patch_mode="center"),
                                     model.apply(v, x, False, method="glance_v2")))
    out, center, g_out = apply(variables, glance, cand)
    assert out.logits.shape == (b, c.num_classes)
    assert out.step_logits.shape == (b, 2, c.num_classes)
    np.testing.assert_array_equal(out.logits, out.step_logits[:, -1])
    # The first exit is the glance network alone: its "reg" logits averaged over the G frames.
    np.testing.assert_allclose(out.step_logits[:, 0], g_out["reg_logits"].mean(axis=1),
                               rtol=1e-5, atol=1e-6)
    # The prediction adds the detached glance head's mean logits (glance_out) to the local one's.
    np.testing.assert_allclose(out.glance_out, g_out["logits"], rtol=1e-5, atol=1e-6)
    assert out.actions.shape == (b, 1, 4) and out.patch_offsets.shape == (b, 1, 2)
    assert 0 <= np.asarray(out.patch_offsets).min() and np.asarray(out.patch_offsets).max() <= 48
    assert out.dist_params.shape == (b, g)
    np.testing.assert_allclose(np.asarray(out.dist_params).sum(-1), 1.0, rtol=1e-5)
    idx = np.asarray(out.frame_indices)
    assert idx.shape == (b, k) and (np.diff(idx, axis=1) > 0).all() and idx.max() < n
    np.testing.assert_array_equal(idx, rl.quantile_frame_indices(out.dist_params, n, k))
    # The local network sees the chosen candidates and nothing else: a candidate that was not
    # chosen changes nothing; a chosen one changes the prediction, not the choices (both policies
    # read only the glance frames).
    unchosen = next(i for i in range(n) if i not in idx[0])
    same = apply(variables, glance, cand.at[0, unchosen].add(3.0))[0]
    np.testing.assert_allclose(same.logits, out.logits, rtol=1e-6, atol=1e-6)
    moved = apply(variables, glance, cand.at[0, idx[0, 1]].add(3.0))[0]
    assert not np.allclose(moved.logits[0], out.logits[0])
    np.testing.assert_allclose(moved.logits[1], out.logits[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(moved.frame_indices, out.frame_indices)
    np.testing.assert_array_equal(moved.actions, out.actions)
    np.testing.assert_array_equal(np.asarray(center.patch_offsets), 16)   # (S − P) / 2
    with pytest.raises(ValueError, match="candidate frames"):
        model.apply(variables, glance)
    with pytest.raises(ValueError, match=r"focus_frames must be \[B, 12"):
        model.apply(variables, glance, cand[:, :4])


@functools.lru_cache(maxsize=None)
def _train_pass():
    """({term: {parameter path: |gradient| summed}}, train_outputs) in train mode."""
    config, model, variables = tsm_setup()
    glance, cand = _inputs(config, seed=3)
    labels = jnp.array([0, 1])
    terms_ = ("fused_policy", "global", "local_policy", "temporal", "spatial", "scale")

    def losses(params):
        outputs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                 glance, cand, True, method="train_outputs",
                                 mutable=["batch_stats"], rngs=RNGS)
        terms = uni_lib.uni_loss_terms(outputs, labels, norm_ratio=0.5, frame_exit=False)
        return jnp.stack([terms[t].mean() for t in terms_]), outputs

    jac, outputs = jax.jit(jax.jacrev(losses, has_aux=True))(variables["params"])
    flat = [(jax.tree_util.keystr(p), np.abs(np.asarray(g)))
            for p, g in jax.tree_util.tree_leaves_with_path(jac)]
    return {t: {path: float(g[i].sum()) for path, g in flat} for i, t in enumerate(terms_)}, \
        outputs


def test_tsm_train_outputs_shapes():
    config, _, _ = tsm_setup()
    c = config.model
    b, k = 2, c.num_focus_frames
    outputs = _train_pass()[1]
    assert outputs["local"]["reg_logits"].shape == (2 * b, k, c.num_classes)
    assert outputs["logits"].shape == (2 * b, c.num_classes)
    assert outputs["step_logits"].shape == (2 * b, 2, c.num_classes)
    assert outputs["temporal_logits"].shape == outputs["spatial_logits"].shape == \
        (b, c.num_classes)
    assert outputs["proxy_actions"].shape == outputs["actions"].shape == (b, 1, 4)
    # One random box of side P per video: scale (P − lo) / (hi − lo) = (32 − 16) / 48.
    assert outputs["random_actions"].shape == (b, 1, 4)
    np.testing.assert_allclose(np.asarray(outputs["random_actions"])[..., 2:], 16 / 48, rtol=1e-6)
    assert outputs["glance_indices"] is None          # the glance frames come from the loader
    f_idx = np.asarray(outputs["frame_indices"])
    assert f_idx.shape == (b, k) and (np.diff(f_idx, axis=1) > 0).all()


def test_tsm_which_terms_train_which_modules():
    grads = _train_pass()[0]
    # The summed logits come from heads on detached features: they train only those heads.
    g = grads["fused_policy"]
    heads = _norm(g, "['glancer']['classifier']") + _norm(g, "['focuser']['fc']")
    assert _norm(g, "['glancer']['classifier']") > 0 and _norm(g, "['focuser']['fc']") > 0
    assert sum(g.values()) == pytest.approx(heads, rel=1e-6)
    # The glance "reg" term trains the glance network, not its detached head, nor anything else.
    g = grads["global"]
    assert _norm(g, "['glancer']['reg_classifier']") > 0 and _norm(g, "['glancer']['stem_conv']") > 0
    assert _norm(g, "['glancer']['classifier']") == 0
    assert sum(g.values()) == pytest.approx(_norm(g, "['glancer']"), rel=1e-6)
    # The local "reg" term: the local network only (the crop's boxes and frames are detached).
    g = grads["local_policy"]
    assert _norm(g, "['focuser']['reg_fc']") > 0 and _norm(g, "['focuser']['conv1']") > 0
    assert _norm(g, "['focuser']['fc']") == 0
    assert sum(g.values()) == pytest.approx(_norm(g, "['focuser']"), rel=1e-6)
    # TSM: the temporal policy reads detached features and detached "reg" logits, so the
    # Monte-Carlo surrogate trains it alone (the ActivityNet variant also trains the glancer).
    g = grads["temporal"]
    assert _norm(g, "['policy']['temporal']") > 0
    assert sum(g.values()) == _norm(g, "['policy']['temporal']")
    g = grads["spatial"]
    assert _norm(g, "['policy']['spatial']") > 0 and _norm(g, "['policy']['aux_fc']") > 0
    assert sum(g.values()) == pytest.approx(
        _norm(g, "['policy']['spatial']") + _norm(g, "['policy']['aux_fc']"), rel=1e-6)
    g = grads["scale"]
    assert _norm(g, "['policy']['spatial']") > 0
    assert sum(g.values()) == _norm(g, "['policy']['spatial']")


def test_tsm_loss_terms_hand_computed():
    # B = 1, C = 2, G = 2 glance frames, K = 2 local frames; label 1; one box per video.
    outputs = {
        "logits": jnp.asarray([[0.0, 1.0], [2.0, 0.0]]),                 # policy, random rows
        "glance": {"reg_logits": jnp.asarray([[[0.5, -0.5], [1.5, 0.5]]])},
        "local": {"reg_logits": jnp.asarray([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [3.0, 1.0]]]),
                  "logits": jnp.zeros((2, 2, 2))},
        "temporal_logits": jnp.asarray([[1.0, 0.0]]),
        "spatial_logits": jnp.asarray([[0.0, 1.0]]),
        "proxy_actions": jnp.asarray([[[0.3, 0.7, 0.5, 0.8]]]),
        "weights": jnp.asarray([[0.25, 0.75]]),
    }
    y = 1
    terms = uni_lib.uni_loss_terms(outputs, jnp.array([y]), norm_ratio=0.5, frame_exit=False)
    # The official TSM main.py: (CE(logit_1) + CE(logit_2) + 2 CE(global) + CE(local_1) +
    # CE(local_2) + 2 CE(temporal) + 2 CE(spatial)) / 2 + norm_ratio · mean (s − 1)², with the
    # consensus (frame mean) taken before the CE of the "reg" logits.
    glob = _ce([1.0, 0.0], y)                  # mean of (.5, −.5) and (1.5, .5)
    local_p, local_r = _ce([0.5, 1.0], y), _ce([1.5, 1.5], y)
    scale = ((0.5 - 1) ** 2 + (0.8 - 1) ** 2) / 2
    expected = (_ce([0, 1], y) + _ce([2, 0], y) + 2 * glob + local_p + local_r
                + 2 * _ce([1, 0], y) + 2 * _ce([0, 1], y)) / 2 + 0.5 * scale
    np.testing.assert_allclose(float(terms["global"][0]), glob, rtol=1e-6)
    np.testing.assert_allclose(float(terms["local_random"][0]), local_r, rtol=1e-6)
    np.testing.assert_allclose(float(terms["scale"][0]), 0.145, rtol=1e-6)
    np.testing.assert_allclose(float(terms["total"][0]), expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# The loader's frames.


def test_uniform_segment_indices_hand_computed():
    # Evaluation, n = 5 frames in T = 8 segments: floor((k + .5) · 5 / 8) = floor(.3125, .9375,
    # 1.5625, 2.1875, 2.8125, 3.4375, 4.0625, 4.6875) = 0 0 1 2 2 3 4 4, 1-based.
    np.testing.assert_array_equal(transforms.uniform_segment_indices(5, 8),
                                  [1, 1, 2, 3, 3, 4, 5, 5])
    # n = 16, T = 4: (k + .5) · 4 = 2, 6, 10, 14.
    np.testing.assert_array_equal(transforms.uniform_segment_indices(16, 4), [3, 7, 11, 15])
    # Training: one uniformly random frame of each fractional segment [4k, 4k + 4).
    rng = np.random.default_rng(0)
    drawn = np.stack([transforms.uniform_segment_indices(16, 4, rng) for _ in range(400)]) - 1
    within = drawn - 4 * np.arange(4)
    assert within.min() == 0 and within.max() == 3
    # The AdaFocus / TSM rule reads frame 1 for every segment of such a short clip.
    np.testing.assert_array_equal(transforms.segment_indices(5, 8), np.ones(8))


def test_tsm_loader_samples_glance_and_candidates_on_their_own():
    config = config_module("sthv2").get_config("mode=uni")
    assert config.data.segment_sampling == "uniform"
    maker = frames_lib.ExampleMaker(config.data)
    [(glance, focus)] = maker.frame_lists(40, None)
    np.testing.assert_array_equal(glance, np.floor((np.arange(8) + 0.5) * 5).astype(int) + 1)
    assert len(focus) == 48 and focus[0] == 1 and focus[-1] == 40    # floor(47.5 · 40 / 48)
    config.data.segment_sampling = "dense"
    with pytest.raises(ValueError, match="segment_sampling must be one of"):
        frames_lib.ExampleMaker(config.data)


# --------------------------------------------------------------------------------------------------
# The recipe.


def test_tsm_recipes_and_hyper_parameters():
    # The official TSM README commands: lr 0.02, batch 64, wd 5e-4 (SSv2) / 1e-3 (SSv1), --gd 20,
    # dropout 0.5, norm_ratio 0.5, 50 cosine epochs, eval every epoch; ×0.5 glance (and aux_fc),
    # ×0.2 temporal and spatial policy, ×1 local.
    for dataset, wd in (("sthv2", 5e-4), ("sthv1", 1e-3)):
        config = config_module(dataset).get_config("mode=uni")
        c = config.model
        assert c.version == "uni" and stages.stage_names(config) == ["uni"]
        assert (c.num_glance_frames, c.num_focus_frames, c.num_candidate_frames) == (8, 16, 48)
        assert c.patch_size == 128 and tuple(c.policy.side_range) == (96.0, 224.0)
        assert c.glancer.dropout == c.focuser.dropout == 0.5
        assert (c.policy.spatial_hidden, c.policy.temporal_hidden) == (128, 64)
        assert c.policy.mc_samples == 128 and c.policy.temperature == 1.0
        assert (config.data.num_glance_frames, config.data.num_focus_frames) == (8, 48)
        r = stages.resolve_recipe(config, "uni")
        assert r.loss == "uni" and r.num_epochs == 50 and not r.extra_epoch
        assert r.batch_size == 64 and r.weight_decay == wd and r.clip_grad_norm == 20.0
        assert r.optimizer == "sgd" and r.lr_schedule == "cosine" and r.eval_every_epochs == 1
        assert all(r.modes.values())
        assert r.uni["norm_ratio"] == 0.5 and r.uni["kl_ratio"] == 0.0
        for module, lr in (("glancer", 0.01), ("policy", 0.004), ("focuser", 0.02)):
            assert r.lr[module] == pytest.approx(lr), (dataset, module)
        assert r.lr_groups == {"policy/aux_fc": pytest.approx(0.01)}
    # The other released settings: 96² and 128² with 8, 12 or 16 local frames of 3× as many.
    config = config_module("sthv2").get_config("mode=uni,patch=96,frames=12")
    assert (config.model.patch_size, config.model.num_focus_frames,
            config.model.num_candidate_frames, config.data.num_focus_frames) == (96, 12, 36, 36)
    for bad, match in (("mode=uni,patch=144", "not an official patch size"),
                       ("mode=uni,frames=10", "not an official number of local frames"),
                       ("frames=8", "option of mode=uni"), ("mode=uni,policy=discrete", "V1")):
        with pytest.raises(ValueError, match=match):
            config_module("sthv2").get_config(bad)
    with pytest.raises(ValueError, match="option of mode=uni"):
        config_module("actnet").get_config("mode=uni,frames=8")


# --------------------------------------------------------------------------------------------------
# FLOPs and one sharded step.


@pytest.mark.parametrize("patch, frames, paper", [(128, 16, 24.2), (96, 8, 8.8)])
def test_tsm_gflops_match_paper(patch, frames, paper):
    # The paper's convention (MACs of convs and linear layers, one clip, one crop): 8 TSM glance
    # frames at 224² + K patches of P² (Uni-AdaFocus-TSM README table: 24.2 for 128² 8 + 16, 8.8
    # for 96² 8 + 8). The official cost constants (ops/early_exit_uni_adafocus_tsm.py) for the
    # parts: MobileNetV2-TSM 0.29996 per frame, ResNet-50-TSM 1.33531 (128²) / 0.75144 (96²) per
    # frame, spatial + temporal policy 0.41124 + 0.00207 (the heads add < 0.02).
    model = models.create_model(models.uni_model_config("sthv2", patch, 0.5, frames))
    total, per_module = flops.count_gflops(model)
    assert abs(total - paper) <= 0.1, (total, per_module)
    resnet = {128: 1.335314368, 96: 0.75143776}[patch]
    assert per_module["glancer"] == pytest.approx(8 * 0.299956768, abs=0.01)
    assert per_module["focuser"] == pytest.approx(frames * resnet, abs=0.02)
    assert per_module["policy"] == pytest.approx(0.41124288 + 0.002065024, abs=1e-3)
    assert "classifier" not in per_module


def test_one_tsm_step_on_8_devices():
    assert jax.device_count() == 8
    config, model, variables = tsm_setup()
    mesh = parallel.make_mesh()
    recipe = stages.resolve_recipe(config, "uni")
    assert recipe.clip_grad_norm == 20.0
    state, schedules = train.create_train_state(variables["params"], variables["batch_stats"],
                                                recipe, 4)
    state = parallel.replicate(state, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=5), mesh,
                                donate=False)
    batch = host_batch(config)
    assert batch["glance"].shape[1] == 6 and batch["focus"].shape[1] == 12
    new_state, metrics = step(state, parallel.shard_batch(batch, mesh))
    metrics = to_host(metrics)
    assert np.isfinite(metrics["loss"]) and int(new_state.step) == 1
    assert metrics["lr_policy/aux_fc"] == pytest.approx(recipe.lr_groups["policy/aux_fc"])
    before, after = to_host(state), to_host(new_state)
    for module in ("glancer", "focuser", "policy"):
        assert metrics[f"grad_norm_{module}"] > 0, module
        for collection in ("params", "batch_stats"):
            old, new = getattr(before, collection)[module], getattr(after, collection)[module]
            assert any(not np.array_equal(a, b) for a, b in
                       zip(jax.tree.leaves(old), jax.tree.leaves(new))), (module, collection)
    for sub in ("temporal", "spatial", "aux_fc"):
        assert any(not np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(before.params["policy"][sub]),
            jax.tree.leaves(after.params["policy"][sub]))), sub
    replicated = parallel.replicated(mesh)
    for leaf in jax.tree.leaves(new_state.params):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    with pytest.raises(ValueError, match="has no 'focus'"):
        uni_lib.uni_loss(model, recipe, variables,
                         {k: v for k, v in batch.items() if k != "focus"}, jax.random.key(0))
