"""The losses of the training stages: pure functions of (model, recipe, variables, batch, rng).

  * `classification_loss`: the CE-type recipes (ce | step_ce | glancer_ce | focuser_ce, and v2 via
    `adafocus_jax.v2.v2_loss`); returns (loss, (new batch_stats, logits `[B, C]`)).
  * `ppo_rollout`: the acting half of the policy stage (no gradients): actions, patches, rewards,
    returns `[B, St]`.
  * `policy_loss`: the PPO / REINFORCE loss of a stored rollout under new policy parameters.

`batch` is the device batch of `docs/CONTRACTS.md`: `glance` uint8 `[B, T_G, S, S, 3]`, optional
`focus` `[B, T_L, S, S, 3]`, `label` int32 `[B]`, `mask` bool `[B]` (every mean is masked).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from adafocus_jax import crop as crop_lib
from adafocus_jax import metrics as metrics_lib
from adafocus_jax import models, rl, stages
from adafocus_jax import v2 as v2_lib
from adafocus_jax.data.transforms import normalize_batch_frames
from adafocus_jax.metrics import masked_mean
from adafocus_jax.models import Modes


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
