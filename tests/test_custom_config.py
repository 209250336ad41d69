"""configs/custom.py on a dataset made by tools/prepare_dataset: classes counted from the data,
options checked, the official sizes refused without pretrained weights, and every stage of the
small preset run for one step through main.py."""
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
    """A prepared dataset of 4 classes x 3 frame-folder videos (8 frames of 40 x 56)."""
    base = tmp_path_factory.mktemp("custom")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ant", "bee", "cow", "dog")):
        for k in range(3):
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
    assert config.model.num_classes == config.data.num_classes == 4
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
    assert sth.model.num_classes == 4 and sth.model.focuser.stage_sizes == (3, 4, 6, 3)
    assert (sth.data.num_glance_frames, sth.data.num_focus_frames) == (8, 12)
    assert sth.stage_order == "stage1,stage2,stage3" and not sth.allow_random_init

    for bad, message in ((f"root={prepared},family=kinetics", "family='kinetics'"),
                         (f"root={prepared},size=huge", "size='huge'"),
                         (f"root={prepared},frames=x", "frames='x' is not an integer"),
                         (f"root={prepared},patch=200", "patch=200 <= input=96"),
                         (f"root={prepared},colour=1", "unknown options ['colour']"),
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


def test_small_preset_trains_every_stage_through_main(prepared, tmp_path):
    # One device (conftest's 8 fake CPU devices would only multiply the compile time); the
    # end-of-run table is left to benchmarks/custom_dataset.py (5 more compiled evaluations).
    workdir = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "main.py"),
           f"--config={CONFIG}:root={prepared},quick,input=32,glance=32,patch=16,frames=2",
           f"--workdir={workdir}", "--config.benchmark.enabled=False"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1700,
                          env=dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("stage0_glancer", "stage0_focuser", "stage1", "stage2", "stage3"):
        with open(workdir / stage / "results.json") as f:
            results = json.load(f)
        assert results, stage
    with open(workdir / "config.json") as f:
        assert '"num_classes": 4' in f.read()
