"""Stage recipes as data: resolution, parameter groups, schedules, restores (no model compile)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import stages, train
from train_helpers import config_module as _module, tiny_config


def _params():
    """A params tree shaped like the model's top level (tiny leaves)."""
    return {"glancer": {"conv": {"kernel": jnp.ones((2, 2))}},
            "focuser": {"conv1": {"kernel": jnp.ones((3,))}, "layer1_0": {"bn": {"scale": jnp.ones((3,))}}},
            "policy": {"actor": {"kernel": jnp.ones((2,))}},
            "classifier": {"fc": {"kernel": jnp.ones((4,)), "bias": jnp.zeros((4,))}}}


def test_recipes_resolve_for_both_families():
    sth, anet = tiny_config("sthv2"), tiny_config("actnet")
    assert stages.stage_names(sth) == ["stage1", "stage2", "stage3"]
    assert stages.stage_names(anet) == ["stage0_glancer", "stage0_focuser", "stage1", "stage2",
                                        "stage3"]
    r = stages.resolve_recipe(sth, "stage2")
    assert (r.loss, r.patch_mode, r.optimizer, r.trained_modules) == ("ppo", "sample", "adam",
                                                                      ("policy",))
    assert r.restore == {"glancer": "stage1", "focuser": "stage1", "classifier": "stage1"}
    r = stages.resolve_recipe(anet, "stage1")
    assert (r.loss, r.modes["focuser"], r.modes["glancer"]) == ("step_ce", True, False)


def _load(name, arg=None):
    return _module(name).get_config(arg)


def test_stage_order_is_the_recipes_and_a_user_stage_runs_where_listed():
    """ml_collections sorts config.stages; the order comes from config.stage_order."""
    anet = tiny_config("actnet")
    assert list(anet.stages.keys())[:2] == ["stage0_focuser", "stage0_glancer"]   # sorted
    assert stages.stage_names(anet)[:2] == ["stage0_glancer", "stage0_focuser"]
    # A user stage "finetune" (sorts first) runs where config.stage_order puts it: last.
    anet.stages.finetune = copy.deepcopy(anet.stages.stage3)
    with pytest.raises(ValueError, match=r"config.stage_order=.*missing \['finetune'\]"):
        stages.stage_names(anet)
    anet.stage_order += ",finetune"
    assert stages.stage_names(anet)[-1] == "finetune"
    # The user override picks stages, in the recipe's order.
    anet.run_stages = "stage2,finetune"
    assert stages.stage_names(anet) == ["stage2", "finetune"]
    anet.run_stages = "finetune,stage2"
    with pytest.raises(ValueError, match=r"config.run_stages='finetune,stage2': stages must follow"):
        stages.stage_names(anet)
    anet.run_stages = "stage2,stage2"
    with pytest.raises(ValueError, match="lists a stage twice"):
        stages.stage_names(anet)
    anet.stage_order = "stage0_glancer,stage1,stage9"
    with pytest.raises(ValueError, match=r"config.stage_order=.*unknown \['stage9'\]"):
        stages.stage_names(anet)


def test_stage_seeds_depend_on_the_stage_name_only():
    """Adding, renaming or reordering other stages, or choosing run_stages, never changes a
    stage's seed; different stages get different seeds."""
    import zlib
    anet = tiny_config("actnet")
    before = {n: stages.stage_seed(anet, n) for n in stages.stage_names(anet)}
    assert len(set(before.values())) == len(before)
    assert before["stage1"] == (1007 + zlib.crc32(b"stage1")) % 2 ** 31
    # Add a stage before stage1 and rename stage0_focuser.
    anet.stages.aaa_warmup = copy.deepcopy(anet.stages.stage1)
    anet.stages.stage0_local = anet.stages.stage0_focuser
    del anet.stages["stage0_focuser"]
    anet.stage_order = "aaa_warmup,stage0_glancer,stage0_local,stage1,stage2,stage3"
    anet.run_stages = "stage1,stage3"
    for name in ("stage0_glancer", "stage1", "stage2", "stage3"):
        assert stages.stage_seed(anet, name) == before[name], name
    anet.seed = 1008
    assert stages.stage_seed(anet, "stage1") != before["stage1"]


def test_official_configs_refuse_a_random_init_and_hand_on_the_best():
    """ActivityNet / FCVID / Mini-K hand on their best-validated variables (official); every
    official config refuses to start when a stage restores from an empty config.init_from, unless
    config.allow_random_init (which the tiny and synthetic configs set)."""
    for name in ("actnet", "fcvid", "minik", "sthv1", "sthv2"):
        config = _load(name)
        assert config.train.handoff == ("last" if name.startswith("sth") else "best"), name
        assert not config.allow_random_init
        first = stages.stage_names(config)[0]
        with pytest.raises(ValueError, match=rf"config.init_from is empty.*'{first}: glancer'.*"
                                             r"--config.allow_random_init=True"):
            stages.check_init_from(config, stages.stage_names(config))
        # Stages that restore only from earlier stages need no init_from.
        stages.check_init_from(config, ["stage2", "stage3"])
        config.init_from = "/some/converted/weights"
        stages.check_init_from(config, stages.stage_names(config))
    assert tiny_config("actnet").allow_random_init and _load("synthetic").allow_random_init
    stages.check_init_from(tiny_config("sthv2"), ["stage1"])

    # restore_modules itself (e.g. a stage run through run_stage) refuses too.
    config = _load("sthv2")
    recipe = stages.resolve_recipe(config, "stage1")
    variables = {"params": jax.tree.map(np.asarray, _params()), "batch_stats": {}}
    with pytest.raises(ValueError, match=r"stage stage1: restore glancer=init_from, but "
                                         r"config.init_from is empty.*allow_random_init"):
        train.restore_modules(variables, recipe, {}, config, "/nonexistent")
    config.allow_random_init = True
    out = train.restore_modules(variables, recipe, {}, config, "/nonexistent")
    np.testing.assert_array_equal(out["params"]["glancer"]["conv"]["kernel"], 1.0)


def test_sthsth_discrete_policy_option():
    """configs/sthv2.py:policy=discrete is the official categorical policy over a 5 x 5 grid."""
    for name in ("sthv1", "sthv2"):
        config = _load(name, "patch=144,policy=discrete")
        policy = config.model.policy
        assert (policy.kind, policy.grid_size, policy.per_frame, policy.encoder_bn) == (
            "categorical", 5, False, True)
        assert _load(name).model.policy.kind == "gaussian"
    with pytest.raises(ValueError, match=r"policy='grid'.*expected one of"):
        _load("sthv2", "policy=grid")
    with pytest.raises(ValueError, match="policy=discrete is an option of sthv1/sthv2 only"):
        _load("actnet", "policy=discrete")
    with pytest.raises(ValueError, match=r"unknown options \['colour'\]"):
        tiny_config("sthv2,colour=red")
    assert tiny_config("sthv2,policy=discrete").model.policy.kind == "categorical"


def test_bad_recipe_values_name_the_key():
    config = tiny_config("sthv2")
    config.stages.stage1.loss = "hinge"
    with pytest.raises(ValueError, match=r"config.stages.stage1.loss='hinge'"):
        stages.resolve_recipe(config, "stage1")
    config = tiny_config("sthv2")
    config.run_stages = "stage1,stage9"
    with pytest.raises(ValueError, match="unknown stage 'stage9'"):
        stages.stage_names(config)
    with pytest.raises(ValueError, match="bad item 'glancer'"):
        stages.parse_restore("glancer", "config.stages.x.restore")


def test_the_recipe_comes_from_the_config_file_or_is_an_error(tmp_path):
    """The package holds no default recipe: a config passes its tables, and a missing table or a
    V2 row with missing / unknown keys is named."""
    import ml_collections

    from adafocus_jax import config_lib, models
    config = ml_collections.ConfigDict(dict(dataset="actnet"))
    config.model = models.tiny_model_config("actnet")
    with pytest.raises(ValueError, match=r"actnet.*version v1\): pass stage_table="):
        stages.add_training_config(copy.deepcopy(config))
    models.to_v2_model_config(config.model)
    with pytest.raises(ValueError, match=r"version v2\): pass v2_hyper="):
        stages.add_training_config(copy.deepcopy(config), stage_table={"x": {}})
    actnet = _module("actnet")
    v2 = stages.add_training_config(copy.deepcopy(config), v2_hyper=actnet.V2).stages.v2
    # ActivityNet V2 (official README): lr 0.002 x (policy 0.1, classifier 5), 50 epochs, batch 32.
    assert (v2.lr.policy, v2.lr.classifier, v2.num_epochs, v2.batch_size) == (
        pytest.approx(2e-4), pytest.approx(0.01), 50, 32)
    with pytest.raises(ValueError, match=r"missing \['clip'\], unknown \['clip_norm'\]"):
        stages.v2_stages({**{k: v for k, v in actnet.V2.items() if k != "clip"}, "clip_norm": 1.0})
    # A config file that reuses another's tables finds it next to itself, wherever it is.
    (tmp_path / "mine.py").write_text("from adafocus_jax import config_lib\n"
                                      "BASE = config_lib.sibling_config(__file__, 'base')\n")
    (tmp_path / "base.py").write_text("STAGES = {'only': 1}\n")
    assert config_lib.load_config_module(str(tmp_path / "mine.py")).BASE.STAGES == {"only": 1}
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        config_lib.sibling_config(str(tmp_path / "mine.py"), "nowhere")


def test_frozen_modules_get_exactly_zero_updates_and_no_optimizer_state():
    config = tiny_config("sthv2")
    recipe = stages.resolve_recipe(config, "stage1")           # focuser + classifier, SGD
    params = _params()
    state, schedules = train.create_train_state(params, {}, recipe, num_steps=10)
    assert state.trained == ("focuser", "classifier")
    assert set(schedules) == {"focuser", "classifier"}
    sub = {m: params[m] for m in state.trained}
    grads = jax.tree.map(jnp.ones_like, sub)
    updates, _ = state.tx.update(grads, state.opt_state, sub)
    # SGD step 0: -lr * (g + wd * p) per trained module.
    expect = -(1.0 + 1e-4) * recipe.lr["classifier"]
    np.testing.assert_allclose(updates["classifier"]["fc"]["kernel"], expect, rtol=1e-6)
    # The optimizer never sees glancer/policy at all.
    paths = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_leaves_with_path(state.opt_state)]
    assert paths and not any("glancer" in p or "policy" in p for p in paths)
    assert any("classifier" in p for p in paths)


def test_released_lr_bug_labels_only_the_stem_conv():
    config = tiny_config("sthv2")
    config.reproduce_released_lr_bug = True
    recipe = stages.resolve_recipe(config, "stage1")
    labels = stages.param_labels(_params(), recipe)
    assert labels["focuser"]["conv1"]["kernel"] == "focuser"
    assert labels["focuser"]["layer1_0"]["bn"]["scale"] == "frozen"
    assert labels["classifier"]["fc"]["kernel"] == "frozen"
    stage3 = stages.resolve_recipe(config, "stage3")
    state, _ = train.create_train_state(_params(), {}, stage3, num_steps=4)
    assert state.trained == ()                                   # the released stage 3 trains nothing


def test_cosine_schedule_per_epoch_with_the_extra_zero_epoch():
    config = tiny_config("sthv2")
    config.stages.stage1.num_epochs = 2                         # 3 epochs run, the last at lr 0
    recipe = stages.resolve_recipe(config, "stage1")
    schedule = stages.epoch_lr_schedule(recipe, 0.1, num_steps=6)
    lrs = [float(schedule(s)) for s in range(6)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.05, 0.05, 0.0, 0.0], atol=1e-7)


def test_epoch_index_is_exact_integer_arithmetic_on_long_runs():
    """ActivityNet stage 1 (50 + 1 epochs, cosine) over 51 x 800,000 steps: the last step of epoch
    26 and the first of epoch 27 (step * 51 near 2^30, where float32 rounds by 64) land in their own
    epochs; on short runs the schedule is the float formula's, value for value."""
    config = tiny_config("actnet")
    config.stages.stage1.num_epochs = 50
    recipe = stages.resolve_recipe(config, "stage1")
    per_epoch = 800_000
    num_steps = per_epoch * recipe.total_epochs
    schedule = stages.epoch_lr_schedule(recipe, 0.05, num_steps)
    cosine = lambda e: 0.05 * 0.5 * (1 + np.cos(np.pi * e / 50))  # noqa: E731
    for step, epoch in ((27 * per_epoch - 1, 26), (27 * per_epoch, 27), (num_steps - 1, 50)):
        assert float(schedule(step)) == pytest.approx(cosine(epoch), rel=1e-6, abs=1e-9), (step, epoch)

    def float_schedule(step, total):   # the former float32 formula, op for op
        epoch = jnp.floor(jnp.asarray(step, jnp.float32) * recipe.total_epochs / total)
        return 0.05 * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / 50))

    for total in (6, 8, 51, 100):
        schedule = stages.epoch_lr_schedule(recipe, 0.05, total)
        assert [float(schedule(s)) for s in range(total)] == [
            float(float_schedule(s, total)) for s in range(total)]
    with pytest.raises(ValueError, match="overflows"):
        stages.epoch_lr_schedule(recipe, 0.05, 50_000_000)


def test_restore_modules_from_finished_stage_and_errors(tmp_path):
    config = tiny_config("sthv2")
    recipe = stages.resolve_recipe(config, "stage2")
    params = _params()
    variables = {"params": params, "batch_stats": {"focuser": {"bn": {"mean": np.zeros(3)}}}}
    source = copy.deepcopy(jax.tree.map(np.asarray, variables))
    source["params"]["focuser"]["conv1"]["kernel"] = np.full((3,), 7.0, np.float32)
    source["batch_stats"]["focuser"]["bn"]["mean"] = np.full(3, 2.0)
    out = train.restore_modules(jax.tree.map(np.asarray, variables), recipe,
                                {"stage1": source}, config, str(tmp_path))
    np.testing.assert_array_equal(out["params"]["focuser"]["conv1"]["kernel"], 7.0)
    np.testing.assert_array_equal(out["batch_stats"]["focuser"]["bn"]["mean"], 2.0)
    np.testing.assert_array_equal(out["params"]["policy"]["actor"]["kernel"], 1.0)  # not restored

    bad = copy.deepcopy(source)
    bad["params"]["classifier"]["fc"]["kernel"] = np.ones((5,), np.float32)
    with pytest.raises(ValueError, match=r"restore classifier=stage1.*wrong shape \['fc/kernel'\]"):
        train.restore_modules(variables, recipe, {"stage1": bad}, config, str(tmp_path))
    with pytest.raises(ValueError, match="stage 'stage1' was not run"):
        train.restore_modules(variables, recipe, {}, config, str(tmp_path))


def _write_stage(stage_dir, step, variables, results_steps=None):
    """A stage directory as run_stage leaves it: a checkpoint at `step`, optional results.json."""
    import json
    import os
    import orbax.checkpoint as ocp
    from adafocus_jax import checkpoint as ckpt_lib
    manager = ckpt_lib.make_manager(str(stage_dir), async_save=False)
    if step not in manager.all_steps():
        manager.save(step, args=ocp.args.StandardSave({"step": np.asarray(step, np.int32),
                                                       **variables, "opt_state": {}}), force=True)
    manager.wait_until_finished()
    manager.close()
    path = os.path.join(str(stage_dir), "results.json")
    if results_steps is None:
        if os.path.exists(path):
            os.remove(path)
    else:
        with open(path, "w") as f:
            json.dump({"stage": "stage1", "steps": results_steps}, f)


def test_restore_refuses_an_unfinished_stage_directory(tmp_path):
    """A later stage takes a module from `workdir/<source>` only when that stage finished: its
    results.json records the latest step, or the latest step is the stage length."""
    config = tiny_config("sthv2")                 # stage1: 32 videos / 8 = 4 steps x 2 epochs = 8
    recipe = stages.resolve_recipe(config, "stage2")
    init = {"params": jax.tree.map(np.asarray, _params()), "batch_stats": {}}
    trained = copy.deepcopy(init)
    trained["params"]["focuser"]["conv1"]["kernel"] = np.full((3,), 5.0, np.float32)
    stage_dir = tmp_path / "stage1"
    _write_stage(stage_dir, 3, trained)                         # interrupted at step 3 of 8
    with pytest.raises(ValueError, match=r"restore glancer=stage1: stage 'stage1' in .*stage1 is "
                                         r"unfinished: its latest checkpoint is step 3, expected 8 "
                                         r"steps .*Finish that stage first"):
        train.restore_modules(init, recipe, {}, config, str(tmp_path), num_train_examples=32)
    with pytest.raises(ValueError, match=r"step 3, expected a results.json marking it finished"):
        train.restore_modules(init, recipe, {}, config, str(tmp_path))
    # An earlier finished run of 2 steps, resumed with more steps and interrupted at step 3.
    _write_stage(stage_dir, 3, trained, results_steps=2)
    with pytest.raises(ValueError, match=r"step 3, .*records a finished run of 2 steps"):
        train.restore_modules(init, recipe, {}, config, str(tmp_path))
    # Finished: results.json says 3 steps, or (died before results.json) 3 == the stage length.
    _write_stage(stage_dir, 3, trained, results_steps=3)
    out = train.restore_modules(init, recipe, {}, config, str(tmp_path))
    np.testing.assert_array_equal(out["params"]["focuser"]["conv1"]["kernel"], 5.0)
    _write_stage(stage_dir, 3, trained)
    config.train.num_steps = 3
    out = train.restore_modules(init, recipe, {}, config, str(tmp_path), num_train_examples=32)
    np.testing.assert_array_equal(out["params"]["focuser"]["conv1"]["kernel"], 5.0)


def test_masked_return_normalisation_ignores_padding():
    from adafocus_jax import rl
    returns = jnp.array([[1.0, 2.0], [3.0, 4.0], [100.0, -50.0]])
    mask = jnp.array([True, True, False])
    got = np.asarray(rl.normalize_returns_masked(returns, mask))
    valid = np.array([1.0, 2.0, 3.0, 4.0])
    want = (np.array([[1.0, 2.0], [3.0, 4.0]]) - valid.mean()) / (valid.std(ddof=1) + 1e-5)
    np.testing.assert_allclose(got[:2], want, rtol=1e-6)
    np.testing.assert_array_equal(got[2], [0.0, 0.0])
    full = rl.normalize_returns_masked(returns[:2], jnp.array([True, True]))
    np.testing.assert_allclose(full, want, rtol=1e-6)           # all valid: the official formula


def test_metric_summary_and_nan_stop():
    window = [{"loss": 1.0, "lr_policy": 0.3, "reward": 0.5}, {"loss": 3.0, "lr_policy": 0.1,
                                                               "reward": np.float32(np.inf)}]
    summary = train.summarize_metrics(window)
    assert summary["loss"] == 2.0 and summary["lr_policy"] == 0.1
    with pytest.raises(FloatingPointError, match=r"stage s, step 2: non-finite.*'reward': inf"):
        train.check_finite(summary, "stage s, step 2", "/ckpt")
    train.check_finite({"loss": 2.0}, "ok", "/ckpt")
