"""Uni-AdaFocus: the model's shapes and frame choices, the loss terms, which terms train which
module, the recipe and its learning-rate groups, FLOPs, one sharded step on 8 devices."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import models, parallel, stages, train
from adafocus_jax import uni as uni_lib
from adafocus_jax.models import uni as uni_models
from train_helpers import config_module, host_batch, random_variables, tiny_config, to_host


def _load_config(name: str, arg: str):
    return config_module(name).get_config(arg)


def tiny_uni_config():
    """configs/tiny.py:actnet,mode=uni: Uni-AdaFocus with tiny widths, 12 candidate frames, 6
    glanced, 4 chosen; boxes 16…64 px on 64² frames (patch 32), one stage "uni"."""
    return tiny_config("actnet,mode=uni")


@functools.lru_cache(maxsize=None)
def uni_setup():
    config = tiny_uni_config()
    model = models.create_model(config)
    return config, model, random_variables(model, *models.dummy_inputs(config.model))


def _frames(config, batch=2, seed=0):
    c = config.model
    s = c.input_size
    x = np.random.default_rng(seed).normal(size=(batch, c.num_candidate_frames, s, s, 3))
    return jnp.asarray(x, jnp.float32)


RNGS = {"frames": jax.random.key(1), "patches": jax.random.key(2), "dropout": jax.random.key(3)}
TERMS = ("local_policy", "fused_policy", "spatial", "temporal", "scale")


def _ce(logits, y):
    logits = np.asarray(logits, np.float64)
    return float(np.log(np.exp(logits).sum()) - logits[y])


# --------------------------------------------------------------------------------------------------
# Frames and shapes.


def test_glance_indices_test_and_training():
    # 12 candidates in 6 segments of 2: test takes frame 1 of each (official arange(N)[1::N // G]).
    np.testing.assert_array_equal(np.asarray(uni_models.glance_indices(12, 6, 1)),
                                  [[1, 3, 5, 7, 9, 11]])
    np.testing.assert_array_equal(np.asarray(uni_models.glance_indices(48, 16, 1))[0, :3],
                                  [1, 4, 7])
    drawn = np.asarray(uni_models.glance_indices(48, 16, 500, jax.random.key(0)))
    segment = drawn - 3 * np.arange(16)
    assert segment.min() == 0 and segment.max() == 2      # one random frame of each segment
    assert len(np.unique(segment[:, 0])) == 3


def test_uni_outputs_shapes_and_choices():
    config, model, variables = uni_setup()
    c = config.model
    b, n, g, k, p = 2, c.num_candidate_frames, c.num_glance_frames, c.num_focus_frames, \
        c.patch_size
    x = _frames(config)
    out, center = jax.jit(lambda v, x: (model.apply(v, x),
                                         model.apply(v, x, patch_mode="center")))(variables, x)
    assert out.logits.shape == (b, c.num_classes)
    assert out.step_logits.shape == (b, g + k, c.num_classes)
    np.testing.assert_array_equal(out.logits, out.step_logits[:, -1])
    assert out.actions.shape == (b, k, 4) and out.patch_offsets.shape == (b, k, 2)
    assert out.dist_params.shape == (b, g)
    np.testing.assert_allclose(np.asarray(out.dist_params).sum(-1), 1.0, rtol=1e-5)
    idx = np.asarray(out.frame_indices)
    assert idx.shape == (b, k) and (np.diff(idx, axis=1) > 0).all() and idx.max() < n
    # The frames follow the temporal weights at u = 0.5 (rl.quantile_frame_indices).
    from adafocus_jax import rl
    np.testing.assert_array_equal(idx, rl.quantile_frame_indices(out.dist_params, n, k))
    # Boxes: side 16…64 px at S = 64, so the top-left lies in [0, 64 − 16].
    assert np.asarray(out.patch_offsets).min() >= 0 and np.asarray(out.patch_offsets).max() <= 48
    # The centre box of side P sits at (S − P) / 2 = 16.
    np.testing.assert_array_equal(np.asarray(center.patch_offsets), 16)
    with pytest.raises(ValueError, match="patch_mode must be one of"):
        model.apply(variables, x, patch_mode="sample")
    with pytest.raises(ValueError, match="frames must be"):
        model.apply(variables, x[:, :5])
    with pytest.raises(ValueError, match="no focus_frames"):
        model.apply(variables, x, x)



def test_uni_train_outputs_shapes():
    config, model, _ = uni_setup()
    c = config.model
    b, g, k = 2, c.num_glance_frames, c.num_focus_frames
    outputs = _train_pass()[1]
    assert outputs["local"]["logits"].shape == (2 * b, k, c.num_classes)
    assert outputs["step_logits"].shape == (2 * b, g + k, c.num_classes)
    assert outputs["temporal_logits"].shape == outputs["spatial_logits"].shape == \
        (b, c.num_classes)
    assert outputs["proxy_actions"].shape == (b, g, 4)
    # Random boxes have side P: scale (P − lo) / (hi − lo) = (32 − 16) / 48.
    np.testing.assert_allclose(np.asarray(outputs["random_actions"])[..., 2:], 16 / 48, rtol=1e-6)
    gi = np.asarray(outputs["glance_indices"])
    assert ((gi - 2 * np.arange(g) >= 0) & (gi - 2 * np.arange(g) < 2)).all()
    assert (np.diff(np.asarray(outputs["frame_indices"]), axis=1) > 0).all()


# --------------------------------------------------------------------------------------------------
# The loss.


def test_uni_loss_terms_hand_computed():
    # B = 1, C = 2, G = 2 glance frames, K = 2 local frames; label 1.
    outputs = {
        "step_logits": jnp.asarray([[[0.0, 1.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]],    # policy
                                    [[1.0, 1.0], [0.0, 3.0], [0.0, 1.0], [2.0, 2.0]]]),  # random
        "glance": {"logits": jnp.asarray([[[0.5, -0.5], [0.0, 0.0]]])},
        "local": {"logits": jnp.asarray([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 0.0]]])},
        "temporal_logits": jnp.asarray([[1.0, 0.0]]),
        "spatial_logits": jnp.asarray([[0.0, 1.0]]),
        "proxy_actions": jnp.asarray([[[0.3, 0.7, 0.5, 0.8], [0.1, 0.2, 1.0, 0.0]]]),
        "weights": jnp.asarray([[0.25, 0.75]]),
    }
    y = 1
    terms = uni_lib.uni_loss_terms(outputs, jnp.array([y]), norm_ratio=0.75, kl_ratio=0.5)
    fused_p = (_ce([0, 1], y) + _ce([2, 0], y) + _ce([1, 0], y) + _ce([0, 0], y)) / 4
    fused_r = (_ce([1, 1], y) + _ce([0, 3], y) + _ce([0, 1], y) + _ce([2, 2], y)) / 4
    glob = (_ce([0.5, -0.5], y) + _ce([0, 0], y)) / 2
    local_p = (_ce([1, 0], y) + _ce([0, 0], y)) / 2
    local_r = (_ce([0, 2], y) + _ce([3, 0], y)) / 2
    temporal, spatial = _ce([1, 0], y), _ce([0, 1], y)
    scale = ((0.5 - 1) ** 2 + (0.8 - 1) ** 2 + 0.0 + 1.0) / 4          # (s − 1)² over 2 × 2
    kl = 0.25 * math.log(0.25 * 2) + 0.75 * math.log(0.75 * 2)        # KL(w ‖ uniform over K=2)
    expected = (0.5 * (fused_p + fused_r + local_p + local_r) + glob + temporal + spatial
                + 0.75 * scale + 0.5 * kl)
    np.testing.assert_allclose(float(terms["scale"][0]), 0.3225, rtol=1e-6)
    np.testing.assert_allclose(float(terms["kl"][0]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(terms["fused_random"][0]), fused_r, rtol=1e-6)
    np.testing.assert_allclose(float(terms["total"][0]), expected, rtol=1e-6)


@functools.lru_cache(maxsize=None)
def _train_pass():
    """({term: {parameter path: |gradient| summed}} for each batch-mean loss term of `TERMS`,
    train_outputs), train mode: one jitted Jacobian (a VJP per term) with the outputs as aux."""
    config, model, variables = uni_setup()
    x = _frames(config, seed=3)
    labels = jnp.array([0, 1])

    def losses(params):
        outputs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                 x, None, True, method="train_outputs", mutable=["batch_stats"],
                                 rngs=RNGS)
        terms = uni_lib.uni_loss_terms(outputs, labels, norm_ratio=1.0)
        return jnp.stack([terms[t].mean() for t in TERMS]), outputs

    jac, outputs = jax.jit(jax.jacrev(losses, has_aux=True))(variables["params"])
    flat = [(jax.tree_util.keystr(p), np.abs(np.asarray(g)))
            for p, g in jax.tree_util.tree_leaves_with_path(jac)]
    return {t: {path: float(g[i].sum()) for path, g in flat} for i, t in enumerate(TERMS)}, \
        outputs


def _term_grads(term):
    return _train_pass()[0][term]


def _norm(grads, prefix):
    return sum(v for k, v in grads.items() if k.startswith(prefix))


def test_which_terms_train_which_modules():
    # The local network's patches come from detached actions and integer frame choices: its
    # terms never reach the policy (the official "detached crop").
    g = _term_grads("local_policy")
    assert _norm(g, "['focuser']") > 0
    assert _norm(g, "['policy']") == 0 and _norm(g, "['glancer']") == 0
    g = _term_grads("fused_policy")
    assert _norm(g, "['classifier']") > 0 and _norm(g, "['focuser']") > 0
    assert _norm(g, "['glancer']") > 0 and _norm(g, "['policy']") == 0
    # The proxy trains the spatial policy and its head, not the glancer (detached maps).
    g = _term_grads("spatial")
    assert _norm(g, "['policy']['spatial']") > 0 and _norm(g, "['policy']['aux_fc']") > 0
    assert _norm(g, "['glancer']") == 0 and _norm(g, "['policy']['temporal']") == 0
    # The Monte-Carlo surrogate trains the temporal policy and the glance network and head.
    g = _term_grads("temporal")
    assert _norm(g, "['policy']['temporal']") > 0 and _norm(g, "['glancer']['classifier']") > 0
    assert _norm(g, "['policy']['spatial']") == 0 and _norm(g, "['focuser']") == 0
    # The scale regulariser reaches only the spatial policy.
    g = _term_grads("scale")
    assert _norm(g, "['policy']['spatial']") > 0
    assert sum(g.values()) == _norm(g, "['policy']['spatial']")


# --------------------------------------------------------------------------------------------------
# The recipe.


def test_uni_recipes_and_hyper_parameters():
    expected = {  # official README commands: base lr, batch, weight decay, norm_ratio, fc_dropout
        "actnet": (0.002, 32, 2e-4, 1.0, 0.2),
        "fcvid": (0.004, 64, 1e-4, 1.0, 0.2),
        "minik": (0.003, 48, 1e-4, 0.75, 0.1)}
    for dataset, (lr, batch, wd, norm, fc_dropout) in expected.items():
        config = _load_config(dataset, "mode=uni")
        c = config.model
        assert c.version == "uni" and stages.stage_names(config) == ["uni"]
        assert (c.num_candidate_frames, c.num_glance_frames, c.num_focus_frames) == (48, 16, 16)
        assert config.data.num_glance_frames == 48 and not config.data.separate_focus_frames
        assert c.glancer.dropout == c.focuser.dropout == fc_dropout
        assert c.classifier.dropout == 0.2 and c.classifier.hidden_dim == 4096
        assert tuple(c.policy.side_range) == (96.0, 224.0) and c.policy.mc_samples == 128
        recipe = stages.resolve_recipe(config, "uni")
        assert recipe.loss == "uni" and recipe.num_epochs == 50 and not recipe.extra_epoch
        assert recipe.batch_size == batch and recipe.weight_decay == wd
        assert recipe.optimizer == "sgd" and recipe.lr_schedule == "cosine"
        assert all(recipe.modes.values()) and recipe.uni["norm_ratio"] == norm
        assert recipe.uni["kl_ratio"] == 0.0
        # global_lr_ratio 0.5, stn_lr_ratio = temporal_lr_ratio 0.2, local 1, classifier 20;
        # aux_fc at the glance ratio.
        for module, mult in (("glancer", 0.5), ("policy", 0.2), ("focuser", 1.0),
                             ("classifier", 20.0)):
            assert recipe.lr[module] == pytest.approx(lr * mult), (dataset, module)
        assert recipe.lr_groups == {"policy/aux_fc": pytest.approx(lr * 0.5)}
        assert config.train.handoff == "best"
    with pytest.raises(ValueError, match="policy=.*V1 option"):
        _load_config("actnet", "mode=uni,policy=discrete")


def test_lr_groups_give_a_sub_module_its_own_rate():
    config = tiny_uni_config()
    config.stages.uni.lr_groups = "policy/aux_fc=0.5"
    recipe = stages.resolve_recipe(config, "uni")
    params = {"policy": {"aux_fc": {"w": jnp.ones(2)}, "spatial": {"w": jnp.ones(2)}},
              "glancer": {"w": jnp.ones(2)}}
    labels = stages.param_labels(params, recipe)
    assert labels["policy"]["aux_fc"]["w"] == "policy/aux_fc"
    assert labels["policy"]["spatial"]["w"] == "policy" and labels["glancer"]["w"] == "glancer"
    tx, schedules = stages.make_optimizer(recipe, labels, num_steps=10)
    assert float(schedules["policy/aux_fc"](0)) == pytest.approx(0.5)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    # First SGD step: −lr · (g + wd · p), lr at step 0 = the base rate of each group.
    wd = recipe.weight_decay
    np.testing.assert_allclose(updates["policy"]["aux_fc"]["w"], -0.5 * (2.0 + wd), rtol=1e-6)
    np.testing.assert_allclose(updates["policy"]["spatial"]["w"],
                               -recipe.lr["policy"] * (2.0 + wd), rtol=1e-6)
    for bad in ("aux_fc=0.1", "policy/aux_fc=-1", "policy/aux_fc=x", "nowhere/aux=0.1"):
        config.stages.uni.lr_groups = bad
        with pytest.raises(ValueError, match="lr_groups"):
            stages.resolve_recipe(config, "uni")
    config.stages.uni.lr_groups = "policy/nothing=0.1"
    with pytest.raises(ValueError, match="holds no parameter"):
        stages.param_labels(params, stages.resolve_recipe(config, "uni"))


def test_uni_recipe_needs_the_uni_model():
    config = tiny_uni_config()
    config.model = models.tiny_model_config("actnet")
    with pytest.raises(ValueError, match="loss 'uni' needs config.model.version = 'uni'"):
        stages.resolve_recipe(config, "uni")


# --------------------------------------------------------------------------------------------------
# FLOPs and one sharded step.


def test_uni_gflops_match_paper():
    # The paper's convention (MACs of convs and linear layers, one clip): ActivityNet P = 128,
    # 16 glance frames at 224² + 16 patches of 128² → 27.2 GFLOPs.
    from adafocus_jax import flops
    model = models.create_model(models.uni_model_config("actnet", 128))
    total, per_module = flops.count_gflops(model)
    assert abs(total - 27.2) <= 0.1, (total, per_module)
    assert per_module["focuser"] > per_module["glancer"] > per_module["policy"] > \
        per_module["classifier"] > 0


def test_one_uni_step_on_8_devices():
    assert jax.device_count() == 8
    config, model, variables = uni_setup()
    mesh = parallel.make_mesh()
    recipe = stages.resolve_recipe(config, "uni")
    state, schedules = train.create_train_state(variables["params"], variables["batch_stats"],
                                                recipe, 4)
    state = parallel.replicate(state, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=5), mesh,
                                donate=False)
    batch = host_batch(config)
    assert batch["glance"].shape[1] == config.model.num_candidate_frames and "focus" not in batch
    new_state, metrics = step(state, parallel.shard_batch(batch, mesh))
    metrics = to_host(metrics)
    assert np.isfinite(metrics["loss"]) and int(new_state.step) == 1
    assert metrics["lr_policy/aux_fc"] == pytest.approx(recipe.lr_groups["policy/aux_fc"])
    before, after = to_host(state), to_host(new_state)
    for module in ("glancer", "focuser", "policy", "classifier"):
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
