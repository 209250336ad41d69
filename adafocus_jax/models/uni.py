"""Uni-AdaFocus (TPAMI 2024): where to look, how large, and which frames, in one model.

Mechanism (adafocus_family.md §1.4), ActivityNet / FCVID / Mini-Kinetics variant: each video
arrives as N candidate frames (48); the glance network sees G of them (16: one per segment of
N / G, a random one in training, the second at test), the local network K (16) chosen by the
temporal policy, each through a box of free size and aspect chosen by the spatial policy.

    frames [B, N, S, S, 3] ─► G glance frames ─► glancer ─► maps [B, G, h, w, C_G], pooled
                                                              [B, G, C_G], logits [B, G, C]
    pooled ─► TemporalPolicy ─► weights, weights / T [B, G] ─► quantile sampling ─► K frames [B, K]
    stop_gradient(maps) ─► SpatialPolicy ─► actions [B, G, 4] (y, x, s_y, s_x) ─► interpolated to
        the N frames ─► at the K chosen frames, stop_gradient ─► boxes (side 96…224 px) ─►
        bilinear crop ─► patches [B, K, P, P, 3] ─► focuser ─► pooled [B, K, F], logits [B, K, C]
    (pooled glance, pooled local) ─► UniExitClassifier ─► G global then K local step logits
        [B, G + K, C]; the prediction is the last step's

Training adds (`UniAdaFocus.train_outputs`, loss `adafocus_jax.uni`): uniformly random boxes of
side P through the local network in the same call as the policy boxes; the temporal policy's
Monte-Carlo surrogate (`rl.mc_surrogate_logits`: the glance logits re-weighted by the policy with
random removals) and the spatial policy's proxy: the same actions crop the detached glance maps
(`crop.bilinear_crop`, output P // 32 cells), mean-pooled and classified by `policy/aux_fc`.
The crop the local network sees is detached, so the spatial policy learns only from that proxy
(and from the scale regulariser).

Something-Something variant (Uni-AdaFocus-TSM, `policy.per_frame = False`; the official
`archs/uni_adafocus_tsm.py`): G = 8 glance frames and N = 3K candidate frames (K = 8, 12 or 16)
come from the loader, each set TSN-sampled on its own; TSM in both networks (MobileNetV2 on the
G glance frames, ResNet-50 on the K patches), which carry the AdaFocusV2 Sth-Sth heads.

    glance [B, G, S, S, 3] ─► glancer (TSM) ─► maps, head features (after dropout) [B, G, C_G],
                                                logits (detached head), reg_logits [B, G, C]
    stop_gradient(head features) ─► TemporalPolicy ─► weights [B, G] ─► K of the N candidates
    stop_gradient(maps) ─► SpatialPolicy (last conv G×7×7) ─► ONE action per video [B, 1, 4]
        ─► stop_gradient ─► the same box on all K chosen frames ─► patches [B, K, P, P, 3]
        ─► focuser (TSM over the K patches) ─► logits, reg_logits [B, K, C]
    mean_t glance logits + mean_t local logits (`SumLogitsV2`) ─► the prediction [B, C]

Its Monte-Carlo surrogate re-weights the detached per-frame "reg" glance logits (it trains the
temporal policy only); the proxy crops every glance map with the video's box.

Top-level modules keep the family's names: `glancer` (MobileNetV2 with its head, the official
`global_CNN_fc`; TSM: `new_fc` / `new_new_fc` as `classifier` / `reg_classifier`), `focuser`
(ResNet-50 with `fc` = `local_CNN_fc`; TSM: `fc` / `reg_fc`), `policy` (`temporal`, `spatial`
and `aux_fc`), `classifier` (no parameters in the TSM variant). The recipe gives `policy/aux_fc`
its own learning rate (the official glance multiplier, `stages.recipe(lr_groups=...)`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adafocus_jax import crop as crop_lib
from adafocus_jax import rl
from adafocus_jax.models.adafocus import AdaFocusOutput, Modes, check_frames
from adafocus_jax.models.layers import BatchNorm
from adafocus_jax.models.recurrent import torch_dense
from adafocus_jax.models.v2 import AdaFocusV2, SumLogitsV2
from adafocus_jax.patch_modes import patch_modes

UNI_PATCH_MODES = patch_modes("uni")   # see adafocus_jax.patch_modes

# PyTorch's default conv initialisation (kaiming_uniform with a = √5).
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def glance_indices(num_candidates: int, num_glance: int, batch_size: int,
                   rng: jax.Array | None = None) -> jax.Array:
    """Which candidate frames the glance network sees: int32 `[B, G]`.

    The N candidates form G segments of N // G frames; training (`rng` given) takes a uniformly
    random frame of each segment, independently per video; test (`rng` None) takes frame 1 of
    each segment (the official `arange(N)[1::N // G]`; frame 0 when segments hold one frame).
    """
    times = num_candidates // num_glance
    if times < 1:
        raise ValueError(f"glance_indices: {num_glance} glance frames need at least as many "
                         f"candidates, got {num_candidates}")
    starts = jnp.arange(num_glance, dtype=jnp.int32) * times
    if rng is None:
        return jnp.broadcast_to(starts + min(1, times - 1), (batch_size, num_glance))
    return starts + jax.random.randint(rng, (batch_size, num_glance), 0, times, jnp.int32)


def take_frames(x: jnp.ndarray, indices: jnp.ndarray) -> jnp.ndarray:
    """`[B, N, ...]` at int `[B, K]` → `[B, K, ...]` (one gather per video)."""
    return jax.vmap(lambda v, i: v[i])(x, indices)


class TemporalPolicy(nn.Module):
    """Pooled glance features `[B, G, C]` → logits over the G glance positions `[B, G]`.

    Two temporal convs (kernel 3, zero padding 1, no bias) each with BN and ReLU, then a 1×1 conv
    to one channel (no bias), as the official `TemporalPolicy` (its (3, 1) Conv2d over [C, G, 1]).
    """
    hidden_dim: int = 64

    @nn.compact
    def __call__(self, pooled: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = pooled.astype(jnp.float32)
        for i in range(2):
            x = nn.Conv(self.hidden_dim, (3,), padding=((1, 1),), use_bias=False,
                        kernel_init=_TORCH_CONV_INIT, name=f"conv{i}")(x)
            x = nn.relu(BatchNorm(use_running_average=not train, name=f"bn{i}")(x))
        x = nn.Conv(1, (1,), use_bias=False, kernel_init=_TORCH_CONV_INIT, name="out")(x)
        return x[..., 0]


class SpatialPolicy(nn.Module):
    """Glance maps `[B, G, h, w, C]` → actions `[B, St, 4]` in (0, 1): (y, x, s_y, s_x).

    3-D convs over (time, row, col) as the official `SpatialPolicy`: 1×1×1 → `hidden_dim`, BN,
    ReLU, then two 3×3×3 (zero padding 1), each with BN and ReLU, and a 1×h×w conv (7×7 at the
    official size, no padding) to 4 channels, sigmoid: one action per glance frame (St = G). With
    `per_video` (the TSM variant) the last conv is G×h×w: one action per video (St = 1). No
    biases.
    """
    hidden_dim: int = 128
    per_video: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, maps: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        b, g, h, w, _ = maps.shape
        x = maps
        for i, k in enumerate((1, 3, 3)):
            x = nn.Conv(self.hidden_dim, (k, k, k), padding=[(k // 2, k // 2)] * 3,
                        use_bias=False, dtype=self.dtype, kernel_init=_TORCH_CONV_INIT,
                        name=f"conv{i}")(x)
            x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype,
                                  name=f"bn{i}")(x))
        steps = 1 if self.per_video else g
        x = nn.Conv(4, (g // steps, h, w), padding="VALID", use_bias=False, dtype=self.dtype,
                    kernel_init=_TORCH_CONV_INIT, name="out")(x)       # [B, St, 1, 1, 4]
        return nn.sigmoid(x.reshape(b, steps, 4).astype(jnp.float32))


class UniPolicy(nn.Module):
    """The `policy` module: `temporal`, `spatial` and the proxy head `aux_fc`.

    Attributes:
      num_classes: C (of `aux_fc`).
      glance_features: C_G, the glance network's channels (fan-in of `aux_fc`).
      spatial_hidden, temporal_hidden: widths (128 and 64 officially).
      temperature: the sharpened weights w^(1/T) used to choose frames (1.0 officially).
      side_range: box sides (lo, hi) in frame pixels for scales 0 and 1 (96, 224 officially).
      per_video: one box per video (the TSM variant, `SpatialPolicy.per_video`).
    """
    num_classes: int
    glance_features: int
    spatial_hidden: int = 128
    temporal_hidden: int = 64
    temperature: float = 1.0
    side_range: tuple[float, float] = (96.0, 224.0)
    per_video: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        self.temporal = TemporalPolicy(self.temporal_hidden)
        self.spatial = SpatialPolicy(self.spatial_hidden, self.per_video, dtype=self.dtype)
        self.aux_fc = torch_dense(self.num_classes, self.glance_features)

    def frame_weights(self, pooled: jnp.ndarray, train: bool = False):
        """`[B, G, C_G]` → (weights, weights at temperature T), both `[B, G]` softmaxes."""
        logits = self.temporal(pooled, train)
        return jax.nn.softmax(logits, axis=-1), jax.nn.softmax(logits / self.temperature, axis=-1)

    def locate(self, maps: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """`[B, G, h, w, C_G]` (detached by the caller) → actions `[B, St, 4]` (St = G, or 1
        per video)."""
        return self.spatial(maps, train)

    def proxy_logits(self, maps: jnp.ndarray, actions: jnp.ndarray, patch_size: int,
                     input_size: int) -> jnp.ndarray:
        """The spatial policy's training proxy: each frame's box cropped from its glance map.

        Args:
          maps: `[B, G, h, w, C_G]` glance maps (detached by the caller).
          actions: `[B, St, 4]` the spatial policy's actions (gradients flow to them); one per
            video (St = 1) crops every glance map with the same box.
          patch_size: P; input_size: S (the map covers the S × S frame).

        Returns:
          `[B, C]`: `aux_fc` of the crops (P · h / S cells a side, P // 32 officially) averaged
          over frames and cells.
        """
        h = maps.shape[2]
        out = max(1, patch_size * h // input_size)
        top, side = crop_lib.uni_boxes(actions, h, out, patch_size, self.side_range)
        crops = crop_lib.bilinear_crop(maps.astype(jnp.float32), top, out, side)
        return self.aux_fc(jnp.mean(crops, axis=(1, 2, 3)))


class UniExitClassifier(nn.Module):
    """The Uni-AdaFocus FrameExit-style classifier: G global exits, then K local exits.

    Global features: Linear(C_G → hidden) → BN1d → ReLU, running max-pool over the G steps, one
    Dropout → Linear head per step. Local features: their own MLP and running max-pool; local exit
    i reads [pooled local up to i ‖ pooled global over all G]. Every step's logits are returned
    (all supervised); the prediction is the last one. `global_exit` and `local_exit` compute the
    same exits one at a time (eval mode; real early exit, `adafocus_jax.early_exit`).

    Attributes:
      num_classes: C; num_glance, num_focus: G, K; glance_dim, local_dim: C_G and F, the input
        widths of the two MLPs; hidden_dim: 4096 officially; dropout: before each head in
        training (0.2 officially).
    """
    num_classes: int
    num_glance: int
    num_focus: int
    glance_dim: int
    local_dim: int
    hidden_dim: int = 4096
    dropout: float = 0.2

    def setup(self):
        h, c = self.hidden_dim, self.num_classes
        self.global_mlp = torch_dense(h, self.glance_dim)
        self.global_mlp_bn = BatchNorm()
        self.local_mlp = torch_dense(h, self.local_dim)
        self.local_mlp_bn = BatchNorm()
        self.global_heads = [torch_dense(c, h, name=f"global_head{i}")
                             for i in range(self.num_glance)]
        self.local_heads = [torch_dense(c, 2 * h, name=f"local_head{i}")
                            for i in range(self.num_focus)]
        self.drop = nn.Dropout(self.dropout, name="Dropout_0")

    def step_features(self, x: jnp.ndarray, kind: str, train: bool = False) -> jnp.ndarray:
        """The MLP of `kind` ("global" or "local") on every step: `[B, T, D]` → `[B, T, hidden]`
        (≥ 0, before the running max)."""
        dense, bn = ((self.global_mlp, self.global_mlp_bn) if kind == "global"
                     else (self.local_mlp, self.local_mlp_bn))
        b, t, f = x.shape
        z = dense(x.reshape(b * t, f).astype(jnp.float32))
        return nn.relu(bn(z, use_running_average=not train)).reshape(b, t, -1)

    def __call__(self, glance_features: jnp.ndarray, local_features: jnp.ndarray,
                 train: bool = False):
        """`[B, G, C_G]`, `[B, K, F]` → (logits `[B, C]`, step_logits `[B, G + K, C]`)."""
        if glance_features.shape[1] != self.num_glance or \
                local_features.shape[1] != self.num_focus:
            raise ValueError(f"UniExitClassifier has {self.num_glance} + {self.num_focus} heads, "
                             f"got {glance_features.shape[1]} + {local_features.shape[1]} steps")
        zg = jax.lax.cummax(self.step_features(glance_features, "global", train), axis=1)
        zl = jax.lax.cummax(self.step_features(local_features, "local", train), axis=1)
        zl = jnp.concatenate([zl, jnp.broadcast_to(zg[:, -1:], zl.shape)], axis=-1)
        steps = [head(self.drop(zg[:, i], deterministic=not train))
                 for i, head in enumerate(self.global_heads)]
        steps += [head(self.drop(zl[:, i], deterministic=not train))
                  for i, head in enumerate(self.local_heads)]
        step_logits = jnp.stack(steps, axis=1)
        return step_logits[:, -1], step_logits

    def global_exit(self, glance_features: jnp.ndarray):
        """The glance-only exit (eval): `[B, G, C_G]` → (global state `[B, hidden]` = the max over
        the G steps, logits `[B, C]` of the last global head = step_logits[:, G - 1])."""
        state = jnp.max(self.step_features(glance_features, "global"), axis=1)
        return state, self.global_heads[-1](state)

    def local_exit(self, index, local_feature: jnp.ndarray, running: jnp.ndarray,
                   global_state: jnp.ndarray):
        """Local exit `index` (eval) = step_logits[:, G + index].

        Args:
          index: 0…K-1, a Python int or an int32 scalar array (then the head's weights are
            gathered from all K, so one compiled step serves every exit).
          local_feature: `[B, F]` the local network's pooled features of local frame `index`.
          running: `[B, hidden]` the running max of the earlier local steps (−inf before the first).
          global_state: `[B, hidden]` from `global_exit`.

        Returns:
          (running `[B, hidden]` including this step, logits `[B, C]`).
        """
        running = jnp.maximum(running, self.step_features(local_feature[:, None], "local")[:, 0])
        z = jnp.concatenate([running, global_state], axis=-1)
        if isinstance(index, int):
            return running, self.local_heads[index](z)
        heads = [head.variables["params"] for head in self.local_heads]
        kernel = jnp.stack([p["kernel"] for p in heads])[index]
        bias = jnp.stack([p["bias"] for p in heads])[index]
        return running, z @ kernel + bias


class UniAdaFocus(AdaFocusV2):
    """Uni-AdaFocus on the family's networks; `config.model.version == "uni"`
    (`models.to_uni_model_config`). Reuses AdaFocusV2's backbones and their glance and local calls
    (`setup_backbones`, `glance_v2`, `local_v2`); V2's own policy path (`locate`, `v2_crop`,
    `fuse`, `frame_order`) is not used. Two variants, after `config.model.policy.per_frame`:

    * ActivityNet family (per frame): `__call__(frames)` takes the N candidate frames
      `[B, N, S, S, 3]` as `glance_frames` (no focus frames); the glance network sees G of them
      (`glance_indices`); one box per chosen frame (St = K), the exit classifier
      (`step_logits` `[B, G + K, C]`).
    * Something-Something, TSM (per video): `__call__(glance_frames, focus_frames)` takes the G
      glance frames `[B, G, S, S, 3]` and the N candidate frames `[B, N, S, S, 3]` (the loader's
      `focus`, sampled independently as the official TSN loader does); TSM MobileNetV2 and TSM
      ResNet-50 with the AdaFocusV2 Sth-Sth heads (detached TSN heads + "reg" heads); the
      temporal policy reads the detached dropped-out glance features, the Monte-Carlo surrogate
      the detached per-frame "reg" logits; one box per video for all K chosen frames (St = 1);
      the prediction is `SumLogitsV2` (mean glance logits + mean local logits), `step_logits`
      `[B, 2, C]` its two exits (the glance "reg" logits averaged over frames, then the full
      prediction).

    The output (`AdaFocusOutput`) has `actions` `[B, St, 4]`, `patch_offsets` `[B, St, 2]` (int32
    floor of the box top-left), `dist_params` the temporal weights `[B, G]`, `frame_indices`
    `[B, K]`. `train_outputs` is the training forward pass (loss "uni").
    """

    @property
    def tsm(self) -> bool:
        """The Something-Something (TSM) variant: one box per video, separate glance frames."""
        return not self.config.policy.per_frame

    @property
    def box_steps(self) -> int:
        """St: boxes per video (1 for the TSM variant, else one per chosen frame)."""
        return 1 if self.tsm else self.config.num_focus_frames

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.setup_backbones()
        p = cfg.policy
        self.policy = UniPolicy(
            num_classes=cfg.num_classes, glance_features=self.glancer.num_features,
            spatial_hidden=p.spatial_hidden, temporal_hidden=p.temporal_hidden,
            temperature=p.temperature, side_range=tuple(p.side_range), per_video=self.tsm,
            dtype=dtype)
        if self.tsm:
            self.classifier = SumLogitsV2()
        else:
            self.classifier = UniExitClassifier(
                cfg.num_classes, cfg.num_glance_frames, cfg.num_focus_frames,
                self.glancer.num_features, self.focuser.num_features,
                cfg.classifier.hidden_dim, cfg.classifier.dropout)

    # ----------------------------------------------------------------------------------------

    def check_inputs(self, glance_frames: jnp.ndarray, focus_frames) -> None:
        cfg = self.config
        n, g, s = cfg.num_candidate_frames, cfg.num_glance_frames, cfg.input_size
        if self.tsm:
            if focus_frames is None:
                raise ValueError(f"Uni-AdaFocus-TSM: pass the {g} glance frames and the {n} "
                                 "candidate frames (focus_frames) of each video")
            check_frames(cfg, glance_frames, focus_frames, num_focus_frames=n)
            return
        if focus_frames is not None:
            raise ValueError("Uni-AdaFocus chooses its focus frames among the candidate frames: "
                             f"pass the {n} candidates as glance_frames and no focus_frames")
        if glance_frames.ndim != 5 or glance_frames.shape[1:] != (n, s, s, 3):
            raise ValueError(f"Uni-AdaFocus: frames must be [B, {n}, {s}, {s}, 3] "
                             f"(config.model.num_candidate_frames), got {glance_frames.shape}")

    def glance_candidates(self, glance_frames: jnp.ndarray, focus_frames, train: bool,
                          rng: jax.Array | None = None):
        """→ (glance outputs (`glance_v2`), candidates `[B, N, S, S, 3]`, glance indices
        `[B, G]` or None for the TSM variant, whose glance frames are given)."""
        cfg = self.config
        if self.tsm:
            return self.glance_v2(glance_frames, train), focus_frames, None
        g_idx = glance_indices(cfg.num_candidate_frames, cfg.num_glance_frames,
                               glance_frames.shape[0], rng)
        return self.glance_v2(take_frames(glance_frames, g_idx), train), glance_frames, g_idx

    def temporal_inputs(self, glance: dict):
        """(features `[B, G, C_G]` for the temporal policy, per-frame logits `[B, G, C]` for the
        Monte-Carlo surrogate). ActivityNet family: the pooled features and the glance head's
        logits (the surrogate also trains the glance network). TSM: the dropped-out features the
        heads read and the "reg" head's logits, both detached (the official code), so the
        surrogate trains the temporal policy only."""
        if self.tsm:
            return (jax.lax.stop_gradient(glance["head_features"]),
                    jax.lax.stop_gradient(glance["reg_logits"]))
        return glance["pooled"], glance["logits"]

    def box_patches(self, frames: jnp.ndarray, actions: jnp.ndarray):
        """`[B, K, S, S, 3]` frames, actions `[B, St, 4]` (detached here) → (patches
        `[B, K, P, P, 3]`, top-left `[B, St, 2]` pixels)."""
        cfg = self.config
        top, side = crop_lib.uni_boxes(jax.lax.stop_gradient(actions), cfg.input_size,
                                       cfg.patch_size, cfg.patch_size,
                                       tuple(cfg.policy.side_range))
        return crop_lib.bilinear_crop(frames, top, cfg.patch_size, side), top

    def fixed_side_actions(self, xy: jnp.ndarray) -> jnp.ndarray:
        """Locations `[..., 2]` → actions `[..., 4]` whose box side is P (the random patches)."""
        lo, hi = self.config.policy.side_range
        s = (self.config.patch_size - lo) / (hi - lo)
        return jnp.concatenate([xy, jnp.full(xy.shape, s, xy.dtype)], axis=-1)

    def policy_frames(self, frames: jnp.ndarray, weights_t: jnp.ndarray, actions: jnp.ndarray,
                      offsets):
        """The K chosen frames `[B, K, S, S, 3]`, their indices `[B, K]` and their actions
        `[B, St, 4]` (u = `offsets`: stratified in training, 0.5 at test): the glance actions
        interpolated in time to the chosen frames, or the TSM variant's one action per video."""
        indices, actions = self.choose_frames(weights_t, actions, offsets)
        return take_frames(frames, indices), indices, actions

    def choose_frames(self, weights_t: jnp.ndarray, actions: jnp.ndarray, offsets):
        """Temporal weights `[B, G]`, the spatial policy's actions `[B, St, 4]` → the K chosen
        candidates' indices `[B, K]` (increasing) and their actions: interpolated in time to
        them `[B, K, 4]`, or (TSM) the video's one action `[B, 1, 4]`.
        `config.model.policy.frame_choice = "uniform"` (a baseline) ignores the policy: uniform
        weights, i.e. frames floor((i + u) · N / K)."""
        cfg = self.config
        if cfg.policy.get("frame_choice", "policy") == "uniform":
            weights_t = jnp.full_like(weights_t, 1.0 / weights_t.shape[-1])
        indices = rl.quantile_frame_indices(weights_t, cfg.num_candidate_frames,
                                            cfg.num_focus_frames, offsets)
        if not self.tsm:
            actions = take_frames(crop_lib.interpolate_actions(actions, cfg.num_candidate_frames),
                                  indices)
        return indices, actions

    def fuse_uni(self, glance: dict, local: dict, train: bool = False):
        """Glance outputs of B videos, local outputs of the same B → (logits `[B, C]`,
        step_logits `[B, G + K, C]` (exit classifier) or `[B, 2, C]` (TSM: glance-only exit,
        then the summed logits))."""
        if not self.tsm:
            return self.classifier(glance["pooled"], local["pooled"], train)
        logits, _ = self.classifier(glance["logits"], local["logits"])
        return logits, jnp.stack([glance["reg_logits"].mean(axis=1), logits], axis=1)

    def train_outputs(self, glance_frames: jnp.ndarray, focus_frames=None,
                      train: "bool | Modes" = True) -> dict:
        """The Uni-AdaFocus training forward pass (rng streams `frames`, `patches`, `dropout`).

        Returns:
          dict with `glance` (`maps`, `pooled`, `logits` `[B, G, C]`; TSM also `reg_logits`,
          `head_features`), `local` (`pooled`, `logits` `[2B, K, ·]`, TSM also `reg_logits`:
          policy boxes first, then random ones, one local-network call), `logits` `[2B, C]`,
          `step_logits` `[2B, St', C]` (see `fuse_uni`), `temporal_logits` `[B, C]` (MC
          surrogate), `spatial_logits` `[B, C]` (proxy), `proxy_actions` `[B, St, 4]`, `weights`
          `[B, G]`, `glance_indices` `[B, G]` (None for TSM), `frame_indices` `[B, K]`,
          `actions` and `random_actions` `[B, St, 4]`.
        """
        cfg = self.config
        modes = Modes.of(train)
        self.check_inputs(glance_frames, focus_frames)
        b, g = glance_frames.shape[0], cfg.num_glance_frames
        k_glance, k_u, k_mc = jax.random.split(self.make_rng("frames"), 3)
        glance, frames, g_idx = self.glance_candidates(glance_frames, focus_frames,
                                                       modes.glancer, k_glance)
        maps = jax.lax.stop_gradient(glance["maps"])
        actions = self.policy.locate(maps, modes.policy)
        # The official code runs the spatial policy a second time for the proxy: the same output,
        # but train-mode BatchNorm updates its running statistics twice per step.
        proxy_actions = self.policy.locate(maps, modes.policy) if modes.policy else actions
        features, frame_logits = self.temporal_inputs(glance)
        weights, weights_t = self.policy.frame_weights(features, modes.policy)
        keep = rl.removal_keep_masks(k_mc, weights, max(1, g // 3), int(cfg.policy.mc_samples))
        temporal_logits = rl.mc_surrogate_logits(frame_logits, weights, keep)
        spatial_logits = self.policy.proxy_logits(maps, proxy_actions, cfg.patch_size,
                                                  cfg.input_size)
        focus, f_idx, policy_actions = self.policy_frames(
            frames, weights_t, actions,
            rl.stratified_offsets(k_u, (b, cfg.num_focus_frames)))
        random_actions = self.fixed_side_actions(jax.random.uniform(
            self.make_rng("patches"), (b, self.box_steps, 2), jnp.float32))
        patches, _ = self.box_patches(jnp.concatenate([focus, focus], axis=0),
                                      jnp.concatenate([policy_actions, random_actions], axis=0))
        local = self.local_v2(patches, modes.focuser)
        # Two classifier calls (separate train-mode batch statistics), as the official code.
        fused = [self.fuse_uni(glance, jax.tree.map(lambda x: x[i * b:(i + 1) * b], local),
                               modes.classifier) for i in range(2)]
        return {"glance": glance, "local": local,
                "logits": jnp.concatenate([f[0] for f in fused], axis=0),
                "step_logits": jnp.concatenate([f[1] for f in fused], axis=0),
                "temporal_logits": temporal_logits, "spatial_logits": spatial_logits,
                "proxy_actions": proxy_actions, "weights": weights, "glance_indices": g_idx,
                "frame_indices": f_idx, "actions": policy_actions,
                "random_actions": random_actions}

    def __call__(self, glance_frames: jnp.ndarray, focus_frames=None,
                 train: "bool | Modes" = False, patch_mode: str = "policy",
                 patch_offsets=None) -> AdaFocusOutput:
        """Inference (and `init`): test-time glance frames, u = 0.5, one box set.

        Args:
          glance_frames: ActivityNet family: the N candidate frames `[B, N, S, S, 3]`; TSM: the
            G glance frames `[B, G, S, S, 3]` (normalised).
          focus_frames: None (ActivityNet family) or the N candidate frames (TSM).
          train: bool or `Modes`.
          patch_mode: "policy" (the spatial policy's boxes), "random" (uniform locations, side P,
            rng stream 'patches') or "center" (the centre P × P box); the frames are always the
            temporal policy's.
        """
        if patch_mode not in UNI_PATCH_MODES:
            raise ValueError(f"UniAdaFocus: patch_mode must be one of {UNI_PATCH_MODES}, got "
                             f"{patch_mode!r}")
        if patch_offsets is not None:
            raise ValueError("UniAdaFocus takes no patch_offsets")
        cfg = self.config
        modes = Modes.of(train)
        self.check_inputs(glance_frames, focus_frames)
        b = glance_frames.shape[0]
        glance, frames, _ = self.glance_candidates(glance_frames, focus_frames, modes.glancer)
        maps = jax.lax.stop_gradient(glance["maps"])
        actions = self.policy.locate(maps, modes.policy)
        _, weights_t = self.policy.frame_weights(self.temporal_inputs(glance)[0], modes.policy)
        if self.is_initializing():   # create the proxy head's parameters
            self.policy.proxy_logits(maps, actions, cfg.patch_size, cfg.input_size)
        focus, f_idx, chosen = self.policy_frames(frames, weights_t, actions, 0.5)
        shape = (b, self.box_steps, 2)
        if patch_mode == "random":
            chosen = self.fixed_side_actions(
                jax.random.uniform(self.make_rng("patches"), shape, jnp.float32))
        elif patch_mode == "center":
            chosen = self.fixed_side_actions(jnp.full(shape, 0.5, jnp.float32))
        patches, top = self.box_patches(focus, chosen)
        local = self.local_v2(patches, modes.focuser)
        logits, step_logits = self.fuse_uni(glance, local, modes.classifier)
        return AdaFocusOutput(logits=logits, step_logits=step_logits,
                              patch_offsets=jnp.floor(top).astype(jnp.int32), actions=chosen,
                              dist_params=weights_t, values=None,
                              glance_out=glance["logits" if self.tsm else "pooled"],
                              local_features=local["pooled"], frame_indices=f_idx)

    # ----------------------------------------------------------------------------------------
    # The inference pass cut at its exits (eval mode), for real early exit
    # (`adafocus_jax.early_exit.UniOnlineRunner`): exit 0 after the glance stage, exit i after
    # local frame i (in the order of the chosen frames); each equals `__call__`'s
    # step_logits[:, G - 1 + i]. The TSM variant (`UniTSMOnlineRunner`) has two: exit 0 after the
    # glance stage (step_logits[:, 0]), exit 1 after the policies and the K chosen frames at once.

    def exit_glance(self, glance_frames: jnp.ndarray) -> dict:
        """The glance stage and exit 0: the G test-time glance frames `[B, G, S, S, 3]`
        (normalised; ActivityNet family: candidates `glance_indices(N, G, B)`) → dict `maps`
        `[B, G, h, w, C_G]`, `pooled` `[B, G, C_G]` (the temporal policy's input), `logits`
        `[B, C]` (exit 0) and `global_state` `[B, hidden]` (ActivityNet family) or
        `glance_logits` `[B, G, C]` (TSM: the detached TSN head, summed into the prediction)."""
        glance = self.glance_v2(glance_frames, False)
        if self.tsm:   # exit 0 = step_logits[:, 0] of `fuse_uni`
            return {"maps": glance["maps"], "pooled": self.temporal_inputs(glance)[0],
                    "glance_logits": glance["logits"],
                    "logits": glance["reg_logits"].mean(axis=1)}
        state, logits = self.classifier.global_exit(glance["pooled"])
        return {"maps": glance["maps"], "pooled": glance["pooled"], "global_state": state,
                "logits": logits}

    def exit_policy(self, maps: jnp.ndarray, pooled: jnp.ndarray):
        """Both policies on the glance outputs of `exit_glance` → (frame indices `[B, K]` into the
        N candidates, increasing; their box actions `[B, K, 4]`, TSM `[B, 1, 4]`), as `__call__`
        (u = 0.5)."""
        actions = self.policy.locate(maps, False)
        _, weights_t = self.policy.frame_weights(pooled, False)
        return self.choose_frames(weights_t, actions, 0.5)

    def exit_local(self, index, frame: jnp.ndarray, actions: jnp.ndarray, running: jnp.ndarray,
                   global_state: jnp.ndarray):
        """Local frame `index` (0…K-1, int or int32 scalar) and exit `index + 1`: its candidate
        frame `[B, S, S, 3]` (normalised), box action `[B, 4]`, the running local state `[B,
        hidden]` (−inf before the first) and `global_state` → (running `[B, hidden]`, logits
        `[B, C]`, box top-left `[B, 2]` in pixels)."""
        patches, top = self.box_patches(frame[:, None], actions[:, None])
        local = self.local_v2(patches, False)
        running, logits = self.classifier.local_exit(index, local["pooled"][:, 0], running,
                                                     global_state)
        return running, logits, top[:, 0]

    def exit_tsm_local(self, frames: jnp.ndarray, actions: jnp.ndarray,
                       glance_logits: jnp.ndarray):
        """TSM variant, exit 1 (the full prediction): the K chosen candidates `[B, K, S, S, 3]`
        (normalised; TSM needs them together), the video's action `[B, 1, 4]` and the glance
        head's `glance_logits` `[B, G, C]` of `exit_glance` → (logits `[B, C]` = `__call__`'s,
        box top-left `[B, 1, 2]` in pixels)."""
        patches, top = self.box_patches(frames, actions)
        logits, _ = self.classifier(glance_logits, self.local_v2(patches, False)["logits"])
        return logits, top


__all__ = ["UniAdaFocus", "UniPolicy", "TemporalPolicy", "SpatialPolicy", "UniExitClassifier",
           "glance_indices", "take_frames", "UNI_PATCH_MODES"]
