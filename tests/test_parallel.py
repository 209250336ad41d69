"""Data parallelism: the same step on 8 devices (batch sharded) and on 1 device agrees, including
BatchNorm statistics (global-batch statistics under SPMD jit) and the PPO stage's sampling, for
both policy families (Sth-Sth Gaussian, ActivityNet categorical per frame with the GRU classifier)."""

import copy
import os

import jax
import numpy as np
import pytest

from adafocus_jax import parallel, train
from train_helpers import config_module, host_batch, setup, stage_state, to_host


def _step(dataset, name, mesh, batch_np):
    config, model, variables = setup(dataset)
    if config.stages[name].optimizer == "adam":
        # Adam's first step is ~lr * sign(g): for parameters whose true gradient is 0 (a bias right
        # before a BatchNorm) it turns float noise into ±lr and hides real differences. SGD keeps
        # the update linear in the gradient, so the comparison below is meaningful.
        config = copy.deepcopy(config)
        config.stages[name].optimizer = "sgd"
        config.stages[name].lr.policy = 0.1
    state, recipe, schedules = stage_state(config, variables, name, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=11), mesh)
    state, step_metrics = step(state, parallel.shard_batch(batch_np, mesh))
    return to_host(state), to_host(step_metrics)


@pytest.mark.parametrize("dataset,name", [("sthv2", "stage1"), ("sthv2", "stage2"),
                                          ("actnet", "stage2")])
def test_sharded_step_matches_single_device(dataset, name):
    config, _, _ = setup(dataset)
    batch_np = host_batch(config)
    single, m1 = _step(dataset, name, parallel.make_mesh(jax.devices()[:1]), batch_np)
    sharded, m8 = _step(dataset, name, parallel.make_mesh(), batch_np)
    assert m1.keys() == m8.keys()
    for key in m1:
        np.testing.assert_allclose(m8[key], m1[key], rtol=2e-4, atol=1e-5, err_msg=key)
    for tree in ("params", "batch_stats"):
        a, b = getattr(single, tree), getattr(sharded, tree)
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(y, x, rtol=2e-4, atol=2e-6,
                                       err_msg=f"{tree}{jax.tree_util.keystr(path)}")


def test_shard_batch_layout_and_errors():
    mesh = parallel.make_mesh()
    batch = {"glance": np.zeros((8, 2, 4, 4, 3), np.uint8), "label": np.arange(8, dtype=np.int32),
             "mask": np.ones(8, bool), "index": np.arange(8, dtype=np.int64)}
    out = parallel.shard_batch(batch, mesh)
    assert "index" not in out                       # host-only
    assert out["label"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(out["label"].addressable_shards) == 8
    assert out["label"].addressable_shards[3].data.shape == (1,)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        parallel.check_batch_size(12, mesh, "stage x")


def test_prefetch_to_mesh_keeps_order_and_reads_ahead():
    mesh = parallel.make_mesh()
    pulled = []

    def batches():
        for i in range(5):
            pulled.append(i)
            yield {"label": np.full(8, i, np.int32), "mask": np.ones(8, bool)}

    it = parallel.prefetch_to_mesh(batches(), mesh, size=3)
    first = next(it)
    # Handing out batch 0 has already issued the copies of batches 1 and 2.
    assert pulled == [0, 1, 2]
    assert first["label"].sharding.spec == jax.sharding.PartitionSpec("data")
    rest = [int(np.asarray(b["label"])[0]) for b in it]
    assert [int(np.asarray(first["label"])[0])] + rest == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="prefetch size"):
        next(parallel.prefetch_to_mesh(batches(), mesh, size=0))


def test_loader_workers_default_to_the_cpu_count():
    from adafocus_jax import data as data_lib, stages
    config, _, _ = setup("sthv2")
    table = config_module("sthv2").STAGES
    assert stages.add_training_config(copy.deepcopy(config),
                                      stage_table=table).train.num_workers == -1
    source = data_lib.create_source(config.data, "train")
    loader = data_lib.make_loader(source, batch_size=8, shuffle=True, seed=0, num_workers=-1)
    assert loader.num_workers == (os.cpu_count() or 1)
