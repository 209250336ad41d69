"""The patch-location policy π: state encoder → GRU over steps → actor and critic heads.

Two official variants (adafocus_v1.md §2.6):
- "gaussian" (Something-Something): one step per video; the state is the 8 glance maps stacked on
  channels; encoder conv1x1 → BN → ReLU → flatten → Linear → BN → ReLU; the actor outputs the
  Gaussian mean through a sigmoid; the per-axis standard deviation is a fixed `action_std`.
- "categorical" (ActivityNet / FCVID / Mini-K): one step per frame; the state is that frame's glance
  map; encoder conv1x1 → ReLU → flatten → Linear → ReLU (no BN); the actor gives logits over a k×k grid
  of patch positions.

The distribution maths (sampling, log-probs, entropy) is in `adafocus_jax.rl`; this module only maps
states to distribution parameters and values.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adafocus_jax.models.layers import BatchNorm
from adafocus_jax.models.recurrent import GRU, torch_dense

POLICY_KINDS = ("gaussian", "categorical")


class ActorCritic(nn.Module):
    """Recurrent actor-critic over policy steps.

    Attributes:
      kind: "gaussian" (2-D continuous action in [0, 1]²) or "categorical" (grid index).
      num_actions: grid cells k² for "categorical" (ignored for "gaussian").
      hidden_dim: encoder output and GRU width (1024 in the paper).
      encoder_channels: 1x1-conv channels of the state encoder (64 Sth-Sth, 32 ActivityNet).
      encoder_bn: BatchNorm after the encoder conv and linear layers (Sth-Sth only).
      dtype: compute dtype of the encoder conv and its BatchNorm; the linear layers, the GRU, the
        actor and the critic always run in float32, so distribution parameters, values and the
        log-probs computed from them are float32 under a bfloat16 model.
    """
    kind: str = "gaussian"
    num_actions: int = 49
    hidden_dim: int = 1024
    encoder_channels: int = 64
    encoder_bn: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, states: jnp.ndarray, train: bool = False,
                 initial_state: jnp.ndarray | None = None, return_state: bool = False):
        """Maps a sequence of states to distribution parameters and values.

        Args:
          states: `[B, S, h, w, C]` glance feature maps per policy step (S = 1 for Sth-Sth, where
            C = frames × 1280 with frame-major channels; S = frames for ActivityNet).
          train: BatchNorm uses batch statistics (the official stage 2 acts in train mode).
          initial_state: `[B, hidden_dim]` GRU state to continue from (zeros if None): running
            S steps at a time gives the same outputs as one call over all steps (early exit).
          return_state: also return the GRU state after the last step.

        Returns:
          (dist_params, values[, state `[B, hidden_dim]`]): dist_params is the Gaussian mean
          `[B, S, 2]` in (0, 1) (row, col) or the categorical logits `[B, S, num_actions]`;
          values `[B, S]`.
        """
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"policy kind must be one of {POLICY_KINDS}, got {self.kind!r}")
        b, s, h, w, c = states.shape
        x = states.reshape(b * s, h, w, c)
        x = nn.Conv(self.encoder_channels, (1, 1), use_bias=False, dtype=self.dtype,
                    kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                    name="encoder_conv")(x)
        if self.encoder_bn:
            x = BatchNorm(use_running_average=not train, dtype=self.dtype, name="encoder_conv_bn")(x)
        x = nn.relu(x)
        # PyTorch flattens channel-major (index = c·h·w + y·w + x); keep that order so converted
        # weights apply unchanged.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(b * s, -1)
        x = torch_dense(self.hidden_dim, x.shape[-1], name="encoder_dense")(x)
        if self.encoder_bn:
            x = BatchNorm(use_running_average=not train, dtype=self.dtype,
                          name="encoder_dense_bn")(x)
        x = nn.relu(x).reshape(b, s, self.hidden_dim)
        outputs, state = GRU(self.hidden_dim, name="gru")(x, initial_state)
        if self.kind == "gaussian":
            dist_params = nn.sigmoid(torch_dense(2, self.hidden_dim, name="actor")(outputs))
        else:
            dist_params = torch_dense(self.num_actions, self.hidden_dim, name="actor")(outputs)
        values = torch_dense(1, self.hidden_dim, name="critic")(outputs)[..., 0]
        return (dist_params, values, state) if return_state else (dist_params, values)

