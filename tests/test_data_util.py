"""Helpers for the data tests: tiny synthetic frame folders, list files and webm videos.

Every frame carries its own 1-based index: frame i has red = 4 * i everywhere (so its index
survives cropping, resizing and JPEG/VP9 compression as round(mean(red) / 4)), green a
left-to-right ramp (a horizontal flip shows up as a reversed ramp) and blue 128.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from adafocus_jax import data as data_lib


def frame_array(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 `[h, w, 3]` frame number i (1-based, i <= 60)."""
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0] = 4 * i
    a[..., 1] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    a[..., 2] = 128
    return a


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """Frame indices of uint8 `[..., H, W, 3]` frames made by `frame_array`, shape `[...]`."""
    red = np.asarray(frames, np.float64)[..., 0].mean(axis=(-1, -2))
    return np.rint(red / 4).astype(np.int64)


def write_frames(folder: str, n: int, template: str, h: int = 48, w: int = 64,
                 only=None, quality: int = 95) -> None:
    """JPEG frames 1..n (or only those in `only`) of one video."""
    os.makedirs(folder, exist_ok=True)
    for i in range(1, n + 1):
        if only is None or i in only:
            Image.fromarray(frame_array(i, h, w)).save(os.path.join(folder, template.format(i)),
                                                       quality=quality)


def write_list(path: str, rows, separator: str = "space") -> None:
    join = "," if separator == "comma" else " "
    with open(path, "w") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else join.join(str(x) for x in row))
            f.write("\n")


def small_config(dataset: str, root: str, **overrides):
    """`default_data_config(dataset)` on `root` with 32-px crops (scale 36) for speed."""
    c = data_lib.default_data_config(dataset)
    c.root = root
    c.input_size = 32
    c.scale_size = 36
    for key, value in overrides.items():
        target = c
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    return c


def make_frame_dataset(root: str, dataset: str, videos, split: str = "train", h: int = 48,
                       w: int = 64, **overrides):
    """Frame folders + the split's list file for `videos` = [(folder, n, labels)]; -> config."""
    c = small_config(dataset, root, **overrides)
    template = c.frame_template
    separator = c.list_separator
    rows = []
    for folder, n, labels in videos:
        write_frames(os.path.join(root, folder), n, template, h, w)
        sep = "," if separator == "comma" else " "
        rows.append(sep.join([folder, str(n)] + [str(x) for x in labels]))
    write_list(os.path.join(root, c[f"{split}_list"]), rows)
    return c


def write_webm(path: str, n: int, h: int = 48, w: int = 64, fps: int = 12) -> None:
    """A VP9 WebM of frames 1..n made by `frame_array`."""
    import av
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10", "deadline": "realtime", "cpu-used": "8"}
        for i in range(1, n + 1):
            frame = av.VideoFrame.from_ndarray(frame_array(i, h, w), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
