"""The composed AdaFocus model (adafocus_v1.md §3).

Data flow for a batch of B videos:

    glance frames [B, T_G, S, S, 3] ─► glancer (all frames, one call) ─► maps [B, T_G, h, w, C_G]
                                                                         glance_out [B, T_G, D]
    maps ─► policy states [B, St, ...] ─► encoder → GRU (lax.scan over St steps) ─► actions, values
    actions ─► offsets [B, St, 2] ─► crop focus frames ─► patches [B, T_L, P, P, 3]
    patches ─► focuser (all B·T_L patches in ONE call) ─► local features [B, T_L, F]
    (glance_out, local features) ─► classifier ─► logits [B, C], step_logits [B, St, C]

All patch locations are known before the expensive local network runs, so it runs once over every
patch of the batch. Each network runs BatchNorm/dropout in train or eval mode independently
(`Modes`), because the official stages mix them (§11.9).

Precision (`config.model.dtype`, "float32" or "bfloat16"): parameters (and so gradients and
optimizer state) are always float32. With "bfloat16" the glance and local networks and the policy's
encoder conv compute in bfloat16 (convs, their BatchNorms and activations; BatchNorm statistics are
reduced and stored in float32); the policy's linear layers, GRU, actor and critic, the classifier
and every output of this module (logits, distribution parameters, values, pooled features) are
float32, so losses, softmaxes, rewards, returns and log-probs are float32.
"""

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from adafocus_jax import crop as crop_lib
from adafocus_jax import rl
from adafocus_jax.patch_modes import patch_modes
from adafocus_jax.models.classifiers import LogitSumClassifier, RecurrentClassifier
from adafocus_jax.models.mobilenet_v2 import MobileNetV2
from adafocus_jax.models.policy import ActorCritic
from adafocus_jax.models.resnet import ResNet

PATCH_MODES = patch_modes("model")   # see adafocus_jax.patch_modes
GLANCE_ARCHS = ("mobilenet_v2", "resnet")


def glance_network(cfg: ml_collections.FrozenConfigDict, dtype: Any, **heads) -> nn.Module:
    """The glance network of model config `cfg` (`cfg.glancer`), shared by every family.

    `cfg.glancer.arch`: "mobilenet_v2" (official; `width_mult`, `last_channel`) or "resnet" (a
    bottleneck ResNet of `stage_sizes` and `width`, the local network's kind: configs/custom.py's
    small preset, where a from-scratch MobileNetV2 x0.25 never learned, README "Your own
    videos"). Both return the same keys (`feature_map`, `pooled`, `logits`, ...). `heads`:
    `head_stop_gradient` / `reg_head` of the V2 Sth-Sth heads.
    """
    g = cfg.glancer
    arch = g.get("arch", "mobilenet_v2")
    shift = cfg.num_glance_frames if g.temporal_shift else None
    filters = dict(input_grey=g.get("input_grey", False),
                   input_highpass=g.get("input_highpass", 0))
    if arch == "mobilenet_v2":
        return MobileNetV2(num_classes=cfg.num_classes, width_mult=g.width_mult,
                           last_channel=g.last_channel, shift_segments=shift,
                           classifier_dropout=g.dropout, dtype=dtype, **filters, **heads)
    if arch == "resnet":
        return ResNet(num_classes=cfg.num_classes, stage_sizes=tuple(g.stage_sizes),
                      width=g.width, shift_segments=shift, head_dropout=g.dropout, dtype=dtype,
                      **filters, **heads)
    raise ValueError(f"config.model.glancer.arch: unknown {arch!r}; expected one of "
                     f"{GLANCE_ARCHS}")


def local_network(cfg: ml_collections.FrozenConfigDict, dtype: Any, num_classes: int | None,
                  **heads) -> ResNet:
    """The local network (a bottleneck ResNet, `cfg.focuser`) with a `num_classes` head or none;
    `heads`: `head_dropout`, `head_stop_gradient`, `reg_head` (V2)."""
    f = cfg.focuser
    return ResNet(num_classes=num_classes, stage_sizes=tuple(f.stage_sizes), width=f.width,
                  shift_segments=cfg.num_focus_frames if f.temporal_shift else None,
                  input_grey=f.get("input_grey", False),
                  input_highpass=f.get("input_highpass", 0), dtype=dtype, **heads)


@dataclasses.dataclass(frozen=True)
class Modes:
    """Which networks run in train mode (BatchNorm batch statistics, dropout on)."""
    glancer: bool = False
    focuser: bool = False
    policy: bool = False
    classifier: bool = False

    @classmethod
    def of(cls, train: "bool | Modes") -> "Modes":
        if isinstance(train, Modes):
            return train
        return cls(bool(train), bool(train), bool(train), bool(train))


@flax.struct.dataclass
class AdaFocusOutput:
    """What one forward pass returns (B videos, St policy steps, C classes).

    Attributes:
      logits: `[B, C]` the official prediction.
      step_logits: `[B, St, C]` per-step predictions (Sth-Sth: St = 1; ActivityNet: one per frame).
      patch_offsets: `[B, St, 2]` int32 top-left (row, col) in pixels per policy step.
      actions: `[B, St, 2]` float in [0, 1] (gaussian) or `[B, St]` int (categorical); None when the
        patches did not come from the policy.
      dist_params: `[B, St, 2]` Gaussian mean or `[B, St, A]` logits; None if the policy did not run.
      values: `[B, St]` critic values; None if the policy did not run.
      glance_out: `[B, T_G, D]` glance logits (Sth-Sth) or pooled glance features (ActivityNet).
      local_features: `[B, T_L, F]` pooled local-network features.
      frame_indices: int32 `[B, T_L]` the candidate frames the local network saw (Uni-AdaFocus);
        None for V1 and V2 (their focus frames are the given ones).
    """
    logits: jax.Array
    step_logits: jax.Array
    patch_offsets: jax.Array
    actions: Any
    dist_params: Any
    values: Any
    glance_out: jax.Array
    local_features: jax.Array
    frame_indices: Any = None


def check_frames(cfg, glance_frames: jnp.ndarray, focus_frames: jnp.ndarray,
                 num_focus_frames: int | None = None) -> None:
    """Raises ValueError unless the frames are `[B, T_G, S, S, 3]` and `[B, T_L, S, S, 3]` with the
    configured T_G, T_L and S (`cfg` = the model config; `num_focus_frames` replaces T_L, e.g.
    Uni-AdaFocus-TSM's N candidate frames)."""
    t_l = cfg.num_focus_frames if num_focus_frames is None else num_focus_frames
    for name, frames, expected in (("glance_frames", glance_frames, cfg.num_glance_frames),
                                   ("focus_frames", focus_frames, t_l)):
        if frames.ndim != 5 or frames.shape[1] != expected or frames.shape[-1] != 3 or \
                frames.shape[2:4] != (cfg.input_size, cfg.input_size):
            raise ValueError(
                f"{name} must be [B, {expected}, {cfg.input_size}, {cfg.input_size}, 3], "
                f"got {frames.shape}")


class AdaFocus(nn.Module):
    """Glance network + policy + local network + classifier.

    Attributes:
      config: the model config (`config.model`, frozen), see `adafocus_jax.models.default_model_config`.
    """
    config: ml_collections.FrozenConfigDict

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.glancer = glance_network(cfg, dtype)
        self.focuser = local_network(cfg, dtype,
                                     cfg.num_classes if cfg.focuser.with_fc else None)
        self.policy = ActorCritic(
            kind=cfg.policy.kind, num_actions=cfg.policy.grid_size ** 2,
            hidden_dim=cfg.policy.hidden_dim, encoder_channels=cfg.policy.encoder_channels,
            encoder_bn=cfg.policy.encoder_bn, dtype=dtype)
        # The fusion heads are < 0.1 % of the FLOPs: float32 under every precision (logits, the
        # losses and the rewards built on them stay float32).
        if cfg.classifier.kind == "logit_sum":
            self.classifier = LogitSumClassifier(cfg.num_classes, cfg.classifier.dropout,
                                                 dtype=jnp.float32)
        elif cfg.classifier.kind == "gru":
            self.classifier = RecurrentClassifier(cfg.num_classes, cfg.classifier.hidden_dim,
                                                  cfg.classifier.dropout, dtype=jnp.float32)
        else:
            raise ValueError(f"config.model.classifier.kind: unknown {cfg.classifier.kind!r}")

    # ----------------------------------------------------------------------------------------
    # The pieces, usable one by one (the training steps call them with `method=`).

    @property
    def policy_steps(self) -> int:
        """St: one step per frame (ActivityNet family) or one per video (Sth-Sth)."""
        return self.config.num_glance_frames if self.config.policy.per_frame else 1

    def resize_for_glance(self, frames: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, S, S, 3]` → `[B, T, G, G, 3]` (G = glance_size); identity when G == S."""
        size = self.config.glance_size
        b, t, h, w, c = frames.shape
        if (h, w) == (size, size):
            return frames
        if self.config.glance_resize == "nearest":
            # PyTorch's nearest: source index floor(dst · in / out).
            rows = jnp.floor(jnp.arange(size) * (h / size)).astype(jnp.int32)
            cols = jnp.floor(jnp.arange(size) * (w / size)).astype(jnp.int32)
            return frames[:, :, rows][:, :, :, cols]
        return jax.image.resize(frames, (b, t, size, size, c), method=self.config.glance_resize,
                                antialias=True)

    def glance(self, glance_frames: jnp.ndarray, train: bool = False):
        """Runs the glance network on every frame in one call.

        Args:
          glance_frames: `[B, T_G, S, S, 3]` normalised frames.
          train: glancer BatchNorm in train mode.

        Returns:
          (feature_maps `[B, T_G, h, w, C_G]`, glance_out `[B, T_G, D]`): D = classes (its own
          logits, Sth-Sth) or C_G (pooled features, ActivityNet family).
        """
        frames = self.resize_for_glance(glance_frames)
        b, t = frames.shape[:2]
        use_logits = self.config.classifier.kind == "logit_sum"
        out = self.glancer(frames.reshape(b * t, *frames.shape[2:]), train,
                           with_logits=use_logits)
        maps = out["feature_map"]
        glance_out = (out["logits"] if use_logits else out["pooled"]).astype(jnp.float32)
        return maps.reshape(b, t, *maps.shape[1:]), glance_out.reshape(b, t, -1)

    def policy_states(self, feature_maps: jnp.ndarray) -> jnp.ndarray:
        """Glance maps `[B, T_G, h, w, C]` → policy states `[B, St, h, w, C']`.

        Per-frame policies see one map per step (C' = C). The per-video policy sees all maps
        stacked on channels, frame-major (channel t·C + c), as the official code concatenates them.
        """
        if self.config.policy.per_frame:
            return feature_maps
        b, t, h, w, c = feature_maps.shape
        return jnp.transpose(feature_maps, (0, 2, 3, 1, 4)).reshape(b, 1, h, w, t * c)

    def policy_forward(self, states: jnp.ndarray, train: bool = False):
        """`[B, St, h, w, C']` → (dist_params, values `[B, St]`); see `ActorCritic`."""
        return self.policy(states, train)

    def action_offsets(self, actions: jnp.ndarray) -> jnp.ndarray:
        """Policy actions → `[B, St, 2]` int32 top-left offsets on the focus frames."""
        cfg = self.config
        if cfg.policy.kind == "gaussian":
            return crop_lib.continuous_offsets(actions, cfg.input_size, cfg.patch_size)
        return crop_lib.grid_offsets(actions, cfg.policy.grid_size, cfg.input_size, cfg.patch_size)

    def random_offsets(self, rng: jax.Array, batch_size: int) -> jnp.ndarray:
        """Official random-patch offsets `[B, St, 2]` (one per video or per frame)."""
        return crop_lib.random_offsets(rng, (batch_size, self.policy_steps),
                                       self.config.input_size, self.config.patch_size)

    def random_grid_offsets(self, rng: jax.Array, batch_size: int) -> jnp.ndarray:
        """Offsets `[B, St, 2]` of uniformly random cells of the categorical policy's k×k grid:
        the patches a policy with uniform logits would pick (where stage 2 starts)."""
        cfg = self.config
        if cfg.policy.kind != "categorical":
            raise ValueError("patch_mode 'random_grid' needs the categorical (grid) policy, got "
                             f"policy.kind={cfg.policy.kind!r}")
        cells = jax.random.randint(rng, (batch_size, self.policy_steps), 0,
                                   cfg.policy.grid_size ** 2, dtype=jnp.int32)
        return self.action_offsets(cells)

    def center_offsets(self, batch_size: int) -> jnp.ndarray:
        return crop_lib.center_offsets((batch_size, self.policy_steps), self.config.input_size,
                                       self.config.patch_size)

    def crop(self, frames: jnp.ndarray, offsets: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, S, S, 3]`, offsets `[B, St, 2]` → patches `[B, T, P, P, 3]`."""
        return crop_lib.crop_patches(frames, offsets, self.config.patch_size)

    def local_features(self, patches: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Runs the local network once on all patches: `[B, T_L, P, P, 3]` → `[B, T_L, F]`."""
        b, t = patches.shape[:2]
        out = self.focuser(patches.reshape(b * t, *patches.shape[2:]), train, with_logits=False)
        return out["pooled"].astype(jnp.float32).reshape(b, t, -1)

    def classify(self, glance_out: jnp.ndarray, local_features: jnp.ndarray, train: bool = False):
        """→ (logits `[B, C]`, step_logits `[B, St, C]`)."""
        return self.classifier(glance_out, local_features, train)

    def baseline_step_logits(self, glance_out, policy_local_features, random_local_features):
        """Reward baseline: `[B, St, C]` logits with only step t's patches made random."""
        return self.classifier.baseline_step_logits(glance_out, policy_local_features,
                                                    random_local_features)

    def glancer_logits(self, frames: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Stage 0: the glance network alone with its own head, averaged over frames.
        `[B, T, S, S, 3]` → `[B, C]`."""
        frames = self.resize_for_glance(frames)
        b, t = frames.shape[:2]
        logits = self.glancer(frames.reshape(b * t, *frames.shape[2:]), train)["logits"]
        return logits.astype(jnp.float32).reshape(b, t, -1).mean(axis=1)

    def focuser_logits(self, frames: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Stage 0: the local network alone on whole frames with its `fc`, averaged over frames.
        `[B, T, S, S, 3]` → `[B, C]`."""
        b, t = frames.shape[:2]
        out = self.focuser(frames.reshape(b * t, *frames.shape[2:]), train)
        if "logits" not in out:
            raise ValueError("focuser_logits needs config.model.focuser.with_fc = True")
        return out["logits"].astype(jnp.float32).reshape(b, t, -1).mean(axis=1)

    # ----------------------------------------------------------------------------------------

    def __call__(self, glance_frames: jnp.ndarray, focus_frames: jnp.ndarray | None = None,
                 train: "bool | Modes" = False, patch_mode: str = "policy",
                 patch_offsets: jnp.ndarray | None = None) -> AdaFocusOutput:
        """The full forward pass.

        Args:
          glance_frames: `[B, T_G, S, S, 3]` normalised float frames.
          focus_frames: `[B, T_L, S, S, 3]`, or None to crop from the glance frames (datasets with
            one frame list).
          train: bool, or `Modes` for per-network train/eval modes.
          patch_mode: "policy" (deterministic policy), "sample" (rng stream 'actions'), "random"
            (official random baseline, rng stream 'patches'), "random_grid" (uniformly random cells
            of the grid policy's action grid, rng stream 'patches'), "center", or "given"
            (`patch_offsets`).
          patch_offsets: `[B, St, 2]` int offsets for patch_mode "given".

        Returns:
          `AdaFocusOutput`.
        """
        if patch_mode not in PATCH_MODES:
            raise ValueError(f"patch_mode must be one of {PATCH_MODES}, got {patch_mode!r}")
        cfg = self.config
        modes = Modes.of(train)
        focus_frames = glance_frames if focus_frames is None else focus_frames
        batch_size = glance_frames.shape[0]
        check_frames(cfg, glance_frames, focus_frames)

        feature_maps, glance_out = self.glance(glance_frames, modes.glancer)
        actions = dist_params = values = None
        if patch_mode in ("policy", "sample") or self.is_initializing():
            # The glance network is never trained through the policy (frozen, as officially).
            states = self.policy_states(jax.lax.stop_gradient(feature_maps))
            dist_params, values = self.policy(states, modes.policy)
        if patch_mode == "policy":
            actions = rl.deterministic_actions(cfg.policy.kind, dist_params)
            offsets = self.action_offsets(actions)
        elif patch_mode == "sample":
            actions = rl.sample_actions(cfg.policy.kind, dist_params, self.make_rng("actions"),
                                        cfg.policy.action_std)
            offsets = self.action_offsets(actions)
        elif patch_mode == "random":
            offsets = self.random_offsets(self.make_rng("patches"), batch_size)
        elif patch_mode == "random_grid":
            offsets = self.random_grid_offsets(self.make_rng("patches"), batch_size)
        elif patch_mode == "center":
            offsets = self.center_offsets(batch_size)
        else:
            if patch_offsets is None:
                raise ValueError("patch_mode='given' needs patch_offsets [B, St, 2]")
            offsets = jnp.asarray(patch_offsets, jnp.int32)
        local = self.local_features(self.crop(focus_frames, offsets), modes.focuser)
        logits, step_logits = self.classify(glance_out, local, modes.classifier)
        return AdaFocusOutput(logits=logits, step_logits=step_logits, patch_offsets=offsets,
                              actions=actions, dist_params=dist_params, values=values,
                              glance_out=glance_out, local_features=local)
