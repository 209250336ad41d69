"""tools/prepare_dataset on small generated videos in both layouts (class folders, CSV/JSON), with
the bad inputs a user's folder holds: a corrupt video, a corrupt frame, an empty class folder, a
stray file, a label only in validation, an unknown label, a duplicate path."""
import json
import os

import av  # the `video` extra
import numpy as np
import pytest
from PIL import Image

from adafocus_jax import data as data_lib
from adafocus_jax.tools import prepare_dataset

SIZE, FRAMES = 48, 6


def _pixels(seed: int, n: int = FRAMES) -> np.ndarray:
    """uint8 [n, SIZE, SIZE, 3]: a bright square that moves, on a dark background."""
    rng = np.random.default_rng(seed)
    out = np.full((n, SIZE, SIZE, 3), 20, np.uint8)
    y, x = rng.integers(0, SIZE - 16, size=2)
    for t in range(n):
        out[t, y:y + 16, (x + 2 * t) % (SIZE - 16):(x + 2 * t) % (SIZE - 16) + 16] = 230
    return out


def write_video(path, seed: int, n: int = FRAMES) -> None:
    """A small clip with PyAV: H.264 for .mp4, VP9 for .webm, MPEG-4 part 2 for .avi."""
    codec = {".mp4": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}[os.path.splitext(path)[1]]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for frame in _pixels(seed, n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder, seed: int, ext: str = ".jpg") -> None:
    os.makedirs(folder)
    for i, frame in enumerate(_pixels(seed), start=1):
        Image.fromarray(frame).save(os.path.join(folder, f"f{i:03d}{ext}"))


def _run(argv, capsys):
    rc = prepare_dataset.main(argv + ["--no_progress"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _rows(path):
    with open(path) as f:
        return [line.split(",") for line in f.read().splitlines()]


@pytest.fixture
def tree(tmp_path):
    """videos/<class>/: 3 classes of 4 good videos each (mp4, webm, avi, frame folders), plus bad
    entries: a corrupt mp4, a frame folder with a corrupt frame, an empty class, a stray file."""
    root = tmp_path / "videos"
    seed = 0
    for name in ("cat", "dog", "eel"):
        os.makedirs(root / name)
        for k, ext in enumerate((".mp4", ".webm", ".avi", "")):
            seed += 1
            if ext:
                write_video(root / name / f"clip{k}{ext}", seed)
            else:
                write_frames(root / name / f"clip{k}", seed, ".png" if name == "eel" else ".jpg")
    (root / "dog" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(600))
    write_frames(root / "eel" / "badframes", 99)
    (root / "eel" / "badframes" / "f003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    os.makedirs(root / "fox")                       # empty class folder
    (root / "README.txt").write_text("notes")       # not inside a class folder
    (root / "cat" / "labels.txt").write_text("x")   # neither video nor frame folder
    return root


def test_class_folder_tree(tree, tmp_path, capsys):
    out = tmp_path / "data"
    rc, stdout, stderr = _run([f"--input={tree}", f"--output={out}", "--val_fraction=0.25",
                               "--seed=3"], capsys)
    assert rc == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == 3 and (out / "classes.txt").read_text() == "cat\ndog\neel\n"
    # 4 good videos per class; round(0.25 * 4) = 1 of each in val.
    assert summary["videos"] == {"train": 9, "val": 3}
    assert summary["per_class"]["dog"] == {"train": 3, "val": 1}
    assert summary["frames"] == 12 * FRAMES
    reasons = {os.path.relpath(s["path"], tree): s["reason"] for s in summary["skipped"]}
    assert sorted(reasons) == ["README.txt", "cat/labels.txt", "dog/broken.mp4", "eel/badframes",
                               "fox"]
    assert any(m in reasons["dog/broken.mp4"] for m in ("decoding failed", "no frames"))
    assert "f003.jpg" in reasons["eel/badframes"] and "unreadable frame" in reasons["eel/badframes"]
    assert "empty class folder" in reasons["fox"]
    assert "not inside a class folder" in reasons["README.txt"]
    # Printed too, each naming its file; nothing silently lost (12 used + 5 skipped = 17 entries).
    assert "dog/broken.mp4" in stderr and "eel/badframes" in stderr and "fox" in stderr
    assert "9 train + 3 val videos, 3 classes" in stdout
    assert not any(p.endswith(".partial") for p in os.listdir(out / "frames" / "eel"))

    train, val = _rows(out / "train_list.txt"), _rows(out / "val_list.txt")
    assert len(train) == 9 and len(val) == 3
    assert {r[0] for r in train} & {r[0] for r in val} == set()
    for folder, n, label in train + val:
        assert int(n) == FRAMES
        assert folder.split("/")[0] == ["cat", "dog", "eel"][int(label)]
        assert len(os.listdir(out / "frames" / folder)) == FRAMES
    assert sorted(os.listdir(out / "frames" / "cat" / "clip3"))[0] == "image_00001.jpg"

    # The frame reader takes the written dataset as it is.
    c = data_lib.default_data_config("actnet")
    meta = json.loads((out / "dataset.json").read_text())
    c.update(dict(root=str(out / meta["frames_dir"]), list_dir=str(out),
                  train_list=meta["train_list"], val_list=meta["val_list"],
                  categories=meta["categories"], list_separator=meta["list_separator"],
                  frame_template=meta["frame_template"], num_classes=meta["num_classes"],
                  input_size=32, scale_size=32, num_glance_frames=4, num_focus_frames=4))
    source = data_lib.create_source(c, "val")
    example = source.get(0, None)
    assert example["glance"].shape == (4, 32, 32, 3)
    assert example["label"] == int(val[0][2])
    # The moving bright square survives decoding (not a blank or garbled frame).
    assert example["glance"].max() > 180 and example["glance"].min() < 60

    # Deterministic: the same seed gives the same split; another seed another one.
    again = tmp_path / "again"
    assert _run([f"--input={tree}", f"--output={again}", "--val_fraction=0.25", "--seed=3"],
                capsys)[0] == 0
    assert (again / "val_list.txt").read_text() == (out / "val_list.txt").read_text()
    splits = set()
    for seed in range(6):
        other = tmp_path / f"seed{seed}"
        _run([f"--input={tree}", f"--output={other}", "--val_fraction=0.25", f"--seed={seed}"],
             capsys)
        splits.add((other / "val_list.txt").read_text())
    assert len(splits) > 1


def test_csv_and_json_annotations(tmp_path, capsys):
    clips = tmp_path / "clips"
    os.makedirs(clips)
    for i in range(6):
        write_video(clips / f"v{i}.mp4", i)
    (clips / "bad.mp4").write_bytes(b"garbage")
    (tmp_path / "names.txt").write_text("run\njump\nswim\n")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,split\n"
                        "clips/v0.mp4,run,train\n"
                        "clips/v1.mp4,run,train\n"
                        "clips/v2.mp4,1,train\n"            # an index into --classes = jump
                        "clips/v3.mp4,jump,val\n"
                        "clips/v4.mp4,swim,val\n"           # swim: only in validation
                        "clips/v5.mp4,fly,train\n"          # not in --classes
                        "clips/v0.mp4,jump,train\n"         # duplicate path
                        "clips/bad.mp4,run,train\n"
                        "clips/missing.mp4,run,val\n")
    out = tmp_path / "data"
    rc, stdout, stderr = _run([f"--input={csv_path}", f"--output={out}",
                               f"--classes={tmp_path / 'names.txt'}"], capsys)
    assert rc == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == {"train": 3, "val": 1}
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    line = lambda n: f"{csv_path}:{n}"  # noqa: E731
    assert sorted(reasons) == sorted(line(n) for n in (6, 7, 8, 9, 10))
    assert "appears only in validation" in reasons[line(6)] and "swim" in reasons[line(6)]
    assert "unknown label 'fly'" in reasons[line(7)]
    assert "duplicate path" in reasons[line(8)] and line(2) in reasons[line(8)]
    assert "bad.mp4" in reasons[line(9)]
    assert "missing file" in reasons[line(10)]
    for n in (6, 7, 8, 9, 10):
        assert line(n) in stderr
    # Labels are indices of --classes (swim keeps its index 2 although it has no video).
    assert (out / "classes.txt").read_text() == "run\njump\nswim\n"
    assert sorted(r[2] for r in _rows(out / "train_list.txt")) == ["0", "0", "1"]
    assert _rows(out / "val_list.txt") == [["clips/v3", str(FRAMES), "1"]]

    # JSON {path: label} with a stratified split and classes from the data.
    json_path = tmp_path / "labels.json"
    json_path.write_text(json.dumps({f"clips/v{i}.mp4": ("a" if i < 3 else "b")
                                     for i in range(6)}))
    out2 = tmp_path / "data2"
    rc, _, stderr = _run([f"--input={json_path}", f"--output={out2}", "--val_fraction=0.34"],
                         capsys)
    assert rc == 0, stderr
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["per_class"] == {"a": {"train": 2, "val": 1}, "b": {"train": 2, "val": 1}}
    assert summary["skipped"] == []


def test_separate_val_tree_and_errors(tree, tmp_path, capsys):
    val = tmp_path / "val"
    os.makedirs(val / "cat")
    os.makedirs(val / "gnu")                   # a class absent from training
    write_video(val / "cat" / "x.mp4", 50)
    write_video(val / "gnu" / "y.mp4", 51)
    out = tmp_path / "data"
    rc, _, stderr = _run([f"--input={tree}", f"--val_input={val}", f"--output={out}"], capsys)
    assert rc == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == {"train": 12, "val": 1}
    gnu = [s for s in summary["skipped"] if s["path"].endswith("gnu/y.mp4")]
    assert len(gnu) == 1 and "appears only in validation" in gnu[0]["reason"]
    assert "gnu/y.mp4" in stderr

    # A malformed CSV row is an error naming the line; a folder without usable videos too.
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a.mp4,run\nonly_one_field\n")
    rc, _, stderr = _run([f"--input={bad_csv}", f"--output={tmp_path / 'o1'}"], capsys)
    assert rc == 1 and f"{bad_csv}:2" in stderr
    empty = tmp_path / "empty"
    os.makedirs(empty / "cls")
    rc, _, stderr = _run([f"--input={empty}", f"--output={tmp_path / 'o2'}"], capsys)
    assert rc == 1 and "no usable training video" in stderr and "empty class folder" in stderr
    rc, _, stderr = _run([f"--input={tmp_path / 'nope'}", f"--output={tmp_path / 'o3'}"], capsys)
    assert rc == 1 and "nope: no such folder" in stderr


def test_json_list_with_splits_and_a_class_lost_to_decoding(tmp_path, capsys):
    """The JSON list layout with a `split` field: a corrupt video, a label only in validation, and
    a class whose only training video is corrupt (its validation video then has no training
    class either, found after decoding): each listed with its reason, the counts add up."""
    clips = tmp_path / "clips"
    os.makedirs(clips)
    for i in range(5):
        write_video(clips / f"v{i}.mp4", 10 + i)
    (clips / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(400))
    entries = [{"path": "clips/v0.mp4", "label": "walk", "split": "train"},
               {"path": "clips/v1.mp4", "label": "walk", "split": "training"},
               {"path": "clips/v2.mp4", "label": "walk", "split": "val"},
               {"path": "clips/corrupt.mp4", "label": "hop", "split": "train"},
               {"path": "clips/v3.mp4", "label": "hop", "split": "validation"},
               {"path": "clips/v4.mp4", "label": "sit", "split": "val"}]
    json_path = tmp_path / "labels.json"
    json_path.write_text(json.dumps(entries))
    out = tmp_path / "data"
    rc, stdout, stderr = _run([f"--input={json_path}", f"--output={out}"], capsys)
    assert rc == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == {"train": 2, "val": 1} and summary["classes"] == 1
    assert (out / "classes.txt").read_text() == "walk\n"
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    entry = lambda n: f"{json_path}:entry {n}"  # noqa: E731
    assert sorted(reasons) == sorted(entry(n) for n in (4, 5, 6))
    assert "corrupt.mp4" in reasons[entry(4)]
    assert "'hop' appears only in validation" in reasons[entry(5)]
    assert "'sit' appears only in validation" in reasons[entry(6)]
    for n in (4, 5, 6):
        assert entry(n) in stderr
    assert len(entries) == 3 + len(reasons)            # every entry used or listed
    assert _rows(out / "val_list.txt") == [["clips/v2", str(FRAMES), "0"]]
    assert "2 train + 1 val videos, 1 classes" in stdout

    # A bad split value and a malformed entry are errors naming the entry.
    json_path.write_text(json.dumps([{"path": "clips/v0.mp4", "label": "walk", "split": "dev"}]))
    rc, _, stderr = _run([f"--input={json_path}", f"--output={tmp_path / 'o1'}"], capsys)
    assert rc == 1 and f"{entry(1)}" in stderr and "split 'dev'" in stderr
    json_path.write_text(json.dumps([{"file": "clips/v0.mp4"}]))
    rc, _, stderr = _run([f"--input={json_path}", f"--output={tmp_path / 'o2'}"], capsys)
    assert rc == 1 and f"{entry(1)}" in stderr


def test_cut_clips_makes_a_class_folder_prepare_dataset_takes(tmp_path, capsys):
    """One 20-frame video -> 3 clips of 6 frames (the partial rest dropped), frames in order."""
    source = tmp_path / "long.mp4"
    write_video(source, 7, n=20)
    paths = prepare_dataset.cut_clips(str(source), str(tmp_path / "videos" / "square"),
                                      num_frames=6, height=32)
    assert [os.path.basename(p) for p in paths] == ["long_000.mp4", "long_001.mp4",
                                                   "long_002.mp4"]
    with av.open(str(source)) as container:
        want = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    scaled = [np.asarray(Image.fromarray(w).resize((32, 32)), int) for w in want]
    for k, path in enumerate(paths):
        with av.open(path) as container:
            got = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(got) == 6 and got[0].shape == (32, 32, 3)
        for t in range(6):  # clip frame t is the source frame 6k + t (scaled; the square repeats
            # every 16 frames, so frame 6k + t + 16 may match as well)
            diffs = [np.abs(got[t].astype(int) - w).mean() for w in scaled]
            assert diffs[6 * k + t] < min(diffs) + 0.5 and diffs[6 * k + t] < 4, (k, t)
    assert len(prepare_dataset.cut_clips(str(source), str(tmp_path / "two"), num_frames=6,
                                         max_clips=2)) == 2
    rc, stdout, _ = _run([f"--input={tmp_path / 'videos'}", f"--output={tmp_path / 'data'}",
                          "--val_fraction=0.34"], capsys)
    assert rc == 0 and "2 train + 1 val videos, 1 classes, 18 frames" in stdout
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(prepare_dataset.DataError, match="bad.mp4"):
        prepare_dataset.cut_clips(str(tmp_path / "bad.mp4"), str(tmp_path / "o"), num_frames=2)
