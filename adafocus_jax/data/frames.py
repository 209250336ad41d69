"""Frame-folder reader (TSM / AR-Net layout) and the example recipe every reader shares.

On disk (data_formats.md §2.3-2.7):

    <root>/<folder>/<template.format(i)>      i = 1 .. num_frames (1-based)
    <list_dir or root>/<train_list>           one row per video, see adafocus_jax.data.lists

for instance `<root>/12345/00001.jpg` (Sth-Sth v1), `<root>/12345/000001.jpg` (Sth-Sth v2 frames
extracted the TSM way) or `<root>/v_abc/image_00001.jpg` (ActivityNet/FCVID/Mini-K, made by
`python -m adafocus_jax.tools.extract_frames`). For ActivityNet the train/val list may also be the
v1.3 JSON (`activity_net.v1-3.min.json`); frame counts then come from the folders on disk.

`ExampleMaker` is the official sampling + augmentation recipe (adafocus_v1.md §7.2-7.3), used by
this reader, the SSv2 webm reader and the TFDS reader alike, so the three produce the same
example from the same frames:

* Sth-Sth: glance (8) and focus (12) frame lists sampled independently and transformed by two
  separate transform calls (so, in training, two different random crops).
* ActivityNet/FCVID/Mini-K: one list of 16 frames -> `glance` only.
* Only the sampled frames are read and decoded (each distinct frame once).

Random draws, in this order, from the per-example `rng` (None = evaluation): glance indices,
focus indices, glance crop (+flip), focus crop (+flip), label order.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import ml_collections
import numpy as np
from PIL import Image

from adafocus_jax.data import lists, transforms
from adafocus_jax.data.decode import decode_jpeg, read_file
from adafocus_jax.data.errors import DataError

SPLITS = ("train", "val", "test")
# A loader of frames: sorted distinct 1-based indices -> RGB PIL images in that order.
FrameLoader = Callable[[Sequence[int]], Sequence[Image.Image]]


def arrange_labels(labels: Sequence[int], max_labels: int, rng: np.random.Generator | None,
                   shuffle: bool) -> np.ndarray:
    """Labels padded with -1 to `[max_labels]` int32, in the official (training) order.

    The official ActivityNet `VideoRecord.label` (read at every `__getitem__`) returns the sorted
    labels with 3 labels randomly permuted, and, with 2, swapped with probability 1/3 only (its
    swap branch re-enters the property, so it keeps the order with probability 1/2 + 1/2 * 1/3).
    Both are reproduced in training (`shuffle` and an rng). In evaluation (rng None) the order
    stays sorted, so the CE target / first label is deterministic; the official code would still
    shuffle there (a deliberate difference).
    """
    out = np.full((max_labels,), -1, np.int32)
    labels = list(labels)[:max_labels]
    out[:len(labels)] = labels
    if shuffle and rng is not None:
        if len(labels) == 2:
            if rng.random() >= 2.0 / 3.0:
                out[:2] = out[1::-1]
        elif len(labels) >= 3:
            out[:len(labels)] = out[:len(labels)][rng.permutation(len(labels))]
    return out


class ExampleMaker:
    """Official temporal sampling + spatial augmentation: num_frames + frames -> example dict.

    Example keys (docs/CONTRACTS.md): `glance` uint8 `[T_G, S, S, 3]`, `focus` uint8
    `[T_L, S, S, 3]` (only with `separate_focus_frames`), `label` int32 `[]` (-1 if unlabelled),
    `labels` int32 `[max_labels]` padded with -1, `index` int64 `[]`. With multi-view evaluation
    (`eval_num_clips * eval_num_crops = V > 1`) `glance`/`focus` are `[V, T, S, S, 3]`,
    clip-major (view = clip * num_crops + crop); training is never multi-view.
    """

    def __init__(self, data_config: ml_collections.ConfigDict):
        c = data_config
        self.num_glance = int(c.num_glance_frames)
        self.num_focus = int(c.num_focus_frames)
        self.separate_focus = bool(c.separate_focus_frames)
        self.input_size = int(c.input_size)
        self.scale_size = int(c.scale_size)
        self.flip = bool(c.flip)
        self.crop_scales = tuple(float(x) for x in c.get("crop_scales",
                                                         transforms.OFFICIAL_CROP_SCALES))
        self.translate = int(c.get("translate", 0))
        self.short_video = str(c.short_video)
        self.segment_sampling = str(c.get("segment_sampling", "tsn"))
        self.num_clips = int(c.eval_num_clips)
        self.num_crops = int(c.eval_num_crops)
        self.max_labels = int(c.max_labels)
        self.shuffle_labels = bool(c.shuffle_labels)
        checks = [
            (self.num_glance >= 1, "num_glance_frames must be >= 1"),
            (not self.separate_focus or self.num_focus >= 1, "num_focus_frames must be >= 1"),
            (self.input_size >= 1, "input_size must be >= 1"),
            (len(self.crop_scales) >= 1 and all(0 < x <= 1 for x in self.crop_scales),
             f"crop_scales must be fractions in (0, 1], got {self.crop_scales}"),
            (self.scale_size >= self.input_size, "scale_size must be >= input_size"),
            (0 <= self.translate < self.input_size,
             f"translate must be in [0, input_size), got {self.translate}"),
            (self.short_video in transforms.SHORT_VIDEO_MODES,
             f"short_video must be one of {transforms.SHORT_VIDEO_MODES}"),
            (self.segment_sampling in transforms.SEGMENT_SAMPLINGS,
             f"segment_sampling must be one of {transforms.SEGMENT_SAMPLINGS}"),
            (self.num_clips >= 1, "eval_num_clips must be >= 1"),
            (self.num_crops in transforms.EVAL_CROP_COUNTS,
             f"eval_num_crops must be one of {transforms.EVAL_CROP_COUNTS}"),
            (self.max_labels >= 1, "max_labels must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"config.data: {message}")

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def frame_lists(self, num_frames: int, rng: np.random.Generator | None
                    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """1-based (glance, focus or None) index lists: one pair in training, one per clip in eval."""
        clips = 1 if rng is not None else self.num_clips
        out = []
        if self.segment_sampling == "uniform":
            sample = transforms.uniform_segment_indices
            extra = {}
        else:
            sample, extra = transforms.segment_indices, dict(short_video=self.short_video)
        for clip in range(clips):
            kw = dict(extra, clip_index=clip, num_clips=clips)
            glance = sample(num_frames, self.num_glance, rng, **kw)
            focus = sample(num_frames, self.num_focus, rng, **kw) if self.separate_focus else None
            out.append((glance, focus))
        return out

    def _spatial(self, frames: list[Image.Image], rng: np.random.Generator | None) -> np.ndarray:
        """One frame list -> uint8 `[crops, T, S, S, 3]` (crops = 1 in training)."""
        if rng is not None:
            return transforms.train_transform(frames, rng, input_size=self.input_size,
                                              scales=self.crop_scales, flip=self.flip,
                                              translate=self.translate)[None]
        views = transforms.eval_transform(frames, input_size=self.input_size,
                                          scale_size=self.scale_size, num_crops=self.num_crops)
        return views if self.num_crops > 1 else views[None]

    def __call__(self, num_frames: int, labels: Sequence[int], load: FrameLoader,
                 rng: np.random.Generator | None, index: int) -> dict[str, np.ndarray]:
        """The example of one video.

        Args:
          num_frames: n, frames of the video.
          labels: its distinct sorted labels (may be empty: unlabelled test video).
          load: reads and decodes frames (called once, with the distinct sampled indices).
          rng: per-example Generator in training; None in evaluation.
          index: row of the video in its split.
        """
        lists_ = self.frame_lists(num_frames, rng)
        wanted = sorted({int(i) for pair in lists_ for part in pair if part is not None
                         for i in part})
        images = load(wanted)
        if len(images) != len(wanted):
            raise RuntimeError(f"frame loader returned {len(images)} frames for {len(wanted)}")
        by_index = dict(zip(wanted, images))
        glance_views, focus_views = [], []
        for glance_idx, focus_idx in lists_:
            glance_views.append(self._spatial([by_index[int(i)] for i in glance_idx], rng))
            if focus_idx is not None:
                focus_views.append(self._spatial([by_index[int(i)] for i in focus_idx], rng))
        # Each entry is [crops, T, S, S, 3]; views are clip-major. One view: no copy.
        def join(views):
            return views[0][0] if len(views) == 1 and len(views[0]) == 1 else np.concatenate(views)

        example = {"glance": join(glance_views)}
        if focus_views:
            example["focus"] = join(focus_views)
        label_row = arrange_labels(labels, self.max_labels, rng, self.shuffle_labels)
        example["label"] = np.asarray(label_row[0], np.int32)
        example["labels"] = label_row
        example["index"] = np.asarray(index, np.int64)
        return example


def resolve_list_path(data_config: ml_collections.ConfigDict, split: str) -> str:
    """The list file of `split`: `train_list`/`val_list`/`test_list` under `list_dir` (or root)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name = data_config.get(f"{split}_list", "")
    if not name:
        raise ValueError(f"config.data.{split}_list is empty: no list file for split {split!r}")
    base = data_config.list_dir or data_config.root
    return name if os.path.isabs(name) else os.path.join(base, name)


def check_template(template: str) -> str:
    try:
        first = template.format(1)
    except (IndexError, KeyError, ValueError) as e:
        raise ValueError(f"config.data.frame_template {template!r} cannot format a frame index "
                         f"({e})") from None
    if first == template.format(2):
        raise ValueError(f"config.data.frame_template {template!r} does not use the frame index")
    return template


def count_frames(folder: str, template: str) -> int | None:
    """Frames 1..n present in `folder` named by `template` (None if the folder is missing)."""
    try:
        names = set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None
    n = 0
    while template.format(n + 1) in names:
        n += 1
    return n


def _categories_path(data_config) -> str:
    name = data_config.categories
    if not name:
        return ""
    return name if os.path.isabs(name) else os.path.join(data_config.list_dir or data_config.root,
                                                         name)


def read_records(data_config: ml_collections.ConfigDict, split: str) -> list[lists.VideoRecord]:
    """The split's records from its list file (or the ActivityNet v1.3 JSON)."""
    c = data_config
    list_path = resolve_list_path(c, split)
    class_names = lists.check_class_count(_categories_path(c), int(c.num_classes))
    if list_path.endswith(".json"):
        template = check_template(c.frame_template)

        def counter(video_id: str) -> int | None:
            n = count_frames(os.path.join(c.root, video_id), template)
            if n is None:  # some extractions keep YouTube's "v_" prefix
                n = count_frames(os.path.join(c.root, "v_" + video_id), template)
            return n

        return lists.activitynet_records(
            list_path, split, class_names=class_names, count_frames=counter,
            num_classes=int(c.num_classes), max_labels=int(c.max_labels),
            min_frames=int(c.min_frames), on_error=c.on_error)
    return lists.read_list_file(list_path, c.list_separator, num_classes=int(c.num_classes),
                                max_labels=int(c.max_labels), min_frames=int(c.min_frames),
                                on_error=c.on_error)


class FrameFolderSource:
    """Random access to one split of frame folders: `len(source)`, `source.get(index, rng)`."""

    def __init__(self, records: list[lists.VideoRecord], root: str, template: str,
                 maker: ExampleMaker, origin: str):
        self.records = records
        self.root = root
        self.template = check_template(template)
        self.maker = maker
        self.origin = origin

    def __len__(self) -> int:
        return len(self.records)

    def folder(self, record: lists.VideoRecord) -> str:
        folder = os.path.join(self.root, record.path)
        if not os.path.isdir(folder) and os.path.isdir(os.path.join(self.root, "v_" + record.path)):
            folder = os.path.join(self.root, "v_" + record.path)
        return folder

    def read_frame_bytes(self, record: lists.VideoRecord, folder: str, index: int) -> bytes:
        return read_file(os.path.join(folder, self.template.format(index)), record.origin)

    def get(self, index: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        record = self.records[index]
        record.check()
        folder = self.folder(record)
        if not os.path.isdir(folder):
            raise DataError(record.origin, f"missing video directory {folder}")

        def load(indices: Sequence[int]) -> list[Image.Image]:
            out = []
            for i in indices:
                path = os.path.join(folder, self.template.format(i))
                data = read_file(path, record.origin)
                try:
                    out.append(decode_jpeg(data, path))
                except DataError as e:
                    raise DataError(record.origin, f"{e.origin}: {e.detail}") from None
            return out

        return self.maker(record.num_frames, record.labels, load, rng, index)


def create_source(data_config: ml_collections.ConfigDict, split: str) -> FrameFolderSource:
    """The frame-folder source of `split` ("train" | "val" | "test") for `config.data`."""
    if not data_config.root:
        raise ValueError("config.data.root is empty: set it to the folder of frame folders")
    if not os.path.isdir(data_config.root):
        raise DataError(data_config.root, "frames root (config.data.root) is not a directory")
    maker = ExampleMaker(data_config)
    records = read_records(data_config, split)
    logging.info("frames %s: %d videos from %s", split, len(records),
                 resolve_list_path(data_config, split))
    return FrameFolderSource(records, data_config.root, data_config.frame_template, maker,
                             origin=resolve_list_path(data_config, split))
