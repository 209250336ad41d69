"""Training: the staged AdaFocus recipe as one jitted, data-parallel step per stage.

Modules (each imports only the ones above it and the rest of the package below it):
  * `train.state`: `TrainState`, `create_train_state`, `initial_variables`;
  * `train.losses`: `classification_loss`, `ppo_rollout`, `policy_loss` (pure functions);
  * `train.steps`: `make_train_step`, `with_stop_vote`, `jit_train_step`;
  * `train.preemption`: `StopFlag`, `TrainingInterrupted`, `EXIT_INTERRUPTED`;
  * `train.loop`: `run_stage`, `train_and_evaluate`, `summarize_metrics`, `check_finite`;
  * restores, hand-off and finished-stage checks live in `adafocus_jax.handoff` (re-exported here).

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

from adafocus_jax import checkpoint as ckpt_lib  # noqa: F401  (tests read checkpoints through it)
from adafocus_jax.handoff import (HANDOFF_MODES, check_stage_finished, handoff_mode,
                                  handoff_variables, load_init_from, restore_modules)
from adafocus_jax.train.loop import check_finite, run_stage, summarize_metrics, train_and_evaluate
from adafocus_jax.train.losses import _rngs, classification_loss, policy_loss, ppo_rollout
from adafocus_jax.train.preemption import EXIT_INTERRUPTED, StopFlag, TrainingInterrupted
from adafocus_jax.train.state import TrainState, create_train_state, initial_variables
from adafocus_jax.train.steps import jit_train_step, make_train_step, with_stop_vote

_StopFlag = StopFlag   # the name the tests use

__all__ = ["EXIT_INTERRUPTED", "HANDOFF_MODES", "StopFlag", "TrainState", "TrainingInterrupted",
           "check_finite", "check_stage_finished", "classification_loss", "create_train_state",
           "handoff_mode", "handoff_variables", "initial_variables", "jit_train_step",
           "load_init_from", "make_train_step", "policy_loss", "ppo_rollout", "restore_modules",
           "run_stage", "summarize_metrics", "train_and_evaluate", "with_stop_vote"]
