"""Bad data: every case raises a DataError naming the file and line, or is skipped and counted."""
import logging
import os

import numpy as np
import pytest

from adafocus_jax import data as data_lib
from adafocus_jax.data.errors import DataError

from test_data_util import make_frame_dataset, write_list

# Val indices of a 20-frame Sth-Sth video: glance 2, 4, 7, ... and focus 1, 3, 5, ...


def _dataset(tmp_path, **overrides):
    videos = [("good", 20, [1]), ("corrupt", 20, [2]), ("holey", 20, [3]), ("gone", 20, [4])]
    c = make_frame_dataset(str(tmp_path), "sthv1", videos, split="val", **overrides)
    frame = os.path.join(c.root, "corrupt", "00002.jpg")
    with open(frame, "rb") as f:
        data = f.read()
    with open(frame, "wb") as f:
        f.write(data[:len(data) // 2])  # truncated JPEG
    os.remove(os.path.join(c.root, "holey", "00007.jpg"))
    os.rename(os.path.join(c.root, "gone"), os.path.join(c.root, "elsewhere"))
    return c


def test_each_bad_video_names_list_line_and_file(tmp_path):
    c = _dataset(tmp_path)
    source = data_lib.create_source(c, "val")
    list_path = os.path.join(c.root, c.val_list)
    source.get(0, None)
    with pytest.raises(DataError, match=rf"{list_path}:2: .*corrupt/00002.jpg: corrupt JPEG"):
        source.get(1, None)
    with pytest.raises(DataError, match=rf"{list_path}:3: missing file .*holey/00007.jpg"):
        source.get(2, None)
    with pytest.raises(DataError, match=rf"{list_path}:4: missing video directory .*gone"):
        source.get(3, None)
    # Under on_error="raise" (default) the loader propagates it.
    loader = data_lib.make_loader(source, batch_size=4, shuffle=False, seed=0, num_epochs=1)
    with pytest.raises(DataError, match="corrupt JPEG"):
        next(iter(loader))


def test_bad_list_rows_fail_when_the_list_is_read(tmp_path):
    c = make_frame_dataset(str(tmp_path), "sthv1", [("a", 20, [1])], split="val")
    list_path = os.path.join(c.root, c.val_list)
    write_list(list_path, ["a 20 1", "b twenty 1", "c 20 999"])
    with pytest.raises(DataError, match=rf"{list_path}:2: malformed row: num_frames 'twenty'"
                                        r".*\(and 1 more bad rows\)"):
        data_lib.create_source(c, "val")
    write_list(list_path, ["a 20 1", "c 20 174"])
    with pytest.raises(DataError, match=rf"{list_path}:2: malformed row: label 174 out of range"):
        data_lib.create_source(c, "val")


def test_empty_split_and_missing_list(tmp_path):
    c = make_frame_dataset(str(tmp_path), "sthv1", [("a", 20, [1])], split="val")
    list_path = os.path.join(c.root, c.val_list)
    write_list(list_path, ["a 2 1", ""])
    with pytest.raises(DataError, match=rf"{list_path}: the split is empty"):
        data_lib.create_source(c, "val")
    with pytest.raises(DataError, match="train_videofolder.txt: missing list file"):
        data_lib.create_source(c, "train")


def test_skip_mode_counts_and_reports_through_the_loader(tmp_path, caplog):
    c = _dataset(tmp_path, on_error="skip")
    list_path = os.path.join(c.root, c.val_list)
    with open(list_path, "a") as f:
        f.write("bad_row 20\n")       # malformed (no label)
        f.write("far 20 500\n")       # label out of range
    source = data_lib.create_source(c, "val")
    assert len(source) == 6
    loader = data_lib.make_loader(source, batch_size=3, shuffle=False, seed=0, num_epochs=2,
                                  on_error="skip", drop_remainder=False, num_workers=2)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.tolist() == [True, False, False, False, False, False] * 2
    # Skipped rows are zeros with their own index, never another video.
    skipped = batches[0]
    assert (skipped["glance"][1] == 0).all() and skipped["index"].tolist() == [0, 1, 2]
    assert skipped["labels"][1].tolist() == [-1, -1, -1]
    assert len(loader.skipped) == 10  # 5 bad rows x 2 epochs
    report = loader.skip_report(epoch=0)
    assert report.startswith("5 video(s) skipped") and "corrupt JPEG" in report
    assert "missing video directory" in " ".join(m for _, _, m in loader.skipped)
    assert f"{list_path}:6: malformed row: label 500 out of range" in " ".join(
        m for _, _, m in loader.skipped)
    assert "data epoch 0: 5 video(s) skipped" in caplog.text
