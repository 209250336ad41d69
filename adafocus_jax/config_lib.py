"""Builds the official configs (configs/*.py call this): model (adafocus_jax.models), data (adafocus_jax.data)
and the training recipe (adafocus_jax.stages) of one official setting, from the recipe tables each
config file writes out (`STAGES`, `V2`, `PATCH_SIZES`: the one home of the official numbers; the
package never imports configs/). `sibling_config` lets one config file reuse another's tables."""

import importlib.util
import os
import types

import ml_collections

from adafocus_jax import data, families, models, stages


def parse_options(arg: str | None) -> dict:
    """`"patch=160,stage=2"` → {"patch": "160", "stage": "2"}; raises on a malformed item."""
    options = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config option {item!r} is not of the form key=value")
        options[key.strip()] = value.strip()
    return options


# Sth-Sth policy variants (`configs/sthv2.py:policy=discrete`): the official code has both the
# clipped-Gaussian policy its scripts use and a categorical one over a 5 x 5 grid of patch
# positions (`ppo_continuous=False`).
STHSTH_POLICIES = ("gaussian", "discrete")
STHSTH_DISCRETE_GRID = 5


def set_sthsth_policy(config: ml_collections.ConfigDict, policy: str, where: str) -> None:
    """Sets `config.model.policy` to the Sth-Sth `policy` variant ("gaussian" or "discrete")."""
    if config.dataset not in families.STHSTH:
        raise ValueError(f"{where}: policy={policy} is an option of sthv1/sthv2 only (the "
                         f"{config.dataset} policy is always a categorical grid)")
    if policy not in STHSTH_POLICIES:
        raise ValueError(f"{where}: policy={policy!r}: expected one of {STHSTH_POLICIES}")
    if policy == "discrete":
        config.model.policy.kind = "categorical"
        config.model.policy.grid_size = STHSTH_DISCRETE_GRID


def load_config_module(path: str) -> types.ModuleType:
    """The module of the config file `path`, executed afresh (its `__file__` is `path`).

    Raises:
      FileNotFoundError naming `path` when there is no such file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file {path!r}")
    spec = importlib.util.spec_from_file_location(
        f"_config_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling_config(here: str, name: str) -> types.ModuleType:
    """The config file `name`.py in the folder of the config file `here` (pass `__file__`), as a
    module: how configs/sthv1.py reads the tables of configs/sthv2.py."""
    return load_config_module(os.path.join(os.path.dirname(os.path.abspath(here)), f"{name}.py"))


def build_config(dataset: str, arg: str | None, allowed_patches: tuple[int, ...], *,
                 stages_table=None, v2_hyper=None):
    """The official config of `dataset`, training `stages_table` (V1: a config file's `STAGES`) or
    one AdaFocusV2 stage with `v2_hyper` (`mode=v2`: a config file's `V2`); `arg` may set
    `patch=<P>` (one of `allowed_patches`, default the first), `mode=v1|v2` (AdaFocus with its
    staged PPO recipe, or AdaFocusV2's one end-to-end stage) and, for Sth-Sth V1 mode,
    `policy=gaussian|discrete`."""
    options = parse_options(arg)
    try:
        patch = int(options.pop("patch", allowed_patches[0]))
    except ValueError as e:
        raise ValueError(f"{dataset}: patch must be an integer ({e})") from e
    policy = options.pop("policy", None)
    mode = options.pop("mode", "v1")
    if mode not in ("v1", "v2"):
        raise ValueError(f"{dataset}: mode={mode!r}: expected v1 (AdaFocus, 3 stages + PPO) or "
                         "v2 (AdaFocusV2, one end-to-end stage)")
    if mode == "v2" and policy is not None:
        raise ValueError(f"{dataset}: policy={policy!r} is a V1 option; mode=v2 has its own "
                         "location policy")
    if patch not in allowed_patches:
        raise ValueError(f"{dataset}: patch={patch} is not an official patch size "
                         f"{allowed_patches}")
    if options:
        raise ValueError(f"{dataset}: unknown config options {sorted(options)}")
    config = ml_collections.ConfigDict()
    config.dataset = dataset
    config.model = models.default_model_config(dataset, patch_size=patch)
    if mode == "v2":
        models.to_v2_model_config(config.model)
    config.data = data.default_data_config(dataset)
    stages.add_training_config(config, stage_table=stages_table, v2_hyper=v2_hyper)
    if policy is not None:
        set_sthsth_policy(config, policy, f"configs/{dataset}.py")
    return config
