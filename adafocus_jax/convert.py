"""Official AdaFocus PyTorch checkpoints → Flax variables (adafocus_v1.md §10).

Every file kind the official code and README release is understood (§10.1):

| kind | file | modules it holds |
|---|---|---|
| `tsm_mobilenetv2` | `mobilenetv2_segment8.pth.tar` (TSM `main.py`, `module.`-prefixed) | glancer (its `new_fc` becomes the glancer's own head) |
| `tsm_resnet50` | `resnet50_segment12.pth.tar` | focuser; its `new_fc` becomes the classifier's `fc` |
| `sthsth` | Sth-Sth stage-1/2/3 `checkpoint.pth.tar`, `model_best.pth.tar`, `144x144.pth.tar`, ... | glancer, focuser, classifier (+ policy from stage 2 on) |
| `actnet` | `globalcnn`/`localcnn.pth.tar` (stage 0), `128checkpoint.pth.tar` (stage 1), `128s3_checkpoint.pth.tar` (stage 3) | glancer, focuser, classifier (+ policy when the file has one) |
| `v2_actnet` | AdaFocusV2 ActivityNet / FCVID / Mini-K `ckpt.best.pth.tar` (`main_v2.py`, `module.global_CNN.*`, ...) | glancer, focuser, policy, classifier (with `config.model.version = "v2"`) |
| `v2_sthsth` | AdaFocusV2 Sth-Sth / Jester checkpoints (`main.py`, `module.global_CNN.base_model.*`, ...) | glancer, focuser, policy (the classifier is a parameterless sum) |
| `imagenet_mobilenetv2`, `imagenet_resnet50` | torchvision ImageNet state dicts (`mobilenet_v2-b0353104.pth`, `resnet50-0676ba61.pth`), where the official ActivityNet stage 0 starts | glancer / focuser; the 1000-way head is re-initialised (`head_seed`) |

A file that holds only some modules converts to those modules only. Three ways to end with a full
variable tree:

    info = inspect_torch_checkpoint(path)                # kind, family, modules present, epoch, ...
    variables = load_torch_checkpoint(path, config)      # error unless the file has every module
    variables = load_torch_checkpoint(path, config, init_variables=fresh)   # missing ones from `fresh`
    partial = load_torch_checkpoint(path, config, allow_partial=True)       # only the file's modules
    variables = merge_modules(fresh, partial, ["glancer"])                   # pick modules by name

Within an AdaFocus file the separate `glancer` / `focuser` / `fc` / `policy` entries are used; GFV's
`model_state_dict` is the fallback for a module whose entry is missing. The ActivityNet policy is the
`policy` entry, else the focuser's `policy.policy_old.*` (the network the official code acts with),
else `policy.policy.*`; the official code copies policy into policy_old after every update, so they
agree (a warning is logged when they do not).

`parts=("glancer",)` restricts what is taken from a file (e.g. the stage-0 `globalcnn` file carries an
untrained focuser next to the trained glancer).

Conversion rules (§10.4): conv OIHW → HWIO (depthwise (C,1,3,3) → (3,3,1,C)); Linear (out,in) → Dense
kernel (in,out); BatchNorm weight/bias → scale/bias (params), running_mean/var → mean/var
(batch_stats), `num_batches_tracked` dropped; PyTorch GRU `weight_ih_l0`/`bias_ih_l0` → `gru/input`,
`weight_hh_l0`/`bias_hh_l0` → `gru/hidden` (see `models/recurrent.py`); the `.net.` segment of
TSM-wrapped convs is stripped; the truncated TSN's Sequential indices (0 conv1, 1 bn1, 4..7
layer1..4) are mapped back to ResNet names. The policy's flatten is NCHW in the Flax model too, so
its Linear needs no row permutation.

Loading is safe: `torch.load(..., map_location="cpu", weights_only=True)`; a pickle that would build
arbitrary objects or call functions raises `CheckpointError` without running anything. Every missing
or unexpected key and every shape mismatch raises `CheckpointError` naming the file and the key.

Converted variables are stored as an Orbax checkpoint (`save_variables`, the CLI
`python -m adafocus_jax.tools.convert_checkpoint`) and read back with `load_converted`;
`load_variables(path, config=None)` accepts either such a directory or a `.pth`/`.pth.tar` file.
torch is an optional dependency (`pip install adafocus_jax[torch]`), imported only when a PyTorch
file is read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import zipfile
from typing import Any, Callable, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from adafocus_jax import models
from adafocus_jax.models.mobilenet_v2 import block_specs

MODULES = ("glancer", "focuser", "policy", "classifier")
COLLECTIONS = ("params", "batch_stats")
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".pkl")
# Written next to the Orbax tree by `save_variables`.
METADATA_FILE = "conversion.json"
VARIABLES_DIR = "variables"

# Indices of the truncated TSN Sequential (children of torchvision's ResNet minus fc, §2.4).
_TSN_SEQUENTIAL_NAMES = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6",
                         "layer4": "7"}

FAMILY_NAMES = {"sthsth": "Something-Something (TSM MobileNetV2 + TSM ResNet-50, logit-sum)",
                "actnet": "ActivityNet/FCVID/Mini-K (torchvision MobileNetV2 + ResNet-50, GRU)"}


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the configured model."""


# --------------------------------------------------------------------------------------------------
# Reading a PyTorch file safely.


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


# --------------------------------------------------------------------------------------------------
# Which modules a file holds.


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


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What `inspect_torch_checkpoint` finds in a file.

    Attributes:
      path: the file.
      kind: "tsm_mobilenetv2", "tsm_resnet50", "sthsth" or "actnet".
      family: "sthsth" or "actnet": the code path whose networks the file holds.
      modules: the model modules (`glancer`, `focuser`, `policy`, `classifier`) it can fill.
      stage: a best guess at the training stage that wrote it (for printing), e.g. "stage 3".
      metadata: scalar top-level entries (`epoch`, `best_acc`, `arch`, ...) as Python values.
    """
    path: str
    kind: str
    family: str
    modules: tuple[str, ...]
    stage: str
    metadata: Mapping[str, Any]


def _strip(state: Mapping, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_state_dict(path: str, where: str, value) -> dict:
    if not isinstance(value, Mapping) or not all(_is_tensor(v) for v in value.values()):
        raise CheckpointError(f"{path}: {where} is not a state dict of tensors "
                              f"(got {type(value).__name__})")
    return dict(value)


def _split_sources(path: str, ckpt: dict) -> tuple[str, str, dict[str, _Source]]:
    """(kind, family, {module: _Source}) of a loaded file."""
    state_dict = ckpt.get("state_dict")
    if isinstance(state_dict, Mapping) and any(k.split(".", 1)[-1].startswith("global_CNN.")
                                               or k.startswith("global_CNN.")
                                               for k in state_dict):
        return _split_v2_sources(path, _check_state_dict(path, "'state_dict'", state_dict))
    if isinstance(state_dict, Mapping) and any(k.startswith("module.base_model.")
                                               for k in state_dict):
        # TSM main.py: DataParallel(TSN) → module.base_model.* + module.new_fc.* (§10.1, §10.2).
        state = _check_state_dict(path, "'state_dict'", state_dict)
        base = _strip(state, "module.base_model.")
        head = _strip(state, "module.new_fc.")
        other = sorted(k for k in state if not k.startswith(("module.base_model.",
                                                            "module.new_fc.")))
        if other:
            raise CheckpointError(f"{path}: unexpected keys in 'state_dict' of a TSM checkpoint: "
                                  f"{other[:5]}")
        if "features.0.0.weight" in base:
            # The glancer's own head is TSM's new_fc; keys take the AdaFocus `glancer` names.
            glancer = {**{f"net.{k}": v for k, v in base.items()},
                       **{f"net.classifier.{k}": v for k, v in head.items()}}

            def rename(key: str) -> str:
                if key.startswith("net.classifier."):
                    return "module.new_fc." + key[len("net.classifier."):]
                return "module.base_model." + key[len("net."):]

            return "tsm_mobilenetv2", "sthsth", {"glancer": _Source(
                glancer, "'state_dict'", rename=rename)}
        if "conv1.weight" in base:
            sources = {"focuser": _Source(base, "'state_dict'", "module.base_model.")}
            if head:
                sources["classifier"] = _Source(head, "'state_dict'", "module.new_fc.")
            return "tsm_resnet50", "sthsth", sources
        raise CheckpointError(f"{path}: a TSM checkpoint of neither MobileNetV2 nor ResNet "
                              f"(first keys {sorted(state)[:3]}); arch={ckpt.get('arch')!r}")

    if ckpt and all(_is_tensor(v) for v in ckpt.values()):
        return _split_bare_state_dict(path, ckpt)
    if not any(k in ckpt for k in ("glancer", "focuser", "fc", "model_state_dict")):
        raise CheckpointError(
            f"{path}: not an AdaFocus or TSM checkpoint: top-level keys {sorted(ckpt)[:10]}; "
            "expected 'glancer'/'focuser'/'fc'/'policy'/'model_state_dict' (AdaFocus) or "
            "'state_dict' with 'module.base_model.*' keys (TSM)")

    # AdaFocus files: the separate entries are authoritative; model_state_dict (GFV's state dict)
    # is the fallback for files that lack them.
    msd = ckpt.get("model_state_dict")
    msd = _check_state_dict(path, "'model_state_dict'", msd) if msd is not None else {}
    sources: dict[str, _Source] = {}
    for module, entry, prefix in (("glancer", "glancer", "glancer."),
                                  ("focuser", "focuser", "focuser."),
                                  ("classifier", "fc", "classifier.")):
        if ckpt.get(entry) is not None:
            sources[module] = _Source(_check_state_dict(path, repr(entry), ckpt[entry]),
                                      repr(entry))
        elif any(k.startswith(prefix) for k in msd):
            sources[module] = _Source(_strip(msd, prefix), "'model_state_dict'", prefix)

    # ANet: the PPO module hangs off the focuser (`policy.policy.*`, `policy.policy_old.*`).
    policy_sources = []
    if ckpt.get("policy") is not None:
        policy_sources.append(_Source(_check_state_dict(path, "'policy'", ckpt["policy"]),
                                      "'policy'"))
    if "focuser" in sources:
        focuser = sources["focuser"]
        nested = {k: v for k, v in focuser.state.items() if k.startswith("policy.")}
        if nested:
            focuser.state = {k: v for k, v in focuser.state.items() if not k.startswith("policy.")}
            # policy_old first: the network the official code acts with.
            for name in ("policy_old", "policy"):
                sub = _strip(nested, f"policy.{name}.")
                if sub:
                    policy_sources.append(_Source(sub, focuser.where,
                                                  focuser.prefix + f"policy.{name}."))
            unknown = sorted(k for k in nested
                             if not k.startswith(("policy.policy.", "policy.policy_old.")))
            if unknown:
                raise CheckpointError(f"{path}: unexpected keys in {focuser.where}: {unknown[:5]}")
    if policy_sources:
        sources["policy"] = policy_sources[0]
        _warn_if_policies_differ(path, policy_sources)

    glancer = sources.get("glancer")
    if glancer is not None:
        family = "actnet" if _mobilenet_layout(path, glancer) == "torchvision" else "sthsth"
    elif "classifier" in sources:
        family = "actnet" if "gru.weight_ih_l0" in sources["classifier"].state else "sthsth"
    else:
        family = "actnet" if "net.conv1.weight" in sources.get("focuser", _Source({}, "")).state \
            else "sthsth"
    return family, family, sources


def _split_v2_sources(path: str, state: dict) -> tuple[str, str, dict[str, _Source]]:
    """A released AdaFocusV2 checkpoint (`{'state_dict': DataParallel(model).state_dict()}`).

    ActivityNet family (`main_v2.py`): `global_CNN.*` (TSM-layout MobileNetV2 whose own 1000-way
    `classifier` is never used) + `global_CNN_fc.1` (→ the glancer's `classifier`), `local_CNN.*`
    (torchvision ResNet-50, unused `fc`) + `local_CNN_fc.1` (→ the focuser's `fc`),
    `policy_stn.{encoder,gru,fc}`, `classifier.{mlp.layers,classifiers.t}`. Sth-Sth (`main.py`):
    `global_CNN` / `local_CNN` are TSNs (`base_model.*`, `new_fc` → `classifier` / `fc`,
    `new_new_fc` → `reg_classifier` / `reg_fc`), `policy_stn.{0,1,4,5,7,8,10}`.
    The never-used 1000-way heads are dropped (logged); every other key must be converted.
    """
    prefix = "module." if all(k.startswith("module.") for k in state) else ""
    state = {k[len(prefix):]: v for k, v in state.items()}
    sth = any(k.startswith("global_CNN.base_model.") for k in state)
    groups: dict[str, dict] = {"glancer": {}, "focuser": {}, "policy": {}, "classifier": {}}
    names: dict[str, dict] = {m: {} for m in groups}   # our key -> the file's key
    dropped = []

    def put(module, ours, theirs):
        groups[module][ours] = state[theirs]
        names[module][ours] = prefix + theirs

    for key in state:
        if sth:
            rules = (("global_CNN.base_model.", "glancer", "net."),
                     ("global_CNN.new_fc.", "glancer", "net.classifier."),
                     ("global_CNN.new_new_fc.", "glancer", "net.reg_classifier."),
                     ("local_CNN.base_model.", "focuser", "net."),
                     ("local_CNN.new_fc.", "focuser", "net.fc."),
                     ("local_CNN.new_new_fc.", "focuser", "net.reg_fc."),
                     ("policy_stn.", "policy", "v2_sth."))
        else:
            rules = (("global_CNN.classifier.", None, None),   # unused 1000-way heads
                     ("local_CNN.fc.", None, None),
                     ("global_CNN_fc.1.", "glancer", "net.classifier."),
                     ("global_CNN.", "glancer", "net."),
                     ("local_CNN_fc.1.", "focuser", "net.fc."),
                     ("local_CNN.", "focuser", "net."),
                     ("policy_stn.", "policy", "v2_anet."),
                     ("classifier.", "classifier", ""))
        for theirs, module, ours in rules:
            if key.startswith(theirs):
                if module is None:
                    dropped.append(prefix + key)
                else:
                    put(module, ours + key[len(theirs):], key)
                break
        else:
            raise CheckpointError(f"{path}: unexpected key {prefix + key!r} in 'state_dict' of an "
                                  f"AdaFocusV2 {'Sth-Sth' if sth else 'ActivityNet'} checkpoint")
    if dropped:
        logging.info("%s: dropping the unused ImageNet heads %s", path, sorted(dropped))
    family = "sthsth" if sth else "actnet"
    sources = {m: _Source(g, "'state_dict'", rename=lambda k, n=names[m]: n.get(k, k))
               for m, g in groups.items() if g}
    return f"v2_{family}", family, sources


def _v2_policy_entries(cfg) -> list[tuple[tuple[str, ...], str, str]]:
    if cfg.policy.per_frame:   # encoder (conv, BN2d, tanh, flatten, Linear, BN1d, tanh), GRU, fc
        return [(("encoder_conv",), "v2_anet.encoder.0", "conv"),
                (("encoder_conv_bn",), "v2_anet.encoder.1", "bn"),
                (("dense0",), "v2_anet.encoder.4", "dense"),
                (("dense0_bn",), "v2_anet.encoder.5", "bn"),
                (("gru",), "v2_anet.gru", "gru"), (("actor",), "v2_anet.fc.0", "dense")]
    # Sequential: conv, BN2d, tanh, flatten, Linear, BN1d, tanh, Linear, BN1d, tanh, Linear, sigmoid
    return [(("encoder_conv",), "v2_sth.0", "conv"), (("encoder_conv_bn",), "v2_sth.1", "bn"),
            (("dense0",), "v2_sth.4", "dense"), (("dense0_bn",), "v2_sth.5", "bn"),
            (("dense1",), "v2_sth.7", "dense"), (("dense1_bn",), "v2_sth.8", "bn"),
            (("actor",), "v2_sth.10", "dense")]


def _v2_entries(path: str, module: str, source: _Source, cfg):
    """Name maps of the AdaFocusV2 modules (keys as renamed by `_split_v2_sources`)."""
    sth = not cfg.policy.per_frame
    if module == "glancer":
        entries = _mobilenet_entries(cfg, _mobilenet_layout(path, source))
        return entries + ([(("reg_classifier",), "net.reg_classifier", "dense")] if sth else [])
    if module == "focuser":
        entries = _resnet_entries(cfg, _resnet_style(path, source))
        return entries + ([(("reg_fc",), "net.reg_fc", "dense")] if sth else [])
    if module == "policy":
        return _v2_policy_entries(cfg)
    return ([(("mlp",), "mlp.layers.0", "dense"), (("mlp_bn",), "mlp.layers.1", "bn")]
            + [((f"head{t}",), f"classifiers.{t}.1", "dense")
               for t in range(cfg.num_glance_frames)])


def _check_v2_architecture(path: str, kind: str, family: str, sources, cfg):
    """V1 file with a V2 config or the other way round, or the wrong V2 family."""
    is_v2_file = kind.startswith("v2_")
    is_v2_config = cfg.get("version", "v1") == "v2"
    if is_v2_file != is_v2_config:
        raise CheckpointError(
            f"{path}: this is an {'AdaFocusV2' if is_v2_file else 'AdaFocus (V1)'} checkpoint "
            f"(kind {kind!r}) but config.model.version={cfg.get('version', 'v1')!r}; use "
            f"{'mode=v2' if is_v2_file else 'mode=v1'} of the dataset config")
    expected = "actnet" if cfg.policy.per_frame else "sthsth"
    if family != expected:
        raise CheckpointError(
            f"{path}: wrong architecture: an AdaFocusV2 {FAMILY_NAMES[family]} checkpoint, but "
            f"config.model describes the {FAMILY_NAMES[expected]} V2 network")
    if "glancer" in sources:
        shifted = any(".conv.0.net.weight" in k for k in sources["glancer"].state)
        if shifted != bool(cfg.glancer.temporal_shift):
            raise CheckpointError(f"{path}: the glancer {'has' if shifted else 'has no'} temporal "
                                  f"shift, config.model.glancer.temporal_shift="
                                  f"{cfg.glancer.temporal_shift}")


def _split_bare_state_dict(path: str, ckpt: dict) -> tuple[str, str, dict[str, _Source]]:
    """A bare torchvision ImageNet state dict (what `torchvision.models.*(pretrained=True)`
    downloads): the starting point of the official ActivityNet stage 0 (§2.3, §2.5, §4.3)."""
    prefix = "module." if all(k.startswith("module.") for k in ckpt) else ""
    state = {f"net.{k[len(prefix):]}": v for k, v in ckpt.items()}

    def rename(key: str) -> str:
        return prefix + key[len("net."):]

    if "net.features.1.conv.0.0.weight" in state:
        return "imagenet_mobilenetv2", "actnet", {"glancer": _Source(
            state, "the state dict", rename=rename, fresh_head=True)}
    if "net.conv1.weight" in state and "net.layer1.0.conv1.weight" in state:
        return "imagenet_resnet50", "actnet", {"focuser": _Source(
            state, "the state dict", rename=rename, fresh_head=True)}
    raise CheckpointError(
        f"{path}: a bare state dict that is neither a torchvision MobileNetV2 nor a ResNet "
        f"(first keys {sorted(ckpt)[:3]}); expected an AdaFocus, TSM or torchvision checkpoint")


def _warn_if_policies_differ(path, policy_sources):
    first = policy_sources[0]
    for other in policy_sources[1:]:
        if set(other.state) == set(first.state) and not all(
                bool((other.state[k] == first.state[k]).all()) for k in first.state):
            logging.warning("%s: %s and %s hold different policy weights; using %s", path,
                            first.where + " " + first.prefix, other.where + " " + other.prefix,
                            first.where + " " + first.prefix)


def _stage_guess(kind: str, ckpt: dict, modules: Sequence[str]) -> str:
    if kind.startswith("v2_"):
        return "AdaFocusV2 (one stage)"
    if kind.startswith("tsm_"):
        return "TSM pre-training"
    if kind.startswith("imagenet_"):
        return "ImageNet pre-training"
    if kind == "sthsth":
        if "policy" not in modules:
            return "stage 1"
        return "stage 3 (or stage 2 + optimizer)" if "optimizer" in ckpt else "stage 2"
    if "policy" in modules:
        return "stage 2/3"
    return "stage 0/1"


def _metadata(ckpt: dict) -> dict:
    out = {}
    for key, value in ckpt.items():
        if _is_tensor(value) and value.numel() == 1:
            out[key] = value.item()
        elif isinstance(value, (int, float, str, bool)):
            out[key] = value
    return out


def inspect_torch_checkpoint(path: str) -> CheckpointInfo:
    """Reads a PyTorch file and reports its kind and the model modules it holds."""
    ckpt = read_torch_file(path)
    kind, family, sources = _split_sources(path, ckpt)
    modules = tuple(m for m in MODULES if m in sources)
    return CheckpointInfo(path=path, kind=kind, family=family, modules=modules,
                          stage=_stage_guess(kind, ckpt, modules), metadata=_metadata(ckpt))


# --------------------------------------------------------------------------------------------------
# Name maps: Flax module path → PyTorch key base, per network.
#
# Each entry is (flax path below the module, torch key base, op) with op one of "conv", "bn",
# "dense", "gru".


def _mobilenet_layout(path: str, source: _Source) -> str:
    state = source.state
    if "net.features.1.conv.0.0.weight" in state:
        return "torchvision"
    if "net.features.1.conv.0.weight" in state:
        return "tsm"
    raise CheckpointError(f"{path}: {source.where} is not a MobileNetV2 glancer state dict "
                          f"(no 'net.features.1.conv.0[.0].weight'; first keys "
                          f"{sorted(state)[:3]})")


def _mobilenet_entries(cfg, layout: str) -> list[tuple[tuple[str, ...], str, str]]:
    entries = [(("stem_conv",), "net.features.0.0", "conv"),
               (("stem_bn",), "net.features.0.1", "bn")]
    specs = block_specs(cfg.glancer.width_mult)
    for index, (in_ch, _, hidden, _, residual) in enumerate(specs, 1):
        base = f"net.features.{index}.conv"
        block = f"block{index}"
        if hidden == in_ch:  # t = 1: depthwise, project
            names = ({"tsm": "0", "torchvision": "0.0"}, {"tsm": "1", "torchvision": "0.1"},
                     {"tsm": "3", "torchvision": "1"}, {"tsm": "4", "torchvision": "2"})
            ops = (("depthwise_conv", "conv"), ("depthwise_bn", "bn"), ("project_conv", "conv"),
                   ("project_bn", "bn"))
        else:
            names = ({"tsm": "0", "torchvision": "0.0"}, {"tsm": "1", "torchvision": "0.1"},
                     {"tsm": "3", "torchvision": "1.0"}, {"tsm": "4", "torchvision": "1.1"},
                     {"tsm": "6", "torchvision": "2"}, {"tsm": "7", "torchvision": "3"})
            ops = (("expand_conv", "conv"), ("expand_bn", "bn"), ("depthwise_conv", "conv"),
                   ("depthwise_bn", "bn"), ("project_conv", "conv"), ("project_bn", "bn"))
        shifted = layout == "tsm" and cfg.glancer.temporal_shift and residual and hidden != in_ch
        for position, (name, (flax_name, op)) in enumerate(zip(names, ops)):
            key = f"{base}.{name[layout]}"
            if shifted and position == 0:
                key += ".net"  # TemporalShift(net=conv) (§2.1)
            entries.append(((block, flax_name), key, op))
    head = len(specs) + 1
    entries += [(("head_conv",), f"net.features.{head}.0", "conv"),
                (("head_bn",), f"net.features.{head}.1", "bn")]
    classifier = "net.classifier" if layout == "tsm" else "net.classifier.1"
    entries.append((("classifier",), classifier, "dense"))
    return entries


def _resnet_style(path: str, source: _Source) -> str:
    state = source.state
    for style, key in (("tsn", "net.base_model.0.weight"), ("torchvision", "net.conv1.weight"),
                       ("tsm_file", "conv1.weight")):
        if key in state:
            return style
    raise CheckpointError(f"{path}: {source.where} is not a ResNet focuser state dict (no "
                          f"'net.base_model.0.weight' or 'net.conv1.weight'; first keys "
                          f"{sorted(state)[:3]})")


def _resnet_entries(cfg, style: str) -> list[tuple[tuple[str, ...], str, str]]:
    """style: "tsn" (Sth-Sth focuser, truncated Sequential), "torchvision" (ANet focuser, `net.`
    prefix) or "tsm_file" (TSM pre-training file below `module.base_model.`)."""
    prefix = {"tsn": "net.base_model.", "torchvision": "net.", "tsm_file": ""}[style]

    def name(torchvision_name: str) -> str:
        head, _, rest = torchvision_name.partition(".")
        if style == "tsn":
            head = _TSN_SEQUENTIAL_NAMES[head]
        return prefix + ".".join(filter(None, (head, rest)))

    shift = ".net" if cfg.focuser.temporal_shift else ""
    entries = [(("conv1",), name("conv1"), "conv"), (("bn1",), name("bn1"), "bn")]
    for stage, num_blocks in enumerate(cfg.focuser.stage_sizes):
        for block in range(num_blocks):
            flax_block = f"layer{stage + 1}_{block}"
            base = f"layer{stage + 1}.{block}"
            entries += [((flax_block, "conv1"), name(f"{base}.conv1{shift}"), "conv"),
                        ((flax_block, "bn1"), name(f"{base}.bn1"), "bn"),
                        ((flax_block, "conv2"), name(f"{base}.conv2"), "conv"),
                        ((flax_block, "bn2"), name(f"{base}.bn2"), "bn"),
                        ((flax_block, "conv3"), name(f"{base}.conv3"), "conv"),
                        ((flax_block, "bn3"), name(f"{base}.bn3"), "bn")]
            if block == 0:
                entries += [((flax_block, "downsample_conv"), name(f"{base}.downsample.0"), "conv"),
                            ((flax_block, "downsample_bn"), name(f"{base}.downsample.1"), "bn")]
    if cfg.focuser.with_fc:
        entries.append((("fc",), name("fc"), "dense"))
    return entries


def _policy_entries(cfg) -> list[tuple[tuple[str, ...], str, str]]:
    entries = [(("encoder_conv",), "state_encoder.0", "conv")]
    if cfg.policy.encoder_bn:  # conv, BN2d, ReLU, Flatten, Linear, BN1d, ReLU
        entries += [(("encoder_conv_bn",), "state_encoder.1", "bn"),
                    (("encoder_dense",), "state_encoder.4", "dense"),
                    (("encoder_dense_bn",), "state_encoder.5", "bn")]
    else:  # conv, ReLU, Flatten, Linear, ReLU
        entries.append((("encoder_dense",), "state_encoder.3", "dense"))
    entries += [(("gru",), "gru", "gru"), (("actor",), "actor.0", "dense"),
                (("critic",), "critic.0", "dense")]
    return entries


def _classifier_entries(cfg) -> list[tuple[tuple[str, ...], str, str]]:
    if cfg.classifier.kind == "gru":
        return [(("gru",), "gru", "gru"), (("fc",), "fc", "dense")]
    return [(("fc",), "", "dense")]


# --------------------------------------------------------------------------------------------------
# Architecture checks: the file's networks against config.model.


def _config_family(cfg) -> str:
    return "sthsth" if cfg.classifier.kind == "logit_sum" else "actnet"


def _check_architecture(path: str, kind: str, family: str, sources: Mapping[str, _Source], cfg):
    """Raises CheckpointError when the file's networks are not the configured ones."""
    expected = _config_family(cfg)
    if family != expected:
        raise CheckpointError(
            f"{path}: wrong architecture: this is a {FAMILY_NAMES[family]} checkpoint "
            f"(kind {kind!r}), but config.model describes {FAMILY_NAMES[expected]} "
            f"(config.model.classifier.kind={cfg.classifier.kind!r}); use the matching "
            "dataset config")
    if "glancer" in sources:
        layout = _mobilenet_layout(path, sources["glancer"])
        want = "tsm" if cfg.glancer.temporal_shift else "torchvision"
        if layout != want:
            raise CheckpointError(
                f"{path}: wrong architecture: the glancer is a {layout}-layout MobileNetV2 but "
                f"config.model.glancer.temporal_shift={cfg.glancer.temporal_shift} expects the "
                f"{want} layout")
    if "focuser" in sources:
        source = sources["focuser"]
        _resnet_style(path, source)  # raises if it is no ResNet
        shifted = any(".conv1.net.weight" in k for k in source.state)
        if shifted != bool(cfg.focuser.temporal_shift):
            raise CheckpointError(
                f"{path}: wrong architecture: the focuser ResNet "
                f"{'has' if shifted else 'has no'} temporal shift, but config.model.focuser."
                f"temporal_shift={cfg.focuser.temporal_shift}")
    if "policy" in sources:
        state = sources["policy"].state
        actor = state.get("actor.0.weight")
        file_kind = "gaussian" if actor is not None and actor.shape[0] == 2 else "categorical"
        has_bn = "state_encoder.1.running_mean" in state
        if file_kind != cfg.policy.kind or has_bn != bool(cfg.policy.encoder_bn):
            raise CheckpointError(
                f"{path}: wrong architecture: the policy is {file_kind} "
                f"{'with' if has_bn else 'without'} encoder BatchNorm, but config.model.policy "
                f"is kind={cfg.policy.kind!r}, encoder_bn={cfg.policy.encoder_bn}")
    if "classifier" in sources:
        is_gru = "gru.weight_ih_l0" in sources["classifier"].state
        if is_gru != (cfg.classifier.kind == "gru"):
            raise CheckpointError(
                f"{path}: wrong architecture: the classifier is "
                f"{'a GRU' if is_gru else 'a linear layer'}, but config.model.classifier.kind="
                f"{cfg.classifier.kind!r}")


# --------------------------------------------------------------------------------------------------
# Conversion of one module.


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
        if op == "conv":
            w = self._take(dot + "weight")
            if w.ndim != 4:
                raise CheckpointError(f"{self.path}: {self.key_name(dot + 'weight')!r} should be a "
                                      f"4-D conv weight, got shape {w.shape}")
            self._put("params", flax_path + ("kernel",), np.transpose(w, (2, 3, 1, 0)),
                      dot + "weight")
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


# --------------------------------------------------------------------------------------------------
# Public API.


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
    if kind.startswith("v2_") or cfg.get("version", "v1") == "v2":
        _check_v2_architecture(path, kind, family, {m: sources[m] for m in wanted}, cfg)
    else:
        _check_architecture(path, kind, family, {m: sources[m] for m in wanted}, cfg)
    missing = [m for m in MODULES if m not in wanted]
    if kind == "v2_sthsth":   # the V2 Sth-Sth classifier (a logit sum) has no parameters
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


# --------------------------------------------------------------------------------------------------
# Orbax storage of converted variables.


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


def is_torch_file(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(TORCH_SUFFIXES)


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


__all__ = ["CheckpointError", "CheckpointInfo", "MODULES", "abstract_variables",
           "count_parameters", "inspect_torch_checkpoint", "is_torch_file", "load_converted",
           "load_torch_checkpoint", "load_variables", "merge_modules", "read_conversion_metadata",
           "read_torch_file", "save_variables"]
