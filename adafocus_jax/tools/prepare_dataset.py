"""From a folder of labelled videos (or a CSV / JSON of `path,label`) to a dataset the frame reader
trains on: frame folders, train/val list files, a class-name file and a summary.

    python -m adafocus_jax.tools.prepare_dataset --input=VIDEOS --output=DATA \\
        [--val_fraction=0.2] [--seed=0] [--val_input=VAL_VIDEOS_OR_CSV] [--classes=names.txt] [--height=0] [--fps=0] \\
        [--workers=N] [--min_frames=3] [--overwrite] [--no_progress]

    python main.py --config=configs/custom.py:root=DATA --workdir=RUN

Inputs (`--input`, and `--val_input` for a separate validation set):

* a class-per-subfolder tree (UCF101 / HMDB / Kinetics style): `VIDEOS/<class>/<video>.mp4`
  (any of .mp4 .mkv .webm .avi .mov) or `VIDEOS/<class>/<video>/` holding the frames as
  .jpg / .jpeg / .png files (in file-name order); the class is the subfolder's name;
* a CSV file with rows `path,label` (a header row `path,label` is optional; an optional third
  column `split` = train | val assigns the split), paths relative to `--video_root` (default: the
  CSV's folder);
* a JSON file: a list of `{"path": ..., "label": ..., ["split": ...]}` or an object
  `{path: label}`.

Labels are class names; with `--classes` (one name per line) they may also be 0-based indices
into it, and a label outside it is an error row. Without `--classes` the classes are the sorted
names that have at least one training video.

Written to `--output`:

    frames/<video>/image_00001.jpg ...  one folder per video (its path without the extension)
    train_list.txt, val_list.txt        `<folder>,<num_frames>,<label>` (the `comma` list format)
    classes.txt                         class names, one per line, in label order
    summary.json                        videos, classes, frames, per-class counts, skipped files
    dataset.json                        what configs/custom.py reads: lists, template, classes

Split: `--val_input` (or a `split` column) gives it; otherwise `--val_fraction` of each class's
videos (rounded; a class keeps at least one training video) go to val, chosen by a shuffle seeded
with `--seed` and the class name, so the split is the same on every run and machine and does not
change for one class when another gains a video.

Nothing is lost silently. Every input that does not become a list row is listed in the summary
(and printed) with its reason: a video that cannot be decoded, a frame that cannot be read, too
few frames, an unknown label, a duplicate path, a file that is neither a video nor a frame folder,
an empty class folder, a label that appears only in validation. The exit status is 0 when the
dataset was written (skipped files included; see the summary), 1 when no usable training video
remains or an input cannot be read.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import sys
import time
import zlib
from typing import Sequence

import numpy as np
from PIL import Image

from adafocus_jax.data import lists
from adafocus_jax.data.errors import DataError
from adafocus_jax.tools import extract_frames
from adafocus_jax.tools.predict import FRAME_EXTENSIONS

TEMPLATE = "image_{:05d}.jpg"
SEPARATOR = "comma"
TRAIN_LIST, VAL_LIST, CLASSES_FILE = "train_list.txt", "val_list.txt", "classes.txt"
SUMMARY_FILE, DATASET_FILE, FRAMES_DIR = "summary.json", "dataset.json", "frames"
SPLITS = ("train", "val")


@dataclasses.dataclass
class Item:
    """One input video: where it is, its label text, its split (None = to be drawn), its origin."""
    source: str                 # absolute path of the video file or frame folder
    label: str                  # class name (or index text when --classes is given)
    split: str | None
    origin: str                 # "<csv>:<line>" or the path, for messages
    folder: str = ""            # output frame folder, relative to frames/


@dataclasses.dataclass
class Skipped:
    path: str
    reason: str


def _is_frame_folder(path: str) -> bool:
    return os.path.isdir(path) and any(n.lower().endswith(FRAME_EXTENSIONS)
                                       for n in os.listdir(path))


def _is_video(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(extract_frames.VIDEO_EXTENSIONS)


def scan_tree(root: str, split: str | None, skipped: list[Skipped]) -> list[Item]:
    """Items of a class-per-subfolder tree; empty classes and stray entries go to `skipped`."""
    items = []
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if not os.path.isdir(path):
            skipped.append(Skipped(path, "not inside a class folder (expected "
                                         "<root>/<class>/<video>)"))
            continue
        found = 0
        for name in sorted(os.listdir(path)):
            video = os.path.join(path, name)
            if _is_video(video) or _is_frame_folder(video):
                items.append(Item(video, entry, split, video))
                found += 1
            else:
                skipped.append(Skipped(video, "neither a video file "
                                              f"({' '.join(extract_frames.VIDEO_EXTENSIONS)}) nor "
                                              f"a folder of {'/'.join(FRAME_EXTENSIONS)} frames"))
        if not found:
            skipped.append(Skipped(path, f"empty class folder: no videos, class {entry!r} left "
                                         "out"))
    return items


def _row_split(value, origin: str) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    value = str(value).strip().lower()
    aliases = {"train": "train", "training": "train", "val": "val", "validation": "val"}
    if value not in aliases:
        raise DataError(origin, f"split {value!r}: expected train or val")
    return aliases[value]


def read_annotations(path: str, video_root: str, split: str | None) -> list[Item]:
    """Items of a CSV (`path,label[,split]`) or JSON annotation file; DataError for a bad row."""
    base = video_root or os.path.dirname(os.path.abspath(path))
    rows: list[tuple[str, object, object, str]] = []
    if path.lower().endswith(".json"):
        data = lists._load_json(path)
        if isinstance(data, dict):
            data = [{"path": k, "label": v} for k, v in data.items()]
        if not isinstance(data, list):
            raise DataError(path, "expected a list of {\"path\", \"label\"} objects or an "
                                  "object {path: label}")
        for i, entry in enumerate(data, start=1):
            origin = f"{path}:entry {i}"
            if not isinstance(entry, dict) or "path" not in entry or "label" not in entry:
                raise DataError(origin, f"expected {{\"path\": ..., \"label\": ...}}, got "
                                        f"{str(entry)[:80]}")
            rows.append((str(entry["path"]), entry["label"], entry.get("split"), origin))
    else:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                table = list(csv.reader(f))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(path, f"cannot read the CSV ({e})") from None
        for line_no, fields in enumerate(table, start=1):
            fields = [x.strip() for x in fields]
            if not any(fields):
                continue
            if line_no == 1 and [x.lower() for x in fields[:2]] == ["path", "label"]:
                continue
            origin = f"{path}:{line_no}"
            if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
                raise DataError(origin, f"expected 'path,label[,split]', got {','.join(fields)!r}")
            rows.append((fields[0], fields[1], fields[2] if len(fields) == 3 else None, origin))
    items = []
    for video, label, row_split, origin in rows:
        source = video if os.path.isabs(video) else os.path.join(base, video)
        items.append(Item(os.path.normpath(source), str(label).strip(),
                          _row_split(row_split, origin) or split, origin))
    return items


def read_items(path: str, video_root: str, split: str | None,
               skipped: list[Skipped]) -> list[Item]:
    """The items of one `--input` / `--val_input` (tree, CSV or JSON)."""
    if os.path.isdir(path):
        return scan_tree(path, split, skipped)
    if not os.path.isfile(path):
        raise DataError(path, "no such folder or annotation file")
    return read_annotations(path, video_root, split)


def output_folder(source: str, roots: Sequence[str]) -> str:
    """Frame folder of a video relative to frames/: its path below the input root, without the
    extension (the absolute path without its leading '/' when outside every root); commas, which
    the list format cannot hold, become '_'."""
    source = os.path.abspath(source)
    for root in roots:
        root = os.path.abspath(root)
        if source.startswith(root.rstrip("/") + "/"):
            rel = os.path.relpath(source, root)
            break
    else:
        rel = source.lstrip("/")
    if os.path.isfile(source) or not os.path.isdir(source):
        rel = os.path.splitext(rel)[0]
    return rel.replace(",", "_")


def check_items(items: list[Item], classes: list[str] | None,
                skipped: list[Skipped]) -> list[Item]:
    """Drops (into `skipped`) duplicate paths, missing files and, with `classes`, unknown labels.

    With `classes`, an index label ("3") is turned into its class name.
    """
    seen: dict[str, str] = {}
    kept = []
    for item in items:
        key = os.path.realpath(item.source)
        if key in seen:
            skipped.append(Skipped(item.origin, f"duplicate path {item.source} (first listed at "
                                                f"{seen[key]})"))
            continue
        seen[key] = item.origin
        if classes is not None:
            if item.label not in classes:
                if item.label.isdigit() and int(item.label) < len(classes):
                    item.label = classes[int(item.label)]
                else:
                    skipped.append(Skipped(item.origin, f"unknown label {item.label!r} (not in "
                                                        f"--classes, {len(classes)} names)"))
                    continue
        if not os.path.exists(item.source):
            skipped.append(Skipped(item.origin, f"missing file {item.source}"))
            continue
        kept.append(item)
    return kept


def drop_val_only_labels(items: list[Item], skipped: list[Skipped]) -> list[Item]:
    """Removes val items whose label has no training item (listed in `skipped`)."""
    train_labels = {it.label for it in items if it.split != "val"}
    kept = []
    for item in items:
        if item.split == "val" and item.label not in train_labels:
            skipped.append(Skipped(item.origin, f"label {item.label!r} appears only in validation "
                                                "(no training video of this class)"))
        else:
            kept.append(item)
    return kept


def assign_splits(items: list[Item], val_fraction: float, seed: int) -> None:
    """Stratified deterministic split of the items without a split (in place)."""
    by_class: dict[str, list[Item]] = {}
    for item in items:
        if item.split is None:
            by_class.setdefault(item.label, []).append(item)
    for label, group in sorted(by_class.items()):
        group.sort(key=lambda it: it.folder)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        order = rng.permutation(len(group))
        n_val = min(int(round(val_fraction * len(group))), len(group) - 1)
        for rank, position in enumerate(order):
            group[position].split = "val" if rank < n_val else "train"


def copy_frame_folder(source: str, out_dir: str, *, height: int, template: str,
                      quality: int) -> int:
    """Frames of a frame folder -> `out_dir` as `template` (1-based); returns the count.

    Every frame is decoded (a corrupt one is a RuntimeError naming it); JPEGs kept at their size
    are copied byte for byte, others re-encoded (resized to `height` when > 0).
    """
    from adafocus_jax.tools.predict import frame_files
    tmp_dir = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        files = frame_files(source)
        for i, path in enumerate(files, start=1):
            try:
                with Image.open(path) as im:
                    im.load()
                    size = im.size
                    target = os.path.join(tmp_dir, template.format(i))
                    is_jpeg = im.format == "JPEG" and im.mode == "RGB"
                    if is_jpeg and (height <= 0 or size[1] == height):
                        shutil.copyfile(path, target)
                        continue
                    rgb = im.convert("RGB")
            except (OSError, SyntaxError, ValueError) as e:
                raise RuntimeError(f"{path}: unreadable frame ({e})") from None
            if height > 0 and size[1] != height:
                rgb = rgb.resize((max(1, round(size[0] * height / size[1])), height),
                                 Image.BICUBIC)
            rgb.save(target, format="JPEG", quality=quality)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp_dir, out_dir)
    return len(files)


def _extract_job(args) -> tuple[int, int, str | None]:
    """(position, frames written, error) of one item (runs in a worker process)."""
    position, source, out_dir, height, fps, template, quality, overwrite = args
    if not overwrite and os.path.isdir(out_dir):
        n = extract_frames.count_existing(out_dir, template)
        if n:
            return position, n, None
    try:
        if os.path.isdir(source):
            n = copy_frame_folder(source, out_dir, height=height, template=template,
                                  quality=quality)
        else:
            n = extract_frames.extract_video(source, out_dir, height=height, fps=fps,
                                             template=template, quality=quality)
        return position, n, None
    except Exception as e:  # reported per video, the run goes on
        message = str(e)
        return position, 0, message if source in message else f"{source}: {message}"


def write_dataset(output: str, videos: list[tuple[Item, int]], classes: list[str],
                  skipped: list[Skipped], seconds: float, extra: dict) -> dict:
    """Writes the lists, classes.txt, dataset.json and summary.json; returns the summary.

    Args:
      videos: (item, number of frames written) of every usable video.
    """
    index = {name: i for i, name in enumerate(classes)}
    rows = {split: [] for split in SPLITS}
    per_class = {name: {split: 0 for split in SPLITS} for name in classes}
    for item, n in videos:
        rows[item.split].append(lists.format_row(item.folder, n, [index[item.label]], SEPARATOR))
        per_class[item.label][item.split] += 1
    for split, name in zip(SPLITS, (TRAIN_LIST, VAL_LIST)):
        with open(os.path.join(output, name), "w", encoding="utf-8") as f:
            f.write("".join(r + "\n" for r in rows[split]))
    with open(os.path.join(output, CLASSES_FILE), "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in classes))
    dataset = dict(frames_dir=FRAMES_DIR, train_list=TRAIN_LIST, val_list=VAL_LIST,
                   categories=CLASSES_FILE, list_separator=SEPARATOR, frame_template=TEMPLATE,
                   num_classes=len(classes), min_video_frames=min(n for _, n in videos), **extra)
    with open(os.path.join(output, DATASET_FILE), "w", encoding="utf-8") as f:
        json.dump(dataset, f, indent=1)
    summary = dict(videos=dict(train=len(rows["train"]), val=len(rows["val"])),
                   classes=len(classes), frames=sum(n for _, n in videos), per_class=per_class,
                   skipped=[dataclasses.asdict(s) for s in skipped], seconds=round(seconds, 1))
    with open(os.path.join(output, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


def _unique_folders(items: list[Item], skipped: list[Skipped]) -> list[Item]:
    """Drops items whose output folder another item already has (e.g. a.mp4 and a.webm)."""
    owners: dict[str, str] = {}
    kept = []
    for item in items:
        if item.folder in owners:
            skipped.append(Skipped(item.origin, f"frame folder {item.folder!r} already used by "
                                                f"{owners[item.folder]}"))
            continue
        owners[item.folder] = item.origin
        kept.append(item)
    return kept


def prepare(args: argparse.Namespace) -> dict:
    """The whole preparation (see the module docstring); returns the summary dict.

    Raises DataError for an input that cannot be read or a dataset without training videos.
    """
    t0 = time.time()
    skipped: list[Skipped] = []
    classes = lists.read_class_names(args.classes) if args.classes else None
    items = read_items(args.input, args.video_root, None, skipped)
    if args.val_input:
        for item in items:
            item.split = item.split or "train"
        items += read_items(args.val_input, args.video_root, "val", skipped)
    items = check_items(items, classes, skipped)
    roots = [p if os.path.isdir(p) else (args.video_root or os.path.dirname(os.path.abspath(p)))
             for p in (args.input, args.val_input) if p]
    for item in items:
        item.folder = output_folder(item.source, roots)
    items = _unique_folders(items, skipped)
    assign_splits(items, args.val_fraction, args.seed)
    items = drop_val_only_labels(items, skipped)

    frames_root = os.path.join(args.output, FRAMES_DIR)
    os.makedirs(frames_root, exist_ok=True)
    jobs = [(p, it.source, os.path.join(frames_root, it.folder), args.height, args.fps,
             TEMPLATE, args.quality, args.overwrite) for p, it in enumerate(items)]
    videos: list[tuple[Item, int]] = []
    results = sorted(extract_frames.run_jobs(_extract_job, jobs, args.workers,
                                             progress=not args.no_progress))
    for position, n, error in results:
        item = items[position]
        if error:
            skipped.append(Skipped(item.origin, error))
        elif n < args.min_frames:
            skipped.append(Skipped(item.origin, f"only {n} frames (fewer than --min_frames="
                                                f"{args.min_frames})"))
        else:
            videos.append((item, n))
    # A class whose every training video failed to decode now has validation videos only.
    kept = {id(it) for it in drop_val_only_labels([it for it, _ in videos], skipped)}
    videos = [(it, n) for it, n in videos if id(it) in kept]
    train_labels = sorted({it.label for it, _ in videos if it.split == "train"})
    if not train_labels:
        listed = "".join(f"\n  {s.path}: {s.reason}" for s in skipped[:20])
        raise DataError(args.input, f"no usable training video; {len(skipped)} inputs skipped:"
                                    f"{listed}")
    names = classes if classes is not None else train_labels
    return write_dataset(args.output, videos, names, skipped, time.time() - t0,
                         dict(source=os.path.abspath(args.input)))


def cut_clips(video: str, out_dir: str, *, num_frames: int, max_clips: int = 0,
              height: int = 0, fps: float = 8.0) -> list[str]:
    """Cuts one video into consecutive non-overlapping clips of `num_frames` frames, written as
    H.264 files `out_dir/<stem>_<k>.mp4` (k = 000, 001, ...; frames scaled to `height` when > 0):
    a small labelled dataset from a few long videos (colabs/own_dataset.ipynb). At most
    `max_clips` clips when > 0; a last partial clip is dropped. Returns the paths written.

    A video that cannot be decoded is a DataError naming it.
    """
    from adafocus_jax.data import ssv2_video
    from adafocus_jax.tools.predict import write_overlay
    if num_frames < 1:
        raise ValueError(f"cut_clips: num_frames={num_frames} must be >= 1")
    stem = os.path.splitext(os.path.basename(video))[0]
    os.makedirs(out_dir, exist_ok=True)
    paths: list[str] = []
    clip: list[np.ndarray] = []
    import av
    try:
        with av.open(video) as container:
            for frame in container.decode(video=0):
                clip.append(ssv2_video.frame_to_rgb(frame, height))
                if len(clip) == num_frames:
                    paths.append(os.path.join(out_dir, f"{stem}_{len(paths):03d}.mp4"))
                    write_overlay(clip, paths[-1], fps)
                    clip = []
                    if max_clips and len(paths) == max_clips:
                        break
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(video, f"cannot decode the video ({e})") from None
    return paths


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="class-per-subfolder folder, CSV or JSON")
    p.add_argument("--output", required=True, help="dataset folder to write")
    p.add_argument("--val_input", default="", help="separate validation folder, CSV or JSON")
    p.add_argument("--video_root", default="", help="CSV/JSON paths are relative to this "
                   "(default: the annotation file's folder)")
    p.add_argument("--classes", default="", help="class names, one per line (label order)")
    p.add_argument("--val_fraction", type=float, default=0.2,
                   help="fraction of each class's videos for val (without --val_input)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--height", type=int, default=0, help="frame height (0 = native)")
    p.add_argument("--fps", type=float, default=0.0,
                   help="resample videos to this rate (0 = native)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded frames")
    p.add_argument("--min_frames", type=int, default=3, help="shorter videos are skipped")
    p.add_argument("--workers", type=int, default=1, help="videos prepared in parallel")
    p.add_argument("--overwrite", action="store_true", help="re-extract finished folders")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        p.error(f"--val_fraction={args.val_fraction} must be in [0, 1)")
    if args.height < 0 or args.fps < 0 or args.workers < 1 or args.min_frames < 1:
        p.error("--height and --fps must be >= 0, --workers and --min_frames >= 1")
    return args


def print_summary(summary: dict, output: str, file=None) -> None:
    """The summary on stdout (or `file`), each skipped input on stderr."""
    v = summary["videos"]
    print(f"{v['train']} train + {v['val']} val videos, {summary['classes']} classes, "
          f"{summary['frames']} frames, {len(summary['skipped'])} skipped "
          f"({summary['seconds']} s) -> {output}", file=file)
    for s in summary["skipped"]:
        print(f"SKIPPED {s['path']}: {s['reason']}", file=sys.stderr)
    print(f"train with: python main.py --config=configs/custom.py:root={output} --workdir=RUN",
          file=file)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = prepare(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_summary(summary, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
