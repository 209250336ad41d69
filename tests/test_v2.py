"""AdaFocusV2: heads, the frame order, the loss terms, stop-gradients, the recipe, one sharded step."""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import models, parallel, stages, train
from adafocus_jax import v2 as v2_lib
from train_helpers import ROOT, config_module, host_batch, tiny_config, to_host


def _load_config(name: str, arg: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny_v2_config(dataset: str):
    """configs/tiny.py's network and data turned into AdaFocusV2 with tiny heads, one stage."""
    config = tiny_config(dataset)
    models.to_v2_model_config(config.model)
    config.model.policy.hidden_dims = (16,) if config.model.policy.per_frame else (16, 8)
    config.model.classifier.hidden_dim = 16
    config.stages = stages.v2_stages(config_module(dataset).V2)
    config.stages.v2.batch_size = 8
    config.stages.v2.num_epochs = 1
    config.run_stages = "v2"
    return config


@functools.lru_cache(maxsize=None)
def v2_setup(dataset: str):
    """(config, model, variables): random weights drawn on the abstract shapes (no init compile),
    BN running statistics randomised so eval mode is not the identity."""
    config = tiny_v2_config(dataset)
    model = models.create_model(config)
    glance, focus = models.dummy_inputs(config.model)
    shapes = jax.eval_shape(lambda: model.init(
        {"params": jax.random.key(0), "patches": jax.random.key(1), "dropout": jax.random.key(2)},
        glance, focus))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "'var'" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if "'scale'" in name:
            return rng.uniform(0.8, 1.2, leaf.shape).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 1
        return (rng.normal(size=leaf.shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(fill, dict(shapes))
    return config, model, variables


def _frames(config, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    c = config.model
    s = c.input_size
    glance = rng.normal(size=(batch, c.num_glance_frames, s, s, 3)).astype(np.float32)
    focus = rng.normal(size=(batch, c.num_focus_frames, s, s, 3)).astype(np.float32)
    return jnp.asarray(glance), jnp.asarray(focus)


def test_coarse_to_fine_order_hand_computed():
    # middle, first, last; then the midpoints of 2, 4, 8 intervals of floor(linspace(0, 15, q+1)).
    assert models.coarse_to_fine_order(16) == [7, 0, 15, 3, 11, 1, 5, 9, 13, 2, 4, 6, 8, 10, 12,
                                               14]
    assert models.coarse_to_fine_order(4) == [1, 0, 3, 2]
    for t in (3, 5, 8, 12):
        assert sorted(models.coarse_to_fine_order(t)) == list(range(t))


@pytest.mark.parametrize("dataset", ["actnet", "sthv2"])
def test_v2_heads_shapes(dataset):
    config, model, variables = v2_setup(dataset)
    c = config.model
    params = variables["params"]
    k, fg = c.num_classes, c.glancer.last_channel
    fl = c.focuser.width * 32
    assert params["glancer"]["classifier"]["kernel"].shape == (fg, k)
    assert params["focuser"]["fc"]["kernel"].shape == (fl, k)
    policy = params["policy"]
    assert policy["encoder_conv"]["kernel"].shape[-1] == 64
    if dataset == "actnet":
        # ActivityNet family: GRU policy, FrameExit classifier with one head per frame.
        assert "gru" in policy and policy["actor"]["kernel"].shape == (16, 2)
        assert policy["encoder_conv"]["kernel"].shape == (1, 1, fg, 64)
        assert params["classifier"]["mlp"]["kernel"].shape == (fg + fl, 16)
        assert sorted(params["classifier"]) == sorted(
            ["mlp", "mlp_bn"] + [f"head{t}" for t in range(c.num_glance_frames)])
        assert "reg_classifier" not in params["glancer"] and "reg_fc" not in params["focuser"]
    else:
        # Sth-Sth: MLP policy on the concatenated maps, reg heads, no classifier parameters.
        assert "gru" not in policy and policy["actor"]["kernel"].shape == (8, 2)
        assert policy["encoder_conv"]["kernel"].shape == (1, 1, c.num_glance_frames * fg, 64)
        assert params["glancer"]["reg_classifier"]["kernel"].shape == (fg, k)
        assert params["focuser"]["reg_fc"]["kernel"].shape == (fl, k)
        assert "classifier" not in params
    glance, focus = _frames(config)
    steps = c.num_glance_frames if dataset == "actnet" else 1
    out = model.apply(variables, glance, focus)
    assert out.logits.shape == (2, k) and out.step_logits.shape == (2, steps, k)
    assert out.actions.shape == (2, steps, 2)
    assert bool(jnp.all((out.actions > 0) & (out.actions < 1)))
    np.testing.assert_array_equal(out.patch_offsets, np.floor(
        np.asarray(out.actions) * (c.input_size - c.patch_size)).astype(np.int32))
    outputs, _ = model.apply(variables, glance, focus, True, method="train_outputs",
                             mutable=["batch_stats"],
                             rngs={"patches": jax.random.key(1), "dropout": jax.random.key(2)})
    assert outputs["local"]["pooled"].shape == (4, c.num_focus_frames, fl)
    assert outputs["step_logits"].shape == (4, steps, k)
    assert outputs["random_actions"].shape == (2, steps, 2)


def _ce(logits, label):
    logits = np.asarray(logits, np.float64)
    return float(np.log(np.sum(np.exp(logits))) - logits[label])


def test_loss_terms_hand_computed():
    # B = 1, K = 2, T = 2; ActivityNet terms: per-frame CE averaged over frames.
    step = np.array([[[0.0, 1.0], [2.0, 0.0]],       # policy branch
                     [[1.0, 1.0], [0.0, 3.0]]])      # random branch
    glance_logits = np.array([[[0.5, -0.5], [0.0, 0.0]]])
    local_logits = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 0.0]]])
    outputs = {"step_logits": jnp.asarray(step), "logits": jnp.asarray(step[:, -1]),
               "glance": {"logits": jnp.asarray(glance_logits)},
               "local": {"logits": jnp.asarray(local_logits)}}
    y = 1
    terms = v2_lib.v2_loss_terms(outputs, jnp.array([y]), frame_exit=True)
    fused_p = (_ce([0, 1], y) + _ce([2, 0], y)) / 2          # 0.3133 + 2.1269
    fused_r = (_ce([1, 1], y) + _ce([0, 3], y)) / 2
    glob = (_ce([0.5, -0.5], y) + _ce([0, 0], y)) / 2
    local_p = (_ce([1, 0], y) + _ce([0, 0], y)) / 2
    local_r = (_ce([0, 2], y) + _ce([3, 0], y)) / 2
    expected = ((fused_p + glob + local_p) + (fused_r + glob + local_r)) / 2   # official (l1+l2)/2
    np.testing.assert_allclose(float(terms["total"][0]), expected, rtol=1e-6)
    np.testing.assert_allclose(float(terms["fused_random"][0]), fused_r, rtol=1e-6)
    # Sth-Sth terms: CE of the fused logits and of the frame-averaged reg logits.
    outputs = {"logits": jnp.asarray([[0.0, 1.0], [2.0, 0.0]]),
               "glance": {"reg_logits": jnp.asarray([[[1.0, 0.0], [3.0, 0.0]]])},
               "local": {"reg_logits": jnp.asarray([[[0.0, 0.0]], [[0.0, 4.0]]])}}
    terms = v2_lib.v2_loss_terms(outputs, jnp.array([0]), frame_exit=False)
    expected = ((_ce([0, 1], 0) + _ce([2, 0], 0) + _ce([0, 0], 0) + _ce([0, 4], 0)) / 2
                + _ce([2, 0], 0))
    np.testing.assert_allclose(float(terms["total"][0]), expected, rtol=1e-6)


def _term_grads(dataset, terms):
    """Gradient of each (batch-mean) loss term in `terms` w.r.t. every parameter, train mode:
    {term: {parameter path: sum |grad|}}. One jitted reverse-mode Jacobian for all the terms
    (eager `jax.grad` dispatches op by op and took ~30 s per term)."""
    config, model, variables = v2_setup(dataset)
    glance, focus = _frames(config, seed=3)
    labels = jnp.array([0, 1])

    def losses(params):
        outputs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                 glance, focus, True, method="train_outputs",
                                 mutable=["batch_stats"],
                                 rngs={"patches": jax.random.key(1), "dropout": jax.random.key(2)})
        values = v2_lib.v2_loss_terms(outputs, labels, dataset == "actnet")
        return jnp.stack([values[term].mean() for term in terms])

    jacobian = jax.jit(jax.jacrev(losses))(variables["params"])
    leaves = [(jax.tree_util.keystr(p), np.abs(np.asarray(g)))
              for p, g in jax.tree_util.tree_leaves_with_path(jacobian)]
    return {term: {path: float(g[i].sum()) for path, g in leaves}
            for i, term in enumerate(terms)}


def _norm(grads, prefix):
    return sum(v for k, v in grads.items() if k.startswith(prefix))


def test_gradients_reach_the_policy_through_the_crop_and_respect_detaches():
    # Sth-Sth: the local "reg" term trains the focuser trunk and, through the crop, the policy;
    # the glancer gets nothing from it (the policy reads detached glance maps).
    grads = _term_grads("sthv2", ("local_policy", "fused_policy", "local_random"))
    g = grads["local_policy"]
    assert _norm(g, "['policy']") > 0
    assert _norm(g, "['focuser']['layer1_0']") > 0
    assert _norm(g, "['glancer']") == 0
    # The fused logits come from heads on detached features: they train only those heads.
    g = grads["fused_policy"]
    assert _norm(g, "['focuser']['fc']") > 0 and _norm(g, "['glancer']['classifier']") > 0
    trunk = {k: v for k, v in g.items() if not k.startswith(("['focuser']['fc']",
                                                             "['glancer']['classifier']"))}
    assert sum(trunk.values()) == 0, {k: v for k, v in trunk.items() if v}
    # Random patches do not depend on the policy.
    assert _norm(grads["local_random"], "['policy']") == 0


def test_v2_recipes_and_hyper_parameters():
    expected = {  # official train.sh / README: base lr x (policy, glancer, focuser, classifier)
        "actnet": (0.002, (0.1, 0.5, 1.0, 5.0), 32, 1e-4),
        "fcvid": (0.002, (0.1, 0.5, 1.0, 5.0), 32, 1e-4),
        "minik": (0.003, (0.1, 0.5, 1.0, 5.0), 48, 1e-4),
        "sthv1": (0.01, (0.01, 0.5, 1.0, 1.0), 32, 5e-4),
        "sthv2": (0.01, (0.01, 0.5, 1.0, 1.0), 32, 5e-4)}
    for dataset, (lr, mult, batch, wd) in expected.items():
        config = _load_config(dataset, "mode=v2")
        assert config.model.version == "v2" and stages.stage_names(config) == ["v2"]
        recipe = stages.resolve_recipe(config, "v2")
        assert recipe.loss == "v2" and recipe.num_epochs == 50 and recipe.batch_size == batch
        assert recipe.optimizer == "sgd" and recipe.lr_schedule == "cosine"
        assert recipe.weight_decay == wd and all(recipe.modes.values())
        for module, m in zip(("policy", "glancer", "focuser", "classifier"), mult):
            assert recipe.lr[module] == pytest.approx(lr * m), (dataset, module)
        sth = dataset.startswith("sth")
        assert recipe.clip_grad_norm == (20.0 if sth else 0.0)
        assert config.model.classifier.kind == ("logit_sum" if sth else "frame_exit")
        assert config.model.frame_order == ("natural" if sth else "coarse_to_fine")
    assert stages.resolve_recipe(_load_config("sthv2", ""), "stage1").loss == "ce"   # v1 default
    with pytest.raises(ValueError, match="mode='v3'"):
        _load_config("actnet", "mode=v3")
    synthetic = _load_config("synthetic", "quick,mode=v2")
    assert stages.stage_names(synthetic)[-1] == "v2" and synthetic.model.version == "v2"


def test_clip_grad_norm_clips_the_global_norm():
    config = tiny_v2_config("sthv2")
    recipe = stages.resolve_recipe(config, "v2")
    params = {"policy": {"w": jnp.ones(4)}, "focuser": {"w": jnp.ones(4)}}
    labels = stages.param_labels(params, recipe)
    tx, _ = stages.make_optimizer(recipe, labels, num_steps=10)
    grads = {"policy": {"w": jnp.full(4, 30.0)}, "focuser": {"w": jnp.full(4, 40.0)}}
    # momentum buffer = clipped gradient + wd * param at the first step; lr at step 0 = base.
    updates, _ = tx.update(grads, tx.init(params), params)
    scale = 20.0 / float(np.sqrt(4 * 30.0 ** 2 + 4 * 40.0 ** 2))
    np.testing.assert_allclose(
        updates["focuser"]["w"], -recipe.lr["focuser"] * (40.0 * scale + recipe.weight_decay),
        rtol=1e-5)


@pytest.mark.parametrize("dataset", ["actnet", "sthv2"])
def test_one_v2_step_on_8_devices(dataset):
    assert jax.device_count() == 8
    config, model, variables = v2_setup(dataset)
    mesh = parallel.make_mesh()
    recipe = stages.resolve_recipe(config, "v2")
    state, schedules = train.create_train_state(variables["params"], variables["batch_stats"],
                                                recipe, 4)
    state = parallel.replicate(state, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=5), mesh,
                                donate=False)
    new_state, metrics = step(state, parallel.shard_batch(host_batch(config), mesh))
    metrics = to_host(metrics)
    assert np.isfinite(metrics["loss"]) and int(new_state.step) == 1
    before, after = to_host(state), to_host(new_state)
    for module in ("glancer", "focuser", "policy"):
        assert metrics[f"grad_norm_{module}"] > 0, module
        assert any(not np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(before.params[module]), jax.tree.leaves(after.params[module])))
        assert any(not np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(before.batch_stats[module]),
            jax.tree.leaves(after.batch_stats[module])))
    replicated = parallel.replicated(mesh)
    for leaf in jax.tree.leaves(new_state.params):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)


# The V2 papers' GFLOPs (adafocus_family.md §1.2): ActivityNet 17.6 / 27.0 / 39.0 at P = 96 / 128 /
# 160; Sth-Sth 23.5 / 27.5 / 33.7 at P = 144 / 160 / 176 (8 glance + 12 focus frames).
V2_PAPER_GFLOPS = {("actnet", 96): 17.6, ("actnet", 128): 27.0, ("actnet", 160): 39.0,
                   ("sthv2", 144): 23.5, ("sthv2", 160): 27.5, ("sthv2", 176): 33.7}


@pytest.mark.parametrize("dataset,patch", sorted(V2_PAPER_GFLOPS))
def test_v2_gflops_match_paper(dataset, patch):
    from adafocus_jax import flops
    model = models.create_model(models.v2_model_config(dataset, patch))
    total, per_module = flops.count_gflops(model)
    assert abs(total - V2_PAPER_GFLOPS[(dataset, patch)]) <= 0.1, (total, per_module)
    assert per_module["focuser"] > per_module["glancer"] > per_module["policy"]


# --------------------------------------------------------------------------------------------------
# Released V2 checkpoint layouts: convert with the safe loader, compare with the PyTorch reference.


@pytest.mark.parametrize("dataset", ["actnet", "sthv2"])
def test_v2_float64_matches_torch_float64(dataset, tmp_path):
    """The float32 logits differ from the reference by up to ~1e-3 of their scale (the test
    below); in float64 on both sides they agree to ~1e-6 and the locations to 1e-12, so that
    difference is float32 rounding amplified by the tiny random networks, not another function
    (the reference's own float32 and float64 logits differ by as much)."""
    torch = pytest.importorskip("torch")
    import torch_reference as tr
    from adafocus_jax import convert

    config = tiny_v2_config(dataset)
    c = config.model
    reference = tr.build_v2(c, seed=3)
    path = str(tmp_path / "ckpt.best.pth.tar")
    torch.save(tr.v2_file(reference), path)
    variables = convert.load_torch_checkpoint(path, config)
    gen = torch.Generator().manual_seed(7)
    glance = tr.random_frames(2, c.num_glance_frames, c.input_size, gen).double()
    focus = tr.random_frames(2, c.num_focus_frames, c.input_size, gen).double()
    nhwc = lambda x: jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy())  # noqa: E731
    reference = reference.double()
    with pytest.raises(ValueError, match="64-bit JAX"):
        c64 = config.model.copy_and_resolve_references()
        c64.dtype = "float64"
        models.create_model(c64)
    with jax.enable_x64(True):
        c.dtype = "float64"
        model = models.create_model(c)
        variables = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
        with torch.no_grad():
            if dataset == "actnet":
                want = reference(glance[:, tr.v2_frame_order(c.num_glance_frames)])
                out = model.apply(variables, nhwc(glance))
            else:
                want = reference(glance, focus)
                out = model.apply(variables, nhwc(glance), nhwc(focus))
        assert out.logits.dtype == jnp.float64
        np.testing.assert_allclose(out.actions, want["actions"].numpy(), atol=1e-12)
        scale = max(1.0, float(np.abs(want["logits"].numpy()).max()))
        assert float(np.abs(np.asarray(out.logits) - want["logits"].numpy()).max()) <= 1e-5 * scale


@pytest.mark.parametrize("dataset", ["actnet", "sthv2"])
def test_v2_checkpoint_converts_and_matches_torch_reference(dataset, tmp_path):
    torch = pytest.importorskip("torch")
    import torch_reference as tr
    from adafocus_jax import convert

    config = tiny_v2_config(dataset)
    c = config.model
    reference = tr.build_v2(c, seed=3)
    path = str(tmp_path / "ckpt.best.pth.tar")
    torch.save(tr.v2_file(reference), path)
    info = convert.inspect_torch_checkpoint(path)
    assert info.kind == f"v2_{'actnet' if dataset == 'actnet' else 'sthsth'}"
    variables = convert.load_torch_checkpoint(path, config)
    model = models.create_model(config)

    gen = torch.Generator().manual_seed(7)
    glance = tr.random_frames(2, c.num_glance_frames, c.input_size, gen)
    focus = tr.random_frames(2, c.num_focus_frames, c.input_size, gen)
    nhwc = lambda x: jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy())  # noqa: E731
    with torch.no_grad():
        if dataset == "actnet":
            order = tr.v2_frame_order(c.num_glance_frames)
            assert order == models.coarse_to_fine_order(c.num_glance_frames)
            want = reference(glance[:, order])
            out = model.apply(variables, nhwc(glance))
        else:
            want = reference(glance, focus)
            out = model.apply(variables, nhwc(glance), nhwc(focus))
    # The patch boxes: the same locations, hence the same float top-left corners and offsets.
    np.testing.assert_allclose(out.actions, want["actions"].numpy(), atol=1e-5)
    top_left = np.asarray(out.actions) * (c.input_size - c.patch_size)
    np.testing.assert_allclose(top_left, want["top_left"].numpy(),
                               atol=1e-5 * (c.input_size - c.patch_size))
    assert np.ptp(top_left) > 1.0   # the boxes really differ between videos / frames
    np.testing.assert_array_equal(out.patch_offsets, np.floor(want["top_left"].numpy()))
    # Logits: within 1e-3 of their scale (measured 2.7e-4 on the ActivityNet tiny model). Not the
    # crop: a float64 reference crop moves the reference by 4e-5 only; the glance features already
    # differ by 3e-5 (float32 summation order, as in tests/test_parity.py) and the tiny calibrated
    # random FrameExit MLP + BN1d amplifies that.
    scale = max(1.0, float(np.abs(want["logits"].numpy()).max()))
    assert float(np.abs(np.asarray(out.logits) - want["logits"].numpy()).max()) <= 1e-3 * scale
    if dataset == "actnet":
        steps = want["step_logits"].numpy()
        assert float(np.abs(np.asarray(out.step_logits) - steps).max()) <= 1e-3 * max(
            1.0, float(np.abs(steps).max()))
    # A V1 config refuses the V2 file with a clear message.
    v1 = tiny_config(dataset)
    with pytest.raises(convert.CheckpointError, match="AdaFocusV2 checkpoint"):
        convert.load_torch_checkpoint(path, v1)


def test_v2_converted_variables_round_trip(tmp_path):
    from adafocus_jax import convert
    config, model, variables = v2_setup("sthv2")
    convert.save_variables(variables, str(tmp_path / "converted"), {"kind": "v2_sthsth"})
    back = convert.load_converted(str(tmp_path / "converted"))
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
