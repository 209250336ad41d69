"""The policy maths of AdaFocus (stage 2 and inference): actions, distributions, returns, losses.

The one home of action sampling and scoring: `sample_actions` (training), `deterministic_actions`
(inference), `log_prob_and_entropy` (the PPO loss), used by `models.adafocus`, `train` and
`early_exit`; and of Uni-AdaFocus's temporal policy maths (`quantile_frame_indices`,
`stratified_offsets`, `removal_keep_masks`, `mc_surrogate_logits`, used by `models.uni`), at the
end of this file.

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


# --------------------------------------------------------------------------------------------------
# Uni-AdaFocus temporal policy (adafocus_family.md §1.4): which K of the N candidate frames the
# local network sees, drawn from a distribution over the G glance positions, and the Monte-Carlo
# surrogate through which that distribution is trained (the selection itself has no gradient).


def stratified_offsets(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Training offsets u ~ U[0, 1) `shape` (`[B, K]`: one per video and chosen frame, so the
    thresholds (i + u_i) / K stratify [0, 1)); at test the official code uses u = 0.5."""
    return jax.random.uniform(rng, shape, jnp.float32)


def quantile_frame_indices(weights: jax.Array, num_candidates: int, num_chosen: int,
                           offsets: jax.Array | float = 0.5) -> jax.Array:
    """K distinct, increasing candidate-frame indices by quantile sampling of the policy's CDF.

    The G weights spread the probability mass evenly over G equal bins of [0, 1) (bin j =
    [j/G, (j+1)/G)), so the CDF is piecewise linear through (j/G, C_j), C_j = w_0 + ... + w_{j-1}
    (C_G forced to 1). Threshold i is q_i = (i + u_i) / K; its quantile x_i solves CDF(x) = q_i
    on the first bin j whose right end C_{j+1} reaches q_i (the official linear-interpolation
    formula), and the frame is floor(x_i · N). A frame equal to or before the previous one is
    pushed to the previous one + 1 (official loop; here `i + cummax(f - i)`), and frame i is at most
    N - K + i, so the K frames are distinct and in range.

    Args:
      weights: `[B, G]` probabilities over the glance positions (rows sum to 1).
      num_candidates: N, frames the indices refer to (48 officially).
      num_chosen: K ≤ N, frames to choose (16 officially).
      offsets: u, `[B, K]` in [0, 1) (`stratified_offsets`, training) or a scalar (0.5, test).

    Returns:
      int32 `[B, K]` frame indices in [0, N), strictly increasing along K.
    """
    if weights.ndim != 2:
        raise ValueError(f"quantile_frame_indices: weights must be [B, G], got {weights.shape}")
    if not 0 < num_chosen <= num_candidates:
        raise ValueError(f"quantile_frame_indices: need 0 < K={num_chosen} <= N={num_candidates}")
    b, g = weights.shape
    weights = jax.lax.stop_gradient(weights).astype(jnp.float32)
    cdf = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), jnp.cumsum(weights, axis=1)], axis=1)
    cdf = cdf.at[:, -1].set(1.0)                                              # [B, G + 1]
    u = jnp.broadcast_to(jnp.asarray(offsets, jnp.float32), (b, num_chosen))
    thresholds = (jnp.arange(num_chosen, dtype=jnp.float32) + u) / num_chosen  # [B, K]
    # First CDF node reaching the threshold, minus one: the bin holding the quantile.
    first = jnp.argmax(cdf[:, :, None] >= thresholds[:, None, :], axis=1)    # [B, K]
    bin_ = jnp.clip(first, 1, g) - 1
    y1 = jnp.take_along_axis(cdf, bin_, axis=1)
    y2 = jnp.take_along_axis(cdf, bin_ + 1, axis=1)
    x1 = bin_.astype(jnp.float32) / g
    x2 = (bin_ + 1).astype(jnp.float32) / g
    rise = jnp.where(y2 > y1, y2 - y1, 1.0)    # only a threshold of exactly 0 can meet a flat bin
    quantile = (x2 * (thresholds - y1) - x1 * (thresholds - y2)) / rise
    frames = jnp.floor(quantile * num_candidates).astype(jnp.int32)
    steps = jnp.arange(num_chosen, dtype=jnp.int32)
    frames = steps + jax.lax.cummax(frames - steps, axis=1)   # a_i = max(f_i, a_{i-1} + 1)
    return jnp.minimum(frames, num_candidates - num_chosen + steps)


def removal_keep_masks(rng: jax.Array, weights: jax.Array, num_removals: int,
                       num_samples: int) -> jax.Array:
    """The frames kept by the Monte-Carlo surrogate's random removals.

    For each r = 0 .. R - 1 and each of S samples, r of the G glance positions are removed, drawn
    without replacement with probabilities ∝ `weights` (the official `multinomial(w, r)`), by the
    Gumbel-top-r trick: the r largest of log w + Gumbel noise are exactly such a draw.

    Args:
      rng: PRNG key.
      weights: `[B, G]` probabilities (no gradient flows through the draw).
      num_removals: R (official: G // 3), so 0 .. R - 1 positions are removed.
      num_samples: S (official: 128).

    Returns:
      float32 `[R · S, B, G]` keep masks (1 = kept); row r · S + s removes exactly r positions.
    """
    if weights.ndim != 2:
        raise ValueError(f"removal_keep_masks: weights must be [B, G], got {weights.shape}")
    b, g = weights.shape
    if not 1 <= num_removals <= g:
        raise ValueError(f"removal_keep_masks: num_removals={num_removals} must be in [1, G={g}]")
    log_w = jnp.log(jax.lax.stop_gradient(weights).astype(jnp.float32))
    scores = log_w + jax.random.gumbel(rng, (num_removals, num_samples, b, g), jnp.float32)
    ranks = jnp.argsort(jnp.argsort(-scores, axis=-1), axis=-1)     # 0 = removed first
    removed = ranks < jnp.arange(num_removals)[:, None, None, None]
    return (~removed).astype(jnp.float32).reshape(num_removals * num_samples, b, g)


def mc_surrogate_logits(logits: jax.Array, weights: jax.Array, keep: jax.Array) -> jax.Array:
    """The temporal policy's Monte-Carlo surrogate prediction (trained with cross-entropy).

    For each keep mask m: the weighted mean of the glance logits over the kept positions,
    sum_t m_t w_t l_t / stop_gradient(sum_t m_t w_t) (the normaliser is a constant, as in the
    official code); then the mean over the M masks.

    Args:
      logits: `[B, G, K]` per-glance-frame logits.
      weights: `[B, G]` the temporal policy's distribution (gradients flow to it and to `logits`).
      keep: `[M, B, G]` keep masks (`removal_keep_masks`).

    Returns:
      `[B, K]` surrogate logits.
    """
    if keep.ndim != 3 or keep.shape[1:] != weights.shape or logits.shape[:2] != weights.shape:
        raise ValueError(f"mc_surrogate_logits: logits {logits.shape}, weights {weights.shape} and "
                         f"keep {keep.shape} must be [B, G, K], [B, G] and [M, B, G]")
    kept = keep * weights[None]                                              # [M, B, G]
    norm = jax.lax.stop_gradient(jnp.sum(kept, axis=-1, keepdims=True))     # [M, B, 1]
    pooled = jnp.einsum("mbg,bgk->mbk", kept, logits.astype(jnp.float32)) / norm
    return jnp.mean(pooled, axis=0)
