"""Frame-folder reader: official indices on synthetic folders, decode-only-sampled, loader batches."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from adafocus_jax import data as data_lib
from adafocus_jax.data import frames as frames_lib
from adafocus_jax.data import transforms

from test_data_util import frame_ids, make_frame_dataset, write_frames, write_list

# n = 20: glance T = 8 centres (tick 2.5) and focus T = 12 centres (tick 5/3), 1-based.
GLANCE_20 = [2, 4, 7, 9, 12, 14, 17, 19]
FOCUS_20 = [1, 3, 5, 6, 8, 10, 11, 13, 15, 16, 18, 20]


def test_sth_eval_example_hand_computed(tmp_path):
    c = make_frame_dataset(str(tmp_path), "sthv1", [("100", 20, [5]), ("101", 5, [173])],
                           split="val")
    source = data_lib.create_source(c, "val")
    assert len(source) == 2
    ex = source.get(0, None)
    assert set(ex) == {"glance", "focus", "label", "labels", "index"}
    assert ex["glance"].shape == (8, 32, 32, 3) and ex["glance"].dtype == np.uint8
    assert ex["focus"].shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(frame_ids(ex["glance"]), GLANCE_20)
    np.testing.assert_array_equal(frame_ids(ex["focus"]), FOCUS_20)
    assert ex["label"] == 5 and ex["label"].dtype == np.int32
    np.testing.assert_array_equal(ex["labels"], [5, -1, -1])
    assert ex["index"] == 0 and ex["index"].dtype == np.int64
    # A 5-frame Sth-Sth video reads frame 1 for every segment.
    short = source.get(1, None)
    np.testing.assert_array_equal(frame_ids(short["glance"]), [1] * 8)
    # Pixels: GroupScale(36) + centre crop 32 of the JPEG frame.
    jpeg = Image.open(os.path.join(c.root, "100", "00002.jpg")).convert("RGB")
    expected = np.asarray(jpeg.resize((48, 36), Image.BILINEAR).crop((8, 2, 40, 34)))
    np.testing.assert_array_equal(ex["glance"][0], expected)


def test_only_sampled_frames_are_read(tmp_path, monkeypatch):
    c = make_frame_dataset(str(tmp_path), "sthv2", [("a", 20, [1])], split="val")
    # Remove every frame the eval lists do not need: reading still works.
    needed = set(GLANCE_20) | set(FOCUS_20)
    for i in range(1, 21):
        if i not in needed:
            os.remove(os.path.join(c.root, "a", c.frame_template.format(i)))
    decoded = []
    real = frames_lib.decode_jpeg
    monkeypatch.setattr(frames_lib, "decode_jpeg",
                        lambda data, origin: decoded.append(origin) or real(data, origin))
    ex = data_lib.create_source(c, "val").get(0, None)
    assert len(decoded) == len(needed) == len(set(decoded))  # each distinct frame once
    np.testing.assert_array_equal(frame_ids(ex["focus"]), FOCUS_20)


def test_sth_train_glance_and_focus_are_independent(tmp_path):
    c = make_frame_dataset(str(tmp_path), "sthv1", [("v", 40, [3])])
    source = data_lib.create_source(c, "train")
    folder = os.path.join(c.root, "v")
    for seed in range(3):
        ex = source.get(0, np.random.default_rng(seed))
        # The official order of draws: glance indices, focus indices, glance crop, focus crop.
        rng = np.random.default_rng(seed)
        g = transforms.segment_indices(40, 8, rng)
        f = transforms.segment_indices(40, 12, rng)
        load = lambda idx: [Image.open(os.path.join(folder, f"{i:05d}.jpg")).convert("RGB")
                            for i in idx]
        np.testing.assert_array_equal(ex["glance"], transforms.train_transform(load(g), rng,
                                                                               input_size=32))
        np.testing.assert_array_equal(ex["focus"], transforms.train_transform(load(f), rng,
                                                                              input_size=32))
        np.testing.assert_array_equal(frame_ids(ex["glance"]), g)
        np.testing.assert_array_equal(frame_ids(ex["focus"]), f)
    # Same rng seed -> same example (what the loader's resumability relies on).
    a = source.get(0, np.random.default_rng(7))
    b = source.get(0, np.random.default_rng(7))
    np.testing.assert_array_equal(a["glance"], b["glance"])


def test_anet_family_one_list_glance_only(tmp_path):
    c = make_frame_dataset(str(tmp_path), "fcvid", [("v_x", 40, [3, 9]), ("v_y", 10, [2])],
                           split="val")
    source = data_lib.create_source(c, "val")
    ex = source.get(0, None)
    assert "focus" not in ex and ex["glance"].shape == (16, 32, 32, 3)
    # n = 40, T = 16: tick 2.5 -> int(1.25 + 2.5 k) + 1.
    np.testing.assert_array_equal(frame_ids(ex["glance"]),
                                  [int(1.25 + 2.5 * k) + 1 for k in range(16)])
    np.testing.assert_array_equal(ex["labels"], [3, 9, -1])
    # Short ANet video: 1..n then the last frame repeated.
    np.testing.assert_array_equal(frame_ids(source.get(1, None)["glance"]),
                                  list(range(1, 11)) + [10] * 6)


def test_minik_paths_with_spaces_and_activitynet_json(tmp_path):
    c = make_frame_dataset(str(tmp_path), "minik", [("images/val/air drumming/abc_1", 30, [7])],
                           split="val")
    assert data_lib.create_source(c, "val").get(0, None)["label"] == 7

    root = str(tmp_path / "anet")
    write_frames(os.path.join(root, "vidA"), 20, "image_{:05d}.jpg")
    write_frames(os.path.join(root, "v_vidB"), 12, "image_{:05d}.jpg")
    database = {"vidA": {"subset": "validation", "annotations": [{"label": "B"}]},
                "vidB": {"subset": "validation", "annotations": [{"label": "A"},
                                                                 {"label": "B"}]}}
    with open(os.path.join(root, "anet.json"), "w") as f:
        json.dump({"database": database}, f)
    write_list(os.path.join(root, "classes.txt"), ["A", "B"])
    c = data_lib.default_data_config("actnet")
    c.update(dict(root=root, val_list="anet.json", categories="classes.txt", num_classes=2,
                  input_size=32, scale_size=36))
    source = data_lib.create_source(c, "val")
    assert [(r.path, r.num_frames, r.labels) for r in source.records] == [
        ("vidA", 20, (1,)), ("vidB", 12, (0, 1))]
    assert frame_ids(source.get(1, None)["glance"])[-1] == 12  # read from v_vidB/


def test_multi_clip_multi_crop_eval(tmp_path):
    c = make_frame_dataset(str(tmp_path), "sthv1", [("v", 40, [0])], split="val",
                           eval_num_clips=2, eval_num_crops=3)
    ex = data_lib.create_source(c, "val").get(0, None)
    assert ex["glance"].shape == (6, 8, 32, 32, 3) and ex["focus"].shape == (6, 12, 32, 32, 3)
    ids = frame_ids(ex["glance"])
    np.testing.assert_array_equal(ids[0], transforms.segment_indices(40, 8, clip_index=0,
                                                                     num_clips=2))
    np.testing.assert_array_equal(ids[3], transforms.segment_indices(40, 8, clip_index=1,
                                                                     num_clips=2))
    np.testing.assert_array_equal(ids[0], ids[2])  # crops of one clip share frames


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches(tmp_path, num_workers):
    c = make_frame_dataset(str(tmp_path), "sthv2", [(f"v{i}", 15 + i, [i]) for i in range(5)])
    source = data_lib.create_source(c, "train")
    loader = data_lib.make_loader(source, batch_size=2, shuffle=True, seed=1, num_epochs=1,
                                  num_workers=num_workers, drop_remainder=False)
    batches = list(loader)
    assert len(batches) == loader.steps_per_epoch == 3
    assert batches[0]["glance"].shape == (2, 8, 32, 32, 3)
    assert batches[0]["focus"].shape == (2, 12, 32, 32, 3)
    assert batches[-1]["mask"].tolist() == [True, False]  # padded last batch
    labels = sorted(int(l) for b in batches for l, m in zip(b["label"], b["mask"]) if m)
    assert labels == [0, 1, 2, 3, 4]
    if num_workers:  # identical to single-threaded reading
        serial = list(data_lib.make_loader(source, batch_size=2, shuffle=True, seed=1,
                                           num_epochs=1, drop_remainder=False))
        for a, b in zip(batches, serial):
            np.testing.assert_array_equal(a["focus"], b["focus"])


def test_decode_tunes_glibc_malloc_unless_the_environment_says_otherwise():
    """Importing the decoder raises glibc's mmap/trim thresholds (fewer page faults per clip),
    but an explicit MALLOC_*_ setting in the environment wins."""
    import subprocess
    import sys
    probe = "from adafocus_jax.data import decode; print(decode.MALLOC_TUNED)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    tuned = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    env["MALLOC_TRIM_THRESHOLD_"] = "131072"
    untouched = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
    glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
    assert tuned == str(glibc)
    assert untouched == "False"


def test_crop_scales_limit_the_training_crop():
    """`data.crop_scales=(1.0,)`: every training crop is the whole frame, resized, i.e. exactly
    the evaluation view with scale_size = input_size; the official scales crop inside it."""
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
              for _ in range(3)]
    c = data_lib.default_data_config("actnet")
    c.update(dict(input_size=32, scale_size=32, flip=False, num_glance_frames=3))
    assert tuple(c.crop_scales) == transforms.OFFICIAL_CROP_SCALES
    load = lambda indices: [frames[i - 1] for i in indices]  # noqa: E731
    evaluation = frames_lib.ExampleMaker(c)(3, [0], load, None, 0)["glance"]
    official = [frames_lib.ExampleMaker(c)(3, [0], load, np.random.default_rng(s), 0)["glance"]
                for s in range(8)]
    assert sum(np.array_equal(x, evaluation) for x in official) < 8
    c.crop_scales = (1.0,)
    whole = [frames_lib.ExampleMaker(c)(3, [0], load, np.random.default_rng(s), 0)["glance"]
             for s in range(8)]
    assert all(np.array_equal(x, evaluation) for x in whole)
    c.crop_scales = (1.5,)
    with pytest.raises(ValueError, match="crop_scales"):
        frames_lib.ExampleMaker(c)


def test_translate_shifts_the_training_clip_only():
    """`data.translate=k`: the training example is the official one shifted by
    `transforms.random_translate` (drawn after the crop); evaluation is untouched."""
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
              for _ in range(3)]
    c = data_lib.default_data_config("actnet")
    c.update(dict(input_size=32, scale_size=32, flip=False, num_glance_frames=3))
    assert c.translate == 0
    load = lambda indices: [frames[i - 1] for i in indices]  # noqa: E731
    official = [frames_lib.ExampleMaker(c)(3, [0], load, np.random.default_rng(s), 0)["glance"]
                for s in range(6)]
    evaluation = frames_lib.ExampleMaker(c)(3, [0], load, None, 0)["glance"]
    c.translate = 3
    maker = frames_lib.ExampleMaker(c)
    for s in range(6):
        rng = np.random.default_rng(s)
        maker.frame_lists(3, rng)                    # the same draws as the example's
        transforms.train_transform(load([1, 2, 3]), rng, input_size=32)
        want = transforms.random_translate(official[s], 3, rng)
        np.testing.assert_array_equal(maker(3, [0], load, np.random.default_rng(s), 0)["glance"],
                                      want)
    np.testing.assert_array_equal(maker(3, [0], load, None, 0)["glance"], evaluation)
    c.translate = 32
    with pytest.raises(ValueError, match=r"translate must be in \[0, input_size\)"):
        frames_lib.ExampleMaker(c)
