"""A tiny in-memory source of random uint8 videos (`config.data.format = "random"`), for tests.

Every video is a pure function of (split, index): seeded noise plus a bright square whose position
and colour depend on the label, so a model can actually learn something in a few steps and the
patch policy has a region worth finding. A train-time `rng` only decides a horizontal flip (so
augmentation paths run), keeping each example cheap.

Keys of `config.data.random` (all optional): `num_train` (32), `num_val` (12), `num_test` (12).
"""

import numpy as np

_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


class RandomVideoSource:
    """`len(source)` videos; `get(index, rng)` returns the example dict of docs/CONTRACTS.md.

    Attributes:
      origin: a name for error messages.
    """

    def __init__(self, data_config, split: str, num_videos: int):
        if split not in _SPLIT_SEED:
            raise ValueError(f"random videos: unknown split {split!r}; expected one of "
                             f"{sorted(_SPLIT_SEED)}")
        if num_videos <= 0:
            raise ValueError(f"config.data.random.num_{split} must be > 0, got {num_videos}")
        self.split = split
        self.origin = f"random_videos[{split}]"
        self.num_videos = int(num_videos)
        self.size = int(data_config.input_size)
        self.num_glance = int(data_config.num_glance_frames)
        self.num_focus = int(data_config.num_focus_frames)
        self.separate_focus = bool(data_config.separate_focus_frames)
        self.num_classes = int(data_config.num_classes)
        self.max_labels = int(data_config.max_labels)

    def __len__(self) -> int:
        return self.num_videos

    def _frames(self, gen: np.random.Generator, label: int, num_frames: int) -> np.ndarray:
        """`[T, S, S, 3]` uint8: noise plus a label-coded square (position and colour)."""
        s = self.size
        frames = gen.integers(0, 96, size=(num_frames, s, s, 3), dtype=np.uint8)
        side = max(s // 4, 1)
        cells = max(s - side, 1)
        row = (label * 7919) % cells
        col = (label * 104729 + 13) % cells
        colour = np.array([(label * 53) % 256, 255 - (label * 29) % 256, 200], np.uint8)
        frames[:, row:row + side, col:col + side] = colour
        return frames

    def get(self, index: int, rng: np.random.Generator | None = None) -> dict:
        if not 0 <= index < self.num_videos:
            raise IndexError(f"{self.origin}: index {index} out of range [0, {self.num_videos})")
        gen = np.random.default_rng([_SPLIT_SEED[self.split], index])
        label = int(gen.integers(self.num_classes))
        labels = np.full((self.max_labels,), -1, np.int32)
        labels[0] = label
        example = {"glance": self._frames(gen, label, self.num_glance)}
        if self.separate_focus:
            example["focus"] = self._frames(gen, label, self.num_focus)
        if rng is not None and rng.random() < 0.5:
            example = {k: np.ascontiguousarray(v[:, :, ::-1]) for k, v in example.items()}
        example["label"] = np.asarray(label, np.int32)
        example["labels"] = labels
        example["index"] = np.asarray(index, np.int64)
        return example


def create_source(data_config, split: str) -> RandomVideoSource:
    """The random-video source of `split` (sizes from `config.data.random`)."""
    sizes = data_config.get("random", None)
    defaults = {"train": 32, "val": 12, "test": 12}
    num = defaults.get(split, 0)
    if sizes is not None and f"num_{split}" in sizes:
        num = int(sizes[f"num_{split}"])
    return RandomVideoSource(data_config, split, num)
