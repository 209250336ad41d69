"""The jitted train steps of every stage recipe, on 8 fake CPU devices, and evaluation counting.

Each step test checks what the recipe promises: the trained modules move, frozen ones are
bit-identical, and BatchNorm statistics move exactly for the modules the recipe runs in train mode.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import average_precision_score

from adafocus_jax import evaluate, metrics, models, parallel, stages, train
from adafocus_jax import data as data_lib
from adafocus_jax.data.transforms import normalize
from train_helpers import host_batch, setup, stage_state, to_host


def _changed(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _run_one_step(dataset, name, mesh=None, config=None, **ppo):
    base_config, model, variables = setup(dataset)
    config = config or base_config
    mesh = mesh or parallel.make_mesh()
    state, recipe, schedules = stage_state(config, variables, name, mesh, **ppo)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=5), mesh,
                                donate=False)
    batch = parallel.shard_batch(host_batch(config), mesh)
    new_state, step_metrics = step(state, batch)
    return recipe, state, new_state, to_host(step_metrics)


@pytest.mark.parametrize("dataset,name", [
    ("sthv2", "stage1"), ("sthv2", "stage2"), ("sthv2", "stage3"),
    ("actnet", "stage0_glancer"), ("actnet", "stage0_focuser"), ("actnet", "stage1"),
    ("actnet", "stage2"), ("actnet", "stage3")])
def test_one_step_per_stage_on_8_devices(dataset, name):
    assert jax.device_count() == 8
    recipe, state, new_state, step_metrics = _run_one_step(dataset, name)
    assert np.isfinite(step_metrics["loss"]), step_metrics
    assert int(new_state.step) == 1
    replicated = parallel.replicated(parallel.make_mesh())
    for leaf in jax.tree.leaves(new_state.params):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    before, after = to_host(state), to_host(new_state)
    for module in stages.MODULES:
        moved = _changed(before.params[module], after.params[module])
        assert moved == (module in recipe.trained_modules), (module, recipe.trained_modules)
        if module in before.batch_stats:
            stats_moved = _changed(before.batch_stats[module], after.batch_stats[module])
            assert stats_moved == recipe.modes[module], (module, recipe.modes)
    for module in recipe.trained_modules:
        assert step_metrics[f"grad_norm_{module}"] > 0
        assert step_metrics[f"lr_{module}"] == pytest.approx(recipe.lr[module])


def test_released_lr_bug_trains_only_the_stem_but_moves_bn_statistics():
    """Sth-Sth stage 1 as released: only focuser/conv1 trains, yet the focuser's BN statistics (train
    mode) move; the frozen classifier does not move at all."""
    config, _, _ = setup("sthv2")
    config = copy.deepcopy(config)
    config.reproduce_released_lr_bug = True
    recipe, state, new_state, _ = _run_one_step("sthv2", "stage1", config=config)
    before, after = to_host(state), to_host(new_state)
    stem = "conv1"
    assert _changed(before.params["focuser"][stem], after.params["focuser"][stem])
    rest = {k: v for k, v in before.params["focuser"].items() if k != stem}
    rest_after = {k: v for k, v in after.params["focuser"].items() if k != stem}
    assert not _changed(rest, rest_after)
    assert not _changed(before.params["classifier"], after.params["classifier"])
    assert _changed(before.batch_stats["focuser"], after.batch_stats["focuser"])
    assert not _changed(before.batch_stats["glancer"], after.batch_stats["glancer"])


def _hand_returns(rewards, gamma):
    out = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out


def test_ppo_step_rewards_returns_and_loss_by_hand():
    """ActivityNet stage 2 (categorical, 3 steps, GRU classifier), one video masked out.

    The rewards are recomputed with the full model on explicitly given patch offsets (policy patches
    everywhere vs. a random patch at step t only), the returns and their normalisation with NumPy,
    and the K = 1 PPO loss from those (ratio = 1, so the surrogate is -mean(A))."""
    config, model, variables = setup("actnet")
    mesh = parallel.make_mesh(jax.devices()[:1])
    state, recipe, _ = stage_state(config, variables, "stage2", mesh)
    batch_np = host_batch(config)
    batch_np["mask"][3] = False
    batch = parallel.shard_batch(batch_np, mesh)
    rollout = jax.jit(lambda v, b: train.ppo_rollout(model, recipe, v, b, jax.random.key(9)))(
        state.variables, batch)
    rollout = to_host(rollout)
    labels = batch_np["label"]
    mask = batch_np["mask"]

    glance = jnp.asarray(normalize(batch_np["glance"]))
    apply = jax.jit(lambda v, g, o: model.apply(v, g, None, train=False, patch_mode="given",
                                                patch_offsets=o).step_logits)
    policy_offsets = rollout["offsets"]
    probs = jax.nn.softmax(apply(state.variables, glance, policy_offsets), axis=-1)
    p_policy = np.take_along_axis(np.asarray(probs), labels[:, None, None], -1)[..., 0]
    steps = policy_offsets.shape[1]
    p_random = np.zeros_like(p_policy)
    for t in range(steps):
        mixed = policy_offsets.copy()
        mixed[:, t] = rollout["random_offsets"][:, t]
        probs_t = np.asarray(jax.nn.softmax(apply(state.variables, glance, mixed), axis=-1))
        p_random[:, t] = probs_t[np.arange(len(labels)), t, labels]
    rewards = p_policy - p_random
    np.testing.assert_allclose(rollout["rewards"], rewards, atol=2e-5)

    gamma = recipe.ppo["gamma"]
    returns = _hand_returns(rewards.astype(np.float64), gamma)
    np.testing.assert_allclose(rollout["returns"], returns, atol=3e-5)
    valid = returns[mask]
    norm = (returns - valid.mean()) / (valid.std(ddof=1) + 1e-5)
    norm[~mask] = 0.0
    np.testing.assert_allclose(rollout["norm_returns"], norm, atol=1e-3)
    assert np.all(rollout["norm_returns"][~mask] == 0)

    # Log-probs of the stored categorical actions and the K = 1 PPO loss at ratio 1.
    logits, values = jax.jit(lambda v, s: model.apply(v, s, True, method="policy_forward"))(
        state.variables, rollout["states"])
    logits, values = np.asarray(logits, np.float64), np.asarray(values, np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    logp = np.take_along_axis(log_softmax, rollout["actions"][..., None], -1)[..., 0]
    np.testing.assert_allclose(rollout["log_probs"], logp, atol=1e-5)
    entropy = -(np.exp(log_softmax) * log_softmax).sum(-1)
    w = np.broadcast_to(mask[:, None], norm.shape).astype(np.float64)
    wmean = lambda x: (x * w).sum() / w.sum()  # noqa: E731
    advantage = norm - values
    expected = (-wmean(advantage) + recipe.ppo["value_coef"] * wmean((values - norm) ** 2)
                - recipe.ppo["entropy_coef"] * wmean(entropy))

    step = train.jit_train_step(train.make_train_step(model, recipe, {}, seed=0), mesh,
                                donate=False)
    # The step folds its step number into its key; reproduce the rollout key to compare.
    step_rollout_key = jax.random.fold_in(jax.random.key(0), 0)
    rollout_step = to_host(jax.jit(
        lambda v, b: train.ppo_rollout(model, recipe, v, b, step_rollout_key))(
            state.variables, batch))
    _, step_metrics = step(state, batch)
    step_metrics = to_host(step_metrics)
    norm_s = rollout_step["norm_returns"].astype(np.float64)
    adv_s = norm_s - values
    expected_s = (-wmean(adv_s) + recipe.ppo["value_coef"] * wmean((values - norm_s) ** 2)
                  - recipe.ppo["entropy_coef"] * wmean(entropy))
    assert step_metrics["loss"] == pytest.approx(expected_s, abs=1e-4)
    assert step_metrics["reward"] == pytest.approx(
        (rollout_step["rewards"].mean(1) * mask).sum() / mask.sum(), abs=1e-6)
    # And the loss of the first rollout by the library function equals the hand value.
    total, _ = train.policy_loss(model, recipe, state.variables, rollout, jnp.asarray(mask))
    assert float(total) == pytest.approx(expected, abs=1e-4)


def test_reinforce_gradient_equals_ppo_gradient_at_ratio_one():
    config, model, variables = setup("sthv2")
    mesh = parallel.make_mesh(jax.devices()[:1])
    state, recipe, _ = stage_state(config, variables, "stage2", mesh)
    reinforce = stages.resolve_recipe(_with_ppo(config, algorithm="reinforce"), "stage2")
    batch = parallel.shard_batch(host_batch(config), mesh)

    @jax.jit
    def grads(variables, batch):
        rollout = train.ppo_rollout(model, recipe, variables, batch, jax.random.key(1))

        def loss(policy, r):
            v = {"params": {**variables["params"], "policy": policy},
                 "batch_stats": variables["batch_stats"]}
            return train.policy_loss(model, r, v, rollout, batch["mask"])[0]

        policy = variables["params"]["policy"]
        return jax.grad(loss)(policy, recipe), jax.grad(loss)(policy, reinforce)

    g_ppo, g_reinforce = to_host(grads(state.variables, batch))
    for a, b in zip(jax.tree.leaves(g_ppo), jax.tree.leaves(g_reinforce)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(np.abs(a).max() > 0 for a in jax.tree.leaves(g_ppo))


def _with_ppo(config, **values):
    config = copy.deepcopy(config)
    for k, v in values.items():
        config.stages.stage2.ppo[k] = v
    return config


def test_ppo_diagnostics_come_from_the_last_epoch():
    """K = 2: ratio, clip fraction, approximate KL, the loss terms and the policy's gradient norm
    are those of the second epoch, i.e. of the policy after the first update (which is the K = 1
    step's result), recomputed here from that policy on the step's rollout; with K = 1 the ratio is
    1 and the KL 0, so the logged values differ."""
    base, model, variables = setup("sthv2")
    config = copy.deepcopy(base)
    config.stages.stage2.lr.policy = 0.02       # a visible update, so the second epoch's ratio moves
    mesh = parallel.make_mesh(jax.devices()[:1])
    _, state, one, m1 = _run_one_step("sthv2", "stage2", mesh=mesh, config=config)
    recipe, _, two, m2 = _run_one_step("sthv2", "stage2", mesh=mesh, config=config, epochs=2)
    assert recipe.ppo["epochs"] == 2
    batch = parallel.shard_batch(host_batch(config), mesh)
    key = jax.random.fold_in(jax.random.key(5), 0)       # _run_one_step's seed, step 0

    @jax.jit
    def second_epoch(variables, policy, batch):
        rollout = train.ppo_rollout(model, recipe, variables, batch, key)

        def loss(policy):
            v = {"params": {**variables["params"], "policy": policy},
                 "batch_stats": variables["batch_stats"]}
            return train.policy_loss(model, recipe, v, rollout, batch["mask"])

        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(policy)
        return terms, optax.tree.norm(grads)

    terms, grad_norm = to_host(second_epoch(state.variables, one.params["policy"], batch))
    for key_, value in (("ratio", terms.ratio_mean), ("clip_fraction", terms.clip_fraction),
                        ("approx_kl", terms.approx_kl), ("loss", terms.total),
                        ("policy_loss", terms.policy), ("grad_norm_policy", grad_norm)):
        assert m2[key_] == pytest.approx(float(value), rel=1e-3, abs=1e-6), key_
    # The K = 1 values are those at the acting policy: ratio 1, KL 0.
    assert m1["ratio"] == pytest.approx(1.0, abs=1e-6) and abs(m1["approx_kl"]) < 1e-6
    assert abs(m2["ratio"] - 1.0) > 1e-5 and m2["approx_kl"] > 1e-5
    assert m2["grad_norm_policy"] != pytest.approx(m1["grad_norm_policy"], rel=1e-3)
    start = to_host(state.params["policy"])
    moved = [sum(np.abs(a - b).sum() for a, b in zip(
        jax.tree.leaves(to_host(s.params["policy"])), jax.tree.leaves(start))) for s in (one, two)]
    assert moved[1] > moved[0] > 0


def test_single_video_batch_gives_a_finite_ppo_step():
    """ActivityNet stage 2 with one valid video: the return std over its steps is well defined,
    but with one video and one step (Sth-Sth) it is not; both give a finite step. Sth-Sth: the
    normalised return is 0, so the loss is mean(V) + 0.5 mean(V^2) - 0.01 entropy (hand)."""
    config, model, variables = setup("sthv2")
    mesh = parallel.make_mesh(jax.devices()[:1])
    state, recipe, schedules = stage_state(config, variables, "stage2", mesh)
    batch_np = host_batch(config)
    batch_np["mask"][:] = False
    batch_np["mask"][2] = True
    batch = parallel.shard_batch(batch_np, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=0), mesh,
                                donate=False)
    new_state, step_metrics = step(state, batch)
    step_metrics = to_host(step_metrics)
    assert step_metrics["num_valid"] == 1
    for leaf in jax.tree.leaves(to_host(new_state.params["policy"])):
        assert np.isfinite(leaf).all()
    rollout = to_host(jax.jit(lambda v, b: train.ppo_rollout(
        model, recipe, v, b, jax.random.fold_in(jax.random.key(0), 0)))(state.variables, batch))
    np.testing.assert_array_equal(rollout["norm_returns"], 0.0)
    (_, values), _ = jax.jit(lambda v, s: model.apply(v, s, True, method="policy_forward",
                                                      mutable=["batch_stats"]))(
        state.variables, rollout["states"])
    v = float(np.asarray(values)[2].mean())
    entropy = 1 + np.log(2 * np.pi) + 2 * np.log(0.25)           # the constant Gaussian entropy
    expected = v + 0.5 * v * v - 0.01 * entropy                  # -mean(0 - V) + ... at ratio 1
    assert step_metrics["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_evaluate_counts_every_video_once_and_matches_manual_top1():
    config, model, variables = setup("actnet")
    source = data_lib.create_source(config.data, "val")      # 12 videos, batches of 8 → padding
    result = evaluate.evaluate_model(config, model, variables, source, patch_mode="glancer",
                                     batch_size=8)
    assert result["num_videos"] == len(source) == 12
    glance = np.stack([source.get(i)["glance"] for i in range(len(source))])
    labels = np.array([int(source.get(i)["label"]) for i in range(len(source))])
    logits = np.asarray(jax.jit(lambda v, g: model.apply(v, g, False, method="glancer_logits"))(
        variables, jnp.asarray(normalize(glance))))
    top1 = 100.0 * np.mean(np.asarray(metrics.topk_correct(jnp.asarray(logits), labels, 1)))
    assert result["top1"] == pytest.approx(top1)
    scores = np.asarray(jax.nn.softmax(logits, -1))
    present = sorted(set(labels.tolist()))
    expected_map = 100 * np.mean([average_precision_score(labels == c, scores[:, c])
                                  for c in present])
    assert config.eval.metric == "map"
    assert result["map"] == pytest.approx(expected_map, abs=1e-3)
    assert result["map_absent_classes"] == scores.shape[1] - len(present)
    limited = evaluate.evaluate_model(config, model, variables, source, patch_mode="glancer",
                                      batch_size=8, max_batches=1)
    assert limited["num_videos"] == 8
    # Six batches: more than the two the loop keeps in flight (it waits on older batches' totals).
    many = evaluate.evaluate_model(config, model, variables, source, patch_mode="glancer",
                                   batch_size=2, mesh=parallel.make_mesh(jax.devices()[:2]))
    assert many["num_videos"] == 12 and many["top1"] == pytest.approx(top1)
    assert many["map"] == pytest.approx(expected_map, abs=1e-3)


def test_train_and_evaluate_end_to_end_on_8_devices(tmp_path):
    """Every Sth-Sth stage for one step through `train_and_evaluate` (restores between stages,
    evaluation, results.json, TensorBoard summaries), then a rerun that skips every stage."""
    import json
    import os

    config, _, _ = setup("sthv2")
    config = copy.deepcopy(config)
    config.train.num_steps = 1
    config.train.max_eval_batches = 1
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 1 and state.trained == ("classifier",)
    for name in ("stage1", "stage2", "stage3"):
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["final_eval"]["num_videos"] == 8                    # one eval batch
        assert np.isfinite(results["final_eval"]["loss"])
    # Stage 3 started from stage 2's policy, which started from stage 1's focuser.
    s1 = train.ckpt_lib.load_variables_from_dir(str(tmp_path / "stage1"))
    s3 = train.ckpt_lib.load_variables_from_dir(str(tmp_path / "stage3"))
    for a, b in zip(jax.tree.leaves(s1["params"]["focuser"]),
                    jax.tree.leaves(to_host(state.params["focuser"]))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(s3["params"]), jax.tree.leaves(to_host(state.params))):
        np.testing.assert_array_equal(a, b)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
    again = train.train_and_evaluate(config, str(tmp_path))                # all finished: skipped
    for a, b in zip(jax.tree.leaves(to_host(again.params)), jax.tree.leaves(to_host(state.params))):
        np.testing.assert_array_equal(a, b)


def test_every_dispatched_data_format_is_listed():
    """`data.FORMATS` (shown in the bad-format error) names exactly the formats `create_source`
    dispatches, "random" (the tiny test videos the training tests use) included."""
    assert set(data_lib.FORMATS) == set(data_lib._SOURCE_MODULES)
    assert "random" in data_lib.FORMATS
    config, _, _ = setup("sthv2")
    bad = copy.deepcopy(config.data)
    bad.format = "avi"
    with pytest.raises(ValueError, match=r"format='avi'.*'random'"):
        data_lib.create_source(bad, "train")


def test_logit_sum_classifier_fc_has_torch_linear_init():
    """Sth-Sth `fc` starts as PyTorch's `nn.Linear(F, C)`: kernel and bias U(±1/√F). With the
    released lr bug this random init is the classifier of every later stage (spec §11.1)."""
    from adafocus_jax.models.classifiers import LogitSumClassifier
    fan_in, classes = 256, 40
    module = LogitSumClassifier(classes)
    variables = module.init(jax.random.key(0), jnp.zeros((2, 3, classes)),
                            jnp.zeros((2, 4, fan_in)))
    fc = variables["params"]["fc"]
    assert set(fc) == {"kernel", "bias"} and fc["kernel"].shape == (fan_in, classes)
    bound = fan_in ** -0.5
    for name, x in fc.items():
        x = np.asarray(x)
        assert np.abs(x).max() <= bound, name
        # Uniform over the whole interval: the extremes come close to ±bound, the std is b/√3.
        assert np.abs(x).max() > 0.9 * bound, name
        assert np.std(x) == pytest.approx(bound / np.sqrt(3), rel=0.2), name
    # The model's classifier of the tiny Sth-Sth config (F = the focuser's feature width).
    config, model, variables = setup("sthv2")
    kernel = np.asarray(variables["params"]["classifier"]["fc"]["kernel"])
    bias = np.asarray(variables["params"]["classifier"]["fc"]["bias"])
    bound = kernel.shape[0] ** -0.5
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(bias).max() > 0.5 * bound            # not the zero bias of nn.Dense's default


def _scripted_eval(monkeypatch, values):
    """Replaces `evaluate_model` by a scripted top-1 sequence (no eval compile, known best)."""
    from adafocus_jax import evaluate as eval_lib
    calls = []

    def fake(config, model, variables, source, **kwargs):
        calls.append(jax.tree.map(np.asarray, jax.device_get(variables)))
        top1 = values[len(calls) - 1]
        return {"top1": top1, "top5": 100.0, "loss": 1.0, "map": float("nan"), "num_videos": 8}

    monkeypatch.setattr(eval_lib, "evaluate_model", fake)
    return calls


def _run_stage1(config, workdir):
    from clu import metric_writers
    _, model, variables = setup("sthv2")
    source = data_lib.create_source(config.data, "train")
    with train._StopFlag() as stop:
        return train.run_stage(config, "stage1", str(workdir), {}, parallel.make_mesh(),
                               metric_writers.LoggingWriter(), stop, model=model,
                               train_source=source, eval_source=source,
                               init_variables=variables)


def test_handoff_best_keeps_and_hands_on_the_best_evaluation(tmp_path, monkeypatch, caplog):
    """handoff="best": the variables of the best evaluation (step 2 of 3) are stored in
    stage1/best, survive a rerun that continues the stage with worse evaluations, and are what a
    later stage restores from the stage directory; handoff="last" hands on the final step."""
    import json
    import logging
    config, _, _ = setup("sthv2")
    config = copy.deepcopy(config)
    config.train.handoff = "best"
    config.train.num_steps = 3
    config.train.eval_every_steps = 1
    config.ckpt.every_steps = 1
    config.ckpt.max_to_keep = 0                      # keep every step, to compare with
    calls = _scripted_eval(monkeypatch, [10.0, 30.0, 20.0])   # steps 1, 2 and 3 (the final eval)
    state = _run_stage1(config, tmp_path)
    stage_dir = str(tmp_path / "stage1")
    assert int(state.step) == 3 and len(calls) == 3
    best = json.loads((tmp_path / "stage1" / "best" / "best.json").read_text())
    assert (best["step"], best["metric"], best["value"]) == (2, "top1", 30.0)
    results = json.loads((tmp_path / "stage1" / "results.json").read_text())
    assert results["handoff"] == {"mode": "best", "step": 2, "metric": "top1", "value": 30.0}
    at2 = train.ckpt_lib.load_variables_from_dir(stage_dir, 2)
    at3 = train.ckpt_lib.load_variables_from_dir(stage_dir, 3)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(at2),
                                                        jax.tree.leaves(at3)))
    handed = train.handoff_variables(config, stage_dir, state)
    for a, b, c in zip(jax.tree.leaves(handed), jax.tree.leaves(at2), jax.tree.leaves(calls[1])):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)          # exactly what the step-2 evaluation saw

    # The stage continued to 4 steps in a rerun: evaluations 25 and 28 do not beat the stored 30.
    config.train.num_steps = 4
    _scripted_eval(monkeypatch, [25.0, 28.0])
    _run_stage1(config, tmp_path)
    assert json.loads((tmp_path / "stage1" / "best" / "best.json").read_text())["step"] == 2

    # A later stage (run on its own) restores stage 1's best variables from the directory.
    _, _, variables = setup("sthv2")
    recipe = stages.resolve_recipe(config, "stage2")
    out = train.restore_modules(variables, recipe, {}, config, str(tmp_path),
                                num_train_examples=32)
    for a, b in zip(jax.tree.leaves(out["params"]["focuser"]),
                    jax.tree.leaves(at2["params"]["focuser"])):
        np.testing.assert_array_equal(a, b)
    config.train.handoff = "last"
    out = train.restore_modules(variables, recipe, {}, config, str(tmp_path),
                                num_train_examples=32)
    at4 = train.ckpt_lib.load_variables_from_dir(stage_dir, 4)
    for a, b in zip(jax.tree.leaves(out["params"]["focuser"]),
                    jax.tree.leaves(at4["params"]["focuser"])):
        np.testing.assert_array_equal(a, b)

    # A stage that evaluated nothing hands on its last variables, and says so.
    config.train.handoff = "best"
    with caplog.at_level(logging.INFO):
        last = train.handoff_variables(config, str(tmp_path / "nothing"), state)
    assert "stored no evaluation" in caplog.text and "handing on its last variables" in caplog.text
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(at3)):
        np.testing.assert_array_equal(a, b)
    config.train.handoff = "first"
    with pytest.raises(ValueError, match=r"config.train.handoff='first'"):
        train.handoff_variables(config, stage_dir, state)


def test_batchnorm_running_variance_uses_the_biased_batch_variance():
    """The documented difference (models/layers.py, README): one train-mode step moves the running
    variance toward the biased variance of the n values per channel (PyTorch: the unbiased one)."""
    from adafocus_jax.models.layers import BatchNorm
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 3)), jnp.float32)
    bn = BatchNorm(use_running_average=False)
    variables = bn.init(jax.random.key(0), x)
    _, updates = bn.apply(variables, x, mutable=["batch_stats"])
    var = np.asarray(updates["batch_stats"]["var"])
    biased = np.var(np.asarray(x), axis=0)
    np.testing.assert_allclose(var, 0.9 * 1.0 + 0.1 * biased, rtol=1e-5)
    assert not np.allclose(var, 0.9 + 0.1 * biased * 64 / 63, rtol=1e-5)


def test_sthsth_discrete_policy_trains_and_evaluates(tmp_path):
    """`policy=discrete` (the official categorical Sth-Sth policy, 5 x 5 grid, one location per
    video): the PPO stage trains the policy on 8 devices and the policy evaluation runs; inference
    patches lie on the grid's offsets floor(i / 4 * (64 - 32)) = 0, 8, 16, 24, 32."""
    import json
    from clu import metric_writers
    from train_helpers import tiny_config
    config = tiny_config("sthv2,policy=discrete")
    config.train.num_steps = 2
    config.train.max_eval_batches = 1
    model = models.create_model(config)
    variables = train.initial_variables(config, model)
    assert variables["params"]["policy"]["actor"]["kernel"].shape[-1] == 25
    source = data_lib.create_source(config.data, "train")
    with train._StopFlag() as stop:
        state = train.run_stage(config, "stage2", str(tmp_path), {"stage1": variables},
                                parallel.make_mesh(), metric_writers.LoggingWriter(), stop,
                                model=model, train_source=source, init_variables=variables)
    assert int(state.step) == 2 and state.trained == ("policy",)
    assert _changed(variables["params"]["policy"], to_host(state.params["policy"]))
    results = json.loads((tmp_path / "stage2" / "results.json").read_text())
    assert results["final_eval"]["num_videos"] == 8 and np.isfinite(results["final_eval"]["loss"])
    batch = host_batch(config)
    out = jax.jit(lambda v, g, f: model.apply(v, g, f, train=False, patch_mode="policy"))(
        state.variables, jnp.asarray(normalize(batch["glance"])),
        jnp.asarray(normalize(batch["focus"])))
    offsets = np.asarray(out.patch_offsets)
    assert offsets.shape == (8, 1, 2) and set(offsets.ravel()) <= {0, 8, 16, 24, 32}


def test_cpu_train_compiler_options_keep_the_gradients():
    """Train steps on CPU compile without YNNPACK (`steps.train_compiler_options`): the weight
    and input gradients of 3x3 / 7x7 strided convolutions stay those of the default compile."""
    from adafocus_jax.train import steps as steps_lib
    mesh = parallel.make_mesh(jax.devices()[:1])
    options = steps_lib.train_compiler_options(mesh)
    assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}

    def loss(w7, w3, x):
        dn = ("NHWC", "HWIO", "NHWC")
        y = jax.lax.conv_general_dilated(x, w7, (2, 2), [(3, 3)] * 2, dimension_numbers=dn)
        y = jax.lax.conv_general_dilated(jax.nn.relu(y), w3, (2, 2), [(1, 1)] * 2,
                                         dimension_numbers=dn)
        return jnp.sum(jnp.sin(y))

    gen = np.random.default_rng(0)
    args = [jnp.asarray(gen.standard_normal(s).astype(np.float32) * c) for s, c in
            (((7, 7, 3, 16), 0.1), ((3, 3, 16, 32), 0.1), ((4, 32, 32, 3), 1.0))]
    grad = jax.grad(loss, argnums=(0, 1, 2))
    default = jax.jit(grad)(*args)
    without_ynn = jax.jit(grad, compiler_options=options)(*args)
    for a, b in zip(default, without_ynn):
        scale = float(jnp.abs(a).max())
        assert scale > 0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=2e-5 * scale)
