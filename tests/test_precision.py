"""The bfloat16 precision policy (`config.model.dtype = "bfloat16"`): every stage's train step and
evaluation run on 8 fake devices, parameters / optimizer state stay float32, outputs are float32,
and the model computes (close to) the float32 function."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import data as data_lib
from adafocus_jax.data.transforms import normalize_jnp
from adafocus_jax import evaluate, models, parallel, stages, train
from train_helpers import host_batch, setup, stage_state, to_host


def _bf16(dataset):
    config, _, variables = setup(dataset)
    config = copy.deepcopy(config)
    config.model.dtype = "bfloat16"
    return config, models.create_model(config), variables


def _float_dtypes(tree):
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_bad_dtype_names_the_key():
    c = models.tiny_model_config()
    c.dtype = "float16"
    with pytest.raises(ValueError, match="config.model.dtype"):
        models.create_model(c)


# One stage per kind of step (loss and networks run): ce (Sth-Sth stage 1/3), the PPO step with
# the Gaussian and the categorical policy (stage 2, which also runs every network and the GRU
# classifier's reward baseline), step_ce (ActivityNet stage 1/3) and the two stage-0 heads. The
# full list runs in about 3x the time on the 2-core CI for no new code path.
@pytest.mark.parametrize("dataset,name", [
    ("sthv2", "stage1"), ("sthv2", "stage2"), ("actnet", "stage0_glancer"),
    ("actnet", "stage0_focuser"), ("actnet", "stage1"), ("actnet", "stage2")])
def test_every_stage_steps_in_bfloat16_on_8_devices(dataset, name):
    assert jax.device_count() == 8
    config, model, variables = _bf16(dataset)
    mesh = parallel.make_mesh()
    state, recipe, schedules = stage_state(config, variables, name, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=5), mesh,
                                donate=False)
    new_state, metrics = step(state, parallel.shard_batch(host_batch(config), mesh))
    metrics = to_host(metrics)
    assert np.isfinite(metrics["loss"]), metrics
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    # Parameters, BN statistics and optimizer state stay float32; trained modules move.
    assert _float_dtypes(new_state.params) == {"float32"}
    assert _float_dtypes(new_state.batch_stats) == {"float32"}
    assert _float_dtypes(new_state.opt_state) <= {"float32"}
    before, after = to_host(state.params), to_host(new_state.params)
    for module in recipe.trained_modules:
        assert any(not np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(before[module]), jax.tree.leaves(after[module]))), module


@pytest.mark.parametrize("dataset", ["sthv2", "actnet"])
def test_bfloat16_forward_is_float32_outside_and_close_to_float32(dataset):
    config, model32, variables = setup(dataset)
    config16, model16, _ = _bf16(dataset)
    batch = host_batch(config)
    glance = normalize_jnp(jnp.asarray(batch["glance"]))
    focus = (normalize_jnp(jnp.asarray(batch["focus"]))
             if "focus" in batch else None)
    run = lambda m: jax.jit(lambda v, g, f: m.apply(v, g, f, train=False))(variables, glance, focus)
    out32, out16 = run(model32), run(model16)
    for name in ("logits", "step_logits", "dist_params", "values", "glance_out", "local_features"):
        assert getattr(out16, name).dtype == jnp.float32, name
    # Same patches given: the bf16 logits differ from float32 by bf16 rounding only (~2^-8
    # relative per op), far below the logits' spread across videos.
    given = jax.jit(lambda v, g, f, o: model16.apply(v, g, f, train=False, patch_mode="given",
                                                     patch_offsets=o))(
        variables, glance, focus, out32.patch_offsets)
    drift = float(jnp.max(jnp.abs(given.logits - out32.logits)))
    spread = float(jnp.max(out32.logits) - jnp.min(out32.logits))
    assert 0 < drift < 0.1 * spread, (drift, spread)


def test_evaluation_runs_in_bfloat16():
    config, model, variables = _bf16("actnet")
    source = data_lib.create_source(config.data, "val")
    result = evaluate.evaluate_model(config, model, variables, source, patch_mode="policy",
                                     batch_size=8)
    assert result["num_videos"] == len(source)
    assert np.isfinite(result["loss"])
