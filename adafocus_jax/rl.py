"""The policy maths of AdaFocus (stage 2 and inference): actions, distributions, returns, losses.

The one home of action sampling and scoring: `sample_actions` (training), `deterministic_actions`
(inference), `log_prob_and_entropy` (the PPO loss), used by `models.adafocus`, `train` and
`early_exit`.

Everything here is a pure `jax.numpy` function of arrays shaped `[B, S]` (B videos, S policy steps:
S = 1 for Sth-Sth, one patch per video; S = T for the ActivityNet family, one patch per frame), so it
runs inside the jitted stage-2 step with no host round trip.

The conventions follow the official code (reference spec §2.6 and §5):
  * reward r_t = p(y | policy patch at t) - p(y | random patch at t);
  * returns R_t = r_t + gamma * R_{t+1}, normalised over all B*S entries with the *unbiased* std + 1e-5;
  * PPO: ratio = exp(logp - logp_old), advantage A = R_hat - stop_gradient(V),
    loss = mean(-min(ratio*A, clip(ratio, 1-eps, 1+eps)*A)) + 0.5*MSE(V, R_hat) - 0.01*mean(entropy);
  * the continuous action is a 2-D Gaussian whose per-axis *standard deviation* is `action_std`
    (the official code calls it `action_var` but passes it as `scale_tril`), sampled, clamped to [0, 1],
    and scored at the clamped value under the unclamped Gaussian.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from adafocus_jax.metrics import expand_mask, masked_mean

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------------
# Returns.


def discounted_returns(rewards: jax.Array, gamma: float) -> jax.Array:
    """R_t = r_t + gamma * R_{t+1} along the step axis, with R_S = 0.

    Args:
      rewards: `[B, S]` per-step rewards.
      gamma: discount factor (0.7 in AdaFocus).

    Returns:
      `[B, S]` discounted returns.
    """
    if rewards.ndim != 2:
        raise ValueError(f"discounted_returns: rewards must be [B, S], got shape {rewards.shape}")

    def backward(next_return, reward_t):
        ret = reward_t + gamma * next_return
        return ret, ret

    # Scan over steps from the last to the first; the carry is R_{t+1}.
    _, returns = jax.lax.scan(backward, jnp.zeros_like(rewards[:, 0]), rewards.T, reverse=True)
    return returns.T


def normalize_returns_masked(returns: jax.Array, mask: jax.Array, eps: float = 1e-5) -> jax.Array:
    """(R - mean) / (unbiased std + eps) over the entries where `mask` is True (the official
    normalisation over every entry when all are valid); padding/skipped videos are left out.

    Invalid entries come back as 0, so they carry no advantage. With n valid entries the unbiased
    variance divides by max(n - 1, 1), so one valid entry gives 0, never NaN (`torch.std` of one
    element is NaN).

    Args:
      returns: `[B, S]` discounted returns.
      mask: bool/float `[B]` (per video) or `[B, S]`.
      eps: added to the std (1e-5, official).

    Returns:
      `[B, S]` normalised returns.
    """
    weights = jnp.broadcast_to(expand_mask(mask, returns), returns.shape).astype(returns.dtype)
    n = jnp.sum(weights)
    mean = jnp.sum(returns * weights) / jnp.maximum(n, 1.0)
    centred = (returns - mean) * weights
    var = jnp.sum(centred * centred) / jnp.maximum(n - 1.0, 1.0)
    return centred / (jnp.sqrt(var) + eps)


# --------------------------------------------------------------------------------------------------
# Categorical policy (ActivityNet family: a k*k grid of patch locations, one choice per frame).


def categorical_sample(rng: jax.Array, logits: jax.Array) -> jax.Array:
    """Samples action indices. `logits`: `[B, S, A]` → int32 `[B, S]`."""
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def categorical_mode(logits: jax.Array) -> jax.Array:
    """The deterministic action: the first maximum, like `torch.argmax`. `[B, S, A]` → int32 `[B, S]`."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log pi(a) for `logits` `[B, S, A]` and int `actions` `[B, S]` → `[B, S]`."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_probs, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of each categorical distribution, `[B, S, A]` → `[B, S]` (nats)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


# --------------------------------------------------------------------------------------------------
# Clipped Gaussian policy (Sth-Sth: one continuous 2-D patch centre in [0, 1]^2 per video).


def gaussian_sample_clipped(rng: jax.Array, mean: jax.Array, std: float) -> jax.Array:
    """Draws a ~ N(mean, std^2 I) and clamps it into [0, 1] per axis (official `relu` / `1 - relu(1 - a)`).

    Args:
      rng: PRNG key.
      mean: `[B, S, D]` Gaussian means (the policy's sigmoid output, in [0, 1]).
      std: per-axis standard deviation (`action_std`, 0.25 in the official scripts).

    Returns:
      `[B, S, D]` clamped actions.
    """
    noise = jax.random.normal(rng, mean.shape, dtype=mean.dtype)
    return jnp.clip(mean + std * noise, 0.0, 1.0)


def gaussian_log_prob(mean: jax.Array, std: float, actions: jax.Array) -> jax.Array:
    """log N(actions; mean, std^2 I), summed over the action axis: `[B, S, D]` → `[B, S]`.

    The official code scores the *clamped* action under the *unclamped* Gaussian, so no correction for
    the probability mass at the clamp boundaries is applied (reference spec §2.6, §11.6).
    """
    z = (actions - mean) / std
    per_axis = -0.5 * z * z - math.log(std) - 0.5 * _LOG_2PI
    return jnp.sum(per_axis, axis=-1)


def gaussian_entropy(std: float, action_dim: int, shape: tuple[int, ...]) -> jax.Array:
    """Entropy of N(., std^2 I_D), a constant: D * (1/2 + 1/2 ln 2pi + ln std); `shape` is `[B, S]`.

    For D = 2 and std = 0.25 this is 1 + ln 2pi + 2 ln 0.25 ≈ 0.0653 (the official value); it has no
    gradient, so the entropy bonus does nothing for the continuous policy, as in the official code.
    """
    value = action_dim * (0.5 + 0.5 * _LOG_2PI + math.log(std))
    return jnp.full(shape, value, dtype=jnp.float32)


# --------------------------------------------------------------------------------------------------
# Either policy kind ("gaussian" | "categorical", `config.model.policy.kind`).


def sample_actions(kind: str, dist_params: jax.Array, rng: jax.Array,
                   action_std: float) -> jax.Array:
    """Training actions: a Gaussian sample clamped to [0, 1] (per-axis std `action_std`) `[B, S, 2]`,
    or a categorical sample int32 `[B, S]`; `dist_params` `[B, S, 2]` means or `[B, S, A]` logits."""
    if kind == "gaussian":
        return gaussian_sample_clipped(rng, dist_params, float(action_std))
    return categorical_sample(rng, dist_params)


def deterministic_actions(kind: str, dist_params: jax.Array) -> jax.Array:
    """Inference actions: the Gaussian mean `[B, S, 2]`, or the first argmax int32 `[B, S]`."""
    return dist_params if kind == "gaussian" else categorical_mode(dist_params)


def log_prob_and_entropy(kind: str, dist_params: jax.Array, actions: jax.Array,
                         action_std: float) -> tuple[jax.Array, jax.Array]:
    """(log pi(a) `[B, S]`, entropy `[B, S]`) of `actions` under `dist_params` (shapes as in
    `sample_actions`)."""
    if kind == "gaussian":
        std = float(action_std)
        return (gaussian_log_prob(dist_params, std, actions),
                gaussian_entropy(std, dist_params.shape[-1], dist_params.shape[:2]))
    return categorical_log_prob(dist_params, actions), categorical_entropy(dist_params)


# --------------------------------------------------------------------------------------------------
# Losses.


class PolicyLossTerms(NamedTuple):
    """Scalar pieces of a policy loss, for logging. All are 0-d arrays."""
    total: jax.Array
    policy: jax.Array
    value: jax.Array
    entropy: jax.Array
    ratio_mean: jax.Array
    clip_fraction: jax.Array
    approx_kl: jax.Array


def ppo_loss(log_probs: jax.Array, old_log_probs: jax.Array, values: jax.Array,
             norm_returns: jax.Array, entropy: jax.Array, *, clip_eps: float = 0.2,
             value_coef: float = 0.5, entropy_coef: float = 0.01,
             weights: jax.Array | None = None) -> PolicyLossTerms:
    """The official PPO loss (clipped surrogate + value MSE - entropy bonus).

    Args:
      log_probs: `[B, S]` log pi_theta(a) under the parameters being optimised.
      old_log_probs: `[B, S]` log pi_old(a) recorded when acting (treated as constants).
      values: `[B, S]` critic outputs V(s).
      norm_returns: `[B, S]` normalised returns R_hat (constants).
      entropy: `[B, S]` policy entropies.
      clip_eps: PPO clip range (0.2).
      value_coef: weight of MSE(V, R_hat) (0.5).
      entropy_coef: weight of the entropy bonus (0.01).
      weights: optional `[B]` or `[B, S]` mask; every mean becomes a weighted mean (padding rows and
        skipped videos weigh 0). None = plain means, as the official code.

    Returns:
      `PolicyLossTerms`; `total` is the scalar to minimise.
    """
    mean = lambda x: masked_mean(x, weights)  # noqa: E731
    old_log_probs = jax.lax.stop_gradient(old_log_probs)
    norm_returns = jax.lax.stop_gradient(norm_returns)
    advantages = norm_returns - jax.lax.stop_gradient(values)
    log_ratio = log_probs - old_log_probs
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * advantages,
                            jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)
    policy_term = -mean(surrogate)
    value_term = mean(jnp.square(values - norm_returns))
    entropy_term = mean(entropy)
    total = policy_term + value_coef * value_term - entropy_coef * entropy_term
    clipped = jnp.abs(ratio - 1.0) > clip_eps
    return PolicyLossTerms(
        total=total, policy=policy_term, value=value_term, entropy=entropy_term,
        ratio_mean=mean(ratio), clip_fraction=mean(clipped.astype(jnp.float32)),
        # The low-variance estimator E[(r - 1) - log r] of KL(old || new).
        approx_kl=mean((ratio - 1.0) - log_ratio))


def reinforce_loss(log_probs: jax.Array, values: jax.Array, norm_returns: jax.Array,
                   entropy: jax.Array, *, value_coef: float = 0.5,
                   entropy_coef: float = 0.01,
                   weights: jax.Array | None = None) -> PolicyLossTerms:
    """REINFORCE with a learned baseline: -mean(log pi(a) * (R_hat - V)) + value MSE - entropy bonus.

    Its gradient equals the PPO gradient at ratio 1 (which is what the official K = 1 PPO computes);
    the value of the policy term differs (it is log pi * A, not ratio * A).
    Shapes (and `weights`) as in `ppo_loss`.
    """
    mean = lambda x: masked_mean(x, weights)  # noqa: E731
    norm_returns = jax.lax.stop_gradient(norm_returns)
    advantages = norm_returns - jax.lax.stop_gradient(values)
    policy_term = -mean(log_probs * advantages)
    value_term = mean(jnp.square(values - norm_returns))
    entropy_term = mean(entropy)
    total = policy_term + value_coef * value_term - entropy_coef * entropy_term
    one = jnp.ones((), jnp.float32)
    return PolicyLossTerms(total=total, policy=policy_term, value=value_term, entropy=entropy_term,
                           ratio_mean=one, clip_fraction=0.0 * one, approx_kl=0.0 * one)
