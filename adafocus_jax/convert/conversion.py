"""Conversion of a file's modules into Flax variables (`load_torch_checkpoint`, `merge_modules`).

Rules (adafocus_v1.md §10.4): conv OIHW → HWIO (depthwise (C,1,3,3) → (3,3,1,C)); Linear (out,in) →
Dense kernel (in,out); BatchNorm weight/bias → scale/bias (params), running_mean/var → mean/var
(batch_stats); GRU weights → `gru/input`, `gru/hidden`. Every missing or unexpected key and every
shape mismatch raises `CheckpointError` naming the file and the key.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from adafocus_jax import models
from adafocus_jax.convert.reading import (COLLECTIONS, CheckpointError, MODULES, _Source, _to_numpy,
                                          read_torch_file)
from adafocus_jax.convert.names import (_classifier_entries, _mobilenet_entries, _mobilenet_layout,
                                        _policy_entries, _resnet_entries, _resnet_style,
                                        _uni_entries, _v2_entries)
from adafocus_jax.convert.inspection import (_check_architecture, _check_one_stage_architecture,
                                             _check_version, _split_sources)


class _Converter:
    """Converts one module's state dict into Flax `params` / `batch_stats` subtrees, checking every
    key and shape against the expected (abstract) subtrees."""

    def __init__(self, path: str, module: str, source: _Source, expected_params: Mapping,
                 expected_stats: Mapping, key_name: Callable[[str], str]):
        self.path, self.module, self.source = path, module, source
        self.expected_params = traverse_util.flatten_dict(dict(expected_params))
        self.expected_stats = traverse_util.flatten_dict(dict(expected_stats or {}))
        self.key_name = key_name
        self.params: dict = {}
        self.stats: dict = {}
        self.used: set[str] = set()
        self.skip: set[tuple] = set()  # Flax sub-modules deliberately left out

    def _take(self, key: str):
        if key not in self.source.state:
            raise CheckpointError(
                f"{self.path}: missing key {self.key_name(key)!r} in {self.source.where} "
                f"(needed for {self.module}; the file does not match config.model)")
        self.used.add(key)
        return _to_numpy(self.source.state[key])

    def _put(self, collection: str, flax_path: tuple, value: np.ndarray, key: str):
        expected = self.expected_params if collection == "params" else self.expected_stats
        if flax_path not in expected:
            raise CheckpointError(
                f"{self.path}: {self.key_name(key)!r} maps to {collection}/{self.module}/"
                f"{'/'.join(flax_path)}, which config.model does not have")
        spec = expected[flax_path]
        if tuple(value.shape) != tuple(spec.shape):
            raise CheckpointError(
                f"{self.path}: shape mismatch for {self.key_name(key)!r} in {self.source.where}: "
                f"the file has {tuple(self.source.state[key].shape)} (→ {tuple(value.shape)} in "
                f"Flax layout) but config.model needs {collection}/{self.module}/"
                f"{'/'.join(flax_path)} of shape {tuple(spec.shape)}")
        (self.params if collection == "params" else self.stats)[flax_path] = \
            value.astype(spec.dtype)

    def add(self, flax_path: tuple, base: str, op: str):
        dot = base + "." if base else ""
        if op in ("conv", "conv3d", "conv_k1"):
            # OI[D]HW → [D]HWIO; "conv_k1": a (k, 1) Conv2d that is a 1-D conv along its rows.
            w = self._take(dot + "weight")
            ndim = 5 if op == "conv3d" else 4
            if w.ndim != ndim or (op == "conv_k1" and w.shape[3] != 1):
                shape = "(out, in, k, 1)" if op == "conv_k1" else f"{ndim}-D"
                raise CheckpointError(f"{self.path}: {self.key_name(dot + 'weight')!r} should be a "
                                      f"{shape} conv weight, got shape {w.shape}")
            kernel = np.transpose(w, tuple(range(2, ndim)) + (1, 0))
            if op == "conv_k1":
                kernel = kernel[:, 0]
            self._put("params", flax_path + ("kernel",), kernel, dot + "weight")
            if dot + "bias" in self.source.state:
                self._put("params", flax_path + ("bias",), self._take(dot + "bias"), dot + "bias")
        elif op == "dense":
            w = self._take(dot + "weight")
            if w.ndim != 2:
                raise CheckpointError(f"{self.path}: {self.key_name(dot + 'weight')!r} should be a "
                                      f"2-D Linear weight, got shape {w.shape}")
            self._put("params", flax_path + ("kernel",), w.T, dot + "weight")
            self._put("params", flax_path + ("bias",), self._take(dot + "bias"), dot + "bias")
        elif op == "bn":
            self._put("params", flax_path + ("scale",), self._take(dot + "weight"), dot + "weight")
            self._put("params", flax_path + ("bias",), self._take(dot + "bias"), dot + "bias")
            self._put("batch_stats", flax_path + ("mean",), self._take(dot + "running_mean"),
                      dot + "running_mean")
            self._put("batch_stats", flax_path + ("var",), self._take(dot + "running_var"),
                      dot + "running_var")
            if dot + "num_batches_tracked" in self.source.state:  # dropped (§10.4)
                self.used.add(dot + "num_batches_tracked")
        elif op == "gru":
            for torch_name, flax_name in (("weight_ih_l0", ("input", "kernel")),
                                          ("weight_hh_l0", ("hidden", "kernel")),
                                          ("bias_ih_l0", ("input", "bias")),
                                          ("bias_hh_l0", ("hidden", "bias"))):
                value = self._take(dot + torch_name)
                self._put("params", flax_path + flax_name, value.T if value.ndim == 2 else value,
                          dot + torch_name)
        else:  # pragma: no cover - programming error
            raise AssertionError(op)

    def finish(self) -> tuple[dict, dict]:
        unexpected = sorted(set(self.source.state) - self.used)
        if unexpected:
            names = [self.key_name(k) for k in unexpected[:8]]
            raise CheckpointError(
                f"{self.path}: {len(unexpected)} unexpected key(s) in {self.source.where} for "
                f"{self.module} (the file's network is larger than config.model?): {names}")
        for collection, expected, got in (("params", self.expected_params, self.params),
                                          ("batch_stats", self.expected_stats, self.stats)):
            missing = sorted("/".join(p) for p in set(expected) - set(got)
                             if p[:1] not in self.skip)
            if missing:
                raise CheckpointError(
                    f"{self.path}: the file gives no value for {collection}/{self.module}/"
                    f"{missing[0]} (and {len(missing) - 1} more)")
        return (traverse_util.unflatten_dict(self.params),
                traverse_util.unflatten_dict(self.stats))


def _convert_module(path: str, module: str, source: _Source, cfg, expected: Mapping,
                    head_seed: int = 0):
    if cfg.get("version", "v1") == "v2":
        entries = _v2_entries(path, module, source, cfg)
    elif cfg.get("version", "v1") == "uni":
        entries = _uni_entries(path, module, source, cfg)
    elif module == "glancer":
        entries = _mobilenet_entries(cfg, _mobilenet_layout(path, source))
    elif module == "focuser":
        entries = _resnet_entries(cfg, _resnet_style(path, source))
    elif module == "policy":
        entries = _policy_entries(cfg)
    else:
        entries = _classifier_entries(cfg)

    converter = _Converter(path, module, source, expected["params"].get(module, {}),
                           expected["batch_stats"].get(module, {}), source.file_key)
    head = None
    if source.fresh_head:
        head, base = entries[-1][0], entries[-1][1]
        if head not in (("classifier",), ("fc",)):  # pragma: no cover - name maps end with heads
            raise AssertionError(entries[-1])
        entries = entries[:-1]
        # Consumed but not converted: the official stage 0 replaces the ImageNet head.
        converter.used.update(k for k in (base + ".weight", base + ".bias") if k in source.state)
        converter.skip.add(head)
    for flax_path, base, op in entries:
        converter.add(flax_path, base, op)
    params, stats = converter.finish()
    if head is not None:
        params[head[0]] = _fresh_head(head_seed, expected["params"][module][head[0]])
    return params, stats


def _fresh_head(seed: int, spec: Mapping) -> dict:
    """A head re-initialised like the model's own `nn.Dense` (LeCun normal kernel, zero bias)."""
    kernel = spec["kernel"]
    dense = nn.Dense(kernel.shape[1], dtype=kernel.dtype)
    variables = dense.init(jax.random.key(seed), np.zeros((1, kernel.shape[0]), kernel.dtype))
    return jax.tree.map(np.asarray, dict(variables["params"]))


def _model_config(config) -> ml_collections.ConfigDict:
    return config.model if "model" in config else config


def abstract_variables(config) -> dict:
    """`{'params', 'batch_stats'}` of `jax.ShapeDtypeStruct`s of the configured model (no compute)."""
    model = models.create_model(config)
    return jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))


def load_torch_checkpoint(path: str, config, *, parts: Iterable[str] | None = None,
                          init_variables: Mapping | None = None,
                          allow_partial: bool = False, head_seed: int = 0) -> dict:
    """Converts an official PyTorch checkpoint into Flax variables for `config`.

    Args:
      path: a `.pth` / `.pth.tar` file of any kind in the module docstring.
      config: the full config (uses `config.model`) or a model config.
      parts: the model modules to take from the file (default: all it has). Asking for a module the
        file lacks is an error.
      init_variables: a full `{'params', 'batch_stats'}` tree (e.g. `models.init_variables`) that
        supplies every module not taken from the file. Its modules are replaced, not modified.
      allow_partial: without `init_variables`, return only the converted modules instead of
        raising when the file does not cover the whole model.
      head_seed: seed of the freshly initialised head of an ImageNet backbone (its 1000-way
        classifier is dropped, as the official stage 0 replaces it by a C-way one).

    Returns:
      `{'params': ..., 'batch_stats': ...}` of numpy arrays (jax arrays for modules that come from
      `init_variables`): the tree `models.init_variables` produces for `models.create_model(config)`,
      or its sub-tree of the converted modules with `allow_partial`.

    Raises:
      CheckpointError: unreadable/unsafe file, wrong architecture, missing/unexpected key, shape
        mismatch, or an incomplete file without `init_variables` / `allow_partial`.
    """
    cfg = _model_config(config)
    ckpt = read_torch_file(path)
    kind, family, sources = _split_sources(path, ckpt)
    available = tuple(m for m in MODULES if m in sources)
    wanted = available if parts is None else tuple(parts)
    for module in wanted:
        if module not in MODULES:
            raise CheckpointError(f"parts: unknown module {module!r}; expected some of {MODULES}")
        if module not in sources:
            raise CheckpointError(f"{path}: has no {module} (it holds {list(available)}; "
                                  f"kind {kind!r})")
    if not wanted:
        raise CheckpointError(f"{path}: no module selected (it holds {list(available)})")
    _check_version(path, kind, cfg)
    check = _check_architecture if cfg.get("version", "v1") == "v1" else \
        _check_one_stage_architecture
    check(path, kind, family, {m: sources[m] for m in wanted}, cfg)
    missing = [m for m in MODULES if m not in wanted]
    if kind in ("v2_sthsth", "uni_sthsth"):   # the Sth-Sth classifier (a logit sum) has no
        # parameters
        missing = [m for m in missing if m != "classifier"]
    if missing and init_variables is None and not allow_partial:
        raise CheckpointError(
            f"{path}: ({kind}) gives only {list(wanted)}; {missing} would be missing. Pass "
            "init_variables=... to fill them, or allow_partial=True to get only these modules")
    expected = abstract_variables(cfg) if init_variables is None else init_variables
    converted = {"params": {}, "batch_stats": {}}
    for module in wanted:
        params, stats = _convert_module(path, module, sources[module], cfg, expected, head_seed)
        converted["params"][module] = params
        if stats:
            converted["batch_stats"][module] = stats
    if init_variables is None:
        return converted
    return merge_modules(init_variables, converted, wanted)


def merge_modules(target: Mapping, source: Mapping, modules: Iterable[str] | None = None) -> dict:
    """A copy of `target` whose top-level `modules` (default: all of `source`'s) come from `source`.

    Both are `{'params', 'batch_stats'}` trees. Shapes must agree leaf by leaf; a module that
    `source` lacks, or whose structure differs, raises ValueError naming the path. This is how
    training restores chosen modules (e.g. `glancer` and `focuser` from stage 1) into a fresh state.
    """
    src_modules = set(source.get("params", {})) | set(source.get("batch_stats", {}))
    modules = sorted(src_modules) if modules is None else list(modules)
    out = {c: dict(target.get(c, {})) for c in COLLECTIONS}
    for module in modules:
        if module not in src_modules:
            raise ValueError(f"merge_modules: the source has no module {module!r} (it has "
                             f"{sorted(src_modules)})")
        for collection in COLLECTIONS:
            new = source.get(collection, {}).get(module)
            old = target.get(collection, {}).get(module)
            if new is None and old is None:
                continue
            if new is None or old is None:
                raise ValueError(f"merge_modules: {collection}/{module} exists in only one of "
                                 "target and source")
            flat_new = traverse_util.flatten_dict(dict(new), sep="/")
            flat_old = traverse_util.flatten_dict(dict(old), sep="/")
            if set(flat_new) != set(flat_old):
                diff = sorted(set(flat_new) ^ set(flat_old))
                raise ValueError(f"merge_modules: {collection}/{module} differs in structure, "
                                 f"e.g. {diff[:3]}")
            for key, value in flat_new.items():
                if tuple(np.shape(value)) != tuple(np.shape(flat_old[key])):
                    raise ValueError(f"merge_modules: {collection}/{module}/{key} has shape "
                                     f"{np.shape(value)}, the target {np.shape(flat_old[key])}")
            out[collection][module] = new
    return out


def count_parameters(variables: Mapping) -> dict[str, dict[str, int]]:
    """{module: {"params": n, "batch_stats": n}} numbers of scalars per top-level module."""
    out: dict[str, dict[str, int]] = {}
    for collection in COLLECTIONS:
        for module, tree in variables.get(collection, {}).items():
            n = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))
            out.setdefault(module, {c: 0 for c in COLLECTIONS})[collection] = n
    return out
