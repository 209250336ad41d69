"""Cluttered moving digits: a built-in video benchmark where spatial focus matters.

Every video is `T` frames of `S × S` RGB (uint8) showing one moving sklearn 8×8 digit (the label,
10 classes) among static fragments of other digits, on a smooth low-contrast background. It is built
so that the three ingredients of AdaFocus each have a job (data_formats.md §5.5):

* **The glance network can locate but not read the digit.** Ink (digit strokes, target and clutter
  alike) is drawn as a fine ±1 checkerboard "halftone" of zero mean, so the glancer's antialiased
  down-sampling (`config.model.glance_resize = "linear"`, factor 2) averages every stroke away: at
  glance resolution a digit is invisible, whatever the network. (Sklearn digits stay ~93 % readable
  when plainly down-sampled to 4×4 pixels, so resolution alone cannot hide them.) The target sits on
  a "plate", a square slightly larger than the digit, brighter than the background and tinted by
  the label's group (label mod `hint_groups`: warm or cool for 2 groups). The plate survives
  down-sampling: the glance sees *where* the digit is, and its tint is coarse context that narrows
  10 classes to 5 (glance-only accuracy is capped near 20 %). That tint matters for training, not
  for the benchmark's margin: the glancer is trained by classification only (stage 0), and without
  something label-related to find at the plate its features do not encode the plate's position (a
  linear probe of untrained or classification-trained MobileNetV2 maps found the plate's cell in only
  ~25 % of frames, measured), leaving the policy nothing to act on.
* **A patch on the target is easy to classify**: at full resolution the halftone strokes are crisp.
* **A random or centre patch rarely covers it**: the frame is split into `region_grid`² cells (3×3)
  and the target bounces inside one of them (the TFDS Moving-MNIST maths, §5.4, at 1–2 px/frame),
  so the patch grid of the policy (3×3 positions of 48 px on 144 px frames, 11 % of the area each)
  always has one position holding the whole digit, while a uniformly random 48-px patch contains the
  whole 20-px digit in only ~3-4 % of frames (measured: 2 of 3 cells per axis touch the frame's
  edge, where few offsets fit) and the centre patch only when the digit is in the centre cell
  (~11 %). Each example records the digit's box (`target_box`), so training logs and the benchmark
  report how often patches hold it.
  The fragments a random patch covers look like parts of digits (drawn the same way, from other
  digits of the same split).

Clutter is static; the per-frame target box is recorded (`SyntheticSource.scene(...).boxes`).

**Which frames matter** (`digit_frames` = L > 0, the Uni-AdaFocus variant): the digit and its plate
appear only in L consecutive frames at a uniformly random start (drawn after everything else, so
label, digit, path and clutter are those of the all-frames video), the other frames hold the
background and clutter only. The glance sees the plate in those frames, so a temporal policy can
learn which frames to give the local network; examples carry `target_present` bool `[T]`.

Splits: "train", "val" and "test" draw their digits from disjoint pools of the 1,797 sklearn digits
(a fixed permutation: test, then val, then train), and clutter fragments come from the same split's
pool, so held-out videos contain no pixel of a training digit. Each video is a pure function of
(seed, split, index); with a training `rng` (the loader's per-example generator, seeded by
(seed, epoch, index)) the digit, trajectory, clutter and background are all drawn from it, so every
epoch is a fresh set of videos over the whole training pool.

    source = create_source(config.data, "test")      # config.data.format == "synthetic"
    example = source.get(3, None)        # {"glance", "label", "labels", "index", "target_box"}
    scene = source.scene(3, None)                    # .boxes [T, 4] (y0, x0, y1, x1), .label, ...
"""

import dataclasses
import functools

import ml_collections
import numpy as np

from adafocus_jax.data.errors import DataError

SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
NUM_DIGITS = 1797            # sklearn.datasets.load_digits
_POOL_PERMUTATION_SEED = 20211   # fixed: the digit pools never depend on the run's seed
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def default_synthetic_config() -> ml_collections.ConfigDict:
    """`config.data.synthetic`: the generator's knobs (sizes in pixels, intensities in [0, 1])."""
    c = ml_collections.ConfigDict()
    c.seed = 0                      # videos are a pure function of (seed, split, index)
    c.num_videos = ml_collections.ConfigDict(dict(train=4096, val=512, test=1000))
    c.test_digits = 300             # sizes of the held-out digit pools; train gets the rest
    c.val_digits = 300
    c.digit_size = 20               # the 8×8 digit is resized (bilinear) to this
    c.ink_contrast = 0.32           # halftone amplitude: a stroke pixel is bg ± ink_contrast
    # The halftone carrier's period in pixels (see `halftone_carrier`): 2 (the default: a ±1
    # checkerboard) or 3 (survives sub-pixel resampling, for the differentiable crop of AdaFocusV2).
    c.halftone_period = 2
    c.ghost_contrast = 0.0          # mean brightness of ink (> 0: a faint blurred digit at glance size)
    c.plate_margin = 4              # the plate extends this far around the digit
    c.plate_contrast = 0.25         # plate brightness over the background (what the glance sees)
    # Coarse context the glance can see: the plate is tinted by the label's group (label mod
    # hint_groups; warm / cool for 2 groups), so the glance alone can narrow 10 classes to 5 but
    # never read the digit. Learning that tint is what teaches the glancer where the plate is.
    c.hint_groups = 2
    c.hint_contrast = 0.12
    c.background_level = 0.42
    c.background_contrast = 0.05    # amplitude of the smooth coloured background field
    c.background_grid = 5           # the field is bilinear noise on a grid of this size
    c.noise_std = 0.02              # static per-pixel Gaussian noise
    c.num_clutter = 4               # fragments of other digits (static)
    c.clutter_min = 3               # fragment side, in source (8×8) pixels
    c.clutter_max = 4
    c.region_grid = 3               # the target stays inside one of region_grid² cells
    c.speed_min = 1.0               # target speed, px/frame
    c.speed_max = 2.0
    # Which frames matter (`digit_frames`, for Uni-AdaFocus's temporal policy): 0 = the digit and
    # its plate are in every frame; L > 0 = only in L consecutive frames at a random start, the
    # other frames show the background and clutter only (examples then carry `target_present`).
    c.digit_frames = 0
    return c


def halftone_carrier(size: int, period: int) -> np.ndarray:
    """The zero-mean pattern strokes are drawn with, float32 `[size, size]`, peak value 1.

    Both periods vanish under the glance's antialiased ×2 down-sampling (`jax.image.resize`
    "linear": per axis the taps [1, 3, 3, 1] / 8), which is what keeps the digit unreadable at
    glance resolution:
      * 2: the ±1 checkerboard (−1)^(y+x); its frequency, ½ cycle/px, is a zero of that filter.
        A bilinear resample at a half-pixel offset averages neighbours of opposite sign and
        erases it too: a patch cropped at a fractional position (AdaFocusV2's differentiable
        crop) loses the strokes.
      * 3: the outer product of cos(2πk/3) = (1, −½, −½) per axis; the filter passes 1/8 of it
        per axis (1/64 overall), and a half-pixel bilinear resample keeps cos(π/3) = ½ per axis,
        so strokes stay readable at every sub-pixel position.
    """
    k = np.arange(size)
    if period == 2:
        wave = np.where(k % 2 == 0, 1.0, -1.0)
    elif period == 3:
        wave = np.cos(2 * np.pi * (k % 3) / 3)
    else:
        raise ValueError(f"config.data.synthetic.halftone_period must be 2 or 3, got {period}")
    return np.outer(wave, wave).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything random about one video (drawn first, then rendered).

    Attributes:
      label: the digit class.
      digit: index of the target in sklearn's digit array.
      positions: `[T, 2]` int top-left (row, col) of the plate per frame.
      boxes: `[T, 4]` int (y0, x0, y1, x1), end exclusive, of the digit per frame.
      clutter: list of (digit index, fragment row, fragment col, size, canvas row, canvas col), all
        in pixels of the resized digit / canvas.
      background: `[g, g, 3]` field values in [-1, 1].
      noise_seed: seed of the static pixel noise.
      present: `[T]` bool, the frames that show the digit and its plate (all of them unless
        `digit_frames` > 0; `boxes` still says where the digit would be in the others).
    """
    label: int
    digit: int
    positions: np.ndarray
    boxes: np.ndarray
    clutter: tuple
    background: np.ndarray
    noise_seed: int
    present: np.ndarray


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits: images `[1797, 8, 8]` float32 in [0, 1] and labels `[1797]` int."""
    from sklearn.datasets import load_digits  # packaged with scikit-learn: no download
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digit_pools(test_digits: int = 300, val_digits: int = 300) -> dict[str, np.ndarray]:
    """Disjoint sorted index arrays into sklearn's digits for each split."""
    if test_digits < 10 or val_digits < 10 or test_digits + val_digits > NUM_DIGITS - 100:
        raise ValueError(f"config.data.synthetic: test_digits={test_digits} and val_digits="
                         f"{val_digits} must each be >= 10 and leave >= 100 digits for training")
    perm = np.random.default_rng(_POOL_PERMUTATION_SEED).permutation(NUM_DIGITS)
    return {"test": np.sort(perm[:test_digits]),
            "val": np.sort(perm[test_digits:test_digits + val_digits]),
            "train": np.sort(perm[test_digits + val_digits:])}


def _resize_matrix(out_size: int, in_size: int) -> np.ndarray:
    """`[out, in]` bilinear interpolation weights (half-pixel centres, edges clamped)."""
    pos = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    pos = np.clip(pos, 0, in_size - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((out_size, in_size), np.float32)
    m[np.arange(out_size), lo] += 1 - frac
    m[np.arange(out_size), hi] += frac
    return m


def bounce(start: np.ndarray, velocity: np.ndarray, num_frames: int, span: int) -> np.ndarray:
    """Positions `[T, 2]` of a point moving at `velocity` px/frame, reflected inside [0, span].

    `p = start + v t`, folded with the triangle wave `span - |p mod 2·span - span|` (§5.4).
    """
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    p = start[None, :] + velocity[None, :] * t
    if span <= 0:
        return np.zeros((num_frames, 2), np.int64)
    q = np.mod(p, 2 * span)
    return np.rint(span - np.abs(q - span)).astype(np.int64)


class SyntheticSource:
    """One split of the cluttered-moving-digits benchmark (random access, thread-safe).

    Attributes:
      split: "train" | "val" | "test".
      frame_size: S; num_frames: T.
      pool: indices into sklearn's digits that this split uses.
      origin: "synthetic:<split>" (prefix of error messages).
    """

    def __init__(self, data_config: ml_collections.ConfigDict, split: str):
        if split not in SPLITS:
            raise ValueError(f"synthetic data: unknown split {split!r}; expected one of {SPLITS}")
        if "synthetic" not in data_config:
            raise ValueError("config.data.synthetic is missing (see "
                             "adafocus_jax.data.synthetic.default_synthetic_config)")
        c = data_config.synthetic
        self.config = c
        self.split = split
        self.origin = f"synthetic:{split}"
        self.frame_size = int(data_config.input_size)
        self.num_frames = int(data_config.num_glance_frames)
        self.max_labels = int(data_config.max_labels)
        if data_config.get("separate_focus_frames", False):
            raise ValueError("config.data.separate_focus_frames must be False for synthetic data "
                             "(the local network crops the glance frames)")
        if int(data_config.num_classes) != NUM_CLASSES:
            raise ValueError(f"config.data.num_classes={data_config.num_classes}: synthetic data "
                             f"has {NUM_CLASSES} classes")
        self.num_videos = int(c.num_videos[split])
        if self.num_videos <= 0:
            raise ValueError(f"config.data.synthetic.num_videos.{split} must be > 0")
        self.plate_size = int(c.digit_size) + 2 * int(c.plate_margin)
        if int(c.region_grid) < 1:
            raise ValueError(f"config.data.synthetic.region_grid={c.region_grid} must be >= 1")
        cell = self.frame_size // int(c.region_grid)
        if c.digit_size < 8 or self.plate_size >= cell:
            raise ValueError(f"config.data.synthetic.digit_size={c.digit_size} (+ 2 × plate_margin) "
                             f"must be >= 8 and smaller than the frame ({self.frame_size}) divided "
                             f"by region_grid ({c.region_grid})")
        if not 1 <= c.clutter_min <= c.clutter_max <= 8:
            raise ValueError("config.data.synthetic: need 1 <= clutter_min <= clutter_max <= 8, got "
                             f"{c.clutter_min}, {c.clutter_max}")
        if not 0 <= c.speed_min <= c.speed_max:
            raise ValueError("config.data.synthetic: need 0 <= speed_min <= speed_max")
        if c.background_grid < 2:
            raise ValueError("config.data.synthetic.background_grid must be >= 2")
        self.digit_frames = int(c.get("digit_frames", 0))
        if not 0 <= self.digit_frames <= self.num_frames:
            raise ValueError(f"config.data.synthetic.digit_frames={self.digit_frames} must be in "
                             f"[0, {self.num_frames}] (config.data.num_glance_frames; 0 = every "
                             "frame shows the digit)")
        self.pool = digit_pools(int(c.test_digits), int(c.val_digits))[split]
        images, labels = _digits()
        d = int(c.digit_size)
        m = _resize_matrix(d, 8)
        # All sprites of this split's pool, resized once: [n, d, d] in [0, 1].
        self.sprites = np.clip(np.einsum("ia,nab,jb->nij", m, images[self.pool], m), 0, 1)
        self.labels = labels[self.pool]
        self._pool_position = {int(p): i for i, p in enumerate(self.pool)}
        # Which pool digit each video shows: a fixed permutation, cycled.
        self._order = np.random.default_rng(
            [int(c.seed), _SPLIT_CODES[split], 1]).permutation(len(self.pool))
        s = self.frame_size
        self._carrier = halftone_carrier(s, int(c.halftone_period))
        self._bg_matrix = _resize_matrix(s, int(c.background_grid))
        groups = max(int(c.hint_groups), 1)
        # Evenly spaced hues around the grey axis, zero mean over the channels.
        angles = 2 * np.pi * np.arange(groups) / groups
        hues = np.stack([np.cos(angles), np.cos(angles - 2 * np.pi / 3),
                         np.cos(angles + 2 * np.pi / 3)], axis=-1)
        self._tints = (float(c.hint_contrast) * hues if groups > 1
                       else np.zeros((1, 3))).astype(np.float32)

    def __len__(self) -> int:
        return self.num_videos

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_videos:
            raise DataError(self.origin, f"video index {index} out of range [0, {self.num_videos})")

    def scene(self, index: int, rng: np.random.Generator | None = None) -> Scene:
        """Draws the random content of video `index` (rng None: the fixed eval draw)."""
        self._check_index(index)
        c = self.config
        if rng is None:
            rng = np.random.default_rng([int(c.seed), _SPLIT_CODES[self.split], 0, int(index)])
            k = int(self._order[index % len(self.pool)])
        else:
            # Training draw: any digit of the pool, so that every epoch (the loader seeds `rng`
            # with the epoch) covers the whole pool even when num_videos < pool size.
            k = int(rng.integers(len(self.pool)))
        s, t, d, plate = self.frame_size, self.num_frames, int(c.digit_size), self.plate_size
        # The target bounces inside one of region_grid² equal cells of the frame (the whole frame
        # when region_grid == 1).
        cell = s // int(c.region_grid)
        span = cell - plate
        region = rng.integers(0, int(c.region_grid), size=2)
        start = rng.uniform(0, span, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(c.speed_min, c.speed_max)
        positions = region * cell + bounce(
            start, speed * np.array([np.sin(angle), np.cos(angle)]), t, span)
        margin = int(c.plate_margin)
        boxes = np.concatenate([positions + margin, positions + margin + d], axis=1)
        clutter = []
        for _ in range(int(c.num_clutter)):
            other = int(rng.integers(len(self.pool)))
            if len(self.pool) > 1 and other == k:   # fragments come from *other* digits
                other = (other + 1) % len(self.pool)
            size = int(round(rng.integers(c.clutter_min, c.clutter_max + 1) * d / 8))
            fy, fx = rng.integers(0, d - size + 1, size=2)
            cy, cx = rng.integers(0, s - size + 1, size=2)
            clutter.append((int(self.pool[other]), int(fy), int(fx), size, int(cy), int(cx)))
        background = rng.uniform(-1, 1, size=(int(c.background_grid),) * 2 + (3,))
        noise_seed = int(rng.integers(2 ** 31))
        present = np.ones(t, bool)
        if self.digit_frames:
            # Drawn last, so every other draw (label, digit, path, clutter) is the same as with
            # the digit in every frame.
            first = int(rng.integers(t - self.digit_frames + 1))
            frame = np.arange(t)
            present = (frame >= first) & (frame < first + self.digit_frames)
        return Scene(label=int(self.labels[k]), digit=int(self.pool[k]),
                     positions=positions.astype(np.int32), boxes=boxes.astype(np.int32),
                     clutter=tuple(clutter), background=background.astype(np.float32),
                     noise_seed=noise_seed, present=present)

    def render(self, scene: Scene) -> np.ndarray:
        """The frames of a scene: uint8 `[T, S, S, 3]`."""
        c = self.config
        s, d, margin = self.frame_size, int(c.digit_size), int(c.plate_margin)
        m = self._bg_matrix
        # Separable bilinear up-sampling of the [g, g, 3] field as two small matmuls → [S, S, 3].
        bg = np.tensordot(m, scene.background, axes=(1, 0))                    # [S, g, 3]
        bg = np.tensordot(m, bg, axes=(1, 1)).transpose(1, 0, 2)               # [S, S, 3]
        bg = c.background_level + c.background_contrast * bg
        if c.noise_std > 0:
            bg = bg + np.random.default_rng(scene.noise_seed).normal(
                0, c.noise_std, size=bg.shape).astype(np.float32)
        clutter_ink = np.zeros((s, s), np.float32)
        pool_pos = self._pool_position
        for other, fy, fx, size, cy, cx in scene.clutter:
            sprite = self.sprites[pool_pos[other]]
            clutter_ink[cy:cy + size, cx:cx + size] += sprite[fy:fy + size, fx:fx + size]
        amp = np.float32(c.ink_contrast)
        ghost = np.float32(c.ghost_contrast)
        ink = np.minimum(clutter_ink, 1.0) * (self._carrier * amp + ghost)
        static = (bg + ink[..., None]).astype(np.float32)
        frames = np.repeat(static[None], self.num_frames, axis=0)
        target = self.sprites[pool_pos[scene.digit]]
        tint = self._tints[scene.label % len(self._tints)]
        plate = self.plate_size
        for t, (py, px) in enumerate(scene.positions):
            if not scene.present[t]:      # clutter only: no plate, no digit
                continue
            win = (slice(py, py + plate), slice(px, px + plate))
            local_ink = clutter_ink[win].copy()
            local_ink[margin:margin + d, margin:margin + d] += target
            frames[t][win] = (bg[win] + c.plate_contrast + tint
                              + (np.minimum(local_ink, 1.0)
                                 * (self._carrier[win] * amp + ghost))[..., None])
        return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def get(self, index: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """One example (docs/CONTRACTS.md): glance uint8 `[T, S, S, 3]`, label, labels, index, and
        `target_box` int32 `[T, 4]` (y0, x0, y1, x1 of the digit, exclusive ends) for diagnostics:
        the training step and the benchmark report how often a patch holds the whole digit. With
        `digit_frames` > 0 also `target_present` bool `[T]`: the frames that show the digit."""
        scene = self.scene(int(index), rng)
        labels = np.full((self.max_labels,), -1, np.int32)
        labels[0] = scene.label
        example = {"glance": self.render(scene), "label": np.asarray(scene.label, np.int32),
                   "labels": labels, "index": np.asarray(index, np.int64),
                   "target_box": scene.boxes.astype(np.int32)}
        if self.digit_frames:
            example["target_present"] = scene.present.copy()
        return example


def create_source(data_config: ml_collections.ConfigDict, split: str) -> SyntheticSource:
    """The `split` ("train" | "val" | "test") of the synthetic benchmark described by
    `data_config` (`config.data`, with `format == "synthetic"` and a `synthetic` sub-config)."""
    return SyntheticSource(data_config, split)


__all__ = ["NUM_CLASSES", "SPLITS", "Scene", "SyntheticSource", "bounce", "create_source",
           "default_synthetic_config", "digit_pools"]
