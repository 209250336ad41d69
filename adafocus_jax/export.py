"""A trained AdaFocus model as one self-contained file: StableHLO (`jax.export`) + weights.

    python -m adafocus_jax.tools.export --config=configs/actnet.py --checkpoint=/ckpt/anet \\
        --output=anet.adafocus          # see adafocus_jax/tools/export.py

    from adafocus_jax import export
    model = export.load("anet.adafocus")      # needs only jax + numpy, no model code
    out = model(glance)                       # uint8 [B, T_G, S, S, 3] (+ focus for Sth-Sth)
    out["logits"], out["probabilities"], out["patch_offsets"], out["step_logits"]
    model.meta                                # shapes, classes, class names, batch polymorphism

The file is a zip archive holding `exported.bin` (the serialised `jax.export.Exported` of
`adafocus_jax.inference.predict_fn`: normalisation, glance network, deterministic policy, crop,
local network, classifier), `variables.npz` (the weights, passed as arguments so they are exact
float32 arrays rather than folded constants) and `meta.json`. The batch dimension is symbolic
("b") when the model traces with it (every config of this repository does), so any batch size
runs without re-exporting; `meta["batch_polymorphic"]` says which, and a fixed-batch file says the
export error that forced it. The StableHLO can be compiled by any XLA runtime (PJRT on CPU, GPU,
TPU); `meta["platforms"]` lists those it was lowered for.
"""

import io
import json
import zipfile
from typing import Mapping, Sequence

import jax
import numpy as np

FORMAT_VERSION = 1
_EXPORTED, _VARIABLES, _META = "exported.bin", "variables.npz", "meta.json"


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = np.asarray(value)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def export_model(config, variables: Mapping, *, platforms: Sequence[str] | None = None,
                 batch_polymorphic: bool = True, batch_size: int = 1,
                 class_names: Sequence[str] | None = None):
    """(`jax.export.Exported`, meta dict) of the inference function of `config`'s model.

    Args:
      config: the run config (`model`; `data.separate_focus_frames` decides whether the function
        takes separate local frames, as Sth-Sth does).
      variables: `{"params", "batch_stats"}`.
      platforms: lowering platforms (default: the current backend), e.g. ("cpu", "cuda").
      batch_polymorphic: try a symbolic batch dimension first.
      batch_size: the fixed batch when not polymorphic (or when the symbolic export fails).
      class_names: stored in the meta (optional).
    """
    from adafocus_jax import inference, models
    model = models.create_model(config)
    m = config.model
    s = int(m.input_size)
    separate = bool(config.data.get("separate_focus_frames", False))
    fn = inference.predict_fn(model)
    call = (lambda v, g, f: fn(v, g, f)) if separate else (lambda v, g: fn(v, g))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    var_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                            variables)

    def specs(batch):
        shapes = [(batch, models.input_frames(m), s, s, 3)]   # Uni-AdaFocus: the N candidates
        if separate:
            shapes.append((batch, models.focus_input_frames(m), s, s, 3))
        return [jax.ShapeDtypeStruct(shape, np.uint8) for shape in shapes]

    kwargs = {"platforms": tuple(platforms)} if platforms else {}
    why_fixed = "" if batch_polymorphic else "batch_polymorphic=False"
    exported = None
    if batch_polymorphic:
        (b,) = jax.export.symbolic_shape("b")
        try:
            exported = jax.export.export(jax.jit(call), **kwargs)(var_spec, *specs(b))
        except Exception as e:  # noqa: BLE001 - any tracing failure falls back to a fixed batch
            why_fixed = f"{type(e).__name__}: {e}"[:500]
    if exported is None:
        exported = jax.export.export(jax.jit(call), **kwargs)(var_spec, *specs(int(batch_size)))
    meta = {
        "format_version": FORMAT_VERSION, "dataset": str(config.get("dataset", "")),
        "num_classes": int(m.num_classes), "input_size": s,
        "glance_size": int(m.glance_size), "patch_size": int(m.patch_size),
        "num_glance_frames": models.input_frames(m),
        "num_focus_frames": models.focus_input_frames(m) if separate else None,
        "separate_focus_frames": separate, "policy_steps": int(model.policy_steps),
        "batch_polymorphic": exported is not None and not why_fixed,
        "fixed_batch_size": None if not why_fixed else int(batch_size),
        "why_fixed_batch": why_fixed or None,
        "platforms": list(exported.platforms), "jax_version": jax.__version__,
        "inputs": "uint8 RGB frames [B, T, S, S, 3], crops as the dataset's evaluation makes "
                  "them (normalised inside)",
        "outputs": {"logits": "[B, C] float32", "probabilities": "[B, C] float32",
                    "step_logits": "[B, St, C] float32",
                    "patch_offsets": "[B, St, 2] int32 top-left (row, col)"},
        "class_names": list(class_names) if class_names else None,
    }
    return exported, meta, variables


def save(path: str, exported, meta: Mapping, variables: Mapping) -> None:
    """Writes the archive (see the module docstring)."""
    buffer = io.BytesIO()
    np.savez(buffer, **_flatten(jax.tree.map(np.asarray, variables)))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(_EXPORTED, bytes(exported.serialize()))
        z.writestr(_VARIABLES, buffer.getvalue())
        z.writestr(_META, json.dumps(meta, indent=2))


class ExportedModel:
    """A loaded archive: `model(glance[, focus]) -> {name: numpy array}` (see the module doc).

    Attributes:
      exported: the `jax.export.Exported`.
      variables: the weights (device arrays).
      meta: the archive's `meta.json`.
    """

    def __init__(self, exported, variables, meta):
        self.exported, self.variables, self.meta = exported, variables, meta
        self._call = jax.jit(exported.call)

    def __call__(self, glance, focus=None) -> dict[str, np.ndarray]:
        meta = self.meta
        args = [np.asarray(glance)]
        if meta["separate_focus_frames"]:
            if focus is None:
                raise ValueError("this model takes separate local frames: pass focus "
                                 f"[B, {meta['num_focus_frames']}, S, S, 3]")
            args.append(np.asarray(focus))
        elif focus is not None:
            raise ValueError("this model crops its patches from the glance frames: no focus")
        for name, x, frames in zip(("glance", "focus"), args,
                                   (meta["num_glance_frames"], meta["num_focus_frames"])):
            s = meta["input_size"]
            if x.dtype != np.uint8 or x.ndim != 5 or x.shape[1:] != (frames, s, s, 3):
                raise ValueError(f"{name} must be uint8 [B, {frames}, {s}, {s}, 3], got "
                                 f"{x.dtype} {x.shape}")
            if meta["fixed_batch_size"] and x.shape[0] != meta["fixed_batch_size"]:
                raise ValueError(f"{name}: this export has a fixed batch of "
                                 f"{meta['fixed_batch_size']}, got {x.shape[0]}")
        return {k: np.asarray(v) for k, v in self._call(self.variables, *args).items()}


def load(path: str) -> ExportedModel:
    """Reads an archive written by `save` / `python -m adafocus_jax.tools.export`."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            missing = {_EXPORTED, _VARIABLES, _META} - names
            if missing:
                raise ValueError(f"{path}: not an AdaFocus export (missing {sorted(missing)})")
            meta = json.loads(z.read(_META))
            exported = jax.export.deserialize(bytearray(z.read(_EXPORTED)))
            with np.load(io.BytesIO(z.read(_VARIABLES))) as npz:
                variables = _unflatten({k: npz[k] for k in npz.files})
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such exported model") from None
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path}: not an AdaFocus export ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')}, this code reads "
                         f"{FORMAT_VERSION}")
    # Collections absent from the archive (e.g. no batch_stats) are empty dicts in the export.
    for collection in ("params", "batch_stats"):
        variables.setdefault(collection, {})
    return ExportedModel(exported, jax.device_put(variables), meta)


__all__ = ["ExportedModel", "export_model", "load", "save"]
