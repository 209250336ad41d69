"""Orbax checkpoints of the train state: one `CheckpointManager` per stage directory.

Layout: `WORKDIR/<stage>/checkpoints/<step>/` holding `{"step", "params", "batch_stats", "opt_state"}`.
The last step of a stage is always saved, so "the latest step equals the stage length" means the
stage is finished (a rerun skips it and hands its final variables to the next stage); the
`results.json` the stage writes when it ends records that length (`"steps"`), so a later stage can
check that a source stage finished without knowing its config (`stage_progress`).

With `config.train.handoff = "best"`, `WORKDIR/<stage>/best/<step>/` holds `{"params",
"batch_stats", "metric"}` of the best evaluation so far (saved synchronously, one step kept; the
metric value travels in the checkpoint itself, so a resumed stage keeps comparing against it), and
`best.json` next to it says which step and value, for people.

Saves are asynchronous by default (`config.ckpt.async_save`); orbax writes into a temporary
directory and renames it when complete, so a run killed at any moment (SIGKILL included) resumes
from the last complete step (the partial folder is removed when the stage's manager next opens). A
step folder that is not a complete checkpoint (truncated by a copy, another program's folder) or
whose files cannot be read is an error naming it, never a crash deep in orbax. Every process calls every function here (orbax coordinates
multi-host writes).
"""

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from adafocus_jax import json_io, parallel


def checkpoint_dir(stage_dir: str) -> str:
    return os.path.join(os.path.abspath(stage_dir), "checkpoints")


def make_manager(stage_dir: str, *, max_to_keep: int = 2, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """The manager of one stage directory (`max_to_keep` <= 0 keeps everything)."""
    root = checkpoint_dir(stage_dir)
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"{root} is not a directory; move it away (it is where the checkpoints of "
                         f"stage directory {stage_dir} go)")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep if max_to_keep > 0 else None, create=not read_only,
        enable_async_checkpointing=async_save, read_only=read_only,
        # Partial writes of a killed run (orbax's *.orbax-checkpoint-tmp-* folders) are removed.
        cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(root, options=options)


# What every complete checkpoint step directory holds (written by orbax before it renames the
# temporary folder into place); a step folder without them is truncated or foreign.
_STEP_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt", os.path.join("default", "_METADATA"))


def _advice(root: str, step: int) -> str:
    others = sorted(int(d) for d in os.listdir(root) if d.isdigit() and int(d) != step)
    previous = f"the previous checkpoint (step {others[-1]})" if others else "scratch"
    return (f"move {os.path.join(root, str(step))} out of {root} to resume from {previous}, or "
            f"remove {os.path.dirname(root)} to restart that stage")


def check_step_dir(root: str, step: int) -> None:
    """Raises ValueError naming `root/<step>` when it is not a complete checkpoint of this code
    (truncated by a copy or a crash outside orbax's atomic rename, or another program's folder)."""
    path = os.path.join(root, str(step))
    missing = [f for f in _STEP_FILES if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise ValueError(f"{path} is not a complete adafocus_jax checkpoint (missing {missing}): "
                         f"it is truncated or was written by something else; {_advice(root, step)}")


def _leaf_shapes(tree) -> list[tuple[int, ...]]:
    return sorted(tuple(getattr(x, "shape", np.shape(x))) for x in jax.tree.leaves(tree))


def _restore_checked(manager: ocp.CheckpointManager, step: int, target: Any = None) -> Any:
    """`manager.restore(step)` (into `target`, abstract arrays, or as saved), with errors that name
    the checkpoint: incomplete or foreign, a different tree than `target`, or unreadable files."""
    root = str(manager.directory)
    path = os.path.join(root, str(step))
    check_step_dir(root, step)
    args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
    try:
        return manager.restore(step, args=args)
    except Exception as e:   # orbax / tensorstore raise many types; all mean "cannot use this"
        try:
            saved = _leaf_shapes(manager.item_metadata(step))
        except Exception:   # noqa: BLE001 - the metadata itself is unreadable
            saved = None
        if target is not None and saved is not None and saved != _leaf_shapes(target):
            raise ValueError(f"checkpoint {path} does not match the current model/optimizer "
                             f"(was the config changed since it was written?): {e}") from e
        raise ValueError(f"checkpoint {path} is unreadable (truncated or damaged files?): "
                         f"{type(e).__name__}: {str(e)[:500]}; {_advice(root, step)}") from e


def state_items(state) -> dict[str, Any]:
    """The saved part of a `TrainState` (the optimizer `tx` is rebuilt from the config)."""
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
            "opt_state": state.opt_state}


def save(manager: ocp.CheckpointManager, state, *, wait: bool = False) -> None:
    """Saves `state` at its own step (no-op if that step is already saved)."""
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(state_items(state)), force=True)
    if wait:
        manager.wait_until_finished()


def _abstract(tree: Any, mesh) -> Any:
    sharding = parallel.replicated(mesh)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore(manager: ocp.CheckpointManager, state, mesh, step: int | None = None):
    """Restores the latest (or `step`) checkpoint into the structure of `state`, replicated.

    Raises:
      ValueError naming the checkpoint directory if the saved tree does not match the state (e.g.
      a different model config), or the checkpoint is truncated, damaged or foreign.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    target = _abstract(state_items(state), mesh)
    items = _restore_checked(manager, step, target)
    logging.info("restored %s/%d", manager.directory, step)
    return state.replace(step=items["step"], params=items["params"],
                         batch_stats=items["batch_stats"], opt_state=items["opt_state"])


def _read_only_manager(root: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        root, options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def latest_step(stage_dir: str) -> int | None:
    """The latest complete checkpoint step of a stage directory (None if it has none)."""
    root = checkpoint_dir(stage_dir)
    if not os.path.isdir(root):
        return None
    with _read_only_manager(root) as manager:
        return manager.latest_step()


def stage_progress(stage_dir: str) -> tuple[int | None, int | None]:
    """(latest checkpoint step, the stage length recorded in its `results.json` or None).

    `results.json` is written when a stage ends, so `recorded == latest` means the stage finished
    (an earlier, finished run of a stage later resumed with more steps does not count: its
    `results.json` holds the old length, the checkpoint a later step).
    """
    latest = latest_step(stage_dir)
    recorded = None
    path = os.path.join(os.path.abspath(stage_dir), "results.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                recorded = int(json.load(f)["steps"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: unreadable stage results ({e!r}); expected a JSON object "
                             "with an integer \"steps\"") from e
    return latest, recorded


def load_variables_from_dir(path: str, step: int | None = None) -> dict[str, Any]:
    """`{"params", "batch_stats"}` of the latest (or `step`) checkpoint of a stage directory (or of
    its `checkpoints/` folder), as host numpy trees. Used to hand a finished stage of an earlier run
    to a later stage, and as the fallback reader of `config.init_from`."""
    path = os.path.abspath(path)
    root = path if os.path.basename(path) == "checkpoints" else checkpoint_dir(path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{path}: no stage checkpoint directory ({root} does not exist)")
    with _read_only_manager(root) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{root}: no complete checkpoint")
        items = _restore_checked(manager, step)
    if not isinstance(items, dict) or "params" not in items:
        raise ValueError(f"{root}/{step}: not an adafocus_jax stage checkpoint (no params)")
    return {"params": items["params"], "batch_stats": items.get("batch_stats", {})}


# --------------------------------------------------------------------------------------------------
# The best-validated variables of a stage (config.train.handoff = "best").


def best_dir(stage_dir: str) -> str:
    return os.path.join(os.path.abspath(stage_dir), "best")


def save_best(stage_dir: str, variables, step: int, metric: str, value: float) -> None:
    """Stores `variables` (`{"params", "batch_stats"}`) as the stage's best, evaluated at `step`
    with `metric` = `value`. Synchronous: when it returns, the files are complete."""
    root = best_dir(stage_dir)
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False)
    with ocp.CheckpointManager(root, options=options) as manager:
        if step not in manager.all_steps():
            items = {"params": variables["params"], "batch_stats": variables["batch_stats"],
                     "metric": np.asarray(value, np.float64)}
            manager.save(step, args=ocp.args.StandardSave(items), force=True)
            manager.wait_until_finished()
    json_io.write_json(os.path.join(root, "best.json"),
                       {"step": int(step), "metric": metric, "value": float(value)})


def _restore_best(stage_dir: str) -> tuple[dict[str, Any], int] | None:
    """(every stored item, step) of the stage's best evaluation, or None if it stored none."""
    root = best_dir(stage_dir)
    if not os.path.isdir(root):
        return None
    with _read_only_manager(root) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        items = _restore_checked(manager, step)
    if not isinstance(items, dict) or "metric" not in items:
        raise ValueError(f"{root}/{step}: not a best-evaluation checkpoint (no metric)")
    return items, step


def best_info(stage_dir: str) -> tuple[int, float] | None:
    """(step, metric value) of the stored best variables, or None if the stage has none."""
    restored = _restore_best(stage_dir)
    if restored is None:
        return None
    items, step = restored
    return step, float(np.asarray(items["metric"]))


def load_best(stage_dir: str) -> tuple[dict[str, Any], int, float] | None:
    """(`{"params", "batch_stats"}` host trees, step, metric value) of the stage's best
    evaluation, or None if it stored none."""
    restored = _restore_best(stage_dir)
    if restored is None:
        return None
    items, step = restored
    variables = {"params": items["params"], "batch_stats": items.get("batch_stats", {})}
    return variables, step, float(np.asarray(items["metric"]))
