"""Shared fixtures of the training tests: the tiny config, its model, initial variables, a batch."""

import copy
import functools
import os

import jax
import numpy as np

from adafocus_jax import data as data_lib
from adafocus_jax import config_lib, models, parallel, stages, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name: str):
    """The module of configs/<name>.py (its recipe tables STAGES, V2, PATCH_SIZES)."""
    return config_lib.load_config_module(os.path.join(ROOT, "configs", f"{name}.py"))


def tiny_config(dataset: str = "sthv2"):
    return config_module("tiny").get_config(dataset)


@functools.lru_cache(maxsize=None)
def setup(dataset: str = "sthv2"):
    """(config, model, host initial variables) — cached: init compiles the whole model."""
    config = tiny_config(dataset)
    model = models.create_model(config)
    return config, model, train.initial_variables(config, model)


def host_batch(config, batch_size: int = 8, step: int = 0, split: str = "train"):
    source = data_lib.create_source(config.data, split)
    loader = data_lib.make_loader(source, batch_size=batch_size, shuffle=True, seed=3,
                                  start_step=step, drop_remainder=True)
    return next(iter(loader))


def stage_state(config, variables, name: str, mesh, num_steps: int = 4, **ppo_overrides):
    """(replicated TrainState at step 0, recipe, schedules) for stage `name`."""
    if ppo_overrides:
        config = copy.deepcopy(config)
    for key, value in ppo_overrides.items():
        config.stages[name].ppo[key] = value
    recipe = stages.resolve_recipe(config, name)
    state, schedules = train.create_train_state(variables["params"], variables["batch_stats"],
                                                recipe, num_steps)
    return parallel.replicate(state, mesh), recipe, schedules


def to_host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
