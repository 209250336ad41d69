"""Flax networks of AdaFocus and their configs.

    model = create_model(config)            # config.model: see default_model_config
    variables = init_variables(model, rng)  # {'params', 'batch_stats'}
    out = model.apply(variables, glance_frames, focus_frames, train=False)
    out.logits, out.patch_offsets
"""

import jax
import jax.numpy as jnp
import ml_collections

from adafocus_jax.families import NUM_CLASSES, STHSTH
from adafocus_jax.models.adafocus import GLANCE_ARCHS, AdaFocus, AdaFocusOutput, Modes
from adafocus_jax.models.v2 import AdaFocusV2, coarse_to_fine_order
from adafocus_jax.models.uni import UniAdaFocus
from adafocus_jax.rl import deterministic_actions, sample_actions

# What differs between the two official code paths (adafocus_v1.md §1) follows the dataset's
# family (`adafocus_jax.families`).
# The precision policy: see adafocus_jax.models.adafocus. float64 exists for exact comparisons with
# a float64 PyTorch reference (under `jax.enable_x64`), not for training.
MODEL_DTYPES = ("float32", "bfloat16", "float64")


def default_model_config(dataset: str, patch_size: int) -> ml_collections.ConfigDict:
    """The official network for `dataset` (sthv1 | sthv2 | actnet | fcvid | minik) on patches of
    `patch_size` (the official sizes: `PATCH_SIZES` of configs/<dataset>.py).

    Something-Something: TSM MobileNetV2 on 8 glance frames, TSM ResNet-50 on 12 patches, one
    Gaussian patch location per video, logit-sum fusion. ActivityNet family: MobileNetV2 and
    ResNet-50 without TSM on 16 shared frames, one of 7×7 grid positions per frame, GRU classifier.
    """
    if dataset not in NUM_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(NUM_CLASSES)}")
    sth = dataset in STHSTH
    c = ml_collections.ConfigDict()
    c.num_classes = NUM_CLASSES[dataset]
    c.input_size = 224           # frames arrive as S × S crops
    c.glance_size = 224          # the glance network's input size (nearest resize if different)
    c.glance_resize = "nearest"  # nearest (official) | linear | cubic | lanczos3 (antialiased)
    c.patch_size = patch_size
    c.num_glance_frames = 8 if sth else 16
    c.num_focus_frames = 12 if sth else 16
    c.dtype = "float32"          # compute precision: float32 | bfloat16 (params stay float32)
    # glancer/focuser input_grey, input_highpass: a fixed input filter (`layers.input_filter`),
    # off in the official networks; configs/custom.py's small preset turns it on.
    # glancer.arch: mobilenet_v2 (official: width_mult, last_channel) | resnet (a bottleneck
    # ResNet of stage_sizes and width, like the local network; models.adafocus.glance_network).
    c.glancer = ml_collections.ConfigDict(dict(
        arch="mobilenet_v2",
        width_mult=1.0, last_channel=ml_collections.FieldReference(None, field_type=int),
        stage_sizes=(1, 1, 1, 1), width=8,
        temporal_shift=sth, dropout=0.0 if sth else 0.2, input_grey=False, input_highpass=0))
    c.focuser = ml_collections.ConfigDict(dict(
        stage_sizes=(3, 4, 6, 3), width=64, temporal_shift=sth, with_fc=not sth,
        input_grey=False, input_highpass=0))
    c.policy = ml_collections.ConfigDict(dict(
        kind="gaussian" if sth else "categorical", per_frame=not sth, action_std=0.25,
        grid_size=7, hidden_dim=1024, encoder_channels=64 if sth else 32, encoder_bn=sth))
    c.classifier = ml_collections.ConfigDict(dict(
        kind="logit_sum" if sth else "gru", hidden_dim=1024, dropout=0.5 if sth else 0.8))
    return c


def to_v2_model_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns a V1 model config (`default_model_config`, `tiny_model_config`, a custom one) into
    the AdaFocusV2 network on the same backbones (adafocus_family.md §1.2), in place.

    ActivityNet family (per-frame policy): policy 1×1 conv 64 → BN → tanh → Linear 2048 → BN →
    tanh → GRU(2048) → Linear 2 → sigmoid; FrameExit classifier (MLP 4096, running max-pool, one
    head per frame, dropout 0.2); glance and local heads with dropout 0.2; frames in the
    coarse-to-fine order. Sth-Sth (per-video policy): policy MLP 1024 → 512 on the concatenated
    glance maps; TSN heads with dropout 0.5 (detached `new_fc` + "reg" `new_new_fc` on both
    backbones), logits summed.
    """
    per_frame = bool(c.policy.per_frame)
    c.version = "v2"
    c.policy.kind = "location"
    c.policy.encoder_channels = 64
    c.policy.encoder_bn = True
    c.policy.hidden_dims = (2048,) if per_frame else (1024, 512)
    c.focuser.with_fc = True
    if per_frame:
        c.frame_order = "coarse_to_fine"
        c.classifier.kind = "frame_exit"
        c.classifier.hidden_dim = 4096
        c.classifier.dropout = 0.2
        c.glancer.dropout = 0.2
        c.focuser.dropout = 0.2
    else:
        c.frame_order = "natural"
        c.classifier.kind = "logit_sum"
        c.glancer.dropout = 0.5
        c.focuser.dropout = 0.5
    return c


def v2_model_config(dataset: str, patch_size: int) -> ml_collections.ConfigDict:
    """The official AdaFocusV2 network for `dataset` (see `to_v2_model_config`)."""
    return to_v2_model_config(default_model_config(dataset, patch_size))


def to_uni_model_config(c: ml_collections.ConfigDict, fc_dropout: float = 0.2,
                        num_focus_frames: int | None = None) -> ml_collections.ConfigDict:
    """Turns a V1 model config into Uni-AdaFocus on the same backbones (adafocus_family.md
    §1.4), in place: temporal policy (two 3-tap convs of 64, 1×1), spatial policy (3-D convs of
    128, box side 96…224 px), MC surrogate with 128 samples; glance and local heads with dropout
    `fc_dropout`.

    ActivityNet family (`policy.per_frame`): 48 candidate frames, 16 glanced, 16 chosen for the
    local network, one box per chosen frame; the Uni exit classifier (MLPs of 4096, 16 global +
    16 local exits, dropout 0.2); `fc_dropout` 0.2 (0.1 on Mini-Kinetics).

    Something-Something (the TSM variant): the 8 TSM glance frames, K = `num_focus_frames`
    (16 by default; 8 and 12 are the other released settings) local frames chosen among N = 3K
    candidates, one box per video (the spatial policy's last conv spans the 8 glance maps); the
    AdaFocusV2 Sth-Sth heads on TSM MobileNetV2 / ResNet-50, logits summed; `fc_dropout` 0.5.
    """
    per_frame = bool(c.policy.per_frame)
    if per_frame and num_focus_frames is not None:
        raise ValueError("to_uni_model_config: num_focus_frames is an option of the TSM "
                         "(Sth-Sth) variant; the ActivityNet family uses 48 / 16 / 16")
    c.version = "uni"
    if per_frame:
        c.num_glance_frames, c.num_focus_frames = 16, 16
    else:
        c.num_focus_frames = 16 if num_focus_frames is None else int(num_focus_frames)
    c.num_candidate_frames = 3 * c.num_focus_frames
    c.frame_order = "natural"
    c.policy = ml_collections.ConfigDict(dict(
        kind="uni", per_frame=per_frame, spatial_hidden=128, temporal_hidden=64,
        temperature=1.0, side_range=(96.0, 224.0), mc_samples=128,
        frame_choice="policy"))   # "uniform": uniformly spaced frames (a baseline)
    c.classifier = ml_collections.ConfigDict(
        dict(kind="uni_exit", hidden_dim=4096, dropout=0.2) if per_frame else
        dict(kind="logit_sum"))
    c.glancer.dropout = float(fc_dropout)
    c.focuser.dropout = float(fc_dropout)
    c.focuser.with_fc = True
    return c


def uni_model_config(dataset: str, patch_size: int | None = None, fc_dropout: float = 0.2,
                     num_focus_frames: int | None = None) -> ml_collections.ConfigDict:
    """The official Uni-AdaFocus network for `dataset` (see `to_uni_model_config`)."""
    return to_uni_model_config(default_model_config(dataset, patch_size), fc_dropout,
                               num_focus_frames)


def is_uni_tsm(model_config) -> bool:
    """Uni-AdaFocus's TSM (Sth-Sth) variant: separate glance frames and N candidate frames."""
    return model_config.get("version", "v1") == "uni" and not model_config.policy.per_frame


def input_frames(model_config) -> int:
    """Frames of the model's `glance_frames` input: the N candidates (Uni-AdaFocus, ActivityNet
    family) or T_G."""
    if model_config.get("version", "v1") == "uni" and not is_uni_tsm(model_config):
        return int(model_config.num_candidate_frames)
    return int(model_config.num_glance_frames)


def focus_input_frames(model_config) -> int | None:
    """Frames of the model's `focus_frames` input: None (Uni-AdaFocus, ActivityNet family: no
    focus input), the N candidates (Uni-AdaFocus-TSM) or T_L."""
    if is_uni_tsm(model_config):
        return int(model_config.num_candidate_frames)
    if model_config.get("version", "v1") == "uni":
        return None
    return int(model_config.num_focus_frames)


def tiny_model_config(dataset: str = "sthv2") -> ml_collections.ConfigDict:
    """The same architecture with tiny widths and inputs, for fast tests."""
    c = default_model_config(dataset, patch_size=32)
    c.num_classes = 5
    c.input_size = c.glance_size = 64
    if dataset in STHSTH:
        c.num_glance_frames, c.num_focus_frames = 2, 3
    else:
        c.num_glance_frames = c.num_focus_frames = 3
    c.glancer.width_mult = 0.25
    c.glancer.last_channel = 16
    c.focuser.stage_sizes = (1, 1, 1, 1)
    c.focuser.width = 4
    c.policy.hidden_dim = 16
    c.policy.encoder_channels = 4
    c.policy.grid_size = 3
    c.classifier.hidden_dim = 16
    return c


def create_model(config: ml_collections.ConfigDict) -> AdaFocus:
    """Builds the model from a full config (uses `config.model`) or a model config."""
    model_config = config.model if "model" in config else config
    validate_model_config(model_config)
    cls = {"v2": AdaFocusV2, "uni": UniAdaFocus}.get(model_config.get("version", "v1"), AdaFocus)
    return cls(ml_collections.FrozenConfigDict(model_config))


def validate_model_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the offending key."""
    if not 0 < c.patch_size <= c.input_size:
        raise ValueError(f"config.model.patch_size={c.patch_size} must be in (0, input_size="
                         f"{c.input_size}]")
    if c.dtype not in MODEL_DTYPES:
        raise ValueError(f"config.model.dtype must be one of {MODEL_DTYPES}, got {c.dtype!r}")
    if c.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("config.model.dtype='float64' needs 64-bit JAX (`with "
                         "jax.enable_x64(True):` or JAX_ENABLE_X64=1); it is meant for exact "
                         "parity checks")
    if c.get("version", "v1") == "uni":
        _validate_uni(c)
        return
    if c.policy.per_frame and c.num_glance_frames != c.num_focus_frames:
        raise ValueError("config.model.policy.per_frame needs num_glance_frames == "
                         f"num_focus_frames (got {c.num_glance_frames} and {c.num_focus_frames})")
    if c.classifier.kind == "gru" and not c.policy.per_frame:
        raise ValueError("config.model.classifier.kind='gru' pairs with policy.per_frame=True")
    version = c.get("version", "v1")
    if version not in ("v1", "v2"):
        raise ValueError(f"config.model.version={version!r}: expected v1, v2 or uni")
    if version == "v2":
        if c.policy.kind != "location":
            raise ValueError("config.model.version='v2' needs policy.kind='location' (use "
                             f"models.to_v2_model_config), got {c.policy.kind!r}")
        if c.classifier.kind not in ("frame_exit", "logit_sum"):
            raise ValueError(f"config.model.classifier.kind={c.classifier.kind!r}: V2 uses "
                             "frame_exit or logit_sum")
        if (c.classifier.kind == "frame_exit") != bool(c.policy.per_frame):
            raise ValueError("config.model: V2 pairs classifier.kind='frame_exit' with "
                             "policy.per_frame=True and 'logit_sum' with per_frame=False")
        if c.get("frame_order", "natural") not in ("natural", "coarse_to_fine"):
            raise ValueError(f"config.model.frame_order={c.frame_order!r}: expected natural or "
                             "coarse_to_fine")
        return
    if c.policy.kind not in ("gaussian", "categorical"):
        raise ValueError(f"config.model.policy.kind: unknown {c.policy.kind!r}")


def _validate_uni(c: ml_collections.ConfigDict) -> None:
    """The Uni-AdaFocus keys (see `to_uni_model_config`); raises ValueError naming the key."""
    n, g, k = c.num_candidate_frames, c.num_glance_frames, c.num_focus_frames
    if not 0 < g <= n or not 0 < k <= n:
        raise ValueError(f"config.model: Uni-AdaFocus needs 0 < num_glance_frames={g} and "
                         f"num_focus_frames={k} <= num_candidate_frames={n}")
    classifier = "uni_exit" if c.policy.per_frame else "logit_sum"
    if c.policy.kind != "uni" or c.classifier.kind != classifier:
        raise ValueError("config.model.version='uni' needs policy.kind='uni' and "
                         f"classifier.kind={classifier!r} (policy.per_frame="
                         f"{bool(c.policy.per_frame)}; use models.to_uni_model_config), got "
                         f"{c.policy.kind!r} and {c.classifier.kind!r}")
    lo, hi = c.policy.side_range
    if not 0 < lo <= c.patch_size <= hi:
        raise ValueError(f"config.model.policy.side_range=({lo}, {hi}) must hold the patch size "
                         f"{c.patch_size} (the random boxes have side P)")
    if c.policy.get("frame_choice", "policy") not in ("policy", "uniform"):
        raise ValueError(f"config.model.policy.frame_choice={c.policy.frame_choice!r}: expected "
                         "policy (the temporal policy's frames) or uniform (uniformly spaced)")
    if c.policy.temperature <= 0 or c.policy.mc_samples < 1:
        raise ValueError("config.model.policy: temperature must be > 0 and mc_samples >= 1")


def dummy_inputs(model_config, batch_size: int = 1, dtype=jnp.float32):
    """Zero glance and focus frames of the configured shapes (`input_frames`,
    `focus_input_frames`; Uni-AdaFocus, ActivityNet family: the N candidate frames and None)."""
    s = model_config.input_size
    glance = jnp.zeros((batch_size, input_frames(model_config), s, s, 3), dtype)
    focus = focus_input_frames(model_config)
    return glance, None if focus is None else jnp.zeros((batch_size, focus, s, s, 3), dtype)


def init_variables(model: AdaFocus, rng: jax.Array, batch_size: int = 1):
    """Initialises `{'params', 'batch_stats'}` (jitted; runs every sub-network once)."""
    glance, focus = dummy_inputs(model.config, batch_size)

    @jax.jit
    def init(rng):
        rngs = dict(zip(("params", "dropout", "patches", "actions"), jax.random.split(rng, 4)))
        return model.init(rngs, glance, focus, train=False, patch_mode="policy")

    return dict(init(rng))


__all__ = ["AdaFocus", "AdaFocusV2", "UniAdaFocus", "AdaFocusOutput", "Modes", "create_model",
           "v2_model_config", "to_v2_model_config", "uni_model_config", "to_uni_model_config",
           "input_frames", "focus_input_frames", "is_uni_tsm", "coarse_to_fine_order",
           "default_model_config", "tiny_model_config", "init_variables", "dummy_inputs",
           "deterministic_actions", "sample_actions", "validate_model_config"]
