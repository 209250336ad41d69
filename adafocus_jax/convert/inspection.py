"""Which modules a file holds (`inspect_torch_checkpoint`), and its networks against config.model.

`_split_sources` finds, per model module, the state dict that fills it (AdaFocus `glancer` /
`focuser` / `fc` / `policy` entries, GFV's `model_state_dict`, TSM and torchvision files, the V2
and Uni files); `_check_version`, `_check_architecture` (V1) and `_check_one_stage_architecture`
(V2, Uni) refuse a file whose networks are not the configured ones, naming both.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Mapping, Sequence


from adafocus_jax.convert.reading import (CheckpointError, MODULES, _Source, _check_state_dict,
                                          _is_tensor, _strip, read_torch_file)
from adafocus_jax.convert.names import _mobilenet_layout, _resnet_style


FAMILY_NAMES = {"sthsth": "Something-Something (TSM MobileNetV2 + TSM ResNet-50, logit-sum)",
                "actnet": "ActivityNet/FCVID/Mini-K (torchvision MobileNetV2 + ResNet-50, GRU)"}


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What `inspect_torch_checkpoint` finds in a file.

    Attributes:
      path: the file.
      kind: "tsm_mobilenetv2", "tsm_resnet50", "sthsth", "actnet", "imagenet_mobilenetv2",
        "imagenet_resnet50", "v2_actnet", "v2_sthsth", "uni_actnet" or "uni_sthsth".
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


def _split_sources(path: str, ckpt: dict) -> tuple[str, str, dict[str, _Source]]:
    """(kind, family, {module: _Source}) of a loaded file."""
    state_dict = ckpt.get("state_dict")
    if isinstance(state_dict, Mapping) and _has_prefix(state_dict, "global_CNN."):
        state = _check_state_dict(path, "'state_dict'", state_dict)
        if _has_prefix(state, _UNI_POLICY_PREFIXES):
            return _split_uni_sources(path, state)
        return _split_v2_sources(path, state)
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


# The key-prefix rules of the one-stage checkpoints (`{'state_dict': DDP/DataParallel(model)
# .state_dict()}`), most specific first: (file prefix, our module or None = dropped, our prefix).
_V2_ANET_RULES = (("global_CNN.classifier.", None, None),   # unused 1000-way ImageNet heads
                  ("local_CNN.fc.", None, None),
                  ("global_CNN_fc.1.", "glancer", "net.classifier."),
                  ("global_CNN.", "glancer", "net."),
                  ("local_CNN_fc.1.", "focuser", "net.fc."),
                  ("local_CNN.", "focuser", "net."))
_V2_RULES = {
    "actnet": _V2_ANET_RULES + (("policy_stn.", "policy", "v2_anet."),
                                ("classifier.", "classifier", "")),
    "sthsth": (("global_CNN.base_model.", "glancer", "net."),
               ("global_CNN.new_fc.", "glancer", "net.classifier."),
               ("global_CNN.new_new_fc.", "glancer", "net.reg_classifier."),
               ("local_CNN.base_model.", "focuser", "net."),
               ("local_CNN.new_fc.", "focuser", "net.fc."),
               ("local_CNN.new_new_fc.", "focuser", "net.reg_fc."),
               ("policy_stn.", "policy", "v2_sth.")),
}
# Uni-AdaFocus: the V2 backbones and heads of its family, the policy's three parts, and (the
# ActivityNet family only) the exit classifier.
_UNI_POLICY_RULES = (("aux_fc.", "policy", "aux_fc."),
                     ("spatial_policy.", "policy", "spatial_policy."),
                     ("temporal_policy.", "policy", "temporal_policy."))
_UNI_RULES = {
    "actnet": _V2_ANET_RULES + _UNI_POLICY_RULES + (("classifier.", "classifier", ""),),
    "sthsth": tuple(r for r in _V2_RULES["sthsth"] if r[1] != "policy") + _UNI_POLICY_RULES,
}
_UNI_POLICY_PREFIXES = ("spatial_policy.", "temporal_policy.")


def _has_prefix(state: Mapping, prefixes) -> bool:
    """Whether a key starts with one of `prefixes`, with or without a `module.` in front."""
    return any(k.startswith(prefixes) or (k.startswith("module.")
                                          and k[len("module."):].startswith(prefixes))
               for k in state)


def _split_by_rules(path: str, state: dict, rules, what: str) -> dict[str, _Source]:
    """{module: _Source} of a one-stage state dict (`module.` prefix optional) by prefix rules;
    dropped keys are logged, a key no rule knows is an error naming it and `what` the file is."""
    prefix = "module." if all(k.startswith("module.") for k in state) else ""
    groups: dict[str, dict] = {m: {} for m in MODULES}
    names: dict[str, dict] = {m: {} for m in MODULES}   # our key -> the file's key
    dropped = []
    for full_key, value in state.items():
        key = full_key[len(prefix):]
        for theirs, module, ours in rules:
            if key.startswith(theirs):
                if module is None:
                    dropped.append(full_key)
                else:
                    groups[module][ours + key[len(theirs):]] = value
                    names[module][ours + key[len(theirs):]] = full_key
                break
        else:
            raise CheckpointError(f"{path}: unexpected key {full_key!r} in 'state_dict' of {what}")
    if dropped:
        logging.info("%s: dropping the unused ImageNet heads %s", path, sorted(dropped))

    def file_key(module: str, key: str) -> str:
        """The file's name of our `key` (also of one the file lacks: by the module's rules)."""
        if key in names[module]:
            return names[module][key]
        for theirs, rule_module, ours in sorted(rules, key=lambda r: -len(r[2] or "")):
            if rule_module == module and key.startswith(ours):
                return prefix + theirs + key[len(ours):]
        return prefix + key

    return {m: _Source(g, "'state_dict'", rename=functools.partial(file_key, m))
            for m, g in groups.items() if g}


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
    sth = _has_prefix(state, "global_CNN.base_model.")
    family = "sthsth" if sth else "actnet"
    what = f"an AdaFocusV2 {'Sth-Sth' if sth else 'ActivityNet'} checkpoint"
    return f"v2_{family}", family, _split_by_rules(path, state, _V2_RULES[family], what)


def _split_uni_sources(path: str, state: dict) -> tuple[str, str, dict[str, _Source]]:
    """A released Uni-AdaFocus checkpoint (`{'state_dict': DistributedDataParallel(model)
    .state_dict(), ...}`, `module.`-prefixed).

    ActivityNet / FCVID / Mini-K (`actnet_p128.pth.tar`, ...): the backbones and heads are named
    as in V2 (`global_CNN`, `global_CNN_fc.1`, `local_CNN`, `local_CNN_fc.1`; the 1000-way
    `global_CNN.classifier` and `local_CNN.fc` are dropped); the classifier is
    `classifier.{global,local}_mlp.layers.{0,1}` and `classifier.{global,local}_classifiers.i.1`.
    Sth-Sth / Jester, TSM (`sthv2_p128_8and16.pth.tar`, ...; `archs/uni_adafocus_tsm.py`): the
    backbones are the V2 Sth-Sth TSNs (`global_CNN.base_model.*` TSM MobileNetV2,
    `local_CNN.base_model.*` TSM ResNet-50, each with `new_fc` and `new_new_fc`); the prediction
    is a logit sum, so no classifier. Both: the policy is `aux_fc`,
    `spatial_policy.encoder.{0,1,3,4,6,7,9}` (TSM: the last Conv3d spans the G glance frames)
    and `temporal_policy.Tconv.{0,1,3,4,6}`.
    """
    family = "sthsth" if _has_prefix(state, "global_CNN.base_model.") else "actnet"
    what = ("a Uni-AdaFocus-TSM (Sth-Sth / Jester) checkpoint" if family == "sthsth" else
            "a Uni-AdaFocus ActivityNet-family checkpoint")
    return f"uni_{family}", family, _split_by_rules(path, state, _UNI_RULES[family], what)


# What each `config.model.version` is called in messages, with its article.
_VERSION_NAMES = {"v1": "an AdaFocus (V1)", "v2": "an AdaFocusV2", "uni": "a Uni-AdaFocus"}


def file_version(kind: str) -> str:
    """The `config.model.version` a file kind belongs to: "uni", "v2" or "v1"."""
    return "uni" if kind.startswith("uni_") else "v2" if kind.startswith("v2_") else "v1"


def _check_version(path: str, kind: str, cfg) -> None:
    """A file of one AdaFocus version with a config of another."""
    ours, theirs = cfg.get("version", "v1"), file_version(kind)
    if ours != theirs:
        raise CheckpointError(
            f"{path}: this is {_VERSION_NAMES[theirs]} checkpoint (kind {kind!r}) but "
            f"config.model.version={ours!r}; use mode={theirs} of the dataset config")


def _check_one_stage_architecture(path: str, kind: str, family: str, sources, cfg):
    """A V2 or Uni file (of the config's version, `_check_version`) of the wrong family, or
    whose glancer's temporal shift differs from the config's."""
    expected = "actnet" if cfg.policy.per_frame else "sthsth"
    name = _VERSION_NAMES[file_version(kind)].split(" ", 1)[1]
    if family != expected:
        raise CheckpointError(
            f"{path}: wrong architecture: {_VERSION_NAMES[file_version(kind)]} "
            f"{FAMILY_NAMES[family]} checkpoint, but config.model describes the "
            f"{FAMILY_NAMES[expected]} {name} network")
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
    if kind.startswith("uni_"):
        return "Uni-AdaFocus (one stage)"
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
