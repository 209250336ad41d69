"""One process of the two-process smoke test (tests/test_multihost.py); also runnable in-process.

    python tests/multihost_worker.py OUT.json PORT NUM_PROCESSES PROCESS_ID   # distributed
    (or `run(out_path, devices)` from the test, single process)

Trains two steps of the tiny Sth-Sth stage 3 recipe with each process loading only its half of every
global batch, then evaluates the padded validation split, and writes the losses, the evaluation and
a checksum of the parameters (process 0) so the test can compare with a single-process run.
Variables come from a NumPy generator on the abstract shapes (no init compile).
"""

import json
import os
import sys

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def cheap_variables(model, config):
    """Deterministic variables of the right shapes without compiling `model.init`."""
    from adafocus_jax import models
    glance, focus = models.dummy_inputs(config.model, 1)
    rngs = {k: jax.random.key(0) for k in ("params", "dropout", "patches", "actions")}
    shapes = jax.eval_shape(lambda: model.init(rngs, glance, focus, patch_mode="policy"))
    gen = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.1 * gen.standard_normal(s.shape)).astype(s.dtype),
                          shapes["params"])
    stats = jax.tree_util.tree_map_with_path(
        lambda p, s: np.full(s.shape, 1.0 if "var" in jax.tree_util.keystr(p) else 0.0, s.dtype),
        shapes["batch_stats"])
    return {"params": params, "batch_stats": stats}


def run(out_path: str, devices=None) -> dict:
    from adafocus_jax import data as data_lib
    from adafocus_jax import evaluate, models, parallel, stages, train
    from train_helpers import tiny_config

    config = tiny_config("sthv2")
    model = models.create_model(config)
    variables = cheap_variables(model, config)
    mesh = parallel.make_mesh(devices)
    recipe = stages.resolve_recipe(config, "stage3")
    state, schedules = train.create_train_state(variables["params"], variables["batch_stats"],
                                                recipe, 4)
    state = parallel.replicate(state, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=3), mesh)
    source = data_lib.create_source(config.data, "train")
    loader = data_lib.make_loader(source, batch_size=8, shuffle=True, seed=3, drop_remainder=True,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
    losses = []
    for _, batch in zip(range(2), loader):
        state, step_metrics = step(state, parallel.shard_batch(batch, mesh))
        losses.append(float(jax.device_get(step_metrics["loss"])))
    result = evaluate.evaluate_model(config, model, state.variables,
                                     data_lib.create_source(config.data, "val"),
                                     patch_mode="policy", batch_size=8, mesh=mesh)
    params = jax.device_get(state.params)
    checksum = float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(params)))
    out = {"losses": losses, "eval": result, "checksum": checksum,
           "process_count": jax.process_count(), "devices": jax.device_count()}
    if jax.process_index() == 0:
        with open(out_path, "w") as f:
            json.dump(out, f)
    return out


if __name__ == "__main__":
    out_path, port, num_processes, process_id = sys.argv[1:5]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=int(num_processes), process_id=int(process_id),
                               initialization_timeout=50)
    run(out_path)
