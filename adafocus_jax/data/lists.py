"""List files, class-name files and label JSONs of the video datasets AdaFocus trains on.

Everything that turns a user's annotation files into `VideoRecord`s lives here, so the frame,
webm and TFDS readers share one set of rules and one set of error messages.

Formats (data_formats.md §2, adafocus_v1.md §7.1):

| separator | row | datasets |
|---|---|---|
| `space` | `<folder> <num_frames> <label> [<label> ...]` | Sth-Sth v1/v2 (TSM lists) |
| `comma` | `<folder>,<num_frames>,<label>[,<label>...]` | ActivityNet, FCVID (AR-Net lists; multi-label) |
| `space_path` | `<folder with spaces> <num_frames> <label>` | Mini-Kinetics (the last two fields are n and label) |

Labels are 0-based class indices. A row's labels are made distinct and sorted (what the official
`VideoRecord` does), at most `max_labels` of them. Rows with fewer than `min_frames` frames are
dropped, as the official code does for every split. Blank lines are ignored.

Bad rows (unparsable fields, a label out of range, too many labels) never pass silently: with
`on_error="raise"` the first one raises `DataError("<list file>:<line>", ...)` when the list is
read; with `on_error="skip"` the row is kept as a poisoned record whose `get` raises that same
error, so the loader logs, counts and reports it every epoch instead of the row vanishing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Callable, Iterable, Sequence

from adafocus_jax.data.errors import DataError

SEPARATORS = ("space", "comma", "space_path")


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One row of a split.

    Attributes:
      path: the video's folder relative to the frames root (or the SSv2 video id).
      num_frames: frames of the video as listed (0 = unknown until decoded, SSv2 webm).
      labels: distinct 0-based labels, sorted ascending (empty for unlabelled test rows).
      origin: where the row comes from, "<file>:<line>" (1-based line), used in every error.
      error: set for a bad row kept under `on_error="skip"`; reading it raises DataError.
    """
    path: str
    num_frames: int
    labels: tuple[int, ...]
    origin: str
    error: str | None = None

    def check(self) -> None:
        """Raises the row's DataError if it is a poisoned (bad) row."""
        if self.error is not None:
            raise DataError(self.origin, self.error)


@dataclasses.dataclass
class ListSummary:
    """What reading a split kept and dropped (for the log line and the empty-split error)."""
    lines: int = 0
    kept: int = 0
    short: int = 0          # dropped: fewer than min_frames frames (official behaviour)
    bad: int = 0            # malformed rows (kept as poisoned records under on_error="skip")

    def __str__(self) -> str:
        return (f"{self.lines} rows: {self.kept} kept, {self.short} dropped with too few frames, "
                f"{self.bad} malformed")


def _add_bad(records: list[VideoRecord], summary: ListSummary, name: str, origin: str,
             error: str) -> None:
    """Counts a malformed row and keeps it as a poisoned record (`VideoRecord.error`)."""
    summary.bad += 1
    records.append(VideoRecord(name, 0, (), origin, error=error))


def _add(records: list[VideoRecord], summary: ListSummary, record: VideoRecord,
         min_frames: int = 0) -> None:
    """Keeps a good row, or counts it as dropped when it has fewer than `min_frames` frames."""
    if record.num_frames < min_frames:
        summary.short += 1
        return
    summary.kept += 1
    records.append(record)


def _split_row(line: str, separator: str) -> tuple[str, str, list[str]]:
    """(path, num_frames text, label texts) of one stripped, non-empty row; ValueError if short."""
    if separator == "comma":
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3:
            raise ValueError(f"expected '<path>,<num_frames>,<label>[,<label>...]', got {line!r}")
        return fields[0], fields[1], fields[2:]
    if separator == "space":
        fields = line.split()
        if len(fields) < 3:
            raise ValueError(f"expected '<path> <num_frames> <label>', got {line!r}")
        return fields[0], fields[1], fields[2:]
    if separator == "space_path":
        # Mini-Kinetics paths contain spaces ("images/val/air drumming/<id>"): only the last two
        # whitespace-separated fields are numbers.
        fields = line.rsplit(None, 2)
        if len(fields) < 3:
            raise ValueError(f"expected '<path with spaces> <num_frames> <label>', got {line!r}")
        return fields[0], fields[1], [fields[2]]
    raise ValueError(f"list separator must be one of {SEPARATORS}, got {separator!r}")


def parse_row(line: str, separator: str, *, num_classes: int,
              max_labels: int) -> tuple[str, int, tuple[int, ...]]:
    """One list row -> (path, num_frames, sorted distinct labels); ValueError says what is wrong."""
    path, frames_text, label_texts = _split_row(line, separator)
    if not path:
        raise ValueError(f"empty video path in {line!r}")
    try:
        num_frames = int(frames_text)
    except ValueError:
        raise ValueError(f"num_frames {frames_text!r} is not an integer") from None
    if num_frames < 0:
        raise ValueError(f"num_frames {num_frames} is negative")
    labels = []
    for text in label_texts:
        try:
            labels.append(int(text))
        except ValueError:
            raise ValueError(f"label {text!r} is not an integer") from None
    return path, num_frames, check_labels(labels, num_classes=num_classes, max_labels=max_labels)


def check_labels(labels: Iterable[int], *, num_classes: int, max_labels: int) -> tuple[int, ...]:
    """Distinct sorted labels; ValueError for a label outside [0, num_classes) or too many."""
    distinct = sorted(set(int(x) for x in labels))
    for label in distinct:
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} out of range [0, {num_classes})")
    if len(distinct) > max_labels:
        raise ValueError(f"{len(distinct)} distinct labels {distinct}, at most {max_labels} "
                         f"are supported (config.data.max_labels)")
    return tuple(distinct)


def _finish(records: list[VideoRecord], summary: ListSummary, origin: str,
            on_error: str) -> list[VideoRecord]:
    """Shared end of every split reader: raise on bad rows or an empty split, log the summary."""
    bad = [r for r in records if r.error is not None]
    if bad and on_error == "raise":
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise DataError(bad[0].origin, bad[0].error + more)
    if not records:
        raise DataError(origin, f"the split is empty: no usable video ({summary})")
    if bad:
        logging.warning("%s: %d malformed rows will be skipped when read (on_error=skip); first: "
                        "%s: %s", origin, len(bad), bad[0].origin, bad[0].error)
    logging.info("%s: %s", origin, summary)
    return records


def read_list_file(path: str, separator: str, *, num_classes: int, max_labels: int = 3,
                   min_frames: int = 3, on_error: str = "raise") -> list[VideoRecord]:
    """A TSM/AR-Net list file -> `VideoRecord`s in file order (see the module docstring)."""
    if separator not in SEPARATORS:
        raise ValueError(f"list separator must be one of {SEPARATORS}, got {separator!r}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(path, "missing list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read list file ({e})") from None
    summary = ListSummary()
    records = []
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        summary.lines += 1
        origin = f"{path}:{line_no}"
        try:
            video, num_frames, labels = parse_row(line, separator, num_classes=num_classes,
                                                  max_labels=max_labels)
        except ValueError as e:
            _add_bad(records, summary, line, origin, f"malformed row: {e}")
            continue
        _add(records, summary, VideoRecord(video, num_frames, labels, origin), min_frames)
    return _finish(records, summary, path, on_error)


def format_row(path: str, num_frames: int, labels: Sequence[int], separator: str) -> str:
    """The list row `read_list_file` parses back to (path, num_frames, labels)."""
    if separator == "comma":
        if "," in path:
            raise ValueError(f"a comma-separated list cannot hold the path {path!r}")
        return ",".join([path, str(num_frames)] + [str(x) for x in labels])
    if separator == "space" and any(c.isspace() for c in path):
        raise ValueError(f"path {path!r} contains spaces; use the space_path separator")
    if separator == "space_path" and len(labels) != 1:
        raise ValueError("space_path rows hold exactly one label")
    if separator not in SEPARATORS:
        raise ValueError(f"list separator must be one of {SEPARATORS}, got {separator!r}")
    return " ".join([path, str(num_frames)] + [str(x) for x in labels])


# --------------------------------------------------------------------------------------------
# Class names.

_INDEXED_NAME = re.compile(r"^(\d+)[\s,]+(\S.*)$")


def read_class_names(path: str) -> list[str]:
    """Class names in index order from `category.txt` / `classInd.txt` / `minik_classInd.txt`.

    One name per line; names may contain spaces. A file whose every line starts with a
    consecutive index (`1 ApplyEyeMakeup`, `0,abseiling`; from 0 or 1) has the index stripped.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f.read().splitlines()]
    except FileNotFoundError:
        raise DataError(path, "missing class-name file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read class-name file ({e})") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(path, "empty class-name file")
    matches = [_INDEXED_NAME.match(ln) for ln in lines]
    if all(matches):
        indices = [int(m.group(1)) for m in matches]
        if indices in (list(range(len(lines))), list(range(1, len(lines) + 1))):
            return [m.group(2).strip() for m in matches]
    return lines


def check_class_count(path: str, num_classes: int) -> list[str] | None:
    """Names from `path` if it exists (None if not); DataError if their count != num_classes."""
    if not path or not os.path.exists(path):
        return None
    names = read_class_names(path)
    if len(names) != num_classes:
        raise DataError(path, f"{len(names)} class names, but config.data.num_classes is "
                              f"{num_classes}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(path, f"duplicate class names {dup[:5]}")
    return names


# --------------------------------------------------------------------------------------------
# Something-Something v2 (official release JSONs).


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(path, "missing JSON file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}", f"invalid JSON ({e.msg}, column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read JSON file ({e})") from None


def read_ssv2_labels(path: str) -> dict[str, int]:
    """`labels.json` (`{"Approaching something with your camera": "0", ...}`) -> name -> index.

    The indices must be 0..N-1 exactly once each (TSM asserts the same).
    """
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError(path, "expected a non-empty object {template: index}")
    out = {}
    for name, value in data.items():
        try:
            out[name] = int(value)
        except (TypeError, ValueError):
            raise DataError(path, f"class {name!r} has a non-integer index {value!r}") from None
    if sorted(out.values()) != list(range(len(out))):
        raise DataError(path, f"class indices are not 0..{len(out) - 1} exactly once each")
    return out


def ssv2_template_name(template: str) -> str:
    """The labels.json key of a train/validation entry's template: brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_ssv2_split(path: str, classes: dict[str, int] | None, *, num_classes: int,
                    on_error: str = "raise") -> list[VideoRecord]:
    """`train.json` / `validation.json` / `test.json` -> records with `path` = video id.

    Entries are `{"id": "78687", "template": "Holding [something] next to [something]", ...}`;
    test entries have only an id and get no labels. `num_frames` is 0 (known only on decode).
    The "line" in an origin is the entry's position in the list (1-based).
    """
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(path, "expected a list of {\"id\": ..., \"template\": ...} entries")
    summary = ListSummary()
    records = []
    for position, entry in enumerate(data, start=1):
        summary.lines += 1
        origin = f"{path}:entry {position}"
        try:
            if not isinstance(entry, dict) or "id" not in entry:
                raise ValueError(f"entry without an 'id': {str(entry)[:80]}")
            video_id = str(entry["id"]).strip()
            if not video_id or "/" in video_id or video_id in (".", ".."):
                raise ValueError(f"invalid video id {entry['id']!r}")
            labels: tuple[int, ...] = ()
            if "template" in entry:
                if classes is None:
                    raise ValueError("entry has a template but no labels.json was given")
                name = ssv2_template_name(str(entry["template"]))
                if name not in classes:
                    raise ValueError(f"template {name!r} is not in labels.json")
                labels = check_labels([classes[name]], num_classes=num_classes, max_labels=1)
        except ValueError as e:
            _add_bad(records, summary, str(entry)[:80], origin, f"bad entry: {e}")
            continue
        _add(records, summary, VideoRecord(video_id, 0, labels, origin))
    return _finish(records, summary, path, on_error)


# --------------------------------------------------------------------------------------------
# ActivityNet v1.3 (`activity_net.v1-3.min.json`).

ACTIVITYNET_SUBSETS = {"train": "training", "val": "validation", "test": "testing"}


def activitynet_classes(data: dict, origin: str) -> list[str]:
    """The leaf nodes of the v1.3 `taxonomy` (the 200 classes), sorted by name.

    Sorted, so the index does not depend on the JSON's node order; give a classInd file to use
    another order (AR-Net/AdaFocus lists use their own classInd.txt).
    """
    taxonomy = data.get("taxonomy")
    if not isinstance(taxonomy, list) or not taxonomy:
        raise DataError(origin, "no 'taxonomy' list to take the class names from; give a "
                                "class-name file instead")
    try:
        parents = {node["parentName"] for node in taxonomy}
        leaves = {node["nodeName"] for node in taxonomy} - parents
    except (TypeError, KeyError) as e:
        raise DataError(origin, f"malformed taxonomy node ({e!r})") from None
    return sorted(leaves)


def activitynet_records(json_path: str, split: str, *, class_names: Sequence[str] | None,
                        count_frames: Callable[[str], int | None], num_classes: int,
                        max_labels: int = 3, min_frames: int = 3,
                        on_error: str = "raise") -> list[VideoRecord]:
    """Records of one split of the ActivityNet v1.3 JSON, in `database` order.

    Args:
      json_path: `activity_net.v1-3.min.json` (keys `taxonomy`, `database`).
      split: "train" | "val" | "test" (subsets "training" | "validation" | "testing").
      class_names: class index order (a classInd file); None = sorted taxonomy leaves.
      count_frames: video id -> number of extracted frames (None if its folder is missing).
      num_classes, max_labels, min_frames, on_error: as for `read_list_file`.

    Each annotated segment contributes its label (AR-Net rows repeat a label per segment; they
    are made distinct here). A video without extracted frames becomes a bad row.
    """
    if split not in ACTIVITYNET_SUBSETS:
        raise ValueError(f"split must be one of {sorted(ACTIVITYNET_SUBSETS)}, got {split!r}")
    data = _load_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(json_path, "expected an object with a 'database' object")
    names = list(class_names) if class_names is not None else activitynet_classes(data, json_path)
    index = {name: i for i, name in enumerate(names)}
    subset = ACTIVITYNET_SUBSETS[split]
    summary = ListSummary()
    records = []
    for video_id, entry in data["database"].items():
        if not isinstance(entry, dict) or entry.get("subset") != subset:
            continue
        summary.lines += 1
        origin = f"{json_path}:database[{video_id!r}]"
        try:
            labels = []
            for annotation in entry.get("annotations", []):
                name = annotation.get("label") if isinstance(annotation, dict) else None
                if name not in index:
                    raise ValueError(f"annotation label {name!r} is not a known class")
                labels.append(index[name])
            labels = check_labels(labels, num_classes=num_classes, max_labels=max_labels)
            num_frames = count_frames(video_id)
            if num_frames is None:
                raise ValueError("missing video directory (frames not extracted)")
        except ValueError as e:
            _add_bad(records, summary, video_id, origin, str(e))
            continue
        _add(records, summary, VideoRecord(video_id, num_frames, labels, origin), min_frames)
    return _finish(records, summary, f"{json_path} ({subset})", on_error)
