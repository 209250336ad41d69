"""TFDS builders (array_record, manual_dir) for the AdaFocus datasets, and their reader.

Building (see `adafocus_jax.tools.build_tfds`):

    builder = tfds_builders.builder_for(config.data, data_dir="/data/tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=config.data.root))

One builder per dataset, registered as `adafocus_sthv1`, `adafocus_sthv2`, `adafocus_actnet`,
`adafocus_fcvid`, `adafocus_minik`. The manual_dir is what the frame reader (or, with
`config.data.tfds.source_format="webm"`, the SSv2 webm reader) reads: the builder runs the same
list parsing, so rows, their order (shuffling is disabled: record i is row i of the split) and
labels are those of `config.data.format="frames"`. (With `config.data.on_error="skip"` a video
that cannot be read is left out while building, logged, and later rows move up; every record
keeps its list line in `origin`.) Splits: `train`, `validation` (our "val")
and `test`, each built when its list file (or JSON) exists.

One record per video:

| feature | type | meaning |
|---|---|---|
| `frames` | Sequence(bytes) | per-frame JPEG bytes, frame i+1 of the video at position i |
| `num_frames` | int32 | len(frames) |
| `labels` | int32 [3] | distinct sorted labels, padded with -1 |
| `video` | text | the row's folder / video id |
| `origin` | text | "<list file>:<line>" of the row |

The JPEG files of a frame folder are stored byte for byte (so reading the TFDS dataset gives
exactly the frame reader's pixels) unless `tfds.short_side` asks to shrink larger frames, in which
case they are resized (PIL bilinear, as GroupScale) and re-encoded at `tfds.jpeg_quality`. Webm
sources are decoded (at `webm.resize_height`) and encoded. `tfds.frame_stride = k` keeps frames
1, 1+k, 1+2k, ... (long ActivityNet videos); sampling then runs over the kept frames.

Frames are stored as raw bytes rather than `tfds.features.Image`/`Video`: `Video` needs TensorFlow
and ffmpeg, and `Image` would decode every frame on read. The reader decodes only the sampled
frames. The array_record format needs no TensorFlow to write or read.

Reading (`config.data.format = "tfds"`): `create_source` opens `tfds.data_source`-style random
access (`builder.as_data_source(split)`), then applies `frames.ExampleMaker`, the same sampling and
augmentation as the frame reader. Multi-host sharding is the loader's: every process opens the
whole split and reads rows `[p*b, (p+1)*b)` of each global batch (`make_loader(...,
process_index=, process_count=)`), so the global order is the same for any number of hosts and
resuming at a step is exact. (`tfds.split_for_jax_process` would give each host a different
contiguous subset instead, which changes the sample order with the host count.)
"""
from __future__ import annotations

import concurrent.futures
import copy
import io
import logging
import os
from typing import Iterator, Sequence

import ml_collections
import numpy as np
from PIL import Image

from adafocus_jax.data import frames as frames_lib
from adafocus_jax.data import transforms
from adafocus_jax.data.decode import decode_jpeg
from adafocus_jax.data.errors import DataError
from adafocus_jax.families import NUM_CLASSES

import tensorflow_datasets as tfds

MAX_LABELS = 3
SOURCE_FORMATS = ("frames", "webm")
# Our split names -> TFDS split names.
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}

_INSTRUCTIONS = """\
manual_dir is the dataset as the frame reader (or the SSv2 webm reader) expects it:
config.data.root with the per-video frame folders and the list files (or, for Sth-Sth v2 with
config.data.tfds.source_format="webm", the .webm folder and labels/train/validation JSONs).
Build with: python -m adafocus_jax.tools.build_tfds --config=configs/<dataset>.py \\
  --config.data.root=DIR --data_dir=OUT
"""


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _image_size(data: bytes, origin: str) -> tuple[int, int]:
    """(width, height) of an encoded frame from its header; DataError if it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as e:  # PIL raises several types for garbage.
        raise DataError(origin, f"not a readable image ({type(e).__name__}: {e})") from None


class AdafocusVideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the per-dataset builders (see the module docstring)."""

    DATASET = ""
    NUM_CLASSES = 0
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Per-frame JPEG bytes, labels and frame counts, one record per "
                              "video."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """No builder source folder (no checksums file to look up): our data is manual only.

        TFDS would otherwise locate this module's folder with a check that needs the
        `importlib_resources` backport, which is not installed here.
        """
        return None

    def __init__(self, *, data_config: ml_collections.ConfigDict | None = None,
                 num_workers: int | None = None, **kwargs):
        """
        Args:
          data_config: `config.data` of this dataset; needed to build, not to read.
          num_workers: threads that read/encode videos while building (default: CPU count).
          **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir, file_format, ...).
        """
        kwargs.setdefault("file_format", "array_record")
        self._data_config = data_config
        self._num_workers = num_workers or os.cpu_count() or 1
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(f"AdaFocus {self.DATASET}: one record per video with its per-frame JPEG "
                         f"bytes, frame count and up to {MAX_LABELS} labels "
                         f"({self.NUM_CLASSES} classes)."),
            features=tfds.features.FeaturesDict({
                "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
                "num_frames": tfds.features.Tensor(shape=(), dtype=np.int32),
                "labels": tfds.features.Tensor(shape=(MAX_LABELS,), dtype=np.int32),
                "video": tfds.features.Text(),
                "origin": tfds.features.Text(),
            }),
            disable_shuffling=True,  # record i == row i of the split, as with the frame reader
        )

    # ---------------------------------------------------------------------------------------
    def _source_config(self, manual_dir: str) -> ml_collections.ConfigDict:
        if self._data_config is None:
            raise ValueError(f"{self.name}: building needs the dataset's config; use "
                             f"tfds_builders.builder_for(config.data, ...)")
        c = copy.deepcopy(self._data_config)
        if c.dataset != self.DATASET:
            raise ValueError(f"{self.name}: config.data.dataset is {c.dataset!r}")
        if int(c.max_labels) != MAX_LABELS:
            raise ValueError(f"{self.name}: config.data.max_labels must be {MAX_LABELS}")
        fmt = c.tfds.source_format
        if fmt not in SOURCE_FORMATS:
            raise ValueError(f"config.data.tfds.source_format must be one of {SOURCE_FORMATS}, "
                             f"got {fmt!r}")
        c.format = fmt  # existing keys: allowed on a locked ConfigDict
        if manual_dir:
            c.root = manual_dir
        return c

    def _split_generators(self, dl_manager):
        c = self._source_config(str(dl_manager.manual_dir) if dl_manager.manual_dir else "")
        splits = {}
        for ours, theirs in TFDS_SPLITS.items():
            path = _split_file(c, ours)
            if not path or not os.path.exists(path):
                log = logging.info if ours == "test" else logging.warning
                log("%s: no %s split (%s not found)", self.name, ours, path or "no file set")
                continue
            splits[theirs] = self._generate_examples(c, ours)
        if not splits:
            raise DataError(c.root, f"{self.name}: no list file for any split was found")
        return splits

    def _generate_examples(self, c, split) -> Iterator[tuple[int, dict]]:
        source = _create_reader_source(c, split)
        stride = int(c.tfds.frame_stride)
        if stride < 1:
            raise ValueError("config.data.tfds.frame_stride must be >= 1")
        failures = 0

        def encode(index):
            try:
                return index, self._record(source, index, c, stride), None
            except DataError as e:
                return index, None, e

        with concurrent.futures.ThreadPoolExecutor(self._num_workers) as pool:
            # Bounded read-ahead: at most a few videos per worker in memory at once.
            chunk = 4 * self._num_workers
            for start in range(0, len(source), chunk):
                for index, example, error in pool.map(encode, range(start, min(start + chunk,
                                                                              len(source)))):
                    if error is not None:
                        if c.on_error == "raise":
                            raise error
                        failures += 1
                        logging.warning("%s/%s: skipping row %d: %s", self.name, split, index,
                                        error)
                        continue
                    yield index, example
        if failures:
            logging.warning("%s/%s: %d videos skipped (on_error=skip)", self.name, split, failures)

    def _record(self, source, index: int, c, stride: int) -> dict:
        record = source.records[index]
        record.check()
        short_side = int(c.tfds.short_side)
        quality = int(c.tfds.jpeg_quality)
        if isinstance(source, frames_lib.FrameFolderSource):
            folder = source.folder(record)
            if not os.path.isdir(folder):
                raise DataError(record.origin, f"missing video directory {folder}")
            encoded = []
            for i in range(1, record.num_frames + 1, stride):
                path = os.path.join(folder, source.template.format(i))
                data = source.read_frame_bytes(record, folder, i)
                w, h = _image_size(data, f"{record.origin}: {path}")
                is_jpeg = data.startswith(b"\xff\xd8")
                if (short_side and min(w, h) > short_side) or not is_jpeg:
                    try:
                        image = decode_jpeg(data, path)
                    except DataError as e:
                        raise DataError(record.origin, f"{e.origin}: {e.detail}") from None
                    if short_side and min(w, h) > short_side:
                        image = transforms.scale_shorter_side([image], short_side)[0]
                    data = encode_jpeg(image, quality)
                encoded.append(data)
        else:  # webm
            from adafocus_jax.data import ssv2_video
            path = source.video_path(record)
            n = source.num_frames(index)
            arrays = ssv2_video.decode_video_frames(path, list(range(1, n + 1, stride)),
                                                    record.origin, source.resize_height)
            encoded = []
            for a in arrays:
                image = Image.fromarray(a)
                if short_side and min(image.size) > short_side:
                    image = transforms.scale_shorter_side([image], short_side)[0]
                encoded.append(encode_jpeg(image, quality))
        if len(encoded) < 1:
            raise DataError(record.origin, "no frames")
        labels = np.full((MAX_LABELS,), -1, np.int32)
        labels[:len(record.labels)] = record.labels
        return {"frames": encoded, "num_frames": len(encoded), "labels": labels,
                "video": record.path, "origin": record.origin}


def _split_file(c, split: str) -> str:
    """The list file (frames) or JSON (webm) of `split`; "" if none is configured."""
    name = c.get(f"{split}_list", "") if c.format == "frames" else c.webm.get(
        {"train": "train_json", "val": "val_json", "test": "test_json"}[split], "")
    if not name:
        return ""
    return name if os.path.isabs(name) else os.path.join(c.list_dir or c.root, name)


def _create_reader_source(c, split):
    if c.format == "frames":
        return frames_lib.create_source(c, split)
    from adafocus_jax.data import ssv2_video
    return ssv2_video.create_source(c, split)


def _make_builder(dataset: str, num_classes: int) -> type:
    class_name = "Adafocus" + dataset.capitalize()
    return type(class_name, (AdafocusVideoBuilder,), {
        "DATASET": dataset, "NUM_CLASSES": num_classes, "__module__": __name__,
        "__doc__": f"AdaFocus {dataset} videos as per-frame JPEG records (array_record)."})


BUILDERS: dict[str, type] = {name: _make_builder(name, classes)
                             for name, classes in NUM_CLASSES.items()}
# Module attributes, so TFDS (and pickling) can find them by name.
globals().update({cls.__name__: cls for cls in BUILDERS.values()})


def builder_for(data_config: ml_collections.ConfigDict, data_dir: str | None = None,
                **kwargs) -> AdafocusVideoBuilder:
    """The builder of `data_config.dataset`, set up to build from `data_config`."""
    if data_config.dataset not in BUILDERS:
        raise ValueError(f"no TFDS builder for dataset {data_config.dataset!r}; "
                         f"known: {sorted(BUILDERS)}")
    data_dir = data_dir or data_config.tfds.data_dir or None
    return BUILDERS[data_config.dataset](data_config=data_config, data_dir=data_dir, **kwargs)


def build(data_config: ml_collections.ConfigDict, data_dir: str | None = None,
          **kwargs) -> AdafocusVideoBuilder:
    """Builds (prepares) the dataset of `data_config` from `data_config.root`; returns the builder."""
    builder = builder_for(data_config, data_dir, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=data_config.root or None))
    return builder


# --------------------------------------------------------------------------------------------
# Reading.


class TfdsSource:
    """Random access to one split of a built dataset: `len(source)`, `source.get(index, rng)`."""

    def __init__(self, records, maker: frames_lib.ExampleMaker, *, num_classes: int, origin: str):
        self.records = records  # a tfds data source: len() and [i] -> dict of numpy values
        self.maker = maker
        self.num_classes = int(num_classes)
        self.origin = origin

    def __len__(self) -> int:
        return len(self.records)

    def get(self, index: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        where = f"{self.origin}[{index}]"
        try:
            record = self.records[index]
        except Exception as e:  # array_record / proto errors of a damaged file
            raise DataError(where, f"cannot read record ({type(e).__name__}: {e})") from None
        video = record["video"]
        video = video.decode("utf-8", "replace") if isinstance(video, bytes) else str(video)
        where = f"{where} ({video})"
        frames = list(record["frames"])
        n = int(record["num_frames"])
        if n != len(frames) or n < 1:
            raise DataError(where, f"num_frames {n} but {len(frames)} frames stored")
        labels = [int(x) for x in np.asarray(record["labels"]) if x >= 0]
        for label in labels:
            if label >= self.num_classes:
                raise DataError(where, f"label {label} out of range [0, {self.num_classes})")

        def load(indices: Sequence[int]) -> list[Image.Image]:
            return [decode_jpeg(frames[i - 1], f"{where} frame {i}") for i in indices]

        return self.maker(n, labels, load, rng, index)


def create_source(data_config: ml_collections.ConfigDict, split: str) -> TfdsSource:
    """The TFDS source of `split` ("train" | "val" | "test") for `config.data` (format "tfds")."""
    if split not in TFDS_SPLITS:
        raise ValueError(f"split must be one of {sorted(TFDS_SPLITS)}, got {split!r}")
    c = data_config
    name = c.tfds.name
    data_dir = c.tfds.data_dir or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(f"{data_dir}/{name}", f"cannot open TFDS dataset ({e})") from None
    where = os.path.join(str(builder.data_dir))
    if not builder.is_prepared():
        raise DataError(where, "TFDS dataset not built; run python -m adafocus_jax.tools."
                               "build_tfds --config=... --data_dir=...")
    tfds_split = TFDS_SPLITS[split]
    if tfds_split not in builder.info.splits:
        raise DataError(where, f"no split {tfds_split!r} (has {sorted(builder.info.splits)})")
    records = builder.as_data_source(split=tfds_split)
    if len(records) == 0:
        raise DataError(f"{where}:{tfds_split}", "the split is empty (no usable video)")
    logging.info("tfds %s: %d videos from %s", split, len(records), where)
    return TfdsSource(records, frames_lib.ExampleMaker(c), num_classes=int(c.num_classes),
                      origin=f"{name}/{tfds_split}")
