"""Reading an official PyTorch file safely, and the unit of everything after it (`_Source`).

`read_torch_file` loads with `torch.load(..., map_location="cpu", weights_only=True)`: a pickle that
would build arbitrary objects or call functions raises `CheckpointError` without running anything.
torch is optional and imported only here, when a file is read.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from typing import Callable, Mapping

import numpy as np

from adafocus_jax.stages import MODULES  # the model's top-level modules (re-exported)

COLLECTIONS = ("params", "batch_stats")
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the configured model."""


def _import_torch():
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading PyTorch checkpoints needs the optional dependency torch: "
            "`pip install 'adafocus_jax[torch]'` (or `pip install torch`).") from e
    return torch


def _numpy_safe_globals() -> list:
    """numpy scalar/dtype reconstructors: plain data some training scripts store as metrics."""
    out = [np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core")
    scalar = getattr(core.multiarray, "scalar", None)
    if scalar is not None:
        out.append(scalar)
    out.extend(type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool"))
    return out


def read_torch_file(path: str) -> dict:
    """`torch.load(path, map_location="cpu", weights_only=True)` with clear errors.

    Only tensors and plain containers (and numpy scalars) are accepted: a pickle that references any
    other callable is refused before anything is executed.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: truncated/corrupt file, refused pickle, or not a dict.
    """
    torch = _import_torch()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint {path!r} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{path}: refused to load: the pickle references code or objects other than tensors "
            f"and plain containers, and weights-only loading never executes them "
            f"({first[0] if first else e}). Official AdaFocus/TSM checkpoints never need this; "
            "do not load this file with weights_only=False unless you trust its author.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt file?): "
            f"{type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(obj).__name__}")
    return obj


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "shape")


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()


@dataclasses.dataclass
class _Source:
    """One module's state dict as found in a file.

    `state` maps key names (in the naming of the AdaFocus `glancer` / `focuser` / `fc` / `policy`
    entries) to tensors; `where` says where the dict sits in the file, and `rename` gives a key's
    full name in the file (for error messages).
    """
    state: dict
    where: str
    prefix: str = ""
    rename: Callable[[str], str] | None = None
    # ImageNet files: the 1000-way head is not converted; the module keeps a fresh head.
    fresh_head: bool = False

    def file_key(self, key: str) -> str:
        return self.rename(key) if self.rename is not None else self.prefix + key


def _strip(state: Mapping, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_state_dict(path: str, where: str, value) -> dict:
    if not isinstance(value, Mapping) or not all(_is_tensor(v) for v in value.values()):
        raise CheckpointError(f"{path}: {where} is not a state dict of tensors "
                              f"(got {type(value).__name__})")
    return dict(value)


def is_torch_file(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(TORCH_SUFFIXES)
