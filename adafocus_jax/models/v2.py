"""AdaFocusV2 (CVPR 2022): the same glance / local networks, a differentiable patch, one stage.

Mechanism (adafocus_family.md §1.2): the policy outputs a location a ∈ [0, 1]² through a sigmoid,
the patch is the P × P box with top-left a · (H − P) resampled bilinearly
(`crop.bilinear_crop`, PyTorch `grid_sample` semantics), so the local network's loss reaches the
policy by back-propagation; no RL, no stages.

Data flow for B videos (training computes the policy patches and uniformly random patches for the
diversity augmentation; see `AdaFocusV2.train_outputs` and `adafocus_jax.v2`):

    glance frames [B, T_G, S, S, 3] ─► glancer ─► maps [B, T_G, h, w, C_G], pooled [B, T_G, C_G],
                                                 glance logits (+ "reg" logits, Sth-Sth) [B, T_G, K]
    stop_gradient(maps) ─► PolicyV2 ─► actions [B, St, 2] in (0, 1)  (St = 1 Sth-Sth, T ActivityNet)
    actions ─► top-left a·(H − P) ─► bilinear crop of the focus frames ─► [B, T_L, P, P, 3]
    patches ─► focuser (one call) ─► pooled [B, T_L, F], local logits (+ "reg") [B, T_L, K]
    ActivityNet family: concat(glance pooled, local pooled) ─► FrameExitClassifier ─► [B, T, K]
    Sth-Sth: mean_t glance logits + mean_t local logits (both heads on detached features)

Top-level modules keep the V1 names (`glancer`, `focuser`, `policy`, `classifier`), so the stage
recipes, checkpoints, hand-off and per-module learning rates work unchanged. The auxiliary heads
live inside the backbones: ActivityNet's `global_CNN_fc` is the glancer's own `classifier` and
`local_CNN_fc` the focuser's `fc` (both on non-detached features, dropout first); Sth-Sth's TSN
`new_fc` (on detached features) and `new_new_fc` ("reg", non-detached) are `classifier` /
`reg_classifier` of the glancer and `fc` / `reg_fc` of the focuser, after the TSN dropout.
The ActivityNet classifier has no learnable part on Sth-Sth (the logits are summed), so there the
`classifier` module holds no parameters.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adafocus_jax import crop as crop_lib
from adafocus_jax.models.adafocus import (AdaFocus, AdaFocusOutput, Modes, check_frames,
                                          glance_network, local_network)
from adafocus_jax.models.layers import BatchNorm
from adafocus_jax.models.recurrent import GRU, torch_dense
from adafocus_jax.patch_modes import patch_modes

V2_PATCH_MODES = patch_modes("v2")   # see adafocus_jax.patch_modes


def coarse_to_fine_order(num_frames: int) -> list[int]:
    """The official `--sample` frame order of the ActivityNet-family V2 runs.

    First the middle frame floor((T − 1) / 2), then the first and the last; then, for q = 2, 4,
    8, ..., the floored midpoints of the q intervals between floor(linspace(0, T − 1, q + 1)),
    each appended once. With a running max-pool and one exit per step, every prefix of this order
    covers the clip evenly (the basis of the conditional exit).
    """
    order = [(num_frames - 1) // 2, 0, num_frames - 1]
    seen = []
    for index in order:
        if index not in seen:
            seen.append(index)
    q = 2
    while len(seen) < num_frames:
        bounds = np.floor(np.linspace(0, num_frames - 1, q + 1)).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            mid = int((lo + hi) // 2)
            if mid not in seen:
                seen.append(mid)
        q *= 2
    return seen[:num_frames]


class PolicyV2(nn.Module):
    """The V2 location network: glance maps → (row, col) in (0, 1) per policy step.

    Encoder (both families): 1×1 conv (no bias) → BN → tanh → flatten (channel-major, like
    PyTorch) → Linear(hidden_dims[0]) → BN1d → tanh. Then either a GRU over the steps (ActivityNet
    family, `recurrent=True`, one location per frame) or further Linear → BN1d → tanh layers
    (Sth-Sth: `hidden_dims = (1024, 512)`, one location per video from the channel-concatenated
    glance maps), and a Linear(2) + sigmoid.

    Attributes:
      hidden_dims: widths of the linear layers (ActivityNet: (2048,) then the GRU of that width).
      recurrent: a GRU after the encoder (one output per step).
      encoder_channels: 1×1-conv channels (64 in both official networks).
    """
    hidden_dims: Sequence[int] = (1024, 512)
    recurrent: bool = False
    encoder_channels: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, states: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """`[B, St, h, w, C]` states (see `AdaFocus.policy_states`) → actions `[B, St, 2]`."""
        b, s, h, w, c = states.shape
        x = states.reshape(b * s, h, w, c)
        x = nn.Conv(self.encoder_channels, (1, 1), use_bias=False, dtype=self.dtype,
                    kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                    name="encoder_conv")(x)
        x = jnp.tanh(BatchNorm(use_running_average=not train, dtype=self.dtype,
                               name="encoder_conv_bn")(x))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(b * s, -1)   # PyTorch's NCHW flatten
        dims = list(self.hidden_dims)
        for i, dim in enumerate(dims[:1] if self.recurrent else dims):
            x = torch_dense(dim, x.shape[-1], name=f"dense{i}")(x)
            x = jnp.tanh(BatchNorm(use_running_average=not train, dtype=self.dtype,
                                   name=f"dense{i}_bn")(x))
        x = x.reshape(b, s, -1)
        if self.recurrent:
            x, _ = GRU(dims[0], name="gru")(x)
        return nn.sigmoid(torch_dense(2, x.shape[-1], name="actor")(x))


class FrameExitClassifier(nn.Module):
    """The FrameExit-style V2 classifier (ActivityNet family).

    Shared MLP Linear(F → hidden) → BN1d → ReLU on every step's `[global ‖ local]` features,
    running max-pool over the steps, then one Dropout → Linear head per step (`head{t}`), each
    step's prediction supervised; the video prediction is the last step's.

    Attributes:
      num_classes: K.
      num_steps: T (one head per step).
      hidden_dim: 4096 officially.
      dropout: before each head in training (0.2 officially).
    """
    num_classes: int
    num_steps: int
    hidden_dim: int = 4096
    dropout: float = 0.2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, glance_out: jnp.ndarray, local_features: jnp.ndarray, train: bool = False):
        """glance_out `[B, T, F_G]`, local_features `[B, T, F_L]` →
        (logits `[B, K]` of the last step, step_logits `[B, T, K]`)."""
        x = jnp.concatenate([glance_out, local_features], axis=-1)
        b, t, f = x.shape
        if t != self.num_steps:
            raise ValueError(f"FrameExitClassifier has {self.num_steps} heads, got {t} steps")
        z = torch_dense(self.hidden_dim, f, name="mlp")(x.reshape(b * t, f))
        z = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="mlp_bn")(z))
        pooled = jax.lax.cummax(z.reshape(b, t, -1), axis=1)
        drop = nn.Dropout(self.dropout)
        step_logits = jnp.stack(
            [torch_dense(self.num_classes, self.hidden_dim, name=f"head{i}")(
                drop(pooled[:, i], deterministic=not train)) for i in range(t)], axis=1)
        return step_logits[:, -1], step_logits


class SumLogitsV2(nn.Module):
    """Sth-Sth V2 fusion: mean over frames of the glance logits plus mean of the local logits
    (both from heads on detached features). No parameters."""

    def __call__(self, glance_logits: jnp.ndarray, local_logits: jnp.ndarray,
                 train: bool = False):
        """`[B, T_G, K]`, `[B, T_L, K]` → (logits `[B, K]`, step_logits `[B, 1, K]`)."""
        del train
        logits = glance_logits.mean(axis=1) + local_logits.mean(axis=1)
        return logits, logits[:, None]


class AdaFocusV2(AdaFocus):
    """AdaFocusV2 on the V1 networks; `config.model.version == "v2"` (see `v2_model_config`).

    `__call__` has the V1 signature and output (`AdaFocusOutput`: `actions` are the locations in
    [0, 1] `[B, St, 2]`, `patch_offsets` their int32 floor(a · (H − P)) for display; the crop itself
    uses the exact float box). `train_outputs` is the training forward pass.
    """

    def setup_backbones(self):
        """Builds `glancer` and `focuser` with their heads (called from `setup`; shared with
        Uni-AdaFocus). Sth-Sth (per-video policy): TSM when configured, TSN heads `classifier` /
        `fc` on detached features plus the "reg" heads; ActivityNet family: one head each on the
        non-detached features."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        sth = not cfg.policy.per_frame
        self.glancer = glance_network(cfg, dtype, head_stop_gradient=sth, reg_head=sth)
        self.focuser = local_network(cfg, dtype, cfg.num_classes,
                                     head_dropout=cfg.focuser.dropout, head_stop_gradient=sth,
                                     reg_head=sth)

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.setup_backbones()
        self.policy = PolicyV2(hidden_dims=tuple(cfg.policy.hidden_dims),
                               recurrent=bool(cfg.policy.per_frame),
                               encoder_channels=cfg.policy.encoder_channels, dtype=dtype)
        if cfg.classifier.kind == "frame_exit":
            self.classifier = FrameExitClassifier(
                cfg.num_classes, cfg.num_glance_frames, cfg.classifier.hidden_dim,
                cfg.classifier.dropout, dtype=dtype)
        elif cfg.classifier.kind == "logit_sum":
            self.classifier = SumLogitsV2()
        else:
            raise ValueError(f"config.model.classifier.kind={cfg.classifier.kind!r}: AdaFocusV2 "
                             "expects frame_exit (ActivityNet family) or logit_sum (Sth-Sth)")

    # ----------------------------------------------------------------------------------------

    def frame_order(self, frames: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, ...]` → the frames in `config.model.frame_order` ("natural" or
        "coarse_to_fine", the official ActivityNet `--sample`)."""
        if self.config.frame_order == "natural" or frames is None:
            return frames
        return frames[:, np.asarray(coarse_to_fine_order(frames.shape[1]))]

    def glance_v2(self, glance_frames: jnp.ndarray, train: bool = False):
        """`[B, T_G, S, S, 3]` → dict: `maps` `[B, T_G, h, w, C_G]`, `pooled` `[B, T_G, C_G]`,
        `logits` `[B, T_G, K]` and (Sth-Sth) `reg_logits` `[B, T_G, K]`."""
        frames = self.resize_for_glance(glance_frames)
        b, t = frames.shape[:2]
        out = self.glancer(frames.reshape(b * t, *frames.shape[2:]), train, with_logits=True)
        out = {k: v.reshape(b, t, *v.shape[1:]) for k, v in out.items()}
        out["maps"] = out.pop("feature_map")
        return out

    def local_v2(self, patches: jnp.ndarray, train: bool = False):
        """Local network on every patch in one call: `[N, T_L, P, P, 3]` → dict `pooled`
        `[N, T_L, F]`, `logits` `[N, T_L, K]` and (Sth-Sth) `reg_logits`."""
        n, t = patches.shape[:2]
        out = self.focuser(patches.reshape(n * t, *patches.shape[2:]), train, with_logits=True)
        # Not the maps (nothing reads the local network's map; the dict reaches callers).
        return {k: v.reshape(n, t, *v.shape[1:]) for k, v in out.items()
                if k not in ("feature_map", "head_features")}

    def locate(self, maps: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Policy locations `[B, St, 2]` from the (detached) glance maps `[B, T_G, h, w, C_G]`."""
        return self.policy(self.policy_states(jax.lax.stop_gradient(maps)), train)

    def v2_crop(self, frames: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, S, S, 3]`, locations `[B, St, 2]` → differentiable patches `[B, T, P, P, 3]`."""
        cfg = self.config
        top_left = crop_lib.v2_top_left(actions, cfg.input_size, cfg.patch_size)
        return crop_lib.bilinear_crop(frames, top_left, cfg.patch_size)

    def fuse(self, glance: dict, local: dict, train: bool = False):
        """→ (logits `[N, K]`, step_logits `[N, St, K]`) for N = a multiple of the B glance rows
        (training fuses policy and random patches against the same glance outputs)."""
        repeat = local["pooled"].shape[0] // glance["pooled"].shape[0]
        tile = lambda x: jnp.concatenate([x] * repeat, axis=0)  # noqa: E731
        if self.config.classifier.kind == "frame_exit":
            return self.classifier(tile(glance["pooled"]), local["pooled"], train)
        return self.classifier(tile(glance["logits"]), local["logits"])

    def train_outputs(self, glance_frames: jnp.ndarray, focus_frames: jnp.ndarray | None,
                      train: "bool | Modes" = True) -> dict:
        """The V2 training forward pass with the diversity augmentation.

        The policy locations and uniformly random locations (rng stream `patches`) crop the focus
        frames; the two patch sets go through the local network (two calls with train-mode
        BatchNorm, so their batch statistics stay apart as in the official code; one call of 2B
        videos otherwise) and through the classifier; the glance network runs once.

        Returns:
          dict with `glance` (see `glance_v2`), `local` (see `local_v2`, 2B rows: policy first,
          then random), `logits` `[2B, K]`, `step_logits` `[2B, St, K]`, `actions` `[B, St, 2]`,
          `random_actions` `[B, St, 2]`.
        """
        modes = Modes.of(train)
        glance_frames = self.frame_order(glance_frames)
        focus_frames = glance_frames if focus_frames is None else self.frame_order(focus_frames)
        glance = self.glance_v2(glance_frames, modes.glancer)
        actions = self.locate(glance["maps"], modes.policy)
        random_actions = jax.random.uniform(self.make_rng("patches"), actions.shape,
                                            actions.dtype)
        if modes.focuser:
            # Train-mode BatchNorm: each patch set gets its own batch statistics, as in the
            # official code's two calls (shared statistics would let the random patches' loss
            # reach the policy through the policy patches' statistics).
            local_policy = self.local_v2(self.v2_crop(focus_frames, actions), True)
            local_random = self.local_v2(self.v2_crop(focus_frames, random_actions), True)
            local = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), local_policy,
                                 local_random)
        else:   # eval-mode BatchNorm: one call over both sets (2B videos)
            patches = self.v2_crop(jnp.concatenate([focus_frames] * 2, axis=0),
                                   jnp.concatenate([actions, random_actions], axis=0))
            local = self.local_v2(patches, False)
        logits, step_logits = self.fuse(glance, local, modes.classifier)
        return {"glance": glance, "local": local, "logits": logits, "step_logits": step_logits,
                "actions": actions, "random_actions": random_actions}

    def __call__(self, glance_frames: jnp.ndarray, focus_frames: jnp.ndarray | None = None,
                 train: "bool | Modes" = False, patch_mode: str = "policy",
                 patch_offsets: jnp.ndarray | None = None) -> AdaFocusOutput:
        """Inference (and `init`): like `AdaFocus.__call__`.

        Args:
          glance_frames, focus_frames: as for V1 (`[B, T, S, S, 3]` normalised).
          train: bool or `Modes`.
          patch_mode: "policy" (the learned locations), "random" (uniform locations, rng stream
            'patches'), "center", or "given" (`patch_offsets` `[B, St, 2]` float or int top-left
            pixels).
        """
        if patch_mode not in V2_PATCH_MODES:
            raise ValueError(f"AdaFocusV2: patch_mode must be one of {V2_PATCH_MODES}, got "
                             f"{patch_mode!r} (V2 has no stochastic policy to sample)")
        cfg = self.config
        modes = Modes.of(train)
        focus_frames = glance_frames if focus_frames is None else focus_frames
        check_frames(cfg, glance_frames, focus_frames)
        glance_frames, focus_frames = self.frame_order(glance_frames), \
            self.frame_order(focus_frames)
        glance = self.glance_v2(glance_frames, modes.glancer)
        b = glance_frames.shape[0]
        shape = (b, self.policy_steps, 2)
        span = float(cfg.input_size - cfg.patch_size)
        actions = None
        if patch_mode == "policy" or self.is_initializing():
            actions = self.locate(glance["maps"], modes.policy)
        if patch_mode == "random":
            actions = jax.random.uniform(self.make_rng("patches"), shape)
        elif patch_mode == "center":
            actions = jnp.full(shape, 0.5, jnp.float32)
        if patch_mode == "given":
            if patch_offsets is None:
                raise ValueError("patch_mode='given' needs patch_offsets [B, St, 2]")
            top_left = jnp.asarray(patch_offsets, jnp.float32)   # the exact given box
            actions = top_left / span if span > 0 else jnp.zeros_like(top_left)
        else:
            top_left = crop_lib.v2_top_left(actions, cfg.input_size, cfg.patch_size)
        patches = crop_lib.bilinear_crop(focus_frames, top_left, cfg.patch_size)
        local = self.local_v2(patches, modes.focuser)
        logits, step_logits = self.fuse(glance, local, modes.classifier)
        offsets = jnp.floor(top_left).astype(jnp.int32)
        return AdaFocusOutput(logits=logits, step_logits=step_logits, patch_offsets=offsets,
                              actions=actions, dist_params=None, values=None,
                              glance_out=glance["pooled"] if cfg.classifier.kind == "frame_exit"
                              else glance["logits"], local_features=local["pooled"])
