"""Something-Something v2 straight from the official release: `<id>.webm` + label JSONs.

On disk (data_formats.md §2.1):

    <root>/<webm.video_dir>/<id>.webm                  VP9 in WebM, 240 px high, 12 fps
    <list_dir or root>/labels.json                     {"<template without brackets>": "<index>"}
    <list_dir or root>/train.json, validation.json     [{"id": ..., "template": ...}, ...]
    <list_dir or root>/test.json                       [{"id": ...}, ...]  (no labels)

Decoding uses PyAV (FFmpeg's own VP9 decoder; no ffmpeg binary needed). Per example:

1. One demux pass (no decoding), cached per video, gives the frame count n (the number of
   video packets: FFmpeg's `-i <id>.webm %06d.jpg` writes as many frames, so n matches the TSM
   lists made from extracted frames), the timestamps and the key frames.
2. The official TSN indices are sampled from n (frames.ExampleMaker, shared with the other
   readers).
3. Decoding starts at the last key frame before the first sampled frame (a seek; SSv2 clips
   usually have a single key frame, so this is their start) and stops after the last sampled
   frame; only the sampled frames are converted to RGB (and resized).

`webm.resize_height` (default 256) scales each sampled frame to that height with FFmpeg's
bicubic swscale, width rounded like `ffmpeg -vf scale=-1:256`, so the pixels fed to the official
crops have the geometry of the TSM-extracted frames (0 keeps the native 240 px).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Sequence

import ml_collections
import numpy as np
from PIL import Image

from adafocus_jax.data import frames as frames_lib
from adafocus_jax.data import lists
from adafocus_jax.data.errors import DataError

try:
    import av
except ImportError:  # pragma: no cover - `pip install adafocus_jax[video]`
    av = None

_SPLIT_KEYS = {"train": "train_json", "val": "val_json", "test": "test_json"}


def _require_av():
    if av is None:
        raise ImportError("reading .webm videos needs PyAV: pip install av (adafocus_jax[video])")


def scaled_width(width: int, height: int, new_height: int) -> int:
    """Width FFmpeg's `scale=-1:<new_height>` picks: width * new_height / height, rounded to
    nearest with halves away from zero (av_rescale)."""
    return max(1, (width * new_height * 2 + height) // (2 * height))


def frame_to_rgb(frame, resize_height: int = 0) -> np.ndarray:
    """A decoded `av.VideoFrame` -> uint8 `[H, W, 3]`, scaled to `resize_height` if > 0."""
    if resize_height and frame.height != resize_height:
        width = scaled_width(frame.width, frame.height, resize_height)
        frame = frame.reformat(width=width, height=resize_height, format="rgb24",
                               interpolation="BICUBIC")
        return frame.to_ndarray()
    return frame.to_ndarray(format="rgb24")


def _open(path: str, origin: str):
    _require_av()
    if not os.path.exists(path):
        raise DataError(origin, f"missing video file {path}")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise DataError(origin, f"{path}: cannot open video ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise DataError(origin, f"{path}: no video stream")
    return container


@dataclasses.dataclass(frozen=True)
class VideoIndex:
    """What one demux pass (no decoding) tells about a video's first video stream.

    Attributes:
      num_frames: number of video packets = frames.
      pts: presentation timestamps in display order, `[num_frames]` (None if some packet has
        none: then frames are located by counting, from the start).
      keyframes: display positions (0-based) of the key frames, ascending.
    """
    num_frames: int
    pts: tuple[int, ...] | None
    keyframes: tuple[int, ...]

    def seek_start(self, first_wanted: int) -> tuple[int, int] | None:
        """(display position, pts) of the last key frame at or before 1-based frame
        `first_wanted`, or None when decoding from the start is as good (or the only way)."""
        if self.pts is None:
            return None
        before = [k for k in self.keyframes if k <= first_wanted - 1]
        if not before or before[-1] == 0:
            return None
        return before[-1], self.pts[before[-1]]


def index_video(path: str, origin: str) -> VideoIndex:
    """Demuxes the video once (no decoding): frame count, timestamps and key frames."""
    container = _open(path, origin)
    try:
        stream = container.streams.video[0]
        pts, keys = [], []
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the flush packet at the end
            pts.append(packet.pts)
            keys.append(packet.is_keyframe)
    except (av.FFmpegError, OSError) as e:
        raise DataError(origin, f"{path}: cannot demux ({type(e).__name__}: {e})") from None
    finally:
        container.close()
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return VideoIndex(len(pts), None, ())
    order = sorted(pts)
    position = {p: i for i, p in enumerate(order)}
    keyframes = sorted(position[p] for p, k in zip(pts, keys) if k)
    return VideoIndex(len(pts), tuple(order), tuple(keyframes))


def count_video_frames(path: str, origin: str) -> int:
    """Frames of the first video stream, counted from its packets (no decoding)."""
    return index_video(path, origin).num_frames


def decode_video_frames(path: str, wanted: Sequence[int], origin: str,
                        resize_height: int = 0,
                        index: VideoIndex | None = None) -> list[np.ndarray]:
    """Frames at the sorted distinct 1-based indices `wanted` -> uint8 `[H, W, 3]` each.

    With an `index` whose key frames allow it, seeks to the last key frame before the first
    wanted frame; decodes from there and stops after the last wanted frame. Frames in between
    are decoded (inter-frame coding needs them) but never converted to RGB. Frame positions
    come from the timestamps (display order) when the index has them, else from counting.
    """
    if not wanted:
        return []
    if list(wanted) != sorted(set(wanted)) or wanted[0] < 1:
        raise ValueError(f"wanted frame indices must be sorted, distinct and >= 1: {wanted}")
    container = _open(path, origin)
    out = []
    position = 0
    try:
        stream = container.streams.video[0]
        # One decoding thread: the loader already runs one video per worker thread.
        stream.codec_context.thread_count = 1
        by_pts = ({p: i + 1 for i, p in enumerate(index.pts)}
                  if index is not None and index.pts is not None else None)
        start = index.seek_start(wanted[0]) if index is not None else None
        if start is not None:
            container.seek(start[1], stream=stream, backward=True, any_frame=False)
        targets = iter(wanted)
        target = next(targets)
        for frame in container.decode(stream):
            if by_pts is not None:
                position = by_pts.get(frame.pts)
                if position is None:
                    raise DataError(origin, f"{path}: decoded a frame with unknown timestamp "
                                            f"{frame.pts}")
            else:
                position += 1
            if position < target:
                continue
            if position > target:
                raise DataError(origin, f"{path}: frame {target} was not decoded (jumped to "
                                        f"frame {position})")
            out.append(frame_to_rgb(frame, resize_height))
            target = next(targets, None)
            if target is None:
                break
    except (av.FFmpegError, OSError) as e:
        raise DataError(origin, f"{path}: decoding failed after frame {position} "
                                f"({type(e).__name__}: {e})") from None
    finally:
        container.close()
    if len(out) != len(wanted):
        raise DataError(origin, f"{path}: only {position} frames could be decoded, frame "
                                f"{wanted[len(out)]} was needed")
    return out


class WebmSource:
    """Random access to one SSv2 split of `.webm` files: `len(source)`, `source.get(i, rng)`."""

    def __init__(self, records: list[lists.VideoRecord], video_dir: str,
                 maker: frames_lib.ExampleMaker, *, resize_height: int = 256,
                 min_frames: int = 3, origin: str = ""):
        self.records = records
        self.video_dir = video_dir
        self.maker = maker
        self.resize_height = int(resize_height)
        self.min_frames = int(min_frames)
        self.origin = origin
        self._index: dict[int, VideoIndex] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.records)

    def video_path(self, record: lists.VideoRecord) -> str:
        return os.path.join(self.video_dir, record.path + ".webm")

    def video_index(self, index: int) -> VideoIndex:
        """Frame count, timestamps and key frames of video `index` (one demux pass, cached)."""
        with self._lock:
            cached = self._index.get(index)
        if cached is not None:
            return cached
        record = self.records[index]
        found = index_video(self.video_path(record), record.origin)
        with self._lock:
            self._index[index] = found
        return found

    def num_frames(self, index: int) -> int:
        return self.video_index(index).num_frames

    def get(self, index: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        record = self.records[index]
        record.check()
        path = self.video_path(record)
        video_index = self.video_index(index)
        n = video_index.num_frames
        if n < self.min_frames:
            # The TSM lists drop such videos; here n is known only now, so it is a DataError
            # (skipped and counted under on_error="skip").
            raise DataError(record.origin, f"{path}: {n} frames, fewer than min_frames="
                                           f"{self.min_frames}")

        def load(indices: Sequence[int]) -> list[Image.Image]:
            arrays = decode_video_frames(path, indices, record.origin, self.resize_height,
                                         video_index)
            return [Image.fromarray(a) for a in arrays]

        return self.maker(n, record.labels, load, rng, index)


def _json_path(data_config, name: str) -> str:
    base = data_config.list_dir or data_config.root
    return name if os.path.isabs(name) else os.path.join(base, name)


def create_source(data_config: ml_collections.ConfigDict, split: str) -> WebmSource:
    """The webm source of `split` ("train" | "val" | "test") for `config.data` (Sth-Sth v2)."""
    _require_av()
    if split not in _SPLIT_KEYS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_KEYS)}, got {split!r}")
    c = data_config
    w = c.webm
    key = _SPLIT_KEYS[split]
    name = w.get(key, "")
    if not name:
        raise ValueError(f"config.data.webm.{key} is empty: no JSON for split {split!r}")
    video_dir = w.video_dir if os.path.isabs(w.video_dir) else os.path.join(c.root, w.video_dir)
    if not os.path.isdir(video_dir):
        raise DataError(video_dir, "video folder (config.data.root / config.data.webm.video_dir) "
                                   "is not a directory")
    labels_path = _json_path(c, w.labels_json) if w.labels_json else ""
    classes = lists.read_ssv2_labels(labels_path) if split != "test" or (
        labels_path and os.path.exists(labels_path)) else None
    if classes is not None and len(classes) != int(c.num_classes):
        raise DataError(labels_path, f"{len(classes)} classes, but config.data.num_classes is "
                                     f"{c.num_classes}")
    split_path = _json_path(c, name)
    records = lists.read_ssv2_split(split_path, classes, num_classes=int(c.num_classes),
                                    on_error=c.on_error)
    logging.info("webm %s: %d videos from %s", split, len(records), split_path)
    return WebmSource(records, video_dir, frames_lib.ExampleMaker(c),
                      resize_height=int(w.get("resize_height", 256)),
                      min_frames=int(c.min_frames), origin=split_path)
