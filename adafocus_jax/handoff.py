"""What one stage hands to the next: restores, hand-off variables, finished-stage checks.

    variables = restore_modules(variables, recipe, finished, config, workdir)   # before a stage
    handed = handoff_variables(config, stage_dir, state)                     # after a stage
    step = check_stage_finished(config, "stage1", workdir, where)            # before reusing one

A stage's `recipe.restore` ("module=source,...") names, per module, a stage finished earlier in this
run, a finished stage directory of the workdir, or `config.init_from` (an earlier run's stage
directory, a converted Orbax directory or an official `.pth(.tar)` file, `load_init_from`).
`config.train.handoff` says whether a finished stage hands on its last variables or its
best-validated ones (`checkpoint.save_best`). Used by `train.loop`, `benchmark` and `inference`.
"""

import logging
import os
from typing import Any, Mapping

import flax
import jax
import numpy as np

from adafocus_jax import checkpoint as ckpt_lib
from adafocus_jax import stages


def load_init_from(path: str, config) -> dict:
    """Variables of `config.init_from`: a stage directory of an earlier run (it holds
    `checkpoints/`), or whatever `adafocus_jax.convert.load_variables` reads (a converted Orbax
    directory, an official `.pth` / `.pth.tar` file)."""
    if os.path.isdir(ckpt_lib.checkpoint_dir(path)) or os.path.basename(
            os.path.normpath(path)) == "checkpoints":
        stage_dir = path if os.path.basename(os.path.normpath(path)) != "checkpoints" else \
            os.path.dirname(os.path.normpath(path))
        latest, recorded = ckpt_lib.stage_progress(stage_dir)
        if recorded is None:
            logging.warning("config.init_from=%s: no results.json, so it cannot be checked that "
                            "this stage finished; using its latest checkpoint (step %s)", path,
                            latest)
        elif latest is not None and recorded != latest:
            raise ValueError(f"config.init_from={path!r}: that stage is unfinished: its latest "
                             f"checkpoint is step {latest}, its results.json records a finished "
                             f"run of {recorded} steps. Finish that stage first")
        return handoff_variables(config, stage_dir)
    try:
        from adafocus_jax import convert
    except ImportError as e:   # the converter needs optional dependencies (torch for .pth files)
        raise ImportError(f"config.init_from={path!r} needs adafocus_jax.convert: {e}") from e
    return convert.load_variables(path, config=config)


def _check_same_tree(module: str, source: str, got: Any, want: Any, collection: str) -> None:
    got_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), got)
    want_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), want)
    if jax.tree.structure(got_shapes) != jax.tree.structure(want_shapes) or \
            jax.tree.leaves(got_shapes) != jax.tree.leaves(want_shapes):
        flat_got = flax.traverse_util.flatten_dict(got, sep="/") if isinstance(got, Mapping) else {}
        flat_want = flax.traverse_util.flatten_dict(want, sep="/")
        missing = sorted(set(flat_want) - set(flat_got))[:5]
        extra = sorted(set(flat_got) - set(flat_want))[:5]
        wrong = [k for k in flat_want if k in flat_got
                 and np.shape(flat_got[k]) != np.shape(flat_want[k])][:5]
        raise ValueError(f"restore {module}={source}: {collection}/{module} does not match the "
                         f"model (missing {missing}, unexpected {extra}, wrong shape {wrong})")


HANDOFF_MODES = ("last", "best")


def handoff_mode(config) -> str:
    """`config.train.handoff` ("last" when absent), validated."""
    mode = str(config.train.get("handoff", "last"))
    if mode not in HANDOFF_MODES:
        raise ValueError(f"config.train.handoff={mode!r}: expected one of {HANDOFF_MODES}")
    return mode


def handoff_variables(config, stage_dir: str, state=None, step: int | None = None) -> dict:
    """The `{"params", "batch_stats"}` (host numpy) a finished stage hands on.

    With `config.train.handoff == "best"`: the stored variables of the stage's best evaluation
    (`stage_dir/best`), or — when the stage evaluated nothing — its last variables, with a log line.
    Otherwise (and in that fallback) the last variables: those of `state` (a `train.TrainState`,
    or anything with `.variables`) if given, else of the checkpoint at `step` (default the latest)
    of `stage_dir`.
    """
    if handoff_mode(config) == "best":
        best = ckpt_lib.load_best(stage_dir)
        if best is not None:
            variables, best_step, value = best
            logging.info("%s hands on its best evaluation: step %d, %s=%.6g", stage_dir,
                         best_step, config.eval.metric, value)
            return variables
        logging.info("%s: config.train.handoff='best' but the stage stored no evaluation (no eval "
                     "ran, or none gave a finite %s); handing on its last variables", stage_dir,
                     config.eval.metric)
    if state is not None:
        return jax.tree.map(np.asarray, jax.device_get(state.variables))
    return ckpt_lib.load_variables_from_dir(stage_dir, step)


def check_stage_finished(config, source: str, workdir: str, where: str,
                         num_train_examples: int | None = None) -> int:
    """The final step of stage `source` in `workdir/<source>`; raises if that stage is unfinished.

    Finished means: its `results.json` (written when a stage ends) records the length its latest
    checkpoint reached, or — when the process died after the last checkpoint but before
    `results.json` — the latest step equals the stage length under `config` (needs
    `num_train_examples`, the training split's size).

    Raises:
      ValueError naming the directory, the latest step and the expected one, telling the user to
      finish that stage first.
    """
    stage_dir = os.path.join(workdir, source)
    latest, recorded = ckpt_lib.stage_progress(stage_dir)
    if latest is None:
        raise ValueError(f"{where}: {ckpt_lib.checkpoint_dir(stage_dir)} holds no complete "
                         f"checkpoint; run stage {source!r} first")
    if recorded is not None and recorded == latest:
        return latest
    total = None
    if num_train_examples is not None and source in config.stages:
        total, _ = stages.num_train_steps(config, stages.resolve_recipe(config, source),
                                          num_train_examples)
        if latest == total:
            return latest
    expected = (f"{total} steps under the current config" if total is not None else
                "the length recorded in its results.json" if recorded is not None else
                "a results.json marking it finished")
    recorded_text = (f"; its results.json records a finished run of {recorded} steps"
                     if recorded is not None else "")
    raise ValueError(
        f"{where}: stage {source!r} in {stage_dir} is unfinished: its latest checkpoint is step "
        f"{latest}, expected {expected}{recorded_text}. Finish that stage first (rerun with "
        f"--config.run_stages={source} and the same config), or remove {stage_dir} to retrain "
        "it from scratch")


def restore_modules(variables: dict, recipe: stages.StageRecipe, finished: Mapping[str, dict],
                    config, workdir: str, num_train_examples: int | None = None) -> dict:
    """Replaces the modules named in `recipe.restore` with their source's variables.

    Sources: a stage finished earlier in this run (`finished`), a stage directory of this workdir
    whose stage finished (`check_stage_finished`; an interrupted one is an error, never silently
    used), or `config.init_from`. With `config.init_from` empty, a module restored from
    "init_from" is an error, or with `config.allow_random_init` keeps its random initialisation
    (with a warning). `num_train_examples` (the
    training split's size) lets a stage directory count as finished from its step count alone.
    """
    params, batch_stats = dict(variables["params"]), dict(variables["batch_stats"])
    cache = {}
    for module, source in recipe.restore.items():
        if source in finished:
            src = finished[source]
        elif source != stages.INIT_FROM and os.path.isdir(
                ckpt_lib.checkpoint_dir(os.path.join(workdir, source))):
            if source not in cache:
                step = check_stage_finished(config, source, workdir,
                                            f"stage {recipe.name}: restore {module}={source}",
                                            num_train_examples)
                cache[source] = handoff_variables(config, os.path.join(workdir, source),
                                                  step=step)
            src = cache[source]
        elif config.init_from:
            if "init_from" not in cache:
                cache["init_from"] = load_init_from(config.init_from, config)
            src = cache["init_from"]
        elif source == stages.INIT_FROM:
            if not config.get("allow_random_init", False):
                raise ValueError(
                    f"stage {recipe.name}: restore {module}=init_from, but config.init_from is "
                    f"empty; set --config.init_from=DIR, or --config.allow_random_init=True to "
                    f"keep {module}'s random initialisation")
            logging.warning("stage %s: %s=init_from but config.init_from is empty; %s keeps its "
                            "random initialisation (config.allow_random_init)", recipe.name,
                            module, module)
            continue
        else:
            raise ValueError(f"stage {recipe.name}: restore {module}={source}, but stage {source!r}"
                             f" was not run, {os.path.join(workdir, source)} has no checkpoint and "
                             "config.init_from is empty")
        if module not in src.get("params", {}):
            raise ValueError(f"stage {recipe.name}: restore {module}={source}: the source has no "
                             f"params/{module} (it has {sorted(src.get('params', {}))})")
        _check_same_tree(module, source, src["params"][module], params[module], "params")
        params[module] = jax.tree.map(np.asarray, src["params"][module])
        if module in batch_stats:
            stats = src.get("batch_stats", {}).get(module)
            if stats is None:
                raise ValueError(f"stage {recipe.name}: restore {module}={source}: the source has "
                                 f"no batch_stats/{module}")
            _check_same_tree(module, source, stats, batch_stats[module], "batch_stats")
            batch_stats[module] = jax.tree.map(np.asarray, stats)
        logging.info("stage %s: %s restored from %s", recipe.name, module, source)
    return {"params": params, "batch_stats": batch_stats}
