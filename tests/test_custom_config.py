"""configs/custom.py on a dataset made by tools/prepare_dataset: classes counted from the data,
options checked, the official sizes refused without pretrained weights, and every stage of the
small preset run for one step on tiny sizes through main.py."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from adafocus_jax import stages
from adafocus_jax.tools import prepare_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "custom.py")


def _custom():
    spec = importlib.util.spec_from_file_location("custom_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared dataset of 3 classes x 4 frame-folder videos (8 frames of 40 x 56); 9 train, 3 val."""
    base = tmp_path_factory.mktemp("custom")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ant", "bee", "cow")):
        for k in range(4):
            folder = base / "videos" / name / f"v{k}"
            os.makedirs(folder)
            for t in range(8):
                pixels = rng.integers(0, 60, (40, 56, 3)).astype(np.uint8)
                pixels[:, 10 * c:10 * c + 10] = 220        # the class is where the bar is
                Image.fromarray(pixels).save(folder / f"{t:02d}.jpg")
    out = base / "data"
    assert prepare_dataset.main([f"--input={base / 'videos'}", f"--output={out}",
                                 "--val_fraction=0.34", "--no_progress"]) == 0
    return str(out)


def test_classes_and_options_come_from_the_data(prepared):
    custom = _custom()
    config = custom.get_config(f"root={prepared}")
    assert config.model.num_classes == config.data.num_classes == 3
    assert config.data.root == os.path.join(prepared, "frames")
    assert config.data.frame_template == "image_{:05d}.jpg"
    assert (config.model.input_size, config.model.patch_size, config.model.num_glance_frames) == (
        96, 48, 4)
    assert config.data.scale_size == config.data.input_size and not config.train.num_steps
    assert config.allow_random_init
    config = custom.get_config(f"root={prepared},frames=6,input=96,glance=48,patch=40,flip=0,"
                               "epochs=2")
    assert (config.data.num_glance_frames, config.model.glance_size, config.model.patch_size,
            config.data.flip) == (6, 48, 40, False)
    assert config.stages.stage2.num_epochs == 2 * custom._SMALL_ACTNET["stage2"]["num_epochs"]
    sth = custom.get_config(f"root={prepared},family=sthv2,size=official")
    assert sth.model.num_classes == 3 and sth.model.focuser.stage_sizes == (3, 4, 6, 3)
    assert (sth.data.num_glance_frames, sth.data.num_focus_frames) == (8, 12)
    assert sth.stage_order == "stage1,stage2,stage3" and not sth.allow_random_init
    # The input filter (grey + high-pass, both networks) and the training translation: small
    # preset 7 px / 6 px at input 96, scaled with the input (the box width odd), off for the
    # official networks unless asked for.
    for net in (config.model.focuser, config.model.glancer):
        assert (net.input_grey, net.input_highpass) == (True, 7)
    assert config.data.translate == 6
    wide = custom.get_config(f"root={prepared},input=160")
    assert (wide.model.focuser.input_highpass, wide.data.translate) == (11, 10)
    plain = custom.get_config(f"root={prepared},highpass=0,grey=0,translate=0")
    assert (plain.model.glancer.input_highpass, plain.model.glancer.input_grey,
            plain.data.translate) == (0, False, 0)
    for net in (sth.model.focuser, sth.model.glancer):
        assert (net.input_grey, net.input_highpass) == (False, 0)
    assert sth.data.translate == 0
    asked = custom.get_config(f"root={prepared},size=official,grey=1,highpass=9,translate=4")
    assert (asked.model.focuser.input_grey, asked.model.focuser.input_highpass,
            asked.data.translate) == (True, 9, 4)
    # The glance network: the small preset's is a ResNet of its local network's depth at half
    # its width on the whole input frame; the official size keeps MobileNetV2 (its ImageNet
    # weights); either on request.
    small = custom.get_config(f"root={prepared}").model
    assert (small.glancer.arch, small.glance_size, small.glancer.width) == ("resnet", 96, 4)
    assert tuple(small.glancer.stage_sizes) == tuple(small.focuser.stage_sizes) == (1, 1, 1, 1)
    assert small.focuser.width == 8
    assert config.benchmark.required_margin == 5.0
    assert sth.model.glancer.arch == asked.model.glancer.arch == "mobilenet_v2"
    assert sth.model.glancer.width == sth.model.focuser.width == 64   # unread by MobileNetV2
    mobile = custom.get_config(f"root={prepared},glance_arch=mobilenet_v2").model
    assert (mobile.glancer.arch, mobile.glance_size) == ("mobilenet_v2", 72)
    assert custom.get_config(f"root={prepared},glance_width=8").model.glancer.width == 8
    assert custom.get_config(f"root={prepared}").data.flip is True          # actnet default
    assert custom.get_config(f"root={prepared},family=sthv2").data.flip is False

    for bad, message in ((f"root={prepared},family=kinetics", "family='kinetics'"),
                         (f"root={prepared},size=huge", "size='huge'"),
                         (f"root={prepared},frames=x", "frames='x' is not an integer"),
                         (f"root={prepared},patch=200", "patch=200 <= input=96"),
                         (f"root={prepared},colour=1", "unknown options ['colour']"),
                         (f"root={prepared},highpass=-1", "highpass='-1': expected 0 or an odd"),
                         (f"root={prepared},highpass=4", "highpass='4': expected 0 or an odd"),
                         (f"root={prepared},grey=yes", "grey='yes': expected 0 or 1"),
                         (f"root={prepared},flip=2", "flip='2': expected 0 or 1"),
                         (f"root={prepared},glance_arch=vit", "glance_arch='vit': expected one"),
                         (f"root={prepared},glance_width=0", "glance_width=0 must be >= 1"),
                         (f"root={prepared},translate=96", "translate='96': expected an integer"),
                         (f"root={prepared},translate=-2", "translate='-2': expected an integer"),
                         ("family=actnet", "root=DIR is required"),
                         (f"root={prepared}/frames", "dataset.json does not exist")):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
            custom.get_config(bad)


def test_official_size_needs_pretrained_weights(prepared):
    config = _custom().get_config(f"root={prepared},size=official")
    with pytest.raises(ValueError, match="config.init_from is empty"):
        stages.check_init_from(config, config.stage_order.split(","))
    config.allow_random_init = True
    stages.check_init_from(config, config.stage_order.split(","))


def _moved(a, b) -> list[str]:
    """The top-level modules whose parameters differ between two variable trees."""
    import jax
    return sorted(m for m in a["params"] if any(
        not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a["params"][m]),
                                                 jax.tree.leaves(b["params"][m]))))


def test_small_preset_trains_every_stage_through_main(prepared, tmp_path):
    """The small preset's five stages, one step each, through main.py at tiny sizes (the run at
    real sizes is benchmarks/custom_dataset.py): the prepared lists feed training and evaluation,
    each stage restores what the recipe says and moves only the modules it trains.

    A subprocess, so that it can run on one CPU device (not conftest's 8 fake ones) with XLA's
    backend optimisation off: these tiny networks run in milliseconds, and compiling them (an
    init, five steps, five evaluations) is what costs, about 3x less CPU at level 0. The options,
    flags and class count are those of colabs/own_dataset.ipynb's CI run (tests/test_colabs.py),
    so whichever runs second finds every step compiled in the persistent compilation cache."""
    from adafocus_jax import checkpoint as ckpt_lib
    workdir = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "main.py"),
           f"--config={CONFIG}:root={prepared},quick,input=32,glance=32,patch=16,frames=2",
           f"--workdir={workdir}", "--config.benchmark.enabled=False",
           "--config.train.num_workers=0", "--config.stages.stage2.ppo.epochs=1"]
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    names = ("stage0_glancer", "stage0_focuser", "stage1", "stage2", "stage3")
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    assert saved["stage_order"].split(",") == list(names)
    assert saved["model"]["num_classes"] == 3 and saved["data"]["num_classes"] == 3
    for name in names:
        with open(workdir / name / "results.json") as f:
            results = json.load(f)
        assert results["steps"] == 1 and results["handoff"] == {"mode": "last", "step": 1}, name
        # The 3 val videos of the prepared split (one per class), all in the one eval batch.
        assert results["final_eval"]["num_videos"] == 3, name
        assert 0.0 <= results["final_eval"]["top1"] <= 100.0, name
        assert np.isfinite(results["final_eval"]["loss"]), name

    v = {name: ckpt_lib.load_variables_from_dir(str(workdir / name)) for name in names}
    assert v["stage3"]["params"]["classifier"]["fc"]["kernel"].shape[-1] == 3
    # Both stage-0 runs start from the same random initialisation and each trains one network.
    assert _moved(v["stage0_glancer"], v["stage0_focuser"]) == ["focuser", "glancer"]
    # Stage 1 restores the glancer of stage0_glancer (frozen) and the focuser of stage0_focuser,
    # and trains the focuser and the classifier; the policy is still the initial one.
    start1 = {"params": dict(v["stage0_focuser"]["params"],
                             glancer=v["stage0_glancer"]["params"]["glancer"])}
    assert _moved(start1, v["stage1"]) == ["classifier", "focuser"]
    assert _moved(v["stage1"], v["stage2"]) == ["policy"]                 # PPO: the policy only
    assert _moved(v["stage2"], v["stage3"]) == ["classifier", "focuser"]  # the small schedule
