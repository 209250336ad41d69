"""The staged AdaFocus training recipe as data (reference spec §3, §4, §11).

A *stage recipe* says, for one training stage:
  * which loss the step computes (`loss`: "ce" on the fused logits, "step_ce" averaged over every
    policy step (the GRU classifier), "ppo" for the policy, "glancer_ce" / "focuser_ce" for the stage-0
    pre-training of one network on whole frames, "v2" for the one-stage AdaFocusV2 loss of
    `adafocus_jax.v2`: every network at once through the differentiable crop, "uni" for the
    one-stage Uni-AdaFocus loss of `adafocus_jax.uni`);
  * where the patches come from (`patch_mode`: "random", "sample", "policy", ...);
  * which networks run BatchNorm / dropout in train mode (`modes`);
  * which parameters train and at which learning rate (`lr.<module>`; 0 = frozen; `lr_groups`
    gives sub-modules their own rate, "policy/aux_fc=0.001,..."; `trainable_pattern` restricts
    training further to parameter paths matching a regex), with which optimizer and schedule;
  * what is restored from where before the stage starts (`restore`: "module=source,..." where source
    is another stage of the same run, or `init_from` = `config.init_from`).

The training code never branches on a stage number: it only reads these fields.

`add_training_config(config, stage_table=..., v2_hyper=...)` adds the recipe a config file passes
(the official numbers live in the config files only: `STAGES` and `V2` of configs/sthv2.py and
configs/actnet.py, reused by the other official configs) plus every other key training needs (seed,
stage list, checkpointing, evaluation). Values that depend on
command-line overrides (the Sth-Sth learning-rate bug switch, batch-size / step overrides) are
applied later by `resolve_recipe`, so `--config.xxx=...` always takes effect.

Sth-Sth learning-rate bug (§4.2, §11.1): the released scripts' `adjust_learning_rate` only sets the
first two of six optimizer groups, so stage 1 trains just the ResNet stem conv (at backbone_lr) and
keeps the new classifier at its random initialisation, and stage 3 trains nothing. By default we
train what the paper intends (stage 1: focuser at backbone_lr + classifier at fc_lr; stage 3:
classifier at fc_lr). `config.reproduce_released_lr_bug = True` reproduces the released behaviour.
"""

import dataclasses
import math
import re
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from adafocus_jax.families import ACTNET_FAMILY, RECIPE_DATASETS, STHSTH
from adafocus_jax.patch_modes import patch_modes

MODULES = ("glancer", "focuser", "policy", "classifier")
LOSSES = ("ce", "step_ce", "ppo", "glancer_ce", "focuser_ce", "v2", "uni")
INIT_FROM = "init_from"

# The parameter path of the ResNet stem conv: the only tensor the released Sth-Sth stage 1 trains.
RELEASED_BUG_STAGE1_PATTERN = r"^focuser/conv1/"


# --------------------------------------------------------------------------------------------------
# Config construction.


def recipe(*, loss: str, patch_mode: str, modes: Mapping[str, bool], lr: Mapping[str, float],
            optimizer: str = "sgd", lr_schedule: str = "cosine", num_epochs: int,
            batch_size: int, eval_every_epochs: int, eval_patch_mode: str, restore: str,
            extra_epoch: bool = True) -> ml_collections.ConfigDict:
    """One stage recipe with every field present (so command-line overrides can reach them); the
    official values of the arguments are the rows of the `STAGES` tables of configs/sthv2.py and
    configs/actnet.py."""
    r = ml_collections.ConfigDict()
    r.loss = loss
    r.patch_mode = patch_mode
    r.modes = ml_collections.ConfigDict({m: bool(modes.get(m, False)) for m in MODULES})
    r.lr = ml_collections.ConfigDict({m: float(lr.get(m, 0.0)) for m in MODULES})
    r.trainable_pattern = ""            # optional regex on "module/.../param" paths
    # Sub-modules with their own learning rate, "module/sub=lr,...": the parameters under that
    # path train at lr (0 = frozen) instead of at their module's rate.
    r.lr_groups = ""
    r.optimizer = optimizer             # sgd | adam
    r.momentum = 0.9                    # SGD momentum (official 0.9)
    r.weight_decay = 1e-4 if optimizer == "sgd" else 0.0   # coupled L2, as torch.optim.SGD
    r.adam_b1, r.adam_b2, r.adam_eps = 0.9, 0.999, 1e-8
    r.lr_schedule = lr_schedule         # cosine | step | constant, set once per epoch (official)
    r.lr_step_epochs = (20, 40)         # milestones for "step"
    r.num_epochs = num_epochs           # E of the official scripts
    r.extra_epoch = extra_epoch         # official loops run E + 1 epochs; the last has cosine lr 0
    r.batch_size = batch_size           # global batch (all devices and hosts)
    r.eval_every_epochs = eval_every_epochs
    r.eval_patch_mode = eval_patch_mode  # random | policy | center | glancer | focuser
    r.restore = restore                 # "module=source,..."; source: a stage name or init_from
    r.clip_grad_norm = 0.0              # > 0: clip the global gradient norm first (torch --gd)
    r.ppo = ml_collections.ConfigDict(dict(
        algorithm="ppo",                # ppo | reinforce (REINFORCE with the critic as baseline)
        gamma=0.7, clip_eps=0.2, value_coef=0.5, entropy_coef=0.01,
        epochs=1,                       # K PPO epochs over each batch (official 1)
        return_eps=1e-5))
    return r


# The official ActivityNet-family scripts hand each stage's best-validated checkpoint to the next
# (§4.3).
HANDOFF_BEST_DATASETS = ACTNET_FAMILY


def family_stages(table: Mapping[str, Mapping]) -> ml_collections.ConfigDict:
    """`config.stages` from a stage table (`{stage: recipe arguments}`, a config file's `STAGES`).

    ml_collections sorts the keys of `config.stages`, so the run's order is kept apart in
    `config.stage_order` (the table's order)."""
    s = ml_collections.ConfigDict()
    for name, row in table.items():
        s[name] = recipe(**row)
    return s


V2_HYPER_KEYS = ("lr", "mult", "num_epochs", "batch_size", "weight_decay", "extra_epoch", "clip",
                 "eval_every_epochs", "restore")


def _check_hyper(hyper: Mapping, keys: Sequence[str], what: str) -> None:
    """Raises a ValueError naming the missing and unknown keys of a config's `what` table."""
    missing = [k for k in keys if k not in hyper]
    unknown = sorted(k for k in hyper if k not in keys)
    if missing or unknown:
        raise ValueError(f"{what.lower()} hyper-parameters (a config's {what}): missing {missing}, "
                         f"unknown {unknown}; expected the keys {keys}")


def _one_stage(loss: str, hyper: Mapping):
    """The recipe of a one-stage mechanism (V2, Uni): every network trains, policy patches, lr =
    `hyper["lr"]` × the per-module multiplier, the table's epochs / batch / eval / restore."""
    return recipe(
        loss=loss, patch_mode="policy", modes={m: True for m in MODULES},
        lr={m: hyper["lr"] * mult for m, mult in hyper["mult"].items()},
        num_epochs=hyper["num_epochs"], batch_size=hyper["batch_size"],
        eval_every_epochs=hyper["eval_every_epochs"], eval_patch_mode="policy",
        restore=hyper["restore"], extra_epoch=hyper["extra_epoch"])


def v2_stages(hyper: Mapping) -> ml_collections.ConfigDict:
    """The one AdaFocusV2 stage ("v2"): loss "v2" (policy + random patches, every network in train
    mode), SGD, cosine, lr = `hyper["lr"]` × the per-module multiplier `hyper["mult"]`.

    Args:
      hyper: the stage's hyper-parameters, a config file's `V2` (keys `V2_HYPER_KEYS`).

    Raises:
      ValueError naming the missing or unknown keys of `hyper`.
    """
    _check_hyper(hyper, V2_HYPER_KEYS, "V2")
    s = ml_collections.ConfigDict()
    s.v2 = _one_stage("v2", hyper)
    s.v2.weight_decay = hyper["weight_decay"]
    s.v2.clip_grad_norm = hyper["clip"]
    return s


UNI_HYPER_KEYS = ("lr", "mult", "group_mult", "num_epochs", "batch_size", "weight_decay",
                  "extra_epoch", "clip", "eval_every_epochs", "restore", "norm_ratio", "kl_ratio",
                  "fc_dropout")


def uni_stages(hyper: Mapping) -> ml_collections.ConfigDict:
    """The one Uni-AdaFocus stage ("uni"): loss "uni" (chosen frames, policy and random boxes,
    every network in train mode), SGD, cosine, lr = `hyper["lr"]` × the per-module multiplier
    `hyper["mult"]`, sub-modules at `hyper["lr"]` × `hyper["group_mult"]` (`lr_groups`), the
    global gradient norm clipped at `clip` when > 0; the loss weights `norm_ratio`, `kl_ratio`
    in the recipe's `uni` (`fc_dropout` is the model's, `config_lib.build_config` sets it).

    Args:
      hyper: the stage's hyper-parameters, a config file's `UNI` (keys `UNI_HYPER_KEYS`).

    Raises:
      ValueError naming the missing or unknown keys of `hyper`.
    """
    _check_hyper(hyper, UNI_HYPER_KEYS, "UNI")
    s = ml_collections.ConfigDict()
    s.uni = _one_stage("uni", hyper)
    s.uni.weight_decay = hyper["weight_decay"]
    s.uni.clip_grad_norm = hyper["clip"]
    s.uni.lr_groups = ",".join(f"{path}={hyper['lr'] * mult:g}"
                               for path, mult in hyper["group_mult"].items())
    s.uni.uni = ml_collections.ConfigDict(dict(norm_ratio=hyper["norm_ratio"],
                                               kl_ratio=hyper["kl_ratio"]))
    return s


def add_training_config(config: ml_collections.ConfigDict, *,
                        stage_table: Mapping[str, Mapping] | None = None,
                        v2_hyper: Mapping | None = None,
                        uni_hyper: Mapping | None = None) -> ml_collections.ConfigDict:
    """Adds the training recipe a config passes and every key training reads.

    Args:
      config: a config with `dataset`, `model` and `data` already set.
      stage_table: the V1 stages (needed unless `config.model.version` is "v2" or "uni"), a
        table like `STAGES` of configs/sthv2.py; its order is the run's stage order.
      v2_hyper: with `config.model.version = "v2"`, the hyper-parameters of the one AdaFocusV2
        stage, like `V2` of configs/sthv2.py (see `v2_stages`).
      uni_hyper: with `config.model.version = "uni"`, the hyper-parameters of the one
        Uni-AdaFocus stage, like `UNI` of configs/actnet.py (see `uni_stages`).

    Returns:
      The same config (modified in place).

    Raises:
      ValueError for a dataset without a recipe, or when the table the model's version needs is
      not passed.
    """
    dataset = config.dataset
    if dataset not in RECIPE_DATASETS:
        raise ValueError(f"config.dataset={dataset!r}: no training recipe; expected one of "
                         f"{RECIPE_DATASETS}")
    version = config.model.get("version", "v1")
    needed = {"v2": v2_hyper, "uni": uni_hyper}.get(version, stage_table)
    if needed is None:
        raise ValueError(
            f"add_training_config (config.dataset={dataset!r}, model version {version}): pass "
            + {"v2": "v2_hyper=, e.g. V2 of configs/sthv2.py",
               "uni": "uni_hyper=, e.g. UNI of configs/actnet.py"}.get(
                   version, "stage_table=, e.g. STAGES of configs/sthv2.py or configs/actnet.py"))
    config.seed = 1007                        # the official seed
    if version == "v2":
        config.stages = v2_stages(v2_hyper)   # one end-to-end stage (AdaFocusV2)
        order = ("v2",)
    elif version == "uni":
        config.stages = uni_stages(uni_hyper)  # one stage (Uni-AdaFocus)
        order = ("uni",)
    else:
        config.stages = family_stages(stage_table)
        order = tuple(stage_table)
    # The recipe's stage order, comma-separated: every key of config.stages exactly once. A config
    # that adds a stage adds it here too. (Stage seeds depend on the stage's name only.)
    config.stage_order = ",".join(order)
    # The stages this run trains, comma-separated ("" = all of config.stage_order), in the order of
    # config.stage_order, each in WORKDIR/<stage name>.
    config.run_stages = ""
    # Official PyTorch weights converted with `python -m adafocus_jax.tools.convert_checkpoint`
    # (ImageNet / TSM backbones), or a stage directory of an earlier run. Used by restore sources
    # "init_from" and by any restore source stage that this run does not contain.
    config.init_from = ""
    # A stage that restores a module from "init_from" while config.init_from is empty is an error
    # (the module would silently stay random, and a frozen one stays random for the whole run);
    # True keeps the random initialisation with a warning (the synthetic and tiny configs).
    config.allow_random_init = dataset == "synthetic"
    # Sth-Sth only: reproduce the released scripts' optimizer-group bug (see module docstring).
    config.reproduce_released_lr_bug = False

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 0               # > 0: overrides every stage's batch size
    config.train.num_steps = 0                # > 0: every stage runs this many steps (tests, demos)
    config.train.log_every_steps = 50
    config.train.eval_every_steps = 0         # > 0: overrides the stages' eval_every_epochs
    config.train.max_eval_batches = 0         # > 0: evaluate on at most this many batches
    config.train.eval_batch_size = 0          # 0: the stage's batch size
    config.train.num_workers = -1             # loader threads: -1 = one per CPU core, 0 = none
    config.train.donate_state = True
    config.train.final_eval = True            # evaluate at the end of every stage
    # What a finished stage hands to the next one (and to a rerun's later stages):
    #   "last": its final variables;
    #   "best": the variables of its best evaluation by config.eval.metric (periodic evals and the
    #     final one; kept in WORKDIR/<stage>/best so reruns and resumes keep them), as the official
    #     ActivityNet scripts do (a checkpoint is written only when validation improves, spec §4.3,
    #     §11.14). A stage that evaluated nothing hands on its last variables (logged).
    # The ActivityNet / FCVID / Mini-Kinetics configs use "best" (the official behaviour).
    config.train.handoff = "best" if dataset in HANDOFF_BEST_DATASETS else "last"

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 0               # 0: once per epoch
    config.ckpt.max_to_keep = 2
    config.ckpt.async_save = True

    config.eval = ml_collections.ConfigDict()
    config.eval.split = "val"
    config.eval.metric = "map" if dataset in ("actnet", "fcvid") else "top1"
    config.eval.multi_label = dataset == "fcvid"   # mAP over every label (FCVID) or the first one

    # Synthetic benchmark at the end of the run (configs/synthetic.py turns it on).
    config.benchmark = ml_collections.ConfigDict()
    config.benchmark.enabled = False
    config.benchmark.split = "test"
    config.benchmark.full_frame_stage = "stage0_focuser"
    return config


# --------------------------------------------------------------------------------------------------
# Resolution: the final, validated recipe of one stage after command-line overrides.


@dataclasses.dataclass(frozen=True)
class StageRecipe:
    """A stage recipe with overrides applied; see the module docstring for the fields."""
    name: str
    loss: str
    patch_mode: str
    modes: Mapping[str, bool]
    lr: Mapping[str, float]
    trainable_pattern: str
    optimizer: str
    momentum: float
    weight_decay: float
    adam_b1: float
    adam_b2: float
    adam_eps: float
    lr_schedule: str
    lr_step_epochs: tuple[int, ...]
    num_epochs: int
    extra_epoch: bool
    batch_size: int
    eval_every_epochs: int
    eval_patch_mode: str
    restore: Mapping[str, str]
    ppo: Mapping[str, Any]
    clip_grad_norm: float = 0.0
    lr_groups: Mapping[str, float] = dataclasses.field(default_factory=dict)
    uni: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def total_epochs(self) -> int:
        """Epochs actually run: E + 1 with the official extra epoch."""
        return self.num_epochs + (1 if self.extra_epoch else 0)

    @property
    def trained_modules(self) -> tuple[str, ...]:
        return tuple(m for m in MODULES if self.lr[m] > 0)

    @property
    def trained_groups(self) -> tuple[str, ...]:
        """The optimizer groups that train: modules, then `lr_groups` sub-modules, with lr > 0."""
        return self.trained_modules + tuple(g for g, lr in self.lr_groups.items() if lr > 0)


def stage_order(config: ml_collections.ConfigDict) -> list[str]:
    """The recipe's stage order (`config.stage_order`), checked against the keys of `config.stages`.

    Raises:
      ValueError naming `config.stage_order` when it lists an unknown stage, a stage twice, or
      misses a stage of `config.stages`.
    """
    names = [n.strip() for n in str(config.get("stage_order", "")).split(",") if n.strip()]
    known = sorted(config.stages.keys())
    unknown = [n for n in names if n not in config.stages]
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = [n for n in known if n not in names]
    if not names or unknown or repeated or missing:
        raise ValueError(
            f"config.stage_order={config.get('stage_order', '')!r} must list every stage of "
            f"config.stages ({known}) exactly once, in training order (unknown {unknown}, "
            f"repeated {repeated}, missing {missing})")
    return names


def stage_names(config: ml_collections.ConfigDict) -> list[str]:
    """The stages to run, in order: `config.run_stages` ("" = every stage of `config.stage_order`).

    Raises:
      ValueError naming `config.run_stages` for an unknown or repeated stage, or stages listed out
      of the recipe's order (a stage restores modules from the stages before it).
    """
    order = stage_order(config)
    names = [n.strip() for n in str(config.run_stages).split(",") if n.strip()]
    if not names:
        return order
    for n in names:
        if n not in config.stages:
            raise ValueError(f"config.run_stages: unknown stage {n!r}; config.stages has "
                             f"{order}")
    if len(set(names)) != len(names):
        raise ValueError(f"config.run_stages={config.run_stages!r} lists a stage twice")
    if sorted(names, key=order.index) != names:
        raise ValueError(f"config.run_stages={config.run_stages!r}: stages must follow the recipe's "
                         f"order config.stage_order={','.join(order)!r}")
    return names


def stage_seed(config: ml_collections.ConfigDict, name: str) -> int:
    """The seed of stage `name`: `config.seed` plus the CRC-32 of the name, modulo 2^31.

    It depends on the stage's own name only, so adding, removing, reordering or renaming another
    stage never changes it (and `run_stages` does not either).
    """
    return (int(config.seed) + zlib.crc32(name.encode("utf-8"))) % (2 ** 31)


def check_init_from(config: ml_collections.ConfigDict, names: list[str]) -> None:
    """Raises before training when a stage of `names` restores a module from "init_from" while
    `config.init_from` is empty, unless `config.allow_random_init` (then `restore_modules` logs a
    warning and keeps the random initialisation)."""
    if config.init_from or config.get("allow_random_init", False):
        return
    wanted = [f"{n}: {m}" for n in names
              for m, source in parse_restore(config.stages[n].restore,
                                             f"config.stages.{n}.restore").items()
              if source == INIT_FROM]
    if wanted:
        raise ValueError(
            f"config.init_from is empty, but these stages restore modules from it: {wanted}. Set "
            "--config.init_from=DIR (converted official weights, see "
            "adafocus_jax.tools.convert_checkpoint, or a finished stage directory), or pass "
            "--config.allow_random_init=True to train from a random initialisation")


def parse_restore(spec: str, where: str) -> dict[str, str]:
    """`"glancer=stage1,policy=init_from"` → {"glancer": "stage1", "policy": "init_from"}."""
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        module, sep, source = item.partition("=")
        module, source = module.strip(), source.strip()
        if not sep or module not in MODULES or not source:
            raise ValueError(f"{where}: bad item {item!r}; expected module=source with module in "
                             f"{MODULES}")
        out[module] = source
    return out


def parse_lr_groups(spec: str, where: str) -> dict[str, float]:
    """`"policy/aux_fc=0.001"` → {"policy/aux_fc": 0.001}; the path must start with a module."""
    out = {}
    for item in filter(None, (x.strip() for x in str(spec).split(","))):
        path, sep, value = item.partition("=")
        path = path.strip().strip("/")
        module = path.split("/", 1)[0]
        try:
            lr = float(value)
        except ValueError:
            lr = -1.0
        if not sep or module not in MODULES or "/" not in path or lr < 0 or path in out:
            raise ValueError(f"{where}: bad item {item!r}; expected module/sub=lr (lr >= 0, each "
                             f"path once) with module in {MODULES}")
        out[path] = lr
    return out


def resolve_recipe(config: ml_collections.ConfigDict, name: str) -> StageRecipe:
    """The recipe of stage `name` with overrides (batch size, lr bug switch) applied and checked."""
    if name not in config.stages:
        raise ValueError(f"unknown stage {name!r}; config.stages has {list(config.stages.keys())}")
    r = config.stages[name]
    where = f"config.stages.{name}"
    lr = {m: float(r.lr[m]) for m in MODULES}
    trainable_pattern = r.trainable_pattern
    if config.get("reproduce_released_lr_bug", False):
        if config.dataset not in STHSTH:
            raise ValueError("config.reproduce_released_lr_bug applies to sthv1/sthv2 only "
                             f"(config.dataset={config.dataset!r})")
        if name == "stage1":
            # Only param_groups[0] (the ResNet stem conv weight) gets backbone_lr; the classifier
            # group and all other groups stay at lr 0 (spec §4.2).
            lr = {m: 0.0 for m in MODULES}
            lr["focuser"] = float(r.lr["focuser"])
            trainable_pattern = RELEASED_BUG_STAGE1_PATTERN
        elif name == "stage3":
            lr = {m: 0.0 for m in MODULES}   # backbone_lr 0 and an empty group 1: nothing trains
    for field, allowed in (("loss", LOSSES), ("patch_mode", patch_modes("recipe")),
                           ("optimizer", ("sgd", "adam")),
                           ("lr_schedule", ("cosine", "step", "constant")),
                           ("eval_patch_mode", patch_modes("stage_eval"))):
        if r[field] not in allowed:
            raise ValueError(f"{where}.{field}={r[field]!r}: expected one of {allowed}")
    if r.ppo.algorithm not in ("ppo", "reinforce"):
        raise ValueError(f"{where}.ppo.algorithm={r.ppo.algorithm!r}: expected ppo or reinforce")
    if int(r.ppo.epochs) < 1:
        raise ValueError(f"{where}.ppo.epochs must be >= 1, got {r.ppo.epochs}")
    if r.loss == "ppo" and r.patch_mode != "sample":
        raise ValueError(f"{where}: loss 'ppo' needs patch_mode 'sample', got {r.patch_mode!r}")
    if any(v < 0 for v in lr.values()):
        raise ValueError(f"{where}.lr: learning rates must be >= 0, got {lr}")
    if trainable_pattern:
        try:
            re.compile(trainable_pattern)
        except re.error as e:
            raise ValueError(f"{where}.trainable_pattern={trainable_pattern!r}: {e}") from e
    clip = float(r.get("clip_grad_norm", 0.0))
    if clip < 0:
        raise ValueError(f"{where}.clip_grad_norm must be >= 0, got {clip}")
    if r.loss == "v2" and config.model.get("version", "v1") != "v2":
        raise ValueError(f"{where}: loss 'v2' needs config.model.version = 'v2' "
                         "(models.to_v2_model_config)")
    if r.loss == "uni" and config.model.get("version", "v1") != "uni":
        raise ValueError(f"{where}: loss 'uni' needs config.model.version = 'uni' "
                         "(models.to_uni_model_config)")
    uni = dict(r.uni.to_dict()) if "uni" in r else {}
    if r.loss == "uni" and "norm_ratio" not in uni:
        raise ValueError(f"{where}.uni.norm_ratio: loss 'uni' needs the scale regulariser's "
                         "weight (stages.uni_stages sets it)")
    lr_groups = parse_lr_groups(r.get("lr_groups", ""), f"{where}.lr_groups")
    batch_size = int(config.train.batch_size) or int(r.batch_size)
    if batch_size <= 0:
        raise ValueError(f"{where}.batch_size must be > 0")
    if int(r.num_epochs) < 1 and not int(config.train.num_steps):
        raise ValueError(f"{where}.num_epochs must be >= 1")
    return StageRecipe(
        name=name, loss=r.loss, patch_mode=r.patch_mode,
        modes={m: bool(r.modes[m]) for m in MODULES}, lr=lr,
        trainable_pattern=trainable_pattern, optimizer=r.optimizer, momentum=float(r.momentum),
        weight_decay=float(r.weight_decay), adam_b1=float(r.adam_b1), adam_b2=float(r.adam_b2),
        adam_eps=float(r.adam_eps), lr_schedule=r.lr_schedule,
        lr_step_epochs=tuple(int(e) for e in r.lr_step_epochs), num_epochs=int(r.num_epochs),
        extra_epoch=bool(r.extra_epoch), batch_size=batch_size,
        eval_every_epochs=int(r.eval_every_epochs), eval_patch_mode=r.eval_patch_mode,
        restore=parse_restore(r.restore, f"{where}.restore"),
        ppo=dict(r.ppo.to_dict()), clip_grad_norm=clip, lr_groups=lr_groups, uni=uni)


# --------------------------------------------------------------------------------------------------
# Parameter groups and optimizers.


def param_labels(params: Mapping, recipe: StageRecipe) -> Any:
    """A pytree like `params` whose leaves are the optimizer group of each parameter.

    The group is the longest `recipe.lr_groups` path holding the parameter, else its top-level
    module name; it trains when that group has lr > 0 and the parameter path
    (`"focuser/layer1_0/conv1/kernel"`) matches `recipe.trainable_pattern` (if set); otherwise
    "frozen".
    """
    pattern = re.compile(recipe.trainable_pattern) if recipe.trainable_pattern else None
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    groups = sorted(recipe.lr_groups, key=len, reverse=True)
    for group in groups:
        if not any(path.startswith(group + "/") for path in flat):
            raise ValueError(f"stage {recipe.name}: lr_groups path {group!r} holds no parameter")
    labels = {}
    for path in flat:
        group = next((g for g in groups if path.startswith(g + "/")), path.split("/", 1)[0])
        rate = recipe.lr_groups[group] if group in recipe.lr_groups else recipe.lr.get(group, 0.0)
        trains = rate > 0 and (pattern is None or pattern.search(path))
        labels[path] = group if trains else "frozen"
    if pattern is not None and not any(v != "frozen" for v in labels.values()):
        raise ValueError(f"stage {recipe.name}: trainable_pattern {recipe.trainable_pattern!r} "
                         "matches no parameter of a module with lr > 0")
    return traverse_util.unflatten_dict(labels, sep="/")


def trainable_mask(labels: Any) -> Any:
    """True where a parameter trains (label != "frozen")."""
    return jax.tree.map(lambda label: label != "frozen", labels)


def epoch_lr_schedule(recipe: StageRecipe, base_lr: float, num_steps: int) -> Callable:
    """The official per-epoch schedule as a function of the optimizer step.

    The `recipe.total_epochs` epochs are spread evenly over `num_steps` steps and the learning rate is
    constant within an epoch: cosine `lr0/2 (1 + cos(pi e / E))`, step `lr0 * 0.1^(#milestones <= e)`,
    or constant. With the official extra epoch, the last epoch has cosine lr 0.
    """
    total_epochs = recipe.total_epochs
    num_epochs = max(recipe.num_epochs, 1)
    num_steps = max(int(num_steps), 1)
    milestones = jnp.asarray(recipe.lr_step_epochs or (10 ** 9,), jnp.int32)
    # The epoch index is computed in int32 (JAX's default integer): step * total_epochs must fit.
    if num_steps * total_epochs >= 2 ** 31:
        raise ValueError(f"stage {recipe.name}: {num_steps} steps x {total_epochs} epochs overflows "
                         "the int32 epoch arithmetic of the lr schedule")

    def schedule(step):
        # Integer arithmetic: a float32 `step * E / N` rounds once the product passes 2^24 and can
        # put the last step of an epoch into the next one.
        step = jnp.asarray(step, jnp.int32)
        epoch = step * total_epochs // num_steps
        if recipe.lr_schedule == "cosine":
            return base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch.astype(jnp.float32) / num_epochs))
        if recipe.lr_schedule == "step":
            passed = jnp.sum(milestones <= epoch)
            return base_lr * jnp.power(0.1, passed.astype(jnp.float32))
        return jnp.full((), base_lr, jnp.float32)

    return schedule


def make_optimizer(recipe: StageRecipe, labels: Any, num_steps: int):
    """`optax.multi_transform` with one transform per trained module and `set_to_zero` for the rest.

    SGD follows `torch.optim.SGD` (coupled weight decay added to the gradient, then momentum);
    Adam follows `torch.optim.Adam` (the PPO optimizer, no weight decay).

    Returns:
      (optimizer, {module: schedule}) — the schedules are for logging.
    """
    transforms = {"frozen": optax.set_to_zero()}
    schedules = {}
    for module in recipe.trained_groups:
        rate = recipe.lr_groups[module] if module in recipe.lr_groups else recipe.lr[module]
        schedule = epoch_lr_schedule(recipe, rate, num_steps)
        schedules[module] = schedule
        if recipe.optimizer == "sgd":
            parts = []
            if recipe.weight_decay:
                parts.append(optax.add_decayed_weights(recipe.weight_decay))
            parts.append(optax.sgd(schedule, momentum=recipe.momentum or None))
            transforms[module] = optax.chain(*parts)
        else:
            parts = []
            if recipe.weight_decay:
                parts.append(optax.add_decayed_weights(recipe.weight_decay))
            parts.append(optax.adam(schedule, b1=recipe.adam_b1, b2=recipe.adam_b2,
                                    eps=recipe.adam_eps))
            transforms[module] = optax.chain(*parts)
    used = set(jax.tree.leaves(labels))
    transforms = {k: v for k, v in transforms.items() if k in used}
    tx = optax.multi_transform(transforms, labels)
    if recipe.clip_grad_norm > 0:
        # torch.nn.utils.clip_grad_norm_ before optimizer.step(): on the raw gradients of every
        # trained parameter, before weight decay and momentum.
        tx = optax.chain(optax.clip_by_global_norm(recipe.clip_grad_norm), tx)
    return tx, schedules


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped in training)."""
    if num_examples < batch_size:
        raise ValueError(f"the training split has {num_examples} videos, fewer than one batch "
                         f"({batch_size})")
    return num_examples // batch_size


def num_train_steps(config: ml_collections.ConfigDict, recipe: StageRecipe,
                    num_examples: int) -> tuple[int, int]:
    """(total steps of the stage, steps per epoch) — `config.train.num_steps` overrides the total."""
    per_epoch = steps_per_epoch(num_examples, recipe.batch_size)
    override = int(config.train.num_steps)
    if override > 0:
        return override, max(1, math.ceil(override / recipe.total_epochs))
    return per_epoch * recipe.total_epochs, per_epoch
