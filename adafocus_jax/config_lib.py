"""Builds the official configs (configs/*.py call this): model (adafocus_jax.models), data (adafocus_jax.data)
and the training recipe (adafocus_jax.stages) of one official setting."""

import ml_collections

from adafocus_jax import data, models, stages


def parse_options(arg: str | None) -> dict:
    """`"patch=160,stage=2"` → {"patch": "160", "stage": "2"}; raises on a malformed item."""
    options = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config option {item!r} is not of the form key=value")
        options[key.strip()] = value.strip()
    return options


def build_config(dataset: str, arg: str | None, allowed_patches: tuple[int, ...]):
    """The official config of `dataset`; `arg` may set `patch=<P>` (one of `allowed_patches`) and
    `mode=v1|v2` (AdaFocus with its staged PPO recipe, or AdaFocusV2's one end-to-end stage)."""
    options = parse_options(arg)
    patch = int(options.pop("patch", allowed_patches[0]))
    mode = options.pop("mode", "v1")
    if mode not in ("v1", "v2"):
        raise ValueError(f"{dataset}: mode={mode!r}: expected v1 (AdaFocus, 3 stages + PPO) or "
                         "v2 (AdaFocusV2, one end-to-end stage)")
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
    stages.add_training_config(config)
    return config
