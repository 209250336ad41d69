"""Tests for adafocus_jax.rl: returns, normalisation, distributions and the PPO/REINFORCE losses,
checked against small examples worked out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import rl


def test_discounted_returns_hand_example():
    # gamma = 0.5: R2 = 3, R1 = 2 + 0.5*3 = 3.5, R0 = 1 + 0.5*3.5 = 2.75; second video all zeros but last.
    rewards = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]])
    returns = rl.discounted_returns(rewards, 0.5)
    np.testing.assert_allclose(returns, [[2.75, 3.5, 3.0], [1.0, 2.0, 4.0]], rtol=1e-6)


def test_discounted_returns_single_step_is_reward():
    rewards = jnp.array([[0.25], [-0.5]])
    np.testing.assert_allclose(rl.discounted_returns(rewards, 0.7), rewards)


def test_discounted_returns_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        rl.discounted_returns(jnp.ones((3,)), 0.7)


def test_normalize_returns_matches_unbiased_torch_convention():
    returns = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    values = np.array([1.0, 2.0, 3.0, 6.0])
    expected = (values - values.mean()) / (values.std(ddof=1) + 1e-5)
    got = rl.normalize_returns_masked(returns, jnp.ones(2, bool))
    np.testing.assert_allclose(np.asarray(got).ravel(), expected, rtol=1e-5)


def test_normalize_returns_batch_of_one_is_finite_zero():
    # torch.std of a single element is NaN; ours must give 0, not NaN.
    out = rl.normalize_returns_masked(jnp.array([[0.37]]), jnp.ones(1, bool))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [[0.0]], atol=1e-6)
    # Constant returns (std 0) are finite too.
    out = rl.normalize_returns_masked(jnp.full((4, 3), 2.0), jnp.ones(4, bool))
    np.testing.assert_allclose(out, np.zeros((4, 3)), atol=1e-6)


def test_categorical_log_prob_and_entropy_by_hand():
    probs = np.array([0.5, 0.25, 0.25])
    logits = jnp.log(jnp.array(probs))[None, None, :]
    lp = rl.categorical_log_prob(logits, jnp.array([[1]]))
    np.testing.assert_allclose(lp, [[math.log(0.25)]], rtol=1e-6)
    ent = rl.categorical_entropy(logits)
    np.testing.assert_allclose(ent, [[-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))]], rtol=1e-6)
    # The mode (the model's inference action) is the first maximum, like torch.argmax.
    from adafocus_jax import models
    tie = jnp.array([[[1.0, 3.0, 3.0]]])
    assert int(rl.categorical_mode(tie)[0, 0]) == 1
    assert int(models.deterministic_actions("categorical", tie)[0, 0]) == 1


def test_categorical_sample_frequencies():
    logits = jnp.log(jnp.array([0.7, 0.2, 0.1]))[None, None, :]
    logits = jnp.broadcast_to(logits, (4000, 1, 3))
    actions = rl.categorical_sample(jax.random.key(0), logits)
    freqs = np.bincount(np.asarray(actions).ravel(), minlength=3) / 4000
    np.testing.assert_allclose(freqs, [0.7, 0.2, 0.1], atol=0.03)


def test_gaussian_sample_is_clipped_and_log_prob_at_clipped_value():
    mean = jnp.full((2000, 1, 2), 0.9)
    actions = rl.gaussian_sample_clipped(jax.random.key(1), mean, 0.25)
    assert float(actions.min()) >= 0.0 and float(actions.max()) <= 1.0
    # About P(N(0.9, .25) > 1) = 34% of each axis is clamped to exactly 1.
    frac_at_one = float(jnp.mean(actions == 1.0))
    assert 0.28 < frac_at_one < 0.40
    # Log-prob of the clamped point (1, 1) under the unclamped Gaussian, by hand.
    lp = rl.gaussian_log_prob(jnp.array([[[0.9, 0.9]]]), 0.25, jnp.array([[[1.0, 1.0]]]))
    per_axis = -0.5 * (0.1 / 0.25) ** 2 - math.log(0.25) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(lp, [[2 * per_axis]], rtol=1e-6)


def test_gaussian_entropy_official_constant():
    ent = rl.gaussian_entropy(0.25, 2, (3, 1))
    assert ent.shape == (3, 1)
    np.testing.assert_allclose(ent, np.full((3, 1), 0.0653), atol=1e-4)


def test_ppo_loss_hand_example():
    # Two entries; ratio 1 for the first, e^{0.5} ≈ 1.6487 (clipped to 1.2) for the second.
    log_probs = jnp.array([[-1.0, -0.5]])
    old = jnp.array([[-1.0, -1.0]])
    values = jnp.array([[0.5, -0.5]])
    returns = jnp.array([[1.0, 1.0]])
    entropy = jnp.array([[2.0, 1.0]])
    terms = rl.ppo_loss(log_probs, old, values, returns, entropy)
    # A = R - V = [0.5, 1.5]; surrogate = min(r*A, clip(r)*A) = [0.5, 1.2*1.5 = 1.8].
    policy = -(0.5 + 1.8) / 2
    value = ((0.5 - 1.0) ** 2 + (-0.5 - 1.0) ** 2) / 2  # 1.25
    total = policy + 0.5 * value - 0.01 * 1.5
    np.testing.assert_allclose(float(terms.policy), policy, rtol=1e-6)
    np.testing.assert_allclose(float(terms.value), value, rtol=1e-6)
    np.testing.assert_allclose(float(terms.total), total, rtol=1e-6)
    np.testing.assert_allclose(float(terms.clip_fraction), 0.5)


def test_ppo_loss_negative_advantage_takes_unclipped_ratio():
    # With A < 0 and ratio < 1 - eps, min(r*A, clip(r)*A) takes clip(r)*A = 0.8*A (the pessimistic one).
    terms = rl.ppo_loss(jnp.array([[-2.0]]), jnp.array([[-1.0]]), jnp.array([[1.0]]),
                        jnp.array([[0.0]]), jnp.array([[0.0]]), entropy_coef=0.0, value_coef=0.0)
    np.testing.assert_allclose(float(terms.total), -(0.8 * -1.0), rtol=1e-6)


def test_ppo_gradient_at_ratio_one_equals_reinforce_gradient():
    # K = 1 (the official setting): ratio == 1 and PPO's gradient is the REINFORCE-with-baseline one.
    key = jax.random.key(3)
    logits = jax.random.normal(key, (3, 4, 5))
    actions = jnp.array([[0, 1, 2, 3], [4, 4, 0, 1], [2, 2, 2, 2]])
    values = jax.random.normal(jax.random.key(4), (3, 4))
    returns = jax.random.normal(jax.random.key(5), (3, 4))
    old = rl.categorical_log_prob(logits, actions)

    def ppo(lg):
        return rl.ppo_loss(rl.categorical_log_prob(lg, actions), old, values, returns,
                           rl.categorical_entropy(lg)).total

    def reinforce(lg):
        return rl.reinforce_loss(rl.categorical_log_prob(lg, actions), values, returns,
                                 rl.categorical_entropy(lg)).total

    np.testing.assert_allclose(jax.grad(ppo)(logits), jax.grad(reinforce)(logits), atol=1e-6)
    assert np.abs(np.asarray(jax.grad(ppo)(logits))).max() > 1e-3     # a real gradient


def test_ppo_diagnostics_by_hand():
    """ratio mean, clip fraction and the approximate KL E[(r - 1) - log r] at log-ratios
    (0.1, -0.3, 0.5) with eps 0.2, one entry weighted out."""
    log_ratio = np.array([0.1, -0.3, 0.5, 2.0])
    old = np.full(4, -1.0)
    weights = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    terms = rl.ppo_loss(jnp.asarray([old + log_ratio]), jnp.asarray([old]), jnp.zeros((1, 4)),
                        jnp.ones((1, 4)), jnp.zeros((1, 4)), weights=weights)
    r = np.exp(log_ratio[:3])
    np.testing.assert_allclose(float(terms.ratio_mean), r.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(terms.clip_fraction), 2 / 3, rtol=1e-6)   # 0.74, 1.65
    np.testing.assert_allclose(float(terms.approx_kl), np.mean(r - 1 - log_ratio[:3]), rtol=1e-5)


def test_value_gradient_flows_only_through_value_term():
    # The advantage uses stop_gradient(V): d/dV of the policy term must be zero.
    def loss(v):
        return rl.ppo_loss(jnp.array([[-1.0]]), jnp.array([[-1.2]]), v, jnp.array([[1.0]]),
                           jnp.array([[0.0]]), value_coef=0.0).total

    np.testing.assert_allclose(jax.grad(loss)(jnp.array([[0.3]])), [[0.0]])
