"""The stage runner and the whole run: `run_stage`, `train_and_evaluate`.

    state = train_and_evaluate(config, workdir)

runs the stages of `config.run_stages` in order, each in `workdir/<stage>`: restore (`handoff`),
fresh state (`train.state`), resume from the latest checkpoint (`checkpoint`), the jitted step
(`train.steps`) over the sharded loader (`parallel`, `data`), periodic evaluation (`evaluate`),
checkpoints, the SIGTERM vote (`train.preemption`), `results.json`; then the hand-off to the next
stage and, with `config.benchmark.enabled`, the end-of-run benchmark (`benchmark`).
"""

import logging
import math
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from adafocus_jax import benchmark
from adafocus_jax import checkpoint as ckpt_lib
from adafocus_jax import data as data_lib
from adafocus_jax import evaluate as eval_lib
from adafocus_jax import json_io, models, parallel, stages
from adafocus_jax.handoff import handoff_mode, handoff_variables, restore_modules
from adafocus_jax.train.preemption import StopFlag, TrainingInterrupted
from adafocus_jax.train.state import TrainState, create_train_state, initial_variables
from adafocus_jax.train.steps import jit_train_step, make_train_step, with_stop_vote


def summarize_metrics(host_metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    """Per-step metric dicts of a logging window → one dict: means, or the last value for the
    learning rates (`lr_*`)."""
    summary = {}
    for key in host_metrics[0]:
        values = np.asarray([np.asarray(m[key], np.float64) for m in host_metrics])
        summary[key] = float(values[-1] if key.startswith("lr_") else values.mean())
    return summary


def check_finite(summary: Mapping[str, float], where: str, checkpoint_dir: str) -> None:
    """Raises FloatingPointError naming every NaN/Inf metric (losses, rewards, gradient norms)."""
    bad = {k: v for k, v in summary.items() if not np.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"{where}: non-finite training metrics {bad}; stopping. Lower the learning rate or "
            f"check the data; the last good checkpoint is in {checkpoint_dir}")


def _eval_batch_size(config, recipe, mesh) -> int:
    """The eval batch, rounded down to a multiple of the device and process counts."""
    return parallel.round_batch_size(int(config.train.eval_batch_size) or recipe.batch_size, mesh)


def run_stage(config, name: str, workdir: str, finished: Mapping[str, dict], mesh, writer,
              stop: StopFlag, *, model=None, train_source=None, eval_source=None,
              init_variables: dict | None = None) -> TrainState:
    """Trains (or resumes, or skips if done) one stage in `workdir/<name>`; returns its final state.

    Args:
      config: the run config.
      name: the stage (a key of `config.stages`).
      workdir: the run directory; the stage uses `workdir/<name>`.
      finished: `{stage: {"params", "batch_stats"}}` handed on by the stages finished before this
        one (`handoff_variables`).
      mesh: the data mesh.
      writer: a clu metric writer.
      stop: the signal flag (SIGTERM → checkpoint and `TrainingInterrupted`).
      model, train_source, eval_source, init_variables: optional prebuilt pieces (default: built
        from the config).
    """
    from clu import periodic_actions

    recipe = stages.resolve_recipe(config, name)
    stage_dir = os.path.join(workdir, name)
    os.makedirs(stage_dir, exist_ok=True)
    model = model or models.create_model(config)
    train_source = train_source or data_lib.create_source(config.data, "train")
    parallel.check_batch_size(recipe.batch_size, mesh, f"stage {name} batch size")
    num_steps, per_epoch = stages.num_train_steps(config, recipe, len(train_source))
    seed = stages.stage_seed(config, name)

    # Initial variables: random init (same on every process), then the recipe's restores.
    variables = init_variables if init_variables is not None else initial_variables(config, model)
    variables = restore_modules(variables, recipe, finished, config, workdir,
                                num_train_examples=len(train_source))
    state, schedules = create_train_state(variables["params"], variables["batch_stats"], recipe,
                                          num_steps)
    state = parallel.replicate(state, mesh)
    parallel.wait_for_all_processes(f"stage {name} start")
    manager = ckpt_lib.make_manager(stage_dir, max_to_keep=int(config.ckpt.max_to_keep),
                                    async_save=bool(config.ckpt.async_save))
    latest = manager.latest_step()
    if latest is not None:
        state = ckpt_lib.restore(manager, state, mesh, latest)
    start = int(jax.device_get(state.step))
    handoff = handoff_mode(config)
    eval_metric = str(config.eval.metric)
    # The best evaluation so far (a resumed stage keeps comparing against the stored one).
    best = ckpt_lib.best_info(stage_dir) if handoff == "best" else None
    logging.info("stage %s: %s, loss=%s, patches=%s, trains %s, %d steps (%d per epoch), "
                 "batch %d, starting at step %d", name, recipe.optimizer, recipe.loss,
                 recipe.patch_mode, list(state.trained) or "nothing", num_steps, per_epoch,
                 recipe.batch_size, start)
    if start >= num_steps:
        logging.info("stage %s already finished (step %d); skipping", name, start)
        manager.close()
        return state

    eval_every = int(config.train.eval_every_steps) or recipe.eval_every_epochs * per_epoch
    ckpt_every = int(config.ckpt.every_steps) or per_epoch
    eval_source = eval_source if eval_source is not None else (
        data_lib.create_source(config.data, config.eval.split)
        if (eval_every > 0 or config.train.final_eval) else None)
    eval_batch = _eval_batch_size(config, recipe, mesh)

    step_fn = jit_train_step(with_stop_vote(make_train_step(model, recipe, schedules, seed)), mesh,
                             donate=bool(config.train.donate_state))
    loader = data_lib.make_loader(
        train_source, batch_size=recipe.batch_size, shuffle=True, seed=seed, start_step=start,
        drop_remainder=True, process_index=jax.process_index(),
        process_count=jax.process_count(), num_workers=int(config.train.num_workers),
        on_error=config.data.on_error)
    log_every = max(1, int(config.train.log_every_steps))
    progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                               every_steps=log_every)
    pending: list[dict] = []
    history = []

    def flush_metrics(step: int):
        if not pending:
            return
        summary = summarize_metrics(jax.device_get(pending))
        pending.clear()
        check_finite(summary, f"stage {name}, step {step}", ckpt_lib.checkpoint_dir(stage_dir))
        writer.write_scalars(step, {f"{name}/train_{k}": v for k, v in summary.items()})
        logging.info("stage %s step %d/%d: %s", name, step, num_steps,
                     ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary.items())))

    def run_eval(step: int):
        nonlocal best
        result = eval_lib.evaluate_model(
            config, model, state.variables, eval_source, patch_mode=recipe.eval_patch_mode,
            batch_size=eval_batch, mesh=mesh, max_batches=int(config.train.max_eval_batches))
        writer.write_scalars(step, {f"{name}/eval_{k}": v for k, v in result.items()
                                    if math.isfinite(v)})
        logging.info("stage %s step %d eval (%s patches): %s", name, step,
                     recipe.eval_patch_mode, result)
        history.append({"step": step, **result})
        if handoff == "best":
            if eval_metric not in result:
                raise ValueError(f"config.eval.metric={eval_metric!r}: the evaluation reports "
                                 f"{sorted(result)}")
            value = float(result[eval_metric])
            if math.isfinite(value) and (best is None or value > best[1]):
                ckpt_lib.save_best(stage_dir, state.variables, step, eval_metric, value)
                logging.info("stage %s step %d: best %s so far (%.6g); stored in %s", name, step,
                             eval_metric, value, ckpt_lib.best_dir(stage_dir))
                best = (step, value)
        return result

    step = start
    # Device prefetch: the next batch's host → device copy is issued before this step runs.
    iterator = parallel.prefetch_to_mesh(loader, mesh, size=2)
    local_rows = recipe.batch_size // jax.process_count()   # this process's rows of a batch
    previous_vote = None        # the stop vote of the previous step (a device scalar)
    try:
        while step < num_steps:
            batch = next(iterator)
            votes = parallel.shard_batch(
                {"stop": np.full(local_rows, stop.signal is not None)}, mesh)["stop"]
            if step == start and jax.process_count() > 1:
                # Compile first, then meet: a process that compiles minutes longer than another
                # must not reach the first cross-process collective late (CPU collectives give up
                # after 30 s).
                step_fn = step_fn.lower(state, batch, votes).compile()
                parallel.wait_for_all_processes(f"stage {name} step compiled")
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics, vote = step_fn(state, batch, votes)
            step += 1
            pending.append(metrics)
            progress(step)
            if step % log_every == 0 or step == num_steps:
                flush_metrics(step)
            if step % ckpt_every == 0 or step == num_steps:
                ckpt_lib.save(manager, state)
            # Preemption, agreed by every process: the previous step's vote (read one step late,
            # so the device stays one step ahead) says whether any process got a signal, and
            # every process reads the same vote at the same step, so all of them save this step
            # and stop (a signal that reaches only some processes never hangs the collective save).
            stopping = previous_vote is not None and bool(jax.device_get(previous_vote))
            previous_vote = vote
            if stopping and step < num_steps:
                # Save now (synchronously) and leave before any evaluation.
                flush_metrics(step)
                ckpt_lib.save(manager, state, wait=True)
                what = (f"signal {stop.signal}" if stop.signal is not None
                        else "a signal to another process")
                raise TrainingInterrupted(
                    f"stage {name} stopped by {what} at step {step}; checkpoint "
                    f"saved in {ckpt_lib.checkpoint_dir(stage_dir)}; rerun the same command to "
                    "resume")
            if eval_source is not None and eval_every > 0 and step % eval_every == 0 \
                    and step != num_steps:
                run_eval(step)
        final = run_eval(step) if (eval_source is not None and config.train.final_eval) else {}
        handed = ({"mode": "best", "step": best[0], "metric": eval_metric, "value": best[1]}
                  if best is not None else {"mode": "last", "step": num_steps})
        json_io.write_json(os.path.join(stage_dir, "results.json"),
                           {"stage": name, "steps": num_steps, "final_eval": final,
                            "evals": history, "handoff": handed}, strict=True, sort_keys=True)
    finally:
        manager.wait_until_finished()
        manager.close()
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs the stages of `config.run_stages` in order, each in `workdir/<stage>`.

    A stage already finished in `workdir` is skipped and its variables handed on (its last ones,
    or its best-validated ones with `config.train.handoff = "best"`, see `handoff_variables`); an
    unfinished one resumes from its latest checkpoint. SIGTERM/SIGINT save a checkpoint and raise
    `TrainingInterrupted`. With `config.benchmark.enabled`, `adafocus_jax.benchmark.run` evaluates
    the final model at the end.

    Returns:
      The final `TrainState` of the last stage.
    """
    from clu import metric_writers

    names = stages.stage_names(config)
    stages.check_init_from(config, names)
    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.make_mesh()
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    logging.info("devices: %d (%d per process), processes: %d, mesh %s", jax.device_count(),
                 jax.local_device_count(), jax.process_count(), dict(mesh.shape))
    model = models.create_model(config)
    train_source = data_lib.create_source(config.data, "train")
    init_variables = initial_variables(config, model)
    finished: dict[str, dict] = {}
    state = None
    with StopFlag() as stop, metric_writers.ensure_flushes(writer):
        for name in names:
            state = run_stage(config, name, workdir, finished, mesh, writer, stop, model=model,
                              train_source=train_source, init_variables=init_variables)
            finished[name] = handoff_variables(config, os.path.join(workdir, name), state)
        if config.get("benchmark") is not None and config.benchmark.get("enabled", False):
            # The end-of-run benchmark (learned vs random/centre patches vs full frames).
            benchmark.run(config, workdir, finished[names[-1]], model=model, mesh=mesh)
    return state
