"""Orbax storage of converted variables: `save_variables`, `load_converted`, `load_variables`.

Layout of a converted directory: `variables/` (the Orbax tree `{"params", "batch_stats"}`) and
`conversion.json` (what was converted from where, parameter counts).
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import numpy as np

from adafocus_jax.convert.reading import COLLECTIONS, TORCH_SUFFIXES, is_torch_file
from adafocus_jax.convert.conversion import count_parameters, load_torch_checkpoint


# Written next to the Orbax tree by `save_variables`.
METADATA_FILE = "conversion.json"
VARIABLES_DIR = "variables"


def save_variables(variables: Mapping, output_dir: str, metadata: Mapping | None = None,
                   *, overwrite: bool = False) -> str:
    """Writes `{'params', 'batch_stats'}` as an Orbax checkpoint `output_dir/variables` (standard
    pytree format) plus `output_dir/conversion.json` (source file, modules, parameter counts).

    Returns the Orbax directory.
    """
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

    output_dir = os.path.abspath(output_dir)
    target = os.path.join(output_dir, VARIABLES_DIR)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    tree = {c: jax.tree.map(np.asarray, dict(variables.get(c, {}))) for c in COLLECTIONS}
    os.makedirs(output_dir, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, tree, force=overwrite)
    checkpointer.wait_until_finished()
    meta = dict(metadata or {})
    meta["modules"] = sorted(set(tree["params"]) | set(tree["batch_stats"]))
    meta["parameter_counts"] = count_parameters(tree)
    with open(os.path.join(output_dir, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, default=str)
    return target


def read_conversion_metadata(output_dir: str) -> dict:
    """The `conversion.json` written next to converted variables ({} if absent)."""
    path = os.path.join(output_dir, METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_converted(output_dir: str) -> dict:
    """Reads variables written by `save_variables` / the CLI: `{'params', 'batch_stats'}` of numpy
    arrays (only the modules that were converted)."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

    output_dir = os.path.abspath(output_dir)
    target = os.path.join(output_dir, VARIABLES_DIR)
    if not os.path.isdir(target):
        if os.path.isfile(os.path.join(output_dir, "_CHECKPOINT_METADATA")):
            target = output_dir  # the Orbax directory itself was given
        else:
            raise FileNotFoundError(f"{output_dir}: no converted variables (expected the Orbax "
                                    f"directory {target})")
    restored = ocp.StandardCheckpointer().restore(target)
    out = {c: dict(restored.get(c, {}) or {}) for c in COLLECTIONS}
    return jax.tree.map(np.asarray, out)


def load_variables(path: str, config=None, **kwargs) -> dict:
    """`{'params', 'batch_stats'}` from an Orbax directory written by the converter CLI, or straight
    from an official `.pth` / `.pth.tar` file (then `config` is required, and `kwargs` go to
    `load_torch_checkpoint`; by default a partial file gives its modules only).

    Training restores chosen modules with `merge_modules(fresh, load_variables(path), modules)`.
    """
    if os.path.isdir(path):
        if kwargs:
            raise TypeError(f"load_variables: {sorted(kwargs)} only apply to PyTorch files")
        return load_converted(path)
    if is_torch_file(path):
        if config is None:
            raise ValueError(f"load_variables({path!r}): a PyTorch file needs the config")
        kwargs.setdefault("allow_partial", True)
        return load_torch_checkpoint(path, config, **kwargs)
    if os.path.exists(path):
        raise ValueError(f"load_variables: {path!r} is neither a converted (Orbax) directory nor a "
                         f"PyTorch file ({', '.join(TORCH_SUFFIXES)})")
    raise FileNotFoundError(f"load_variables: {path!r} does not exist")
