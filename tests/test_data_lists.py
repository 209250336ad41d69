"""List files, class names, SSv2 JSONs and the ActivityNet v1.3 JSON."""
import json
import os

import pytest

from adafocus_jax.data import lists
from adafocus_jax.data.errors import DataError


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_space_comma_and_space_path_rows(tmp_path):
    sth = _write(tmp_path / "sth.txt", "1001 45 12\n1002 2 3\n\n1003 30 173\n")
    records = lists.read_list_file(sth, "space", num_classes=174)
    # The 2-frame row is dropped (official min 3 frames); the blank line is ignored.
    assert [(r.path, r.num_frames, r.labels) for r in records] == [
        ("1001", 45, (12,)), ("1003", 30, (173,))]
    assert records[1].origin == f"{sth}:4"

    anet = _write(tmp_path / "anet.txt", "sJFgo9H6zNo,4165,57\nyUSo,1800,191,191\nab,90,7,3,7\n")
    records = lists.read_list_file(anet, "comma", num_classes=200)
    # Labels repeated per segment are merged and sorted (the official VideoRecord).
    assert [r.labels for r in records] == [(57,), (191,), (3, 7)]

    minik = _write(tmp_path / "minik.txt",
                   "images/val/air drumming/7LSJ2Ryv1a8_000000_000010 60 0\n"
                   "images/val/playing  cards/x_1 300 199\n")
    records = lists.read_list_file(minik, "space_path", num_classes=200)
    assert records[0].path == "images/val/air drumming/7LSJ2Ryv1a8_000000_000010"
    assert records[1].path == "images/val/playing  cards/x_1" and records[1].labels == (199,)


@pytest.mark.parametrize("row, message", [
    ("1001 abc 3", "num_frames 'abc' is not an integer"),
    ("1001 45", "expected '<path> <num_frames> <label>'"),
    ("1001 45 174", r"label 174 out of range \[0, 174\)"),
    ("1001 45 -1", "label -1 out of range"),
    ("1001 45 x", "label 'x' is not an integer"),
    ("1001 45 1 2 3 4", "4 distinct labels"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = _write(tmp_path / "l.txt", f"1000 10 1\n{row}\n")
    with pytest.raises(DataError, match=f"l.txt:2: malformed row: {message}"):
        lists.read_list_file(path, "space", num_classes=174)
    # Under on_error="skip" the row stays, poisoned: reading it raises the same error.
    records = lists.read_list_file(path, "space", num_classes=174, on_error="skip")
    assert len(records) == 2 and records[0].error is None
    with pytest.raises(DataError, match=f"l.txt:2: malformed row: {message}"):
        records[1].check()


def test_missing_and_empty_lists(tmp_path):
    with pytest.raises(DataError, match="nope.txt: missing list file"):
        lists.read_list_file(str(tmp_path / "nope.txt"), "space", num_classes=5)
    path = _write(tmp_path / "short.txt", "a 1 0\nb 2 0\n")
    with pytest.raises(DataError, match=r"short.txt: the split is empty.*2 dropped"):
        lists.read_list_file(path, "space", num_classes=5)


def test_format_row_round_trips(tmp_path):
    rows = [lists.format_row("v_a", 12, [3, 9], "comma"),
            lists.format_row("class a/b c", 40, [2], "space_path")]
    assert rows[0] == "v_a,12,3,9"
    a = lists.read_list_file(_write(tmp_path / "a.txt", rows[0] + "\n"), "comma", num_classes=10)
    b = lists.read_list_file(_write(tmp_path / "b.txt", rows[1] + "\n"), "space_path",
                             num_classes=10)
    assert (a[0].path, a[0].num_frames, a[0].labels) == ("v_a", 12, (3, 9))
    assert (b[0].path, b[0].labels) == ("class a/b c", (2,))
    with pytest.raises(ValueError, match="contains spaces"):
        lists.format_row("a b", 3, [1], "space")


def test_class_name_files(tmp_path):
    assert lists.read_class_names(_write(tmp_path / "c.txt", "Holding\nPutting x\n")) == [
        "Holding", "Putting x"]
    assert lists.read_class_names(_write(tmp_path / "i.txt", "1 ApplyEyeMakeup\n2 Archery\n")) == [
        "ApplyEyeMakeup", "Archery"]
    # Numbers that are not a consecutive index stay part of the name.
    assert lists.read_class_names(_write(tmp_path / "n.txt", "3 dogs\n7 cats\n")) == [
        "3 dogs", "7 cats"]
    with pytest.raises(DataError, match=r"c.txt: 2 class names, but config.data.num_classes is 3"):
        lists.check_class_count(str(tmp_path / "c.txt"), 3)
    assert lists.check_class_count(str(tmp_path / "missing.txt"), 3) is None


def test_ssv2_jsons(tmp_path):
    labels = _write(tmp_path / "labels.json", json.dumps(
        {"Holding something next to something": "1", "Approaching something": "0"}))
    classes = lists.read_ssv2_labels(labels)
    train = _write(tmp_path / "train.json", json.dumps([
        {"id": "78687", "label": "x", "template": "Holding [something] next to [something]",
         "placeholders": ["a", "b"]},
        {"id": "42", "template": "Approaching [something]"}]))
    records = lists.read_ssv2_split(train, classes, num_classes=2)
    assert [(r.path, r.labels) for r in records] == [("78687", (1,)), ("42", (0,))]
    test = _write(tmp_path / "test.json", json.dumps([{"id": "5"}]))
    assert lists.read_ssv2_split(test, None, num_classes=2)[0].labels == ()
    bad = _write(tmp_path / "bad.json", json.dumps([{"id": "1", "template": "Unknown [x]"}]))
    with pytest.raises(DataError, match="bad.json:entry 1: bad entry: template 'Unknown x'"):
        lists.read_ssv2_split(bad, classes, num_classes=2)
    broken = _write(tmp_path / "broken.json", '[{"id": "1",\n  oops}]')
    with pytest.raises(DataError, match="broken.json:2: invalid JSON"):
        lists.read_ssv2_split(broken, classes, num_classes=2)
    gap = _write(tmp_path / "gap.json", json.dumps({"a": "0", "b": "2"}))
    with pytest.raises(DataError, match="not 0..1 exactly once"):
        lists.read_ssv2_labels(gap)


def test_activitynet_json(tmp_path):
    data = {
        "version": "VERSION 1.3",
        "taxonomy": [
            {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
            {"nodeId": 1, "nodeName": "Sports", "parentId": 0, "parentName": "Root"},
            {"nodeId": 2, "nodeName": "Surfing", "parentId": 1, "parentName": "Sports"},
            {"nodeId": 3, "nodeName": "Archery", "parentId": 1, "parentName": "Sports"},
        ],
        "database": {
            "vidA": {"subset": "training", "duration": 10.0, "resolution": "640x360",
                     "annotations": [{"segment": [0, 3], "label": "Surfing"},
                                     {"segment": [5, 8], "label": "Surfing"}]},
            "vidB": {"subset": "validation", "annotations": [{"segment": [1, 2],
                                                              "label": "Archery"}]},
            "vidC": {"subset": "training", "annotations": [{"segment": [1, 2],
                                                            "label": "Archery"}]},
            "vidD": {"subset": "training", "annotations": []},
        },
    }
    path = _write(tmp_path / "anet.json", json.dumps(data))
    counts = {"vidA": 120, "vidB": 50, "vidD": 2}
    records = lists.activitynet_records(path, "train", class_names=None,
                                        count_frames=counts.get, num_classes=2, on_error="skip")
    # Classes are the sorted taxonomy leaves: Archery 0, Surfing 1. vidC has no frames (bad row),
    # vidD is too short (dropped).
    assert [(r.path, r.num_frames, r.labels) for r in records[:1]] == [("vidA", 120, (1,))]
    assert records[1].path == "vidC" and "missing video directory" in records[1].error
    with pytest.raises(DataError, match=r"anet.json:database\['vidC'\]: missing video directory"):
        lists.activitynet_records(path, "train", class_names=None, count_frames=counts.get,
                                  num_classes=2)
    val = lists.activitynet_records(path, "val", class_names=["Surfing", "Archery"],
                                    count_frames=counts.get, num_classes=2)
    assert [(r.path, r.labels) for r in val] == [("vidB", (1,))]
    assert os.path.exists(path)
