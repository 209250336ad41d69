"""Every config file, with every option, builds the config it built before the recipes moved into
the configs (issue 9): `tests/data/config_snapshot.json` was written by this file's `snapshot()`
from the code BEFORE that change (s17 at 156a193, which differs from the first snapshot's 32c9929
only in configs/synthetic.py's new halftone option), so it is a regression check, not a copy of the
code under test. It was rewritten once, at the Uni-AdaFocus merge (issue 14), after checking that
the only differences were the new recipe fields `lr_groups` ("" in every stage's config, {} when
resolved) and `uni` ({} when resolved), and the `mode=v3` error now naming mode=uni; and again at
the own-data merge (issue 13), after checking that all 123 differences were the new data key
`crop_scales` (the official multi-scale crop's scales, the value the loader used before); and at
the Uni-AdaFocus-TSM change (issue 14), which added cases (`mode=uni` of every config, tiny's
`mode=uni`, `uni_model_config`; no stored case changed) and then the data key `segment_sampling`
(all 166 differences: "tsn", the rule the loader used before, except "uniform" for Uni-AdaFocus
on Sth-Sth); and at the Uni synthetic benchmark (issue 14, item 4), after checking that the
differences were the new synthetic data key `digit_frames` (0, every frame shows the digit, as
before) in the synthetic configs that build, the Uni model key `policy.frame_choice` ("policy",
the frames the model chose before; 48 `mode=uni` cases) and the unknown-option error of configs/synthetic.py now
listing `mode=uni` and `digit_frames=<L>`; and at the own-data input filter (issue 13), after
checking that all 910 differences were the new keys `data.translate` (0) and
`glancer`/`focuser` `input_grey` (False) / `input_highpass` (0), i.e. switched off as before;
and at the ResNet glance network option (issue 13), after checking that all 558 differences were
the new keys `glancer.arch` ("mobilenet_v2", the network built before), `glancer.stage_sizes`
((1, 1, 1, 1)) and `glancer.width` (8), which only `arch = "resnet"` reads (186 cases each).

For each config and option string it holds the ConfigDict (`to_dict()`, tuples kept apart from
lists, ints from floats) or the error it raises, and every stage's resolved recipe
(`stages.resolve_recipe`) with `reproduce_released_lr_bug` off and on; plus the model configs of
`models.tiny_model_config`, `default_model_config` and `v2_model_config` per dataset.
This checks that the configs show the recipe (stage tables, V2 hyper-parameters, patch sizes as
literal data in configs/sthv2.py and configs/actnet.py, reused by the others) without changing a
single value.

    python tests/test_config_snapshot.py --write   # regenerate (only for an intended change)
"""

import dataclasses
import importlib.util
import itertools
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "tests", "data", "config_snapshot.json")

STHSTH_PATCHES = (None, 144, 160, 176)
ACTNET_PATCHES = (None, 128, 96, 160, 192)
# The official default patch sizes (the papers' first setting per dataset).
DEFAULT_PATCH = {"sthv1": 144, "sthv2": 144, "actnet": 128, "fcvid": 128, "minik": 128}
BAD_OPTIONS = ("patch=100", "patch=abc", "mode=v3", "colour=red", "patch", "policy=grid")
# Uni-AdaFocus (`mode=uni`, added with the TSM variant): Sth-Sth patches × local frames, and the
# ActivityNet family's patches, with the options each refuses.
UNI_STHSTH = [",".join(["mode=uni"] + [f"patch={p}"] * bool(p) + [f"frames={k}"] * bool(k))
              for p in (None, 128, 96) for k in (None, 16, 12, 8)] + [
    "mode=uni,patch=144", "mode=uni,frames=10", "frames=8", "mode=uni,policy=discrete"]
UNI_ACTNET = [",".join(["mode=uni"] + [f"patch={p}"] * bool(p)) for p in ACTNET_PATCHES] + [
    "mode=uni,frames=8"]


def _encode(value):
    """JSON-safe and type-keeping: a tuple becomes {"__tuple__": [...]}; dict keys are sorted."""
    if isinstance(value, dict):
        return {str(k): _encode(value[k]) for k in sorted(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot snapshot a {type(value).__name__}: {value!r}")


def _options(patches, policies) -> list:
    """Every combination of patch=, policy= and mode= (absent or each value), comma-joined."""
    out = []
    for patch, policy, mode in itertools.product(patches, policies, (None, "v1", "v2")):
        items = [f"patch={patch}" if patch else "", f"policy={policy}" if policy else "",
                 f"mode={mode}" if mode else ""]
        out.append(",".join(i for i in items if i))
    return out


def _load(name: str, arg):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_snapshot_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _error(e: Exception) -> dict:
    return {"error": f"{type(e).__name__}: {e}"}


def _entry(name: str, arg) -> dict:
    from adafocus_jax import stages
    try:
        config = _load(name, arg)
    except Exception as e:  # noqa: BLE001 - the error itself is what is recorded
        return _error(e)
    resolved = {}
    for bug in (False, True):
        config.reproduce_released_lr_bug = bug
        per_stage = {}
        for stage in config.stages.keys():
            try:
                per_stage[stage] = dataclasses.asdict(stages.resolve_recipe(config, stage))
            except Exception as e:  # noqa: BLE001
                per_stage[stage] = _error(e)
        resolved[f"reproduce_released_lr_bug={bug}"] = per_stage
    config.reproduce_released_lr_bug = False
    return {"config": config.to_dict(), "resolved": resolved}


def snapshot() -> dict:
    """{section: {case: entry}} for every config file, option string and model-config helper."""
    from adafocus_jax import models
    out = {}
    for name in ("sthv1", "sthv2"):
        args = [None] + _options(STHSTH_PATCHES, (None, "gaussian", "discrete")) + list(BAD_OPTIONS)
        out[name] = {repr(a): _entry(name, a) for a in args + UNI_STHSTH}
    for name in ("actnet", "fcvid", "minik"):
        args = [None] + _options(ACTNET_PATCHES, (None,)) + list(BAD_OPTIONS) + ["policy=discrete"]
        out[name] = {repr(a): _entry(name, a) for a in args + UNI_ACTNET}
    datasets = ("sthv1", "sthv2", "actnet", "fcvid", "minik")
    tiny_args = [None, *datasets, "sthv1,policy=gaussian", "sthv2,policy=discrete",
                 "actnet,policy=discrete", "sthv2,colour=red", "kinetics", "sthv1,mode=uni",
                 "sthv2,mode=uni", "actnet,mode=uni", "minik,mode=uni",
                 "sthv2,mode=uni,policy=discrete", "sthv2,mode=v2"]
    out["tiny"] = {repr(a): _entry("tiny", a) for a in tiny_args}
    synthetic_args = [None, "", "quick", "mode=v1", "mode=v2", "quick,mode=v2", "fast",
                      "halftone=3", "quick,halftone=3", "mode=v2,halftone=2", "halftone=4"]
    out["synthetic"] = {repr(a): _entry("synthetic", a) for a in synthetic_args}
    # The snapshot's keys name the calls of 32c9929, where the patch size defaulted to the
    # dataset's first official one; the patch is an argument now, given here.
    out["models"] = {}
    for dataset in datasets:
        patch = DEFAULT_PATCH[dataset]
        out["models"][f"tiny_model_config({dataset!r})"] = models.tiny_model_config(dataset).to_dict()
        out["models"][f"default_model_config({dataset!r})"] = (
            models.default_model_config(dataset, patch).to_dict())
        out["models"][f"v2_model_config({dataset!r})"] = (
            models.v2_model_config(dataset, patch).to_dict())
        out["models"][f"uni_model_config({dataset!r}, 128)"] = (
            models.uni_model_config(dataset, 128).to_dict())
    return _encode(out)


def _dedupe(full: dict) -> dict:
    """The snapshot as stored: a case equal to an earlier one is {"same_as": "section/case"}."""
    seen, out = {}, {}
    for section, cases in full.items():
        out[section] = {}
        for case, entry in cases.items():
            text = json.dumps(entry, sort_keys=True)
            if text in seen:
                out[section][case] = {"same_as": seen[text]}
            else:
                seen[text] = f"{section}/{case}"
                out[section][case] = entry
    return out


def _load_snapshot() -> dict:
    """The stored snapshot with every "same_as" replaced by the entry it names."""
    with open(SNAPSHOT, encoding="utf-8") as f:
        stored = json.load(f)
    out = {}
    for section, cases in stored.items():
        out[section] = {}
        for case, entry in cases.items():
            if isinstance(entry, dict) and set(entry) == {"same_as"}:
                ref_section, _, ref_case = entry["same_as"].partition("/")
                entry = out[ref_section][ref_case]
            out[section][case] = entry
    return out


def _differences(want, got, path="") -> list[str]:
    """The paths where two snapshots differ (the first 20), to name what changed."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}/{k}: only in the snapshot" for k in want if k not in got]
        out += [f"{path}/{k}: new" for k in got if k not in want]
        for k in want:
            if k in got:
                out += _differences(want[k], got[k], f"{path}/{k}")
        return out[:20]
    if want != got or type(want) is not type(got):
        return [f"{path}: snapshot {want!r}, now {got!r}"]
    return []


def test_every_config_and_option_builds_what_it_built_before():
    want, got = _load_snapshot(), json.loads(json.dumps(snapshot()))
    assert _differences(want, got) == []
    assert want == got


def test_the_snapshot_is_complete_and_the_comparison_can_fail():
    want = _load_snapshot()
    # Every option combination is there: sth 4 patches x 3 policies x 3 modes, actnet 5 x 3.
    assert len(want["sthv2"]) == 1 + 36 + len(BAD_OPTIONS) + 12 + 4
    assert len(want["minik"]) == 1 + 15 + len(BAD_OPTIONS) + 1 + 5 + 1
    # Spot values from the official scripts (not from the code): Sth-Sth stage 1 lr 0.01 for the
    # classifier, stage 3 batch 32; the released lr bug trains only the stem conv in stage 1;
    # Mini-Kinetics V2 batch 48; policy=discrete + mode=v2 is refused.
    sth = want["sthv2"]["'patch=176'"]
    assert sth["config"]["stages"]["stage1"]["lr"]["classifier"] == 0.01
    assert sth["config"]["model"]["patch_size"] == 176
    assert sth["config"]["stages"]["stage3"]["batch_size"] == 32
    bug = sth["resolved"]["reproduce_released_lr_bug=True"]["stage1"]
    assert bug["lr"]["classifier"] == 0.0 and bug["trainable_pattern"] == r"^focuser/conv1/"
    assert want["minik"]["'mode=v2'"]["config"]["stages"]["v2"]["batch_size"] == 48
    assert "error" in want["sthv1"]["'policy=discrete,mode=v2'"]
    # Uni-AdaFocus-TSM (the official TSM README commands): SSv2 wd 5e-4, SSv1 1e-3, --gd 20,
    # 128² with 8 + 16 of 48 frames by default; 96² 8 + 12 of 36.
    uni = want["sthv2"]["'mode=uni'"]["config"]
    assert uni["stages"]["uni"]["weight_decay"] == 5e-4 and uni["stages"]["uni"]["clip_grad_norm"] == 20.0
    assert (uni["model"]["patch_size"], uni["model"]["num_focus_frames"],
            uni["data"]["num_focus_frames"]) == (128, 16, 48)
    assert want["sthv1"]["'mode=uni'"]["config"]["stages"]["uni"]["weight_decay"] == 1e-3
    assert want["sthv2"]["'mode=uni,patch=96,frames=12'"]["config"]["model"][
        "num_candidate_frames"] == 36
    assert "error" in want["sthv2"]["'mode=uni,patch=144'"]
    assert want["actnet"]["'mode=uni'"]["config"]["stages"]["uni"]["clip_grad_norm"] == 0.0
    # A changed number is found and named.
    changed = json.loads(json.dumps(want))
    changed["actnet"]["None"]["config"]["stages"]["stage1"]["num_epochs"] = 49
    changed["actnet"]["None"]["config"]["model"]["focuser"]["stage_sizes"] = [3, 4, 6, 3]
    assert _differences(want, changed) == [
        "/actnet/None/config/model/focuser/stage_sizes: snapshot {'__tuple__': [3, 4, 6, 3]}, "
        "now [3, 4, 6, 3]",
        "/actnet/None/config/stages/stage1/num_epochs: snapshot 50, now 49"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write")
    sys.path.insert(0, ROOT)
    os.makedirs(os.path.dirname(SNAPSHOT), exist_ok=True)
    with open(SNAPSHOT, "w", encoding="utf-8") as f:
        json.dump(_dedupe(snapshot()), f, indent=1)
        f.write("\n")
    print(f"wrote {SNAPSHOT}")
