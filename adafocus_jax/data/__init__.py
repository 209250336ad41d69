"""Video data for AdaFocus: sources (one video → one example dict) and a deterministic loader.

    source = create_source(config.data, "train")        # len(source), source.get(index, rng)
    for batch in make_loader(source, batch_size=64, shuffle=True, seed=0):
        batch["glance"], batch["focus"], batch["label"], batch["mask"], ...

What an example holds is fixed in docs/CONTRACTS.md. `config.data.format` picks the reader:

| format | reader | what the user has on disk |
|---|---|---|
| `frames` | `adafocus_jax.data.frames` | TSM/AR-Net frame folders + list files |
| `webm` | `adafocus_jax.data.ssv2_video` | the official SSv2 release (`.webm` + JSON labels) |
| `tfds` | `adafocus_jax.data.tfds_builders` | a TFDS dataset built from either of the above |
| `synthetic` | `adafocus_jax.data.synthetic` | nothing: cluttered moving digits made on the fly |
| `random` | `adafocus_jax.data.random_videos` | nothing: tiny seeded noise videos (tests) |

Preparing data: `python -m adafocus_jax.tools.extract_frames` (videos -> frame folders + list
file, the official `scale=-1:360`, `image_{:05d}.jpg`), `python -m adafocus_jax.tools.build_tfds`
(frame folders or SSv2 webm -> array_record TFDS). Multi-host: every process opens the whole
split and the loader hands process p rows `[p*b, (p+1)*b)` of each global batch.
"""

import importlib

import ml_collections

from adafocus_jax.data import transforms
from adafocus_jax.data.errors import DataError
from adafocus_jax.families import NUM_CLASSES, STHSTH
from adafocus_jax.data.loader import Loader, make_loader

FORMATS = ("frames", "webm", "tfds", "synthetic", "random")
# format -> module that defines `create_source(data_config, split)`.
_SOURCE_MODULES = {
    "frames": "adafocus_jax.data.frames",
    "webm": "adafocus_jax.data.ssv2_video",
    "tfds": "adafocus_jax.data.tfds_builders",
    "synthetic": "adafocus_jax.data.synthetic",
    "random": "adafocus_jax.data.random_videos",  # tiny in-memory test videos
}

# Per-dataset facts of the official code (adafocus_v1.md §7.1, data_formats.md §2).
_DATASETS = {
    #          list sep      frame template      separate focus frames  flip   short video
    "sthv1": ("space", "{:05d}.jpg", True, False, "first_frame"),
    "sthv2": ("space", "{:06d}.jpg", True, False, "first_frame"),
    "actnet": ("comma", "image_{:05d}.jpg", False, True, "repeat_last"),
    "fcvid": ("comma", "image_{:05d}.jpg", False, True, "repeat_last"),
    "minik": ("space_path", "image_{:05d}.jpg", False, True, "repeat_last"),
}
_LIST_FILES = {
    "sthv1": ("train_videofolder.txt", "val_videofolder.txt", "category.txt"),
    "sthv2": ("train_videofolder.txt", "val_videofolder.txt", "category.txt"),
    "actnet": ("actnet_train_split.txt", "actnet_val_split.txt", "classInd.txt"),
    "fcvid": ("fcvid_train_split.txt", "fcvid_val_split.txt", "classInd.txt"),
    "minik": ("mini_train_videofolder.txt", "mini_val_videofolder.txt", "minik_classInd.txt"),
}


def default_data_config(dataset: str) -> ml_collections.ConfigDict:
    """The official data pipeline of `dataset` (sthv1 | sthv2 | actnet | fcvid | minik).

    Paths are empty: set `--config.data.root=...` (and the list files if they are elsewhere).
    """
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(_DATASETS)}")
    separator, template, separate_focus, flip, short_video = _DATASETS[dataset]
    train_list, val_list, categories = _LIST_FILES[dataset]
    sth = dataset in STHSTH
    c = ml_collections.ConfigDict()
    c.dataset = dataset
    c.format = "frames"                  # frames | webm | tfds | synthetic | random
    c.root = ""                          # frames: folder holding the per-video frame folders
    c.list_dir = ""                      # folder of the list files ("" = root)
    c.train_list = train_list
    c.val_list = val_list
    c.test_list = ""
    c.categories = categories            # class-name file (optional for frames; counts only)
    c.list_separator = separator         # space | comma | space_path (path may hold spaces)
    c.frame_template = template          # 1-based frame index
    c.min_frames = 3                     # list rows with fewer frames are dropped (official)
    c.num_classes = NUM_CLASSES[dataset]
    c.max_labels = 3                     # labels padded with -1 to this length
    c.shuffle_labels = not sth           # ANet/FCVID/Mini-K permute multi-labels in train
    c.num_glance_frames = 8 if sth else 16
    c.num_focus_frames = 12 if sth else 16
    c.separate_focus_frames = separate_focus  # Sth-Sth: local frames sampled independently
    c.input_size = 224
    c.scale_size = 256                   # eval: shorter side to this, then centre crop
    c.flip = flip                        # never for Something-Something
    # Training crop: GroupMultiScaleCrop with these fractions of the shorter side (official).
    c.crop_scales = transforms.OFFICIAL_CROP_SCALES
    # Not official: then shift each training clip by up to this many pixels (0 = off).
    c.translate = 0
    c.short_video = short_video          # first_frame (TSM) | repeat_last (AR-Net)
    # tsn (AdaFocus / TSM: `short_video` for clips shorter than the segments) | uniform
    # (Uni-AdaFocus-TSM: fractional segments, frames repeated evenly; mode=uni on Sth-Sth).
    c.segment_sampling = "tsn"
    c.eval_num_clips = 1                 # > 1: multi-clip testing (not official)
    c.eval_num_crops = 1                 # 1 | 3 | 10 (not official beyond 1)
    c.on_error = "raise"                 # raise | skip (logged, counted, reported per epoch)
    # webm: the official SSv2 release; videos in <root>/<video_dir>, JSONs in list_dir (or root).
    c.webm = ml_collections.ConfigDict(dict(
        video_dir="", labels_json="labels.json", train_json="train.json",
        val_json="validation.json", test_json="test.json",
        resize_height=256))              # like TSM's `ffmpeg -vf scale=-1:256` (0 = native)
    # tfds: array_record datasets built by `python -m adafocus_jax.tools.build_tfds`.
    c.tfds = ml_collections.ConfigDict(dict(
        name=f"adafocus_{dataset}", data_dir="",
        source_format="frames",          # what the builder reads: frames | webm
        short_side=0,                    # > 0: frames with a longer shorter side are shrunk to it
        jpeg_quality=90,                 # for frames that are re-encoded (resized / from webm)
        frame_stride=1))                 # keep every k-th frame (long ActivityNet videos)
    return c


def create_source(data_config: ml_collections.ConfigDict, split: str):
    """A random-access source of one split: `len(source)`, `source.get(index, rng) -> example`.

    Args:
      data_config: `config.data`.
      split: "train", "val" or "test" (synthetic also has "test" held out from training digits).
    """
    fmt = data_config.format
    if fmt not in _SOURCE_MODULES:
        raise ValueError(f"config.data.format={fmt!r}: expected one of {FORMATS}")
    module = importlib.import_module(_SOURCE_MODULES[fmt])
    return module.create_source(data_config, split)


__all__ = ["DataError", "FORMATS", "Loader", "create_source", "default_data_config",
           "make_loader"]
