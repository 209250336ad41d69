"""The state a stage carries from step to step (and checkpoints), and how a stage's state begins.

    variables = initial_variables(config, model)            # random init, host numpy
    state, schedules = create_train_state(params, batch_stats, recipe, num_steps)

Only the modules with a learning rate > 0 (`state.trained`) are differentiated; `opt_state` covers
`trained_params(state.params, state.trained)` only, so frozen modules cost no backward pass.
"""

from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adafocus_jax import models, stages


class TrainState(flax.struct.PyTreeNode):
    """Everything a stage carries from step to step (and checkpoints).

    Attributes:
      step: int32 `[]` optimizer steps taken in this stage.
      params: the full parameter tree `{glancer, focuser, policy, classifier}`.
      batch_stats: the full BatchNorm statistics tree.
      opt_state: optimizer state over the trained subtree `{m: params[m] for m in trained}`.
      tx: the optimizer (static).
      trained: names of the modules that are differentiated (static).
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    trained: tuple[str, ...] = flax.struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def trained_params(params: Mapping, trained: tuple[str, ...]) -> dict:
    """The differentiated subtree `{m: params[m] for m in trained}` (what `opt_state` covers)."""
    return {m: params[m] for m in trained}


def merge_params(params: Mapping, sub: Mapping) -> dict:
    """`params` with the modules of `sub` (a `trained_params` subtree) replaced."""
    out = dict(params)
    out.update(sub)
    return out


def create_train_state(params: Mapping, batch_stats: Mapping, recipe: stages.StageRecipe,
                       num_steps: int) -> tuple[TrainState, dict[str, Callable]]:
    """A fresh state at step 0 with the recipe's optimizer over the trained modules only."""
    labels = stages.param_labels(params, recipe)
    trained = tuple(m for m in stages.MODULES
                    if m in params and any(l != "frozen" for l in jax.tree.leaves(labels[m])))
    sub_labels = {m: labels[m] for m in trained}
    tx, schedules = stages.make_optimizer(recipe, sub_labels, num_steps)
    sub = trained_params(params, trained)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=dict(params),
                       batch_stats=dict(batch_stats), opt_state=tx.init(sub), tx=tx,
                       trained=trained)
    return state, schedules


def initial_variables(config, model) -> dict:
    """The random initialisation of every module (host numpy; identical on every process)."""
    variables = models.init_variables(model, jax.random.key(int(config.seed)))
    return jax.tree.map(np.asarray, jax.device_get(variables))
