"""The train step of one stage recipe: `make_train_step` (un-jitted, pure), `jit_train_step`.

    step = jit_train_step(with_stop_vote(make_train_step(model, recipe, schedules, seed)), mesh)
    state, metrics, stop = step(state, batch, votes)

The step branches only on `recipe.loss` ("ppo" or a classification loss, see `train.losses`).
"""

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from adafocus_jax import metrics as metrics_lib
from adafocus_jax import models, parallel, stages
from adafocus_jax.metrics import masked_mean
from adafocus_jax.train.losses import classification_loss, policy_loss, ppo_rollout
from adafocus_jax.train.state import TrainState, merge_params, trained_params


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
        sub = trained_params(state.params, state.trained)

        def loss_fn(sub):
            variables = {"params": merge_params(state.params, sub), "batch_stats": state.batch_stats}
            return classification_loss(model, recipe, variables, batch, rng)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(sub)
        new_sub, opt_state = apply_gradients(state, sub, grads, state.opt_state)
        new_state = state.replace(step=state.step + 1, params=merge_params(state.params, new_sub),
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
        sub0 = trained_params(state.params, state.trained)

        def loss_fn(sub):
            variables = {"params": merge_params(state.params, sub), "batch_stats": state.batch_stats}
            return policy_loss(model, recipe, variables, rollout, mask)

        def epoch(carry, _):
            sub, opt_state = carry
            (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(sub)
            sub, opt_state = apply_gradients(state, sub, grads, opt_state)
            return (sub, opt_state), (terms, _grad_norms(grads))

        # K PPO epochs over the stored rollout (official K = 1: one step with ratio ≡ 1).
        (new_sub, opt_state), (terms, norms) = jax.lax.scan(
            epoch, (sub0, state.opt_state), None, length=int(recipe.ppo["epochs"]))
        new_state = state.replace(step=state.step + 1, params=merge_params(state.params, new_sub),
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
                    offsets, batch["target_box"], int(model.config.patch_size),
                    batch.get("target_present")), mask)
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


# XLA:CPU hands convolutions to the YNNPACK library by default. Its weight-gradient convolutions
# are 2-3x slower than XLA's own convolution code at ResNet-50's 3x3 / 7x7 shapes (CPU time, same
# values), which made the CPU train steps slower than PyTorch's; measured on the full Sth-Sth
# model, side by side in one process (README "Training steps"): the stage-1 step ~10 % and the
# fused stage-2 step ~1.9x faster without it. Train steps compiled for CPU therefore turn the
# library fusions off; other backends get no option.
CPU_TRAIN_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def train_compiler_options(mesh) -> dict[str, str] | None:
    """XLA compiler options for a train step on `mesh`: `CPU_TRAIN_COMPILER_OPTIONS` on CPU."""
    return dict(CPU_TRAIN_COMPILER_OPTIONS) if mesh.devices.flat[0].platform == "cpu" else None


def jit_train_step(step_fn: Callable, mesh, donate: bool = True) -> Callable:
    """`jax.jit` with the state replicated and the batch sharded (shardings come with the inputs;
    outputs are pinned replicated so the state keeps its layout from step to step), compiled
    with `train_compiler_options(mesh)`."""
    return jax.jit(step_fn, out_shardings=parallel.replicated(mesh),
                   donate_argnums=(0,) if donate else (),
                   compiler_options=train_compiler_options(mesh))
