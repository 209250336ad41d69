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


def set_uni_data(config: ml_collections.ConfigDict) -> None:
    """The loader side of a Uni-AdaFocus `config.model` (`models.to_uni_model_config`), in
    place. ActivityNet family: the N candidate frames arrive as `glance` (the model picks the
    glance frames among them). TSM: `glance` holds the G glance frames and `focus` the N
    candidates, each set sampled on its own with the official Uni-AdaFocus-TSM rule
    (`segment_sampling="uniform"`: fractional segments)."""
    m, d = config.model, config.data
    d.num_glance_frames = models.input_frames(m)
    if models.is_uni_tsm(m):
        d.num_focus_frames = m.num_candidate_frames
        d.segment_sampling = "uniform"


def build_config(dataset: str, arg: str | None, allowed_patches: tuple[int, ...], *,
                 stages_table=None, v2_hyper=None, uni_hyper=None, uni_patches=None,
                 uni_focus_frames=None):
    """The official config of `dataset`, training `stages_table` (V1: a config file's `STAGES`),
    one AdaFocusV2 stage with `v2_hyper` (`mode=v2`: a config file's `V2`) or one Uni-AdaFocus
    stage with `uni_hyper` (`mode=uni`: a config file's `UNI`); `arg` may set `patch=<P>` (one of
    `allowed_patches`, or of `uni_patches` with mode=uni when given; default the first),
    `mode=v1|v2|uni` (AdaFocus with its staged PPO recipe, AdaFocusV2's or Uni-AdaFocus's one
    stage), for Sth-Sth V1 mode `policy=gaussian|discrete`, and for Sth-Sth mode=uni
    `frames=<K>` (the local frames, one of `uni_focus_frames`, default the first; N = 3K
    candidates)."""
    options = parse_options(arg)
    mode = options.pop("mode", "v1")
    if mode not in ("v1", "v2", "uni"):
        raise ValueError(f"{dataset}: mode={mode!r}: expected v1 (AdaFocus, 3 stages + PPO), "
                         "v2 (AdaFocusV2, one end-to-end stage) or uni (Uni-AdaFocus, one stage)")
    if mode == "uni" and uni_patches:
        allowed_patches = tuple(uni_patches)
    try:
        patch = int(options.pop("patch", allowed_patches[0]))
    except ValueError as e:
        raise ValueError(f"{dataset}: patch must be an integer ({e})") from e
    policy = options.pop("policy", None)
    frames = options.pop("frames", None)
    if mode == "v2" and policy is not None:
        raise ValueError(f"{dataset}: policy={policy!r} is a V1 option; mode=v2 has its own "
                         "location policy")
    if mode == "uni" and policy is not None:
        raise ValueError(f"{dataset}: policy={policy!r} is a V1 option; mode=uni has its own "
                         "temporal and spatial policies")
    if mode == "uni" and uni_hyper is None:
        raise ValueError(f"{dataset}: mode=uni needs the config file's Uni-AdaFocus table "
                         "(uni_hyper=UNI, as configs/actnet.py passes)")
    focus_frames = None
    if frames is not None or (mode == "uni" and uni_focus_frames):
        if mode != "uni" or not uni_focus_frames:
            raise ValueError(f"{dataset}: frames={frames} is an option of mode=uni on Sth-Sth "
                             "(the TSM variant's local frames)")
        try:
            focus_frames = int(frames if frames is not None else uni_focus_frames[0])
        except ValueError as e:
            raise ValueError(f"{dataset}: frames must be an integer ({e})") from e
        if focus_frames not in uni_focus_frames:
            raise ValueError(f"{dataset}: frames={focus_frames} is not an official number of "
                             f"local frames {tuple(uni_focus_frames)}")
    if patch not in allowed_patches:
        raise ValueError(f"{dataset}: patch={patch} is not an official patch size "
                         f"{allowed_patches}" + (" of mode=uni" if mode == "uni" else ""))
    if options:
        raise ValueError(f"{dataset}: unknown config options {sorted(options)}")
    config = ml_collections.ConfigDict()
    config.dataset = dataset
    config.model = models.default_model_config(dataset, patch_size=patch)
    if mode == "v2":
        models.to_v2_model_config(config.model)
    config.data = data.default_data_config(dataset)
    if mode == "uni":
        models.to_uni_model_config(config.model, uni_hyper["fc_dropout"], focus_frames)
        set_uni_data(config)
    stages.add_training_config(config, stage_table=stages_table, v2_hyper=v2_hyper,
                               uni_hyper=uni_hyper)
    if policy is not None:
        set_sthsth_policy(config, policy, f"configs/{dataset}.py")
    return config
