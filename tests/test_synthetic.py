"""The cluttered-moving-digits source: contract, determinism, boxes, held-out digits, and the
property the benchmark rests on (the glance cannot see the strokes, the local network can)."""

import importlib.util
import os

import jax
import ml_collections
import numpy as np
import pytest

from adafocus_jax import data as data_lib
from adafocus_jax import models, stages
from adafocus_jax.data import synthetic
from adafocus_jax.data.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_config(size=64, frames=3, **overrides) -> ml_collections.ConfigDict:
    c = synthetic.default_synthetic_config()
    c.num_videos = ml_collections.ConfigDict(dict(train=20, val=6, test=6))
    c.digit_size = 16
    c.region_grid = 1               # 64-px frames: the target roams the whole frame
    for k, v in overrides.items():
        c[k] = v
    return ml_collections.ConfigDict(dict(
        format="synthetic", input_size=size, num_glance_frames=frames, max_labels=3,
        num_classes=10, separate_focus_frames=False, synthetic=c))


def load_config(arg=None):
    spec = importlib.util.spec_from_file_location("synthetic_config",
                                                  os.path.join(ROOT, "configs", "synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_example_contract_and_determinism():
    dc = data_config()
    source = data_lib.create_source(dc, "test")      # dispatched on format == "synthetic"
    assert isinstance(source, synthetic.SyntheticSource) and len(source) == 6
    ex = source.get(2, None)
    assert set(ex) == {"glance", "label", "labels", "index", "target_box"}
    assert ex["glance"].dtype == np.uint8 and ex["glance"].shape == (3, 64, 64, 3)
    assert ex["label"].dtype == np.int32 and ex["label"].shape == ()
    assert ex["labels"].dtype == np.int32 and ex["labels"].tolist() == [int(ex["label"]), -1, -1]
    assert ex["index"].dtype == np.int64 and int(ex["index"]) == 2
    box = ex["target_box"]
    assert box.dtype == np.int32 and box.shape == (3, 4)
    np.testing.assert_array_equal(box, source.scene(2, None).boxes)
    assert (box[:, 2:] - box[:, :2] == dc.synthetic.digit_size).all()
    again = data_lib.create_source(dc, "test").get(2, None)
    np.testing.assert_array_equal(ex["glance"], again["glance"])
    assert not np.array_equal(ex["glance"], source.get(3, None)["glance"])
    # Another seed gives other videos; training rngs are reproducible and differ from each other.
    other = data_config()
    other.synthetic.seed = 1
    assert not np.array_equal(ex["glance"], synthetic.create_source(other, "test").get(2)["glance"])
    train = synthetic.create_source(dc, "train")
    a = train.get(0, np.random.default_rng([0, 1, 0]))["glance"]
    np.testing.assert_array_equal(a, train.get(0, np.random.default_rng([0, 1, 0]))["glance"])
    assert not np.array_equal(a, train.get(0, np.random.default_rng([0, 2, 0]))["glance"])


def test_held_out_digits_are_disjoint_from_training_digits():
    pools = synthetic.digit_pools(300, 300)
    assert sum(len(p) for p in pools.values()) == synthetic.NUM_DIGITS
    assert not set(pools["train"]) & set(pools["test"])
    assert not set(pools["train"]) & set(pools["val"])
    assert not set(pools["val"]) & set(pools["test"])
    dc = data_config()
    for split in synthetic.SPLITS:
        source = synthetic.create_source(dc, split)
        allowed = set(pools[split].tolist())
        for i in range(len(source)):
            rng = np.random.default_rng(i) if split == "train" else None
            scene = source.scene(i, rng)
            # The target and every clutter fragment come from the split's own pool.
            assert scene.digit in allowed
            assert {c[0] for c in scene.clutter} <= allowed
            assert all(c[0] != scene.digit for c in scene.clutter)
    # Held-out videos cover several classes (the label is the target digit's class).
    test = synthetic.create_source(dc, "test")
    labels = {test.scene(i).label for i in range(len(test))}
    assert len(labels) >= 3


def test_target_lies_inside_the_recorded_box():
    # No clutter, noise or background texture: every stroke pixel belongs to the target.
    dc = data_config(size=64, frames=5, num_clutter=0, noise_std=0.0, background_contrast=0.0,
                     speed_min=3.0, speed_max=4.0, hint_contrast=0.0)
    source = synthetic.create_source(dc, "val")
    c = dc.synthetic
    yy, xx = np.mgrid[:64, :64]
    carrier = np.where((yy + xx) % 2 == 0, 1.0, -1.0)
    for index in range(len(source)):
        scene = source.scene(index)
        frames = source.render(scene).astype(np.float64) / 255.0
        sprite = source.sprites[list(source.pool).index(scene.digit)]
        assert scene.boxes.shape == (5, 4) and (scene.boxes[:, 2:] - scene.boxes[:, :2] == 16).all()
        assert len({tuple(p) for p in scene.positions}) > 1, "the target must move"
        for t in range(5):
            y0, x0, y1, x1 = scene.boxes[t]
            assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
            py, px = scene.positions[t]
            plate = np.zeros((64, 64), bool)
            plate[py:py + source.plate_size, px:px + source.plate_size] = True
            level = c.background_level + np.where(plate, c.plate_contrast, 0.0)
            ink = (frames[t].mean(-1) - level) * carrier / c.ink_contrast   # demodulated strokes
            inside = np.zeros((64, 64), bool)
            inside[y0:y1, x0:x1] = True
            assert np.abs(ink[~inside]).max() < 0.02, "ink outside the recorded box"
            np.testing.assert_allclose(ink[y0:y1, x0:x1], sprite, atol=0.02)


def test_glance_resolution_hides_strokes_but_shows_the_plate():
    dc = data_config(size=96, frames=1, num_clutter=20, noise_std=0.0, background_contrast=0.0)
    source = synthetic.create_source(dc, "test")
    frame = source.get(0)["glance"][0].astype(np.float32)
    # Channel means: the plate's tint is zero-mean over the channels.
    glance = np.asarray(jax.image.resize(frame, (48, 48, 3), "linear", antialias=True)).mean(-1)
    frame = frame.mean(-1)
    scene = source.scene(0)
    py, px = scene.positions[0]
    c = dc.synthetic
    bg, plate = 255 * c.background_level, 255 * (c.background_level + c.plate_contrast)
    # Full resolution: strokes swing by ± ink_contrast around the local level.
    assert np.abs(frame - bg).max() > 0.8 * 255 * c.ink_contrast
    # Glance resolution (antialiased ×2): away from the plate edge everything is flat — the
    # digit and the clutter fragments vanish — while the plate still stands out.
    inner = glance[py // 2 + 2:(py + source.plate_size) // 2 - 2,
                   px // 2 + 2:(px + source.plate_size) // 2 - 2]
    assert np.abs(inner - plate).max() < 0.1 * 255 * c.ink_contrast
    outside = np.ones((48, 48), bool)
    outside[max(py // 2 - 2, 0):(py + source.plate_size) // 2 + 2,
            max(px // 2 - 2, 0):(px + source.plate_size) // 2 + 2] = False
    assert np.abs(glance[outside] - bg).max() < 0.1 * 255 * c.ink_contrast
    assert inner.mean() - bg > 0.8 * 255 * c.plate_contrast


def test_region_grid_and_plate_tint():
    # 3×3 regions on 96-px frames: the whole digit box stays inside one 32-px cell per video.
    dc = data_config(size=96, frames=6, region_grid=3, digit_size=16, plate_margin=3,
                     speed_min=2.0, speed_max=2.0, noise_std=0.0, background_contrast=0.0,
                     num_clutter=0)
    source = synthetic.create_source(dc, "test")
    cells = set()
    for i in range(len(source)):
        scene = source.scene(i)
        cell = scene.positions[0] // 32
        cells.add(tuple(cell))
        assert (scene.positions // 32 == cell).all()
        assert (scene.boxes[:, :2] >= cell * 32).all() and (scene.boxes[:, 2:] <= cell * 32 + 32).all()
        # The plate is tinted by label parity: red above blue for even labels, below for odd.
        frame = source.get(i)["glance"][0].astype(np.float32)
        py, px = scene.positions[0]
        r, g, b = frame[py:py + source.plate_size, px:px + source.plate_size].mean((0, 1))
        assert (r > b) == (scene.label % 2 == 0), (scene.label, r, b)
    assert len(cells) > 1
    with pytest.raises(ValueError, match="region_grid"):
        synthetic.create_source(data_config(size=64, region_grid=3), "test")


def test_bounce_stays_inside_and_keeps_speed():
    pos = synthetic.bounce(np.array([1.0, 39.0]), np.array([-3.0, 2.5]), 30, 40)
    assert pos.min() >= 0 and pos.max() <= 40
    steps = np.abs(np.diff(pos, axis=0))
    assert steps[:, 0].max() <= 3 and steps[:, 1].max() <= 3
    # First step: row 1 - 3 = -2 reflects to 2, column 39 + 2.5 = 41.5 reflects to 38.5.
    assert pos[1, 0] == 2 and pos[1, 1] in (38, 39)


def test_bad_input_errors():
    dc = data_config()
    with pytest.raises(ValueError, match="unknown split"):
        synthetic.create_source(dc, "holdout")
    with pytest.raises(DataError, match=r"synthetic:val: video index 6 out of range"):
        synthetic.create_source(dc, "val").get(6)
    bad = data_config()
    bad.num_classes = 7
    with pytest.raises(ValueError, match="num_classes=7"):
        synthetic.create_source(bad, "val")
    bad = data_config(digit_size=60)
    with pytest.raises(ValueError, match="digit_size=60"):
        synthetic.create_source(bad, "val")
    with pytest.raises(ValueError, match="test_digits"):
        synthetic.digit_pools(1000, 900)


@pytest.mark.parametrize("arg", [None, "quick"])
def test_config_builds_every_stage(arg):
    config = load_config(arg)
    models.validate_model_config(config.model)
    names = stages.stage_names(config)
    assert names and set(names) == set(config.stages.keys())
    for name in names:
        recipe = stages.resolve_recipe(config, name)
        assert recipe.batch_size > 0 and recipe.trained_modules
    m, d = config.model, config.data
    assert (d.input_size, d.num_glance_frames, d.num_classes) == (
        m.input_size, m.num_glance_frames, m.num_classes)
    assert m.glance_resize != "nearest" and m.glance_size * 2 <= m.input_size
    assert 0.05 <= m.patch_size ** 2 / m.input_size ** 2 <= 0.15
    assert config.benchmark.enabled and config.benchmark.split == "test"
    source = synthetic.create_source(d, "test")
    assert source.get(0)["glance"].shape == (m.num_glance_frames, m.input_size, m.input_size, 3)
    with pytest.raises(ValueError, match="unknown options"):
        load_config("fast")
    # V1 draws period-2 strokes; V2 (fractional crops) defaults to period 3; both overridable.
    assert d.synthetic.halftone_period == 2
    assert load_config("mode=v2").data.synthetic.halftone_period == 3
    assert load_config("halftone=3").data.synthetic.halftone_period == 3
    assert load_config("mode=v2,halftone=2").data.synthetic.halftone_period == 2


def _small_synthetic():
    """configs/synthetic.py:quick on tiny networks, 64-px frames, 2 frames, patch 24 (3x3 grid)."""
    config = load_config("quick")
    m = models.tiny_model_config("actnet")
    m.num_classes, m.glance_size, m.glance_resize, m.patch_size = 10, 32, "linear", 24
    m.num_glance_frames = m.num_focus_frames = 2
    m.policy.grid_size = 3
    config.model = m
    d = config.data
    d.input_size = d.scale_size = 64
    d.num_glance_frames = d.num_focus_frames = 2
    d.synthetic.digit_size = 16
    d.synthetic.region_grid = 1
    model = models.create_model(config)
    variables = models.init_variables(model, jax.random.key(0))
    source = synthetic.create_source(config.data, "train")
    examples = [source.get(i, np.random.default_rng([3, i])) for i in range(8)]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "index"}
    batch["mask"] = np.ones(8, bool)
    return config, model, variables, batch


def test_random_grid_patches_are_uniform_cells_of_the_policy_grid():
    from adafocus_jax import crop
    config, model, variables, batch = _small_synthetic()
    offsets = np.asarray(model.apply(variables, jax.random.key(1), 4000,
                                     method="random_grid_offsets"))            # [4000, 2, 2]
    table = crop.grid_offset_table(3, 64, 24)                                  # 9 cells
    cells = (offsets[..., None, :] == table).all(-1).argmax(-1)
    assert (offsets[..., None, :] == table).all(-1).any(-1).all()              # always a cell
    counts = np.bincount(cells.ravel(), minlength=9) / cells.size
    np.testing.assert_allclose(counts, 1 / 9, atol=0.02)
    gaussian = models.create_model(models.tiny_model_config("sthv2"))
    with pytest.raises(ValueError, match="categorical"):
        gaussian.apply(models.init_variables(gaussian, jax.random.key(0)), jax.random.key(1), 2,
                       method="random_grid_offsets")


def test_target_patch_mode_crops_patches_holding_the_digit():
    from adafocus_jax import crop, metrics, train
    from adafocus_jax.data.transforms import normalize_jnp
    config, model, variables, batch = _small_synthetic()
    recipe = stages.resolve_recipe(config, "stage0_focuser")
    assert recipe.patch_mode == "target"       # what configs/synthetic.py pre-trains on
    rng = jax.random.key(4)
    loss, (_, logits) = train.classification_loss(model, recipe, variables, batch, rng)
    # By hand: the same patch draw (the "patches" stream of this step's key), crop, focuser head.
    offsets = crop.target_offsets(train._rngs(rng)["patches"], batch["target_box"], 24, 64)
    assert float(metrics.patch_hit_fraction(offsets, batch["target_box"], 24).min()) == 1.0
    patches = crop.crop_patches(normalize_jnp(batch["glance"]), offsets, 24)
    assert recipe.modes["focuser"]                # train-mode BatchNorm, as in the step
    want, _ = model.apply(variables, patches, True, method="focuser_logits",
                          mutable=["batch_stats"])
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, metrics.cross_entropy(want, batch["label"]).mean(),
                               rtol=1e-5)
    no_box = {k: v for k, v in batch.items() if k != "target_box"}
    with pytest.raises(ValueError, match="target_box"):
        train.classification_loss(model, recipe, variables, no_box, rng)


@pytest.mark.parametrize("period", [2, 3])
def test_halftone_hides_at_glance_and_period_3_survives_subpixel_crops(period):
    """Both carriers vanish at glance resolution; only period 3 survives a half-pixel resample
    (what AdaFocusV2's differentiable crop does at a fractional location)."""
    carrier = synthetic.halftone_carrier(48, period)
    assert carrier.max() == pytest.approx(1.0) and abs(carrier.mean()) < 0.02
    glance = np.asarray(jax.image.resize(carrier, (24, 24), "linear", antialias=True))[1:-1, 1:-1]
    assert np.abs(glance).max() < (1e-6 if period == 2 else 1 / 64 + 1e-4)
    # Bilinear resample at a half-pixel offset along both axes: the mean of each 2×2 block.
    shifted = (carrier[:-1, :-1] + carrier[1:, :-1] + carrier[:-1, 1:] + carrier[1:, 1:]) / 4
    if period == 2:
        assert np.abs(shifted).max() < 1e-6          # the strokes are gone
    else:
        assert np.abs(shifted).max() == pytest.approx(0.25, abs=1e-6)   # ½ per axis survives
    with pytest.raises(ValueError, match="halftone_period"):
        synthetic.halftone_carrier(48, 4)


def test_digit_frames_show_the_digit_in_exactly_those_frames_and_keep_labels():
    """`digit_frames = L`: the digit and its plate in L consecutive frames, clutter only in the
    others; label, digit, path, clutter and boxes are those of the all-frames video."""
    frames, length = 6, 2
    every = data_config(frames=frames)
    some = data_config(frames=frames, digit_frames=length)
    starts = set()
    for split in ("test", "train"):
        all_src, some_src = (synthetic.create_source(c, split) for c in (every, some))
        for i in range(6):
            rng = (lambda: np.random.default_rng([7, i])) if split == "train" else (lambda: None)
            full, part = all_src.get(i, rng()), some_src.get(i, rng())
            assert "target_present" not in full
            for key in ("label", "labels", "target_box"):
                np.testing.assert_array_equal(part[key], full[key])
            present = part["target_present"]
            assert present.dtype == bool and present.shape == (frames,)
            shown = np.flatnonzero(present)
            assert len(shown) == length and (np.diff(shown) == 1).all()   # consecutive
            starts.add(int(shown[0]))
            # From the pixels: a frame that shows the digit is the all-frames render exactly; the
            # others are all the same (static clutter) and differ from it only inside that
            # frame's plate, where they are darker by about the plate's brightness.
            plate = some_src.plate_size
            absent = np.flatnonzero(~present)
            for t in range(frames):
                if present[t]:
                    np.testing.assert_array_equal(part["glance"][t], full["glance"][t])
                    continue
                np.testing.assert_array_equal(part["glance"][t], part["glance"][absent[0]])
                py, px = some_src.scene(i, rng()).positions[t]
                win = (slice(py, py + plate), slice(px, px + plate))
                outside = np.ones((64, 64), bool)
                outside[win] = False
                np.testing.assert_array_equal(part["glance"][t][outside],
                                              full["glance"][t][outside])
                drop = (full["glance"][t][win].astype(float) - part["glance"][t][win]).mean()
                assert drop > 0.6 * some.synthetic.plate_contrast * 255, drop
    assert len(starts) >= 3          # the start varies (5 possible for 2 of 6 frames)
    with pytest.raises(ValueError, match="digit_frames=7"):
        synthetic.create_source(data_config(frames=frames, digit_frames=7), "val")
