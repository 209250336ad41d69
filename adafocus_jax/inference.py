"""What every inference tool shares: reading a checkpoint for a config, and the class names.

    variables = load_checkpoint(config, "/ckpt/run")            # a run directory (last stage)
    variables = load_checkpoint(config, "/ckpt/run/stage3")     # one stage directory
    variables = load_checkpoint(config, "ckpt/sthv2_144")       # a converted Orbax directory
    variables = load_checkpoint(config, "144x144.pth.tar")      # an official file, converted now
    names = class_names(config, "--class_names file or ''")     # list of C names or None

Whatever the source, the variables are checked against the configured model: every module the
model has must be there with the right shapes, so a checkpoint of another architecture (another
patch size, dataset family, width) is an error naming the file and the first mismatching keys,
never a silent wrong prediction.
"""

import os
from typing import Any, Mapping

import flax
import jax
import numpy as np

from adafocus_jax import models


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the configured model (names the file and the keys)."""


def _is_stage_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "checkpoints")) or \
        os.path.basename(os.path.normpath(path)) == "checkpoints"


def _last_stage_dir(config, run_dir: str) -> str | None:
    """The last stage of `config.run_stages` present in a run directory, else None."""
    from adafocus_jax import stages
    for name in reversed(stages.stage_names(config)):
        candidate = os.path.join(run_dir, name)
        if _is_stage_dir(candidate):
            return candidate
    return None


def _read(config, path: str) -> dict:
    from adafocus_jax import handoff  # imports orbax/optax: only when a checkpoint is read
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path) and not _is_stage_dir(path):
        stage_dir = _last_stage_dir(config, path)
        if stage_dir is not None:
            return handoff.handoff_variables(config, stage_dir)
    try:
        # A stage directory (its handed-on variables), a converted directory or a .pth file.
        return handoff.load_init_from(path, config)  # the one reader of all kinds
    except FileNotFoundError as e:
        raise FileNotFoundError(f"checkpoint {path!r}: {e}") from None


def check_variables(variables: Mapping, model, origin: str) -> dict:
    """`{"params", "batch_stats"}` checked against `model`'s own tree (host numpy returned).

    Raises CheckpointMismatch naming `origin` and up to 5 missing / unexpected / wrong-shape keys.
    """
    want = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))
    got = {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}
    flat_want = flax.traverse_util.flatten_dict(want, sep="/")
    flat_got = flax.traverse_util.flatten_dict(got, sep="/")
    missing = sorted(set(flat_want) - set(flat_got))
    extra = sorted(set(flat_got) - set(flat_want))
    wrong = [f"{k} {tuple(np.shape(flat_got[k]))} (model {tuple(flat_want[k].shape)})"
             for k in flat_want if k in flat_got
             and tuple(np.shape(flat_got[k])) != tuple(flat_want[k].shape)]
    if missing or extra or wrong:
        raise CheckpointMismatch(
            f"checkpoint {origin!r} does not fit the configured model "
            f"({len(missing)} missing, {len(extra)} unexpected, {len(wrong)} wrong-shape "
            f"arrays; missing {missing[:5]}, unexpected {extra[:5]}, wrong shape {wrong[:5]}). "
            "Is it from another architecture, patch size or dataset config?")
    return jax.tree.map(np.asarray, flax.traverse_util.unflatten_dict(
        {k: flat_got[k] for k in flat_want}, sep="/"))


def load_checkpoint(config, path: str, model=None) -> dict[str, Any]:
    """`{"params", "batch_stats"}` (host numpy) for `config`'s model from `path`.

    Args:
      config: the run config (its `model` and, for run directories, `run_stages`).
      path: a run directory (the last finished stage of `config.run_stages` hands on its
        variables, as training does), a stage directory, a converted Orbax directory, or an
        official `.pth` / `.pth.tar` file (converted on the fly; needs torch).
      model: the `AdaFocus` module (default: built from `config`).
    """
    model = model or models.create_model(config)
    return check_variables(_read(config, path), model, path)


def class_names(config, path: str = "") -> list[str] | None:
    """Class names, index order: from `path` (e.g. `--class_names`), else the dataset's category
    file (`config.data.categories` under `list_dir`/`root`) when it exists, else None.

    A file whose name count differs from `config.model.num_classes` is a DataError naming it.
    """
    from adafocus_jax.data import lists
    from adafocus_jax.data.errors import DataError
    num_classes = int(config.model.num_classes)
    if path:
        if not os.path.exists(path):
            raise DataError(path, "missing class-name file (--class_names)")
        names = lists.read_class_names(path)
        if len(names) != num_classes:
            raise DataError(path, f"{len(names)} class names, but the model has {num_classes} "
                                  "classes")
        return names
    data = config.get("data")
    categories = str(data.get("categories", "") or "") if data is not None else ""
    if not categories:
        return None
    if not os.path.isabs(categories):
        base = data.get("list_dir", "") or data.get("root", "")
        if not base:
            return None
        categories = os.path.join(base, categories)
    return lists.check_class_count(categories, num_classes)


def load_config(spec: str):
    """A config from `"configs/actnet.py"` or `"configs/actnet.py:patch=96"` (the file's
    `get_config(arg)`), as `--config` takes it in main.py, for the argparse-based tools."""
    from adafocus_jax import config_lib
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config={spec}: no config file {path!r}")
    module = config_lib.load_config_module(path)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config={spec}: {path} has no get_config()")
    return module.get_config(arg or None)


def predict_fn(model):
    """The inference function every tool uses (predict, export):

        fn(variables, glance, focus) -> {"logits" [B, C], "probabilities" [B, C],
                                         "step_logits" [B, St, C], "patch_offsets" [B, St, 2]}

    `glance` uint8 `[B, T_G, S, S, 3]` frames as the data pipeline makes them (normalised inside),
    `focus` uint8 `[B, T_L, S, S, 3]` or None (one frame list: the patches come from `glance`).
    The deterministic policy picks the patches (the official inference); eval mode everywhere.
    """
    from adafocus_jax.data.transforms import normalize_jnp

    def fn(variables, glance, focus=None):
        out = model.apply(variables, normalize_jnp(glance),
                          None if focus is None else normalize_jnp(focus), train=False,
                          patch_mode="policy")
        logits = out.logits.astype(jax.numpy.float32)
        return {"logits": logits, "probabilities": jax.nn.softmax(logits, axis=-1),
                "step_logits": out.step_logits.astype(jax.numpy.float32),
                "patch_offsets": out.patch_offsets}

    return fn
