"""Classifiers f_C that fuse glance and local evidence (adafocus_v1.md §2.8).

- `LogitSumClassifier` (Something-Something): mean over local frames of `fc(dropout(local))` plus the
  mean over glance frames of the glance network's own logits. Raw logits are summed; no softmax.
- `RecurrentClassifier` (ActivityNet / FCVID / Mini-K): a GRU over `[global ‖ local]` pooled features,
  `fc` on every step's output (dropout on the GRU outputs in training); the prediction is the last step.

Both also compute the reward baseline of the policy (§5): the logits obtained when only step t's
patch is replaced by a random one, earlier steps keeping the policy's patches.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adafocus_jax.models.recurrent import GRU, torch_dense, torch_uniform_init


class TorchLinear(nn.Module):
    """`torch.nn.Linear` as a Flax layer: params `kernel` `[F, C]` and `bias` `[C]`, both
    U(±1/√F) at init (what `torch_dense` gives), with F read from the input at the first call, so
    the owner need not know its input width in `setup`.

    Attributes:
      features: C.
      dtype: the compute dtype (params stay float32).
    """
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """`[..., F]` → `[..., C]`."""
        fan_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                            (fan_in, self.features), jnp.float32)
        bias = self.param("bias", torch_uniform_init(fan_in ** -0.5), (self.features,),
                          jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return jnp.dot(x, kernel) + bias


class LogitSumClassifier(nn.Module):
    """Sth-Sth fusion: `mean_t fc(dropout(local_t)) + mean_t glance_logits_t`.

    `fc` (params `fc/kernel` `[F, C]`, `fc/bias` `[C]`) is initialised like the official
    `nn.Linear(F, C)`: kernel and bias U(±1/√F), F = the local feature width, read at the first
    call (`TorchLinear`). This matters beyond parity of the init: with
    `reproduce_released_lr_bug=True` the classifier is never trained and stays at this random
    initialisation (spec §11.1).

    Attributes:
      num_classes: C.
      dropout: rate on the local features in training (0.5 in stage 1, 0 in stage 3).
    """
    num_classes: int
    dropout: float = 0.5
    dtype: Any = jnp.float32

    def setup(self):
        self.fc = TorchLinear(self.num_classes, dtype=self.dtype)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, glance_out: jnp.ndarray, local_features: jnp.ndarray, train: bool = False):
        """Args: glance_out `[B, T_G, C]` glance logits; local_features `[B, T_L, F]`.

        Returns:
          (logits `[B, C]`, step_logits `[B, 1, C]`): one policy step per video.
        """
        local_logits = self.fc(self.drop(local_features, deterministic=not train))
        logits = local_logits.mean(axis=1) + glance_out.mean(axis=1)
        return logits, logits[:, None]

    def baseline_step_logits(self, glance_out, policy_local_features, random_local_features):
        """Logits with the step's patches replaced by random ones: `[B, 1, C]` (eval mode)."""
        del policy_local_features  # one step per video: every patch is replaced
        return self(glance_out, random_local_features, train=False)[1]


class RecurrentClassifier(nn.Module):
    """ActivityNet fusion: GRU over `[global_t ‖ local_t]`, `fc` at every step, predict the last.

    Attributes:
      num_classes: C.
      hidden_dim: GRU width (1024).
      dropout: rate on the GRU outputs in training (0.8 in the official commands).
    """
    num_classes: int
    hidden_dim: int = 1024
    dropout: float = 0.8
    dtype: Any = jnp.float32

    def setup(self):
        self.gru = GRU(self.hidden_dim)
        self.fc = torch_dense(self.num_classes, self.hidden_dim)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, glance_out: jnp.ndarray, local_features: jnp.ndarray, train: bool = False):
        """Args: glance_out `[B, T, F_G]` pooled glance features; local_features `[B, T, F_L]`.

        Returns:
          (logits `[B, C]` of the last step, step_logits `[B, T, C]`).
        """
        outputs, _ = self.gru(jnp.concatenate([glance_out, local_features], axis=-1))
        step_logits = self.fc(self.drop(outputs, deterministic=not train))
        return step_logits[:, -1], step_logits

    def baseline_step_logits(self, glance_out, policy_local_features, random_local_features):
        """Per-step logits when only step t uses the random patch, from the policy trajectory's
        hidden state h_{t−1} (h_{−1} = 0), without advancing it. All steps at once: `[B, T, C]`."""
        outputs, _ = self.gru(jnp.concatenate([glance_out, policy_local_features], axis=-1))
        previous = jnp.concatenate([jnp.zeros_like(outputs[:, :1]), outputs[:, :-1]], axis=1)
        replaced = self.gru.step(
            previous, jnp.concatenate([glance_out, random_local_features], axis=-1))
        return self.fc(replaced)
