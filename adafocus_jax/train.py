"""Training: the staged AdaFocus recipe as one jitted, data-parallel step per stage.

    state = train_and_evaluate(config, workdir)

runs every stage of `config.run_stages` in order, each in `workdir/<stage>`. A stage is described by
its recipe (`adafocus_jax.stages`): the step is built from `recipe.loss`, `recipe.patch_mode`,
`recipe.modes` and the per-module learning rates only, never from the stage's name or number.

Losses (all weighted by the batch `mask`):
  * "ce": CE of the fused prediction (`logits`), patches from `patch_mode` (random/policy/center);
  * "step_ce": CE of every policy step's prediction averaged over steps (GRU classifier);
  * "glancer_ce" / "focuser_ce": one network alone on whole frames, logits averaged over frames;
  * "v2": the one-stage AdaFocusV2 loss (`adafocus_jax.v2`): policy and random patches through the
    differentiable crop, fused + global-only + local-only terms, every network trained at once;
  * "ppo": the policy-gradient stage, fused into one jitted step (`ppo_rollout` + `ppo_update`):
    sample actions, crop, run the local network on the policy patches and on random-baseline
    patches, reward r_t = p(y | policy patch) - p(y | random patch at step t), discounted and
    normalised returns, then K epochs of PPO (or REINFORCE) on the policy only.

Only the parameters of modules with a learning rate > 0 are differentiated and carried by the
optimizer (`opt_state` covers that subtree only), so frozen modules cost no backward pass and can
never move; their BatchNorm statistics move only when their `recipe.modes` entry is True.

Randomness: rng of step s = fold_in(key(stage seed), s), split per consumer (dropout, patches,
actions), where the stage seed is `stages.stage_seed` (config.seed + CRC-32 of the stage's name, so
no other stage's name or position changes it); data order and augmentation are a function of
(stage seed, epoch, index).
So a run resumed from a checkpoint at step s computes exactly what an uninterrupted run computes.

Data parallelism (`adafocus_jax.parallel`): the step is written for the global batch, jitted with
the state replicated and the batch sharded over the "data" mesh axis; BatchNorm statistics are over
the global batch (the official code uses per-GPU statistics; see `parallel` for why).

Known differences from the official code (deliberate or inherent; also listed in the README):
  * BatchNorm running variance: updated with the biased batch variance (Flax), PyTorch uses the
    unbiased one; negligible for conv BNs, a factor 63/64 for the Sth-Sth policy's BatchNorm1d at
    batch 64 (see `models.layers`).
  * `config.data.on_error = "skip"`: a skipped video becomes an all-zero row with `mask=False`; it
    is excluded from every loss and metric, but it still enters the batch statistics of the
    networks that run BatchNorm in train mode (the batch is normalised as a whole).
  * A missing frame file is an error (or a skipped video under on_error="skip"); the official
    loader silently loads frame 1 instead. We never substitute other data.
  * PPO with K > 1 epochs (`ppo.epochs`, official K = 1): the policy's BN running statistics move
    once per batch (from the acting pass), not once per PPO epoch.
"""

import functools
import logging
import math
import os
import signal
import threading
from typing import Any, Callable, Mapping

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adafocus_jax import checkpoint as ckpt_lib
from adafocus_jax import json_io
from adafocus_jax import crop as crop_lib
from adafocus_jax import data as data_lib
from adafocus_jax import metrics as metrics_lib
from adafocus_jax import models, parallel, rl, stages
from adafocus_jax import v2 as v2_lib
from adafocus_jax.data.transforms import normalize_batch_frames
from adafocus_jax.metrics import masked_mean
from adafocus_jax.models import Modes


class TrainState(flax.struct.PyTreeNode):
    """Everything a stage carries from step to step (and checkpoints).

    Attributes:
      step: int32 `[]` optimizer steps taken in this stage.
      params: the full parameter tree `{glancer, focuser, policy, classifier}`.
      batch_stats: the full BatchNorm statistics tree.
      opt_state: optimizer state over the trained subtree `{m: params[m] for m in trained}`.
      tx: the optimizer (static).
      trained: names of the modules that are differentiated (static).
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    trained: tuple[str, ...] = flax.struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


# main.py's exit status after a SIGTERM/SIGINT stopped the run and its checkpoint was saved
# (EX_TEMPFAIL of sysexits.h: "try again"); 0 means every stage finished.
EXIT_INTERRUPTED = 75


class TrainingInterrupted(Exception):
    """Raised after a SIGTERM/SIGINT: the state was checkpointed and the run can be resumed.

    `main.py` then exits with status `EXIT_INTERRUPTED` (75).
    """


# --------------------------------------------------------------------------------------------------
# Small pure helpers used inside the steps.


def _split_trained(params: Mapping, trained: tuple[str, ...]) -> dict:
    return {m: params[m] for m in trained}


def _merge(params: Mapping, sub: Mapping) -> dict:
    out = dict(params)
    out.update(sub)
    return out


def _rngs(rng: jax.Array) -> dict[str, jax.Array]:
    dropout, patches, actions = jax.random.split(rng, 3)
    return {"dropout": dropout, "patches": patches, "actions": actions}


def _label_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """softmax(logits)[..., y]: `[B, S, C]`, `[B]` → `[B, S]`."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    y = jnp.broadcast_to(labels[:, None], probs.shape[:2])
    return jnp.take_along_axis(probs, y[..., None].astype(jnp.int32), axis=-1)[..., 0]


# --------------------------------------------------------------------------------------------------
# Classification losses (stages 0, 1, 3).


def _target_patch_offsets(model, recipe, batch, rng) -> jax.Array | None:
    """Offsets `[B, T, 2]` of random patches that hold the whole target (`patch_mode "target"`:
    object-centric pre-training crops from data that knows the target box), else None."""
    if recipe.patch_mode != "target":
        return None
    if "target_box" not in batch:
        raise ValueError(f"stage {recipe.name}: patch_mode 'target' needs data that provides "
                         "target_box (the synthetic benchmark); this data has "
                         f"{sorted(batch)}")
    cfg = model.config
    if recipe.loss in ("ce", "step_ce") and model.policy_steps != batch["target_box"].shape[1]:
        raise ValueError(f"stage {recipe.name}: patch_mode 'target' with loss {recipe.loss!r} "
                         "needs one patch per frame (the ActivityNet-family policy)")
    return crop_lib.target_offsets(rng, batch["target_box"], int(cfg.patch_size),
                                   int(cfg.input_size))


def classification_loss(model: models.AdaFocus, recipe: stages.StageRecipe, variables: Mapping,
                        batch: Mapping[str, jax.Array], rng: jax.Array):
    """Forward pass and masked loss of the CE-type recipes.

    Args:
      model: the AdaFocus module.
      recipe: its `loss` is ce | step_ce | glancer_ce | focuser_ce | v2 (`v2.v2_loss`).
      variables: `{"params", "batch_stats"}`.
      batch: `glance` uint8 `[B, T_G, S, S, 3]`, optional `focus` `[B, T_L, S, S, 3]`, `label` `[B]`,
        `mask` `[B]`.
      rng: this step's key.

    Returns:
      (loss `[]`, (new batch_stats, logits `[B, C]`)).
    """
    if recipe.loss == "v2":   # AdaFocusV2: one end-to-end stage (adafocus_jax/v2.py)
        return v2_lib.v2_loss(model, recipe, variables, batch, rng)
    glance, focus = normalize_batch_frames(batch)
    labels, mask = batch["label"], batch["mask"]
    modes = recipe.modes
    rngs = _rngs(rng)
    given = _target_patch_offsets(model, recipe, batch, rngs["patches"])
    if recipe.loss in ("ce", "step_ce"):
        out, updates = model.apply(
            variables, glance, focus, train=Modes(**modes),
            patch_mode="given" if given is not None else recipe.patch_mode,
            patch_offsets=given, rngs=rngs, mutable=["batch_stats"])
        logits = out.logits
        if recipe.loss == "ce":
            per_example = metrics_lib.cross_entropy(logits, labels)
        else:   # every step supervised: CE over [B, S] averaged over S (official GRU loss)
            steps = out.step_logits
            per_example = metrics_lib.cross_entropy(
                steps, jnp.broadcast_to(labels[:, None], steps.shape[:2])).mean(axis=1)
    elif recipe.loss == "glancer_ce":
        logits, updates = model.apply(variables, glance, modes["glancer"], rngs=rngs,
                                      mutable=["batch_stats"], method="glancer_logits")
        per_example = metrics_lib.cross_entropy(logits, labels)
    elif recipe.loss == "focuser_ce":
        frames = glance if focus is None else focus
        if given is not None:   # the local network alone on patches holding the target
            frames = crop_lib.crop_patches(frames, given, int(model.config.patch_size))
        logits, updates = model.apply(variables, frames, modes["focuser"], rngs=rngs,
                                      mutable=["batch_stats"], method="focuser_logits")
        per_example = metrics_lib.cross_entropy(logits, labels)
    else:
        raise ValueError(f"classification_loss: recipe {recipe.name} has loss {recipe.loss!r}")
    return masked_mean(per_example, mask), (updates["batch_stats"], logits)


# --------------------------------------------------------------------------------------------------
# The policy stage (stage 2).


def ppo_rollout(model: models.AdaFocus, recipe: stages.StageRecipe, variables: Mapping,
                batch: Mapping[str, jax.Array], rng: jax.Array) -> dict[str, Any]:
    """Acts with the current policy on a batch and scores the actions (no gradients).

    Follows the official stage 2 (spec §3, §5): the glancer (eval, no gradient) gives the policy
    states; actions are sampled (clipped Gaussian or categorical); the local network runs once on
    the policy patches and on uniformly random baseline patches drawn as the official code draws
    them; reward r_t = p(y | policy patches) - p(y | step t's patches random), all in eval mode except
    the networks whose `recipe.modes` entry is True (the policy, officially).

    Args:
      model, recipe: the model and a recipe with loss "ppo".
      variables: `{"params", "batch_stats"}`.
      batch: as in `classification_loss`.
      rng: this step's key.

    Returns:
      dict with `states` `[B, St, h, w, C']`, `actions` (`[B, St, 2]` float or `[B, St]` int),
      `log_probs` `[B, St]`, `values` `[B, St]`, `rewards` `[B, St]`, `returns` `[B, St]`,
      `norm_returns` `[B, St]`, `logits` `[B, C]` (policy-patch prediction), `offsets`,
      `random_offsets` `[B, St, 2]`, `batch_stats` (with the policy's BN statistics of this batch
      when the policy runs in train mode).
    """
    cfg = model.config
    modes = recipe.modes
    glance, focus = normalize_batch_frames(batch)
    focus = glance if focus is None else focus
    labels, mask = batch["label"], batch["mask"]
    k_actions, k_random, k_dropout = jax.random.split(rng, 3)
    batch_size = glance.shape[0]

    def apply(variables, *args, method, rngs=None, **kwargs):
        out, updates = model.apply(variables, *args, method=method, rngs=rngs,
                                   mutable=["batch_stats"], **kwargs)
        return out, {"params": variables["params"], "batch_stats": updates["batch_stats"]}

    (maps, glance_out), variables = apply(variables, glance, modes["glancer"], method="glance")
    # The glance network is frozen in this stage: no gradient ever reaches it through the states.
    states = model.apply(variables, jax.lax.stop_gradient(maps), method="policy_states")
    (dist_params, values), variables = apply(variables, states, modes["policy"],
                                             method="policy_forward")
    actions = rl.sample_actions(cfg.policy.kind, dist_params, k_actions, cfg.policy.action_std)
    log_probs, _ = rl.log_prob_and_entropy(cfg.policy.kind, dist_params, actions,
                                           cfg.policy.action_std)
    offsets = model.apply(variables, actions, method="action_offsets")
    random_offsets = model.apply(variables, k_random, batch_size, method="random_offsets")

    policy_patches = model.apply(variables, focus, offsets, method="crop")
    random_patches = model.apply(variables, focus, random_offsets, method="crop")
    if modes["focuser"]:
        # Train-mode BN: keep the two patch sets' batch statistics apart, as two official passes.
        local_p, variables = apply(variables, policy_patches, True, method="local_features")
        local_r, variables = apply(variables, random_patches, True, method="local_features")
    else:
        # Eval mode: one local-network call over both patch sets (2B videos).
        both = jnp.concatenate([policy_patches, random_patches], axis=0)
        local, _ = apply(variables, both, False, method="local_features")
        local_p, local_r = local[:batch_size], local[batch_size:]
    (logits, step_logits), variables = apply(variables, glance_out, local_p, modes["classifier"],
                                             method="classify", rngs={"dropout": k_dropout})
    baseline = model.apply(variables, glance_out, local_p, local_r, method="baseline_step_logits")
    rewards = jax.lax.stop_gradient(_label_prob(step_logits, labels)
                                    - _label_prob(baseline, labels))
    returns = rl.discounted_returns(rewards, float(recipe.ppo["gamma"]))
    norm_returns = rl.normalize_returns_masked(returns, mask, float(recipe.ppo["return_eps"]))
    return {"states": jax.lax.stop_gradient(states), "actions": jax.lax.stop_gradient(actions),
            "log_probs": jax.lax.stop_gradient(log_probs), "values": values,
            "rewards": rewards, "returns": returns, "norm_returns": norm_returns,
            "logits": logits, "offsets": offsets, "random_offsets": random_offsets,
            "batch_stats": variables["batch_stats"]}


def policy_loss(model: models.AdaFocus, recipe: stages.StageRecipe, variables: Mapping,
                rollout: Mapping[str, Any], mask: jax.Array):
    """PPO (or REINFORCE) loss of the stored rollout under `variables` (the policy re-evaluated
    from a zero GRU state on the stored states, train/eval BN per `recipe.modes.policy`).

    Returns:
      (total loss `[]`, `rl.PolicyLossTerms`).
    """
    cfg = model.config
    ppo = recipe.ppo
    (dist_params, values), _ = model.apply(variables, rollout["states"], recipe.modes["policy"],
                                           mutable=["batch_stats"], method="policy_forward")
    log_probs, entropy = rl.log_prob_and_entropy(cfg.policy.kind, dist_params, rollout["actions"],
                                                 cfg.policy.action_std)
    common = dict(value_coef=float(ppo["value_coef"]), entropy_coef=float(ppo["entropy_coef"]),
                  weights=mask)
    if ppo["algorithm"] == "reinforce":
        terms = rl.reinforce_loss(log_probs, values, rollout["norm_returns"], entropy, **common)
    else:
        terms = rl.ppo_loss(log_probs, rollout["log_probs"], values, rollout["norm_returns"],
                            entropy, clip_eps=float(ppo["clip_eps"]), **common)
    return terms.total, terms


# --------------------------------------------------------------------------------------------------
# The train step.


def _grad_norms(grads: Mapping) -> dict[str, jax.Array]:
    return {f"grad_norm_{m}": optax.tree.norm(g) for m, g in grads.items()}


def make_train_step(model: models.AdaFocus, recipe: stages.StageRecipe,
                    schedules: Mapping[str, Callable], seed: int) -> Callable:
    """The (un-jitted) step `(state, batch) -> (state, metrics)` of one recipe.

    Args:
      model: the AdaFocus module.
      recipe: the resolved stage recipe (the only thing the step branches on).
      schedules: `{module: lr schedule}` from `stages.make_optimizer`, for logging.
      seed: the stage seed; the step's key is `fold_in(key(seed), state.step)`, so it is a pure
        function of the step (bit-identical resumption) and needs no device-placed key argument.

    Returns:
      The step. `batch` holds `glance`, optional `focus`, `label`, `mask` (see CONTRACTS.md);
      `metrics` is a dict of scalars (losses, accuracy, rewards, entropy, learning rates, gradient
      norms).
    """
    base_key = functools.partial(jax.random.key, int(seed))

    def lr_metrics(step):
        return {f"lr_{m}": schedule(step) for m, schedule in schedules.items()}

    def apply_gradients(state, sub, grads, opt_state):
        updates, opt_state = state.tx.update(grads, opt_state, sub)
        return optax.apply_updates(sub, updates), opt_state

    def ce_step(state: TrainState, batch):
        rng = jax.random.fold_in(base_key(), state.step)
        sub = _split_trained(state.params, state.trained)

        def loss_fn(sub):
            variables = {"params": _merge(state.params, sub), "batch_stats": state.batch_stats}
            return classification_loss(model, recipe, variables, batch, rng)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(sub)
        new_sub, opt_state = apply_gradients(state, sub, grads, state.opt_state)
        new_state = state.replace(step=state.step + 1, params=_merge(state.params, new_sub),
                                  batch_stats=batch_stats, opt_state=opt_state)
        mask = batch["mask"]
        metrics = {"loss": loss,
                   "top1": masked_mean(metrics_lib.topk_correct(logits, batch["label"], 1), mask),
                   "num_valid": jnp.sum(mask.astype(jnp.float32))}
        metrics.update(_grad_norms(grads))
        metrics.update(lr_metrics(state.step))
        return new_state, metrics

    def ppo_step(state: TrainState, batch):
        rng = jax.random.fold_in(base_key(), state.step)
        mask = batch["mask"]
        rollout = ppo_rollout(model, recipe, state.variables, batch, rng)
        # Policy BN running statistics move once per batch: those of the acting pass (with K = 1
        # the loss pass sees the same parameters and batch, so they are identical). With K > 1
        # the K loss passes do not move them again (the official code would, once per epoch; it
        # only ever runs K = 1).
        batch_stats = rollout["batch_stats"]
        sub0 = _split_trained(state.params, state.trained)

        def loss_fn(sub):
            variables = {"params": _merge(state.params, sub), "batch_stats": state.batch_stats}
            return policy_loss(model, recipe, variables, rollout, mask)

        def epoch(carry, _):
            sub, opt_state = carry
            (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(sub)
            sub, opt_state = apply_gradients(state, sub, grads, opt_state)
            return (sub, opt_state), (terms, _grad_norms(grads))

        # K PPO epochs over the stored rollout (official K = 1: one step with ratio ≡ 1).
        (new_sub, opt_state), (terms, norms) = jax.lax.scan(
            epoch, (sub0, state.opt_state), None, length=int(recipe.ppo["epochs"]))
        new_state = state.replace(step=state.step + 1, params=_merge(state.params, new_sub),
                                  batch_stats=batch_stats, opt_state=opt_state)
        # Diagnostics of the LAST epoch: its loss terms at the parameters after K - 1 updates and
        # its gradients, so with K > 1 ratio / clip fraction / KL show how far the update moved
        # the policy (with the official K = 1 the ratio is 1 and the KL 0 by construction).
        last = lambda x: x[-1]  # noqa: E731
        terms = jax.tree.map(last, terms)
        metrics = {"loss": terms.total, "policy_loss": terms.policy, "value_loss": terms.value,
                   "entropy": terms.entropy, "ratio": terms.ratio_mean,
                   "clip_fraction": terms.clip_fraction, "approx_kl": terms.approx_kl,
                   "reward": masked_mean(rollout["rewards"].mean(axis=1), mask),
                   "return": masked_mean(rollout["returns"].mean(axis=1), mask),
                   "top1": masked_mean(
                       metrics_lib.topk_correct(rollout["logits"], batch["label"], 1), mask),
                   "num_valid": jnp.sum(mask.astype(jnp.float32))}
        if "target_box" in batch:
            # Data that knows where the target is (the synthetic benchmark): how often the sampled
            # policy patches and the random-baseline patches hold the whole target.
            for key, offsets in (("target_hit", rollout["offsets"]),
                                 ("random_target_hit", rollout["random_offsets"])):
                metrics[key] = masked_mean(metrics_lib.patch_hit_fraction(
                    offsets, batch["target_box"], int(model.config.patch_size)), mask)
        metrics.update(jax.tree.map(last, norms))
        metrics.update(lr_metrics(state.step))
        return new_state, metrics

    return ppo_step if recipe.loss == "ppo" else ce_step


def with_stop_vote(step_fn: Callable) -> Callable:
    """`(state, batch) -> (state, metrics)` → `(state, batch, votes) -> (state, metrics, stop)`.

    `votes` is bool `[B]`, sharded like the batch: each process fills its rows with whether it
    received a SIGTERM/SIGINT; `stop` (bool `[]`, replicated) is their OR over every process. The
    vote rides in the train step, so agreeing on a preemption costs no extra collective, and every
    process reads the same value at the same step (see `run_stage`).
    """

    def step(state, batch, votes):
        state, metrics = step_fn(state, batch)
        return state, metrics, jnp.any(votes)

    return step


def jit_train_step(step_fn: Callable, mesh, donate: bool = True) -> Callable:
    """`jax.jit` with the state replicated and the batch sharded (shardings come with the inputs;
    outputs are pinned replicated so the state keeps its layout from step to step)."""
    return jax.jit(step_fn, out_shardings=parallel.replicated(mesh),
                   donate_argnums=(0,) if donate else ())


# --------------------------------------------------------------------------------------------------
# Building the state of a stage.


def create_train_state(params: Mapping, batch_stats: Mapping, recipe: stages.StageRecipe,
                       num_steps: int) -> tuple[TrainState, dict[str, Callable]]:
    """A fresh state at step 0 with the recipe's optimizer over the trained modules only."""
    labels = stages.param_labels(params, recipe)
    trained = tuple(m for m in stages.MODULES
                    if m in params and any(l != "frozen" for l in jax.tree.leaves(labels[m])))
    sub_labels = {m: labels[m] for m in trained}
    tx, schedules = stages.make_optimizer(recipe, sub_labels, num_steps)
    sub = {m: params[m] for m in trained}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=dict(params),
                       batch_stats=dict(batch_stats), opt_state=tx.init(sub), tx=tx,
                       trained=trained)
    return state, schedules


def _load_init_from(path: str, config) -> dict:
    """Variables of `config.init_from`: a stage directory of an earlier run (it holds
    `checkpoints/`), or whatever `adafocus_jax.convert.load_variables` reads (a converted Orbax
    directory, an official `.pth` / `.pth.tar` file)."""
    if os.path.isdir(ckpt_lib.checkpoint_dir(path)) or os.path.basename(
            os.path.normpath(path)) == "checkpoints":
        stage_dir = path if os.path.basename(os.path.normpath(path)) != "checkpoints" else \
            os.path.dirname(os.path.normpath(path))
        latest, recorded = ckpt_lib.stage_progress(stage_dir)
        if recorded is None:
            logging.warning("config.init_from=%s: no results.json, so it cannot be checked that "
                            "this stage finished; using its latest checkpoint (step %s)", path,
                            latest)
        elif latest is not None and recorded != latest:
            raise ValueError(f"config.init_from={path!r}: that stage is unfinished: its latest "
                             f"checkpoint is step {latest}, its results.json records a finished "
                             f"run of {recorded} steps. Finish that stage first")
        return handoff_variables(config, stage_dir)
    try:
        from adafocus_jax import convert
    except ImportError as e:   # the converter needs optional dependencies (torch for .pth files)
        raise ImportError(f"config.init_from={path!r} needs adafocus_jax.convert: {e}") from e
    return convert.load_variables(path, config=config)


def _check_same_tree(module: str, source: str, got: Any, want: Any, collection: str) -> None:
    got_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), got)
    want_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), want)
    if jax.tree.structure(got_shapes) != jax.tree.structure(want_shapes) or \
            jax.tree.leaves(got_shapes) != jax.tree.leaves(want_shapes):
        flat_got = flax.traverse_util.flatten_dict(got, sep="/") if isinstance(got, Mapping) else {}
        flat_want = flax.traverse_util.flatten_dict(want, sep="/")
        missing = sorted(set(flat_want) - set(flat_got))[:5]
        extra = sorted(set(flat_got) - set(flat_want))[:5]
        wrong = [k for k in flat_want if k in flat_got
                 and np.shape(flat_got[k]) != np.shape(flat_want[k])][:5]
        raise ValueError(f"restore {module}={source}: {collection}/{module} does not match the "
                         f"model (missing {missing}, unexpected {extra}, wrong shape {wrong})")


HANDOFF_MODES = ("last", "best")


def handoff_mode(config) -> str:
    """`config.train.handoff` ("last" when absent), validated."""
    mode = str(config.train.get("handoff", "last"))
    if mode not in HANDOFF_MODES:
        raise ValueError(f"config.train.handoff={mode!r}: expected one of {HANDOFF_MODES}")
    return mode


def handoff_variables(config, stage_dir: str, state: TrainState | None = None,
                      step: int | None = None) -> dict:
    """The `{"params", "batch_stats"}` (host numpy) a finished stage hands on.

    With `config.train.handoff == "best"`: the stored variables of the stage's best evaluation
    (`stage_dir/best`), or — when the stage evaluated nothing — its last variables, with a log line.
    Otherwise (and in that fallback) the last variables: those of `state` if given, else of the
    checkpoint at `step` (default the latest) of `stage_dir`.
    """
    if handoff_mode(config) == "best":
        best = ckpt_lib.load_best(stage_dir)
        if best is not None:
            variables, best_step, value = best
            logging.info("%s hands on its best evaluation: step %d, %s=%.6g", stage_dir,
                         best_step, config.eval.metric, value)
            return variables
        logging.info("%s: config.train.handoff='best' but the stage stored no evaluation (no eval "
                     "ran, or none gave a finite %s); handing on its last variables", stage_dir,
                     config.eval.metric)
    if state is not None:
        return jax.tree.map(np.asarray, jax.device_get(state.variables))
    return ckpt_lib.load_variables_from_dir(stage_dir, step)


def check_stage_finished(config, source: str, workdir: str, where: str,
                         num_train_examples: int | None = None) -> int:
    """The final step of stage `source` in `workdir/<source>`; raises if that stage is unfinished.

    Finished means: its `results.json` (written when a stage ends) records the length its latest
    checkpoint reached, or — when the process died after the last checkpoint but before
    `results.json` — the latest step equals the stage length under `config` (needs
    `num_train_examples`, the training split's size).

    Raises:
      ValueError naming the directory, the latest step and the expected one, telling the user to
      finish that stage first.
    """
    stage_dir = os.path.join(workdir, source)
    latest, recorded = ckpt_lib.stage_progress(stage_dir)
    if latest is None:
        raise ValueError(f"{where}: {ckpt_lib.checkpoint_dir(stage_dir)} holds no complete "
                         f"checkpoint; run stage {source!r} first")
    if recorded is not None and recorded == latest:
        return latest
    total = None
    if num_train_examples is not None and source in config.stages:
        total, _ = stages.num_train_steps(config, stages.resolve_recipe(config, source),
                                          num_train_examples)
        if latest == total:
            return latest
    expected = (f"{total} steps under the current config" if total is not None else
                "the length recorded in its results.json" if recorded is not None else
                "a results.json marking it finished")
    recorded_text = (f"; its results.json records a finished run of {recorded} steps"
                     if recorded is not None else "")
    raise ValueError(
        f"{where}: stage {source!r} in {stage_dir} is unfinished: its latest checkpoint is step "
        f"{latest}, expected {expected}{recorded_text}. Finish that stage first (rerun with "
        f"--config.run_stages={source} and the same config), or remove {stage_dir} to retrain "
        "it from scratch")


def restore_modules(variables: dict, recipe: stages.StageRecipe, finished: Mapping[str, dict],
                    config, workdir: str, num_train_examples: int | None = None) -> dict:
    """Replaces the modules named in `recipe.restore` with their source's variables.

    Sources: a stage finished earlier in this run (`finished`), a stage directory of this workdir
    whose stage finished (`check_stage_finished`; an interrupted one is an error, never silently
    used), or `config.init_from`. With `config.init_from` empty, a module restored from
    "init_from" is an error, or with `config.allow_random_init` keeps its random initialisation
    (with a warning). `num_train_examples` (the
    training split's size) lets a stage directory count as finished from its step count alone.
    """
    params, batch_stats = dict(variables["params"]), dict(variables["batch_stats"])
    cache = {}
    for module, source in recipe.restore.items():
        if source in finished:
            src = finished[source]
        elif source != stages.INIT_FROM and os.path.isdir(
                ckpt_lib.checkpoint_dir(os.path.join(workdir, source))):
            if source not in cache:
                step = check_stage_finished(config, source, workdir,
                                            f"stage {recipe.name}: restore {module}={source}",
                                            num_train_examples)
                cache[source] = handoff_variables(config, os.path.join(workdir, source),
                                                  step=step)
            src = cache[source]
        elif config.init_from:
            if "init_from" not in cache:
                cache["init_from"] = _load_init_from(config.init_from, config)
            src = cache["init_from"]
        elif source == stages.INIT_FROM:
            if not config.get("allow_random_init", False):
                raise ValueError(
                    f"stage {recipe.name}: restore {module}=init_from, but config.init_from is "
                    f"empty; set --config.init_from=DIR, or --config.allow_random_init=True to "
                    f"keep {module}'s random initialisation")
            logging.warning("stage %s: %s=init_from but config.init_from is empty; %s keeps its "
                            "random initialisation (config.allow_random_init)", recipe.name,
                            module, module)
            continue
        else:
            raise ValueError(f"stage {recipe.name}: restore {module}={source}, but stage {source!r}"
                             f" was not run, {os.path.join(workdir, source)} has no checkpoint and "
                             "config.init_from is empty")
        if module not in src.get("params", {}):
            raise ValueError(f"stage {recipe.name}: restore {module}={source}: the source has no "
                             f"params/{module} (it has {sorted(src.get('params', {}))})")
        _check_same_tree(module, source, src["params"][module], params[module], "params")
        params[module] = jax.tree.map(np.asarray, src["params"][module])
        if module in batch_stats:
            stats = src.get("batch_stats", {}).get(module)
            if stats is None:
                raise ValueError(f"stage {recipe.name}: restore {module}={source}: the source has "
                                 f"no batch_stats/{module}")
            _check_same_tree(module, source, stats, batch_stats[module], "batch_stats")
            batch_stats[module] = jax.tree.map(np.asarray, stats)
        logging.info("stage %s: %s restored from %s", recipe.name, module, source)
    return {"params": params, "batch_stats": batch_stats}


# --------------------------------------------------------------------------------------------------
# The loop.


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and stops at the next step boundary."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signum
        logging.warning("received signal %d: checkpointing at the end of this step and stopping "
                        "(send it again to stop at once)", signum)
        # A second signal acts as usual (e.g. a second Ctrl-C during a long compile).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def summarize_metrics(host_metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    """Per-step metric dicts of a logging window → one dict: means, or the last value for the
    learning rates (`lr_*`)."""
    summary = {}
    for key in host_metrics[0]:
        values = np.asarray([np.asarray(m[key], np.float64) for m in host_metrics])
        summary[key] = float(values[-1] if key.startswith("lr_") else values.mean())
    return summary


def check_finite(summary: Mapping[str, float], where: str, checkpoint_dir: str) -> None:
    """Raises FloatingPointError naming every NaN/Inf metric (losses, rewards, gradient norms)."""
    bad = {k: v for k, v in summary.items() if not np.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"{where}: non-finite training metrics {bad}; stopping. Lower the learning rate or "
            f"check the data; the last good checkpoint is in {checkpoint_dir}")


def _eval_batch_size(config, recipe, mesh) -> int:
    """The eval batch, rounded down to a multiple of the device and process counts."""
    return parallel.round_batch_size(int(config.train.eval_batch_size) or recipe.batch_size, mesh)


def initial_variables(config, model) -> dict:
    """The random initialisation of every module (host numpy; identical on every process)."""
    variables = models.init_variables(model, jax.random.key(int(config.seed)))
    return jax.tree.map(np.asarray, jax.device_get(variables))


def run_stage(config, name: str, workdir: str, finished: Mapping[str, dict], mesh, writer,
              stop: _StopFlag, *, model=None, train_source=None, eval_source=None,
              init_variables: dict | None = None) -> TrainState:
    """Trains (or resumes, or skips if done) one stage in `workdir/<name>`; returns its final state.

    Args:
      config: the run config.
      name: the stage (a key of `config.stages`).
      workdir: the run directory; the stage uses `workdir/<name>`.
      finished: `{stage: {"params", "batch_stats"}}` handed on by the stages finished before this
        one (`handoff_variables`).
      mesh: the data mesh.
      writer: a clu metric writer.
      stop: the signal flag (SIGTERM → checkpoint and `TrainingInterrupted`).
      model, train_source, eval_source, init_variables: optional prebuilt pieces (default: built
        from the config).
    """
    from adafocus_jax import evaluate as eval_lib
    from clu import periodic_actions

    recipe = stages.resolve_recipe(config, name)
    stage_dir = os.path.join(workdir, name)
    os.makedirs(stage_dir, exist_ok=True)
    model = model or models.create_model(config)
    train_source = train_source or data_lib.create_source(config.data, "train")
    parallel.check_batch_size(recipe.batch_size, mesh, f"stage {name} batch size")
    num_steps, per_epoch = stages.num_train_steps(config, recipe, len(train_source))
    seed = stages.stage_seed(config, name)

    # Initial variables: random init (same on every process), then the recipe's restores.
    variables = init_variables if init_variables is not None else initial_variables(config, model)
    variables = restore_modules(variables, recipe, finished, config, workdir,
                                num_train_examples=len(train_source))
    state, schedules = create_train_state(variables["params"], variables["batch_stats"], recipe,
                                          num_steps)
    state = parallel.replicate(state, mesh)
    parallel.wait_for_all_processes(f"stage {name} start")
    manager = ckpt_lib.make_manager(stage_dir, max_to_keep=int(config.ckpt.max_to_keep),
                                    async_save=bool(config.ckpt.async_save))
    latest = manager.latest_step()
    if latest is not None:
        state = ckpt_lib.restore(manager, state, mesh, latest)
    start = int(jax.device_get(state.step))
    handoff = handoff_mode(config)
    eval_metric = str(config.eval.metric)
    # The best evaluation so far (a resumed stage keeps comparing against the stored one).
    best = ckpt_lib.best_info(stage_dir) if handoff == "best" else None
    logging.info("stage %s: %s, loss=%s, patches=%s, trains %s, %d steps (%d per epoch), "
                 "batch %d, starting at step %d", name, recipe.optimizer, recipe.loss,
                 recipe.patch_mode, list(state.trained) or "nothing", num_steps, per_epoch,
                 recipe.batch_size, start)
    if start >= num_steps:
        logging.info("stage %s already finished (step %d); skipping", name, start)
        manager.close()
        return state

    eval_every = int(config.train.eval_every_steps) or recipe.eval_every_epochs * per_epoch
    ckpt_every = int(config.ckpt.every_steps) or per_epoch
    eval_source = eval_source if eval_source is not None else (
        data_lib.create_source(config.data, config.eval.split)
        if (eval_every > 0 or config.train.final_eval) else None)
    eval_batch = _eval_batch_size(config, recipe, mesh)

    step_fn = jit_train_step(with_stop_vote(make_train_step(model, recipe, schedules, seed)), mesh,
                             donate=bool(config.train.donate_state))
    loader = data_lib.make_loader(
        train_source, batch_size=recipe.batch_size, shuffle=True, seed=seed, start_step=start,
        drop_remainder=True, process_index=jax.process_index(),
        process_count=jax.process_count(), num_workers=int(config.train.num_workers),
        on_error=config.data.on_error)
    log_every = max(1, int(config.train.log_every_steps))
    progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                               every_steps=log_every)
    pending: list[dict] = []
    history = []

    def flush_metrics(step: int):
        if not pending:
            return
        summary = summarize_metrics(jax.device_get(pending))
        pending.clear()
        check_finite(summary, f"stage {name}, step {step}", ckpt_lib.checkpoint_dir(stage_dir))
        writer.write_scalars(step, {f"{name}/train_{k}": v for k, v in summary.items()})
        logging.info("stage %s step %d/%d: %s", name, step, num_steps,
                     ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary.items())))

    def run_eval(step: int):
        nonlocal best
        result = eval_lib.evaluate_model(
            config, model, state.variables, eval_source, patch_mode=recipe.eval_patch_mode,
            batch_size=eval_batch, mesh=mesh, max_batches=int(config.train.max_eval_batches))
        writer.write_scalars(step, {f"{name}/eval_{k}": v for k, v in result.items()
                                    if math.isfinite(v)})
        logging.info("stage %s step %d eval (%s patches): %s", name, step,
                     recipe.eval_patch_mode, result)
        history.append({"step": step, **result})
        if handoff == "best":
            if eval_metric not in result:
                raise ValueError(f"config.eval.metric={eval_metric!r}: the evaluation reports "
                                 f"{sorted(result)}")
            value = float(result[eval_metric])
            if math.isfinite(value) and (best is None or value > best[1]):
                ckpt_lib.save_best(stage_dir, state.variables, step, eval_metric, value)
                logging.info("stage %s step %d: best %s so far (%.6g); stored in %s", name, step,
                             eval_metric, value, ckpt_lib.best_dir(stage_dir))
                best = (step, value)
        return result

    step = start
    # Device prefetch: the next batch's host → device copy is issued before this step runs.
    iterator = parallel.prefetch_to_mesh(loader, mesh, size=2)
    local_rows = recipe.batch_size // jax.process_count()   # this process's rows of a batch
    previous_vote = None        # the stop vote of the previous step (a device scalar)
    try:
        while step < num_steps:
            batch = next(iterator)
            votes = parallel.shard_batch(
                {"stop": np.full(local_rows, stop.signal is not None)}, mesh)["stop"]
            if step == start and jax.process_count() > 1:
                # Compile first, then meet: a process that compiles minutes longer than another
                # must not reach the first cross-process collective late (CPU collectives give up
                # after 30 s).
                step_fn = step_fn.lower(state, batch, votes).compile()
                parallel.wait_for_all_processes(f"stage {name} step compiled")
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics, vote = step_fn(state, batch, votes)
            step += 1
            pending.append(metrics)
            progress(step)
            if step % log_every == 0 or step == num_steps:
                flush_metrics(step)
            if step % ckpt_every == 0 or step == num_steps:
                ckpt_lib.save(manager, state)
            # Preemption, agreed by every process: the previous step's vote (read one step late,
            # so the device stays one step ahead) says whether any process got a signal, and
            # every process reads the same vote at the same step, so all of them save this step
            # and stop (a signal that reaches only some processes never hangs the collective save).
            stopping = previous_vote is not None and bool(jax.device_get(previous_vote))
            previous_vote = vote
            if stopping and step < num_steps:
                # Save now (synchronously) and leave before any evaluation.
                flush_metrics(step)
                ckpt_lib.save(manager, state, wait=True)
                what = (f"signal {stop.signal}" if stop.signal is not None
                        else "a signal to another process")
                raise TrainingInterrupted(
                    f"stage {name} stopped by {what} at step {step}; checkpoint "
                    f"saved in {ckpt_lib.checkpoint_dir(stage_dir)}; rerun the same command to "
                    "resume")
            if eval_source is not None and eval_every > 0 and step % eval_every == 0 \
                    and step != num_steps:
                run_eval(step)
        final = run_eval(step) if (eval_source is not None and config.train.final_eval) else {}
        handed = ({"mode": "best", "step": best[0], "metric": eval_metric, "value": best[1]}
                  if best is not None else {"mode": "last", "step": num_steps})
        json_io.write_json(os.path.join(stage_dir, "results.json"),
                           {"stage": name, "steps": num_steps, "final_eval": final,
                            "evals": history, "handoff": handed}, strict=True, sort_keys=True)
    finally:
        manager.wait_until_finished()
        manager.close()
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs the stages of `config.run_stages` in order, each in `workdir/<stage>`.

    A stage already finished in `workdir` is skipped and its variables handed on (its last ones,
    or its best-validated ones with `config.train.handoff = "best"`, see `handoff_variables`); an
    unfinished one resumes from its latest checkpoint. SIGTERM/SIGINT save a checkpoint and raise
    `TrainingInterrupted`. With `config.benchmark.enabled`, `adafocus_jax.benchmark.run` evaluates
    the final model at the end.

    Returns:
      The final `TrainState` of the last stage.
    """
    from clu import metric_writers

    names = stages.stage_names(config)
    stages.check_init_from(config, names)
    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.make_mesh()
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    logging.info("devices: %d (%d per process), processes: %d, mesh %s", jax.device_count(),
                 jax.local_device_count(), jax.process_count(), dict(mesh.shape))
    model = models.create_model(config)
    train_source = data_lib.create_source(config.data, "train")
    init_variables = initial_variables(config, model)
    finished: dict[str, dict] = {}
    state = None
    with _StopFlag() as stop, metric_writers.ensure_flushes(writer):
        for name in names:
            state = run_stage(config, name, workdir, finished, mesh, writer, stop, model=model,
                              train_source=train_source, init_variables=init_variables)
            finished[name] = handoff_variables(config, os.path.join(workdir, name), state)
        if config.get("benchmark") is not None and config.benchmark.get("enabled", False):
            # The end-of-run benchmark (learned vs random/centre patches vs full frames).
            from adafocus_jax import benchmark
            benchmark.run(config, workdir, finished[names[-1]], model=model, mesh=mesh)
    return state
