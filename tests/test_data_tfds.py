"""TFDS array_record builders: build from synthetic folders, read back like the frame reader."""
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from adafocus_jax import data as data_lib
from adafocus_jax.data import tfds_builders
from adafocus_jax.data.errors import DataError

from test_data_util import frame_ids, make_frame_dataset, write_webm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sth_dataset(root):
    c = make_frame_dataset(root, "sthv1", [("a", 20, [3]), ("b", 9, [7]), ("c", 2, [1])])
    make_frame_dataset(root, "sthv1", [("v1", 14, [5]), ("v2", 30, [0])], split="val")
    return c


def test_build_and_read_back_identically(tmp_path):
    c = _sth_dataset(str(tmp_path / "frames"))
    builder = tfds_builders.build(c, data_dir=str(tmp_path / "tfds"), num_workers=2)
    assert builder.name == "adafocus_sthv1"
    assert builder.info.splits["train"].num_examples == 2  # the 2-frame row is dropped
    t = c.copy_and_resolve_references()
    t.format = "tfds"
    t.tfds.data_dir = str(tmp_path / "tfds")
    for split, rng_seeds in (("train", [0, 1]), ("val", [None])):
        frames_source = data_lib.create_source(c, split)
        tfds_source = data_lib.create_source(t, split)
        assert len(tfds_source) == len(frames_source)
        for i in range(len(frames_source)):
            for seed in rng_seeds:
                rng = None if seed is None else np.random.default_rng
                a = frames_source.get(i, None if rng is None else rng(seed))
                b = tfds_source.get(i, None if rng is None else rng(seed))
                assert set(a) == set(b)
                for key in a:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split} {i} {key}")
    record = tfds_source.records[1]
    assert record["num_frames"] == 30 and record["video"] == b"v2"
    # Stored bytes are the JPEG files themselves.
    with open(os.path.join(c.root, "v2", "00005.jpg"), "rb") as f:
        assert record["frames"][4] == f.read()
    # Several threads reading one data source (the loader's workers).
    batches = list(data_lib.make_loader(tfds_source, batch_size=2, shuffle=False, seed=0,
                                        num_epochs=1, num_workers=2))
    assert batches[0]["glance"].shape == (2, 8, 32, 32, 3)


def test_short_side_stride_and_skip(tmp_path):
    root = str(tmp_path / "frames")
    c = make_frame_dataset(root, "actnet", [("v_a", 20, [3, 4]), ("v_b", 12, [1]),
                                            ("v_gone", 12, [2])], split="val", h=48, w=64)
    make_frame_dataset(root, "actnet", [("v_a", 20, [3])])
    os.rename(os.path.join(root, "v_gone"), os.path.join(root, "v_moved"))
    c.tfds.short_side = 24
    c.tfds.frame_stride = 2
    with pytest.raises(DataError, match=r"actnet_val_split.txt:3: missing video directory"):
        tfds_builders.build(c, data_dir=str(tmp_path / "strict"), num_workers=1)
    c.on_error = "skip"
    tfds_builders.build(c, data_dir=str(tmp_path / "tfds"), num_workers=1)
    t = c.copy_and_resolve_references()
    t.format, t.tfds.data_dir = "tfds", str(tmp_path / "tfds")
    source = data_lib.create_source(t, "val")
    assert len(source) == 2  # v_gone skipped at build time (logged)
    record = source.records[0]
    assert record["num_frames"] == 10  # frames 1, 3, ..., 19
    np.testing.assert_array_equal(record["labels"], [3, 4, -1])
    image = Image.open(io.BytesIO(record["frames"][1]))
    assert image.size == (32, 24)  # shorter side 48 -> 24
    assert frame_ids(np.asarray(image)[None])[0] == 3
    ex = source.get(0, None)
    assert ex["glance"].shape == (16, 32, 32, 3) and "focus" not in ex


def test_webm_source_and_missing_dataset(tmp_path):
    root = str(tmp_path / "ssv2")
    for vid, n in (("11", 20), ("12", 16)):
        write_webm(os.path.join(root, "videos", f"{vid}.webm"), n)
    with open(os.path.join(root, "labels.json"), "w") as f:
        json.dump({"A": "0", "B": "1"}, f)
    for name in ("train.json", "validation.json"):
        with open(os.path.join(root, name), "w") as f:
            json.dump([{"id": "11", "template": "[A]"}, {"id": "12", "template": "B"}], f)
    c = data_lib.default_data_config("sthv2")
    c.update(dict(root=root, num_classes=2, input_size=32, scale_size=36))
    c.webm.video_dir = "videos"
    c.webm.resize_height = 0
    c.tfds.source_format = "webm"
    tfds_builders.build(c, data_dir=str(tmp_path / "tfds"), num_workers=1)
    c.format, c.tfds.data_dir = "tfds", str(tmp_path / "tfds")
    source = data_lib.create_source(c, "val")
    ex = source.get(0, None)
    np.testing.assert_array_equal(frame_ids(ex["glance"]), [2, 4, 7, 9, 12, 14, 17, 19])
    assert source.get(1, None)["label"] == 1
    c.tfds.data_dir = str(tmp_path / "nothing")
    with pytest.raises(DataError, match="not built"):
        data_lib.create_source(c, "val")


def test_builds_and_reads_without_tensorflow(tmp_path):
    """array_record needs no TensorFlow: run in a site-packages view without it."""
    import tensorflow_datasets
    site = os.path.dirname(os.path.dirname(tensorflow_datasets.__file__))
    view = tmp_path / "site"
    view.mkdir()
    for name in os.listdir(site):
        if name.startswith(("tensorflow", "tf_keras", "keras")) and not name.startswith(
                ("tensorflow_datasets", "tensorflow_metadata")):
            continue
        os.symlink(os.path.join(site, name), view / name)
    c = make_frame_dataset(str(tmp_path / "frames"), "minik", [("cls a/v1", 9, [4])],
                           split="val")
    make_frame_dataset(str(tmp_path / "frames"), "minik", [("cls a/v1", 9, [4])])
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(view)!r}, {REPO!r}, {os.path.join(REPO, "tests")!r}]
        import importlib.util
        assert importlib.util.find_spec("tensorflow") is None
        from adafocus_jax import data as data_lib
        from adafocus_jax.data import tfds_builders
        from test_data_util import small_config
        c = small_config("minik", {c.root!r})
        tfds_builders.build(c, data_dir={str(tmp_path / "tfds")!r}, num_workers=1)
        c.format, c.tfds.data_dir = "tfds", {str(tmp_path / "tfds")!r}
        ex = data_lib.create_source(c, "val").get(0, None)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("OK", ex["glance"].shape, int(ex["label"]))
    """)
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (16, 32, 32, 3) 4" in result.stdout


def test_build_tfds_command_line(tmp_path):
    c = _sth_dataset(str(tmp_path / "frames"))
    result = subprocess.run(
        [sys.executable, "-m", "adafocus_jax.tools.build_tfds", "--config=configs/sthv1.py",
         f"--config.data.root={c.root}", f"--data_dir={tmp_path / 'tfds'}", "--workers=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "adafocus_sthv1: train 2, validation 2 ->" in result.stdout
    assert os.path.isdir(tmp_path / "tfds" / "adafocus_sthv1" / "1.0.0")


def test_per_process_rows_partition_each_global_batch(tmp_path):
    """Sharding is the loader's: process p reads rows [p*b, (p+1)*b) of every global batch."""
    root = str(tmp_path / "frames")
    c = make_frame_dataset(root, "sthv2", [(f"v{i}", 10 + i, [i]) for i in range(6)], split="val")
    make_frame_dataset(root, "sthv2", [("v0", 10, [0])])
    tfds_builders.build(c, data_dir=str(tmp_path / "tfds"), num_workers=1)
    c.format, c.tfds.data_dir = "tfds", str(tmp_path / "tfds")
    source = data_lib.create_source(c, "val")
    per_process = [list(data_lib.make_loader(source, batch_size=4, shuffle=True, seed=3,
                                             num_epochs=1, drop_remainder=False,
                                             process_index=p, process_count=2))
                   for p in range(2)]
    single = list(data_lib.make_loader(source, batch_size=4, shuffle=True, seed=3, num_epochs=1,
                                       drop_remainder=False))
    for step, whole in enumerate(single):
        halves = [per_process[p][step] for p in range(2)]
        np.testing.assert_array_equal(np.concatenate([h["index"] for h in halves]),
                                      whole["index"])
        np.testing.assert_array_equal(np.concatenate([h["glance"] for h in halves]),
                                      whole["glance"])
    seen = sorted(int(i) for b in single for i, m in zip(b["index"], b["mask"]) if m)
    assert seen == list(range(6))
