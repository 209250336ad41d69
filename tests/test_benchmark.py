"""The end-of-run benchmark: per-variant GFLOPs counted from the model, the JSON it writes, and that
`full_frame` uses the local network of the stage named by `config.benchmark.full_frame_stage`."""

import importlib.util
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from adafocus_jax import benchmark, flops, models
from adafocus_jax.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
    """configs/synthetic.py:quick shrunk to 64-px frames, 2 frames and tiny networks."""
    spec = importlib.util.spec_from_file_location("synthetic_config",
                                                  os.path.join(ROOT, "configs", "synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("quick")
    m = models.tiny_model_config("actnet")
    m.num_classes = 10
    m.glance_size = 32
    m.glance_resize = "linear"
    m.num_glance_frames = m.num_focus_frames = 2
    m.patch_size = 24
    config.model = m
    d = config.data
    d.input_size = d.scale_size = 64
    d.num_glance_frames = d.num_focus_frames = 2
    d.synthetic.digit_size = 16
    d.synthetic.region_grid = 1               # 64-px frames: the digit roams the whole frame
    d.synthetic.num_videos.test = 12          # 2 batches of 8, the second one padded
    config.benchmark.batch_size = 8
    return config


def test_variant_gflops():
    config = tiny_config()
    model = models.create_model(config)
    learned, per_learned = flops.variant_gflops(model, "learned")
    random, per_random = flops.variant_gflops(model, "random")
    center, _ = flops.variant_gflops(model, "center")
    full, per_full = flops.variant_gflops(model, "full_frame")
    glance, per_glance = flops.variant_gflops(model, "glance_only")
    assert learned == pytest.approx(flops.count_gflops(model)[0])
    # Same networks on the same patches; the learned variant adds only the policy.
    assert random == pytest.approx(center)
    assert learned - random == pytest.approx(per_learned["policy"]) and per_learned["policy"] > 0
    assert "policy" not in per_random
    # The full frame runs only the local network (+ fc) on every whole frame: its conv cost scales
    # with the pixel count, (64 / 24)² ≈ 7× the patches' (the fc head differs slightly).
    assert set(per_full) == {"focuser"} and set(per_glance) == {"glancer"}
    ratio = per_full["focuser"] / per_random["focuser"]
    assert 5.0 < ratio < 8.0, ratio
    # The oracle patch is given, not computed: the same cost as any other given patch.
    assert flops.variant_gflops(model, "oracle")[0] == pytest.approx(center)
    with pytest.raises(ValueError, match="unknown variant"):
        flops.variant_gflops(model, "clairvoyant")
    with pytest.raises(ValueError, match="method must be"):
        flops.count_method_gflops(model, "classify")


def _save_stage(stage_dir, variables):
    """A stage checkpoint as adafocus_jax.checkpoint writes it (params + batch_stats items)."""
    root = os.path.join(stage_dir, "checkpoints")
    with ocp.CheckpointManager(root) as manager:
        manager.save(1, args=ocp.args.StandardSave(variables))
        manager.wait_until_finished()


def test_run_writes_the_benchmark_json(tmp_path, capsys):
    config = tiny_config()
    model = models.create_model(config)
    variables = jax.tree.map(np.asarray, models.init_variables(model, jax.random.key(0)))
    # A stage0_focuser checkpoint whose fc always answers class 7: full_frame must use it.
    stage_vars = jax.tree.map(np.copy, variables)
    fc = stage_vars["params"]["focuser"]["fc"]
    fc["kernel"] = np.zeros_like(fc["kernel"])
    fc["bias"] = np.where(np.arange(10) == 7, 10.0, 0.0).astype(fc["bias"].dtype)
    _save_stage(str(tmp_path / "stage0_focuser"), stage_vars)

    results = benchmark.run(config, str(tmp_path), variables, model=model)
    path = tmp_path / "synthetic_benchmark.json"
    assert benchmark.benchmark_path(config, str(tmp_path)) == str(path)
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(results))
    for name in ("learned", "random", "center", "oracle", "full_frame", "glance_only"):
        patches = name in ("learned", "random", "center", "oracle")
        assert set(written[name]) == ({"accuracy", "gflops", "target_hit"} if patches
                                      else {"accuracy", "gflops"})
        assert 0.0 <= written[name]["accuracy"] <= 100.0 and written[name]["gflops"] > 0
    # The centre patch's hit rate, computed by hand from the recorded digit boxes.
    source = synthetic.create_source(config.data, "test")
    p = config.model.patch_size
    c = (config.model.input_size - p) // 2
    boxes = np.stack([source.get(i)["target_box"] for i in range(len(source))])   # [N, T, 4]
    inside = (boxes[..., 0] >= c) & (boxes[..., 1] >= c) & (boxes[..., 2] <= c + p) & (
        boxes[..., 3] <= c + p)
    assert written["center"]["target_hit"] == pytest.approx(100.0 * inside.mean(), abs=0.01)
    # A patch centred on a digit no larger than the patch always holds all of it.
    assert written["oracle"]["target_hit"] == 100.0
    meta = written["meta"]
    assert meta["split"] == "test" and meta["num_videos"] == 12
    assert meta["seed"] == config.seed
    assert meta["full_frame_variables"] == "stage0_focuser"
    sevens = np.mean([source.get(i)["label"] == 7 for i in range(len(source))])
    assert written["full_frame"]["accuracy"] == pytest.approx(100.0 * sevens)
    assert meta["margin_vs_random"] == pytest.approx(
        written["learned"]["accuracy"] - written["random"]["accuracy"])
    assert meta["passed"] == (meta["margin_vs_random"] >= 15 and meta["margin_vs_center"] >= 15)
    assert written["full_frame"]["gflops"] > written["random"]["gflops"] / 3
    out = capsys.readouterr().out
    for name in ("learned", "random", "center", "full_frame", "glance_only"):
        assert name in out
    verdict, other = ("PASS", "FAIL") if meta["passed"] else ("FAIL", "PASS")
    assert verdict in out and other not in out


def test_full_frame_falls_back_to_the_final_variables(tmp_path):
    config = tiny_config()
    config.benchmark.variants = "learned,random,center,full_frame"
    config.benchmark.max_batches = 1
    model = models.create_model(config)
    variables = jax.tree.map(np.asarray, models.init_variables(model, jax.random.key(1)))
    results = benchmark.run(config, str(tmp_path), variables, model=model)
    assert results["meta"]["full_frame_variables"] == "final"
    assert results["meta"]["num_videos"] == 8                # max_batches = 1 batch of 8
    assert set(results) == {"learned", "random", "center", "full_frame", "meta"}


def test_variant_list_is_checked():
    config = tiny_config()
    config.benchmark.variants = "learned,random,center"
    with pytest.raises(ValueError, match="must include"):
        benchmark.run(config, "/nonexistent", {})
    config.benchmark.variants = "learned,random,center,full_frame,clairvoyant"
    with pytest.raises(ValueError, match="unknown"):
        benchmark.run(config, "/nonexistent", {})


def test_format_table():
    table = benchmark.format_table({
        "learned": {"accuracy": 90.0, "gflops": 0.05},
        "random": {"accuracy": 40.0, "gflops": 0.049},
        "full_frame": {"accuracy": 95.0, "gflops": 0.5},
        "meta": {"margin_vs_random": 50.0, "margin_vs_center": 14.0, "required_margin": 15.0,
                 "passed": False}})
    lines = table.splitlines()
    assert lines[1].split()[:3] == ["learned", "90.00", "0.0500"] and "0.10x" in lines[1]
    assert "FAIL" in lines[-1] and "+14.00" in lines[-1]
