"""Sampling and augmentation against hand-computed numbers (adafocus_v1.md §7.2-7.3), JPEG decode."""
import io

import numpy as np
import pytest
from PIL import Image

from adafocus_jax.data import decode, transforms
from adafocus_jax.data.errors import DataError
from adafocus_jax.data.frames import arrange_labels


# ---- temporal sampling -------------------------------------------------------------------

def test_eval_indices_are_segment_centres():
    # n = 20, T = 8: tick = 2.5, offsets int(1.25 + 2.5 k) = 1, 3, 6, 8, 11, 13, 16, 18 (+1).
    np.testing.assert_array_equal(transforms.segment_indices(20, 8),
                                  [2, 4, 7, 9, 12, 14, 17, 19])
    # n = 37, T = 12: tick = 37/12; k = 0 -> int(1.5416) = 1, k = 11 -> int(35.458) = 35.
    idx = transforms.segment_indices(37, 12)
    assert idx[0] == 2 and idx[-1] == 36 and len(idx) == 12


@pytest.mark.parametrize("rng", [None, np.random.default_rng(0)])
def test_short_video_fallbacks(rng):
    # n <= T: Sth-Sth reads frame 1 everywhere, ANet/FCVID/Mini-K 1..n then the last repeated.
    np.testing.assert_array_equal(
        transforms.segment_indices(5, 8, rng, short_video="first_frame"), [1] * 8)
    np.testing.assert_array_equal(
        transforms.segment_indices(5, 8, rng, short_video="repeat_last"),
        [1, 2, 3, 4, 5, 5, 5, 5])


def test_eval_with_n_equal_t_uses_the_fallback():
    # The centre rule needs n > T; n == T falls back (official `if num_frames > T`).
    np.testing.assert_array_equal(transforms.segment_indices(12, 12, short_video="first_frame"),
                                  [1] * 12)
    np.testing.assert_array_equal(transforms.segment_indices(12, 12, short_video="repeat_last"),
                                  np.arange(1, 13))


def test_train_indices_one_random_frame_per_segment():
    # n = 20, T = 8: avg = 2, frame k is 2k + {0, 1} (+1).
    seen = set()
    for seed in range(50):
        idx = transforms.segment_indices(20, 8, np.random.default_rng(seed))
        assert all(2 * k + 1 <= i <= 2 * k + 2 for k, i in enumerate(idx)), idx
        seen.update(idx.tolist())
    assert seen == set(range(1, 17))  # frames 17-20 are never drawn (avg * T = 16)
    np.testing.assert_array_equal(transforms.segment_indices(8, 8, np.random.default_rng(0)),
                                  np.arange(1, 9))


def test_multi_clip_eval_shifts_the_sample_point():
    # n = 20, T = 4, 2 clips: tick = 5, shifts 1.25 and 3.75.
    np.testing.assert_array_equal(transforms.segment_indices(20, 4, clip_index=0, num_clips=2),
                                  [2, 7, 12, 17])
    np.testing.assert_array_equal(transforms.segment_indices(20, 4, clip_index=1, num_clips=2),
                                  [4, 9, 14, 19])


# ---- spatial ----------------------------------------------------------------------------

def test_multiscale_crop_candidates_hand_computed():
    # 64 x 48 image, output 32: base 48 -> sizes 48, 42, 36, int(31.68) = 31 -> snapped to 32.
    pairs = transforms.multiscale_crop_candidates(64, 48, 32)
    assert pairs == [(48, 48), (42, 48), (48, 42), (42, 42), (36, 42), (42, 36), (36, 36),
                     (32, 36), (36, 32), (32, 32)]
    # 340 x 256, output 224: 256, 224, 192, int(168.96) = 168.
    assert sorted(set(w for w, _ in transforms.multiscale_crop_candidates(340, 256, 224))) == [
        168, 192, 224, 256]


def test_fixed_crop_offsets_hand_computed():
    # 64 x 48 image, crop 42 x 36: w_step = 5, h_step = 3.
    assert transforms.fixed_crop_offsets(64, 48, 42, 36) == [
        (0, 0), (20, 0), (0, 12), (20, 12), (10, 6), (0, 6), (20, 6), (10, 12), (10, 0),
        (5, 3), (15, 3), (5, 9), (15, 9)]
    assert len(transforms.fixed_crop_offsets(64, 48, 42, 36, more_fix_crop=False)) == 5


def test_train_transform_draws_only_official_boxes_and_matches_pil():
    frame = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(1, 48, 64, 3)
    pairs = set(transforms.multiscale_crop_candidates(64, 48, 32))
    seen_pairs = set()
    for seed in range(300):
        box = transforms.sample_multiscale_crop(64, 48, 32, np.random.default_rng(seed))
        assert (box.w, box.h) in pairs
        assert (box.x, box.y) in transforms.fixed_crop_offsets(64, 48, box.w, box.h)
        seen_pairs.add((box.w, box.h))
    assert seen_pairs == pairs
    # Pixels: PIL crop of the drawn box, bilinear resize to 32 x 32, no flip for Sth-Sth.
    out = transforms.train_transform(frame, np.random.default_rng(3), input_size=32)
    box = transforms.sample_multiscale_crop(64, 48, 32, np.random.default_rng(3))
    expected = Image.fromarray(frame[0]).crop(box.pil_box).resize((32, 32), Image.BILINEAR)
    np.testing.assert_array_equal(out[0], np.asarray(expected))


def test_flip_is_a_coin_per_video():
    frames = np.stack([np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (48, 1, 3))] * 2)
    flips = 0
    for seed in range(200):
        out = transforms.train_transform(frames, np.random.default_rng(seed), input_size=32,
                                         flip=True)
        ramp = out[..., 0].astype(int)
        increasing = ramp[:, :, -1].mean() > ramp[:, :, 0].mean()
        assert (ramp[0] == ramp[1]).all()  # the same decision for every frame
        flips += not increasing
    assert 70 < flips < 130


def test_random_translate_shifts_the_whole_clip_with_mirrored_borders():
    # Each pixel holds its own (row, column) so the shift can be read off the output.
    rows, cols = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    clip = np.stack([np.stack([rows, cols, np.full_like(rows, t)], -1) for t in range(3)])
    clip = clip.astype(np.uint8)                                      # [3, 20, 20, 3]
    seen = set()
    for seed in range(400):
        out = transforms.random_translate(clip, 3, np.random.default_rng(seed))
        dx, dy = (int(v) for v in np.random.default_rng(seed).integers(-3, 4, size=2))
        seen.add((dx, dy))
        assert out.shape == clip.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[..., 2], clip[..., 2])      # frames stay in order
        # Content moved by (+dx, +dy); inside, output (y, x) holds input (y - dy, x - dx).
        y, x = 10, 10
        assert (out[1, y, x, 0], out[1, y, x, 1]) == (y - dy, x - dx)
        # Borders are mirrored (reflect, no repeated edge row): row -1 -> row 1, column 20 -> 18.
        expect_row = lambda r: abs(r) if r < 20 else 38 - r
        assert [int(v) for v in out[0, :, x, 0]] == [expect_row(r - dy) for r in range(20)]
        assert [int(v) for v in out[0, y, :, 1]] == [expect_row(c - dx) for c in range(20)]
    assert seen == {(a, b) for a in range(-3, 4) for b in range(-3, 4)}   # all 49 shifts
    assert transforms.random_translate(clip, 0, np.random.default_rng(0)) is clip
    with pytest.raises(ValueError, match="max_shift 20 must be < the frame size 20x20"):
        transforms.random_translate(clip, 20, np.random.default_rng(0))


def test_train_transform_translates_after_the_official_draws():
    """`translate` draws last, so the official crop / flip draws (and pixels) are unchanged."""
    frames = (np.arange(2 * 48 * 64 * 3) % 251).astype(np.uint8).reshape(2, 48, 64, 3)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        official = transforms.train_transform(frames, rng, input_size=32, flip=True)
        want = transforms.random_translate(official, 4, rng)
        got = transforms.train_transform(frames, np.random.default_rng(seed), input_size=32,
                                         flip=True, translate=4)
        np.testing.assert_array_equal(got, want)


def test_eval_transform_scale_and_centre_crop():
    # 64 x 48 -> shorter side 36: (48, 36); centre crop 32 at (round(8.0), round(2.0)) = (8, 2).
    assert transforms.scaled_size(64, 48, 36) == (48, 36)
    assert transforms.scaled_size(48, 64, 36) == (36, 48)
    assert transforms.scaled_size(36, 50, 36) == (36, 50)  # already that size: unchanged
    assert transforms.center_crop_box(48, 36, 32) == transforms.CropBox(8, 2, 32, 32)
    # Python rounds half to even: (49 - 32) / 2 = 8.5 -> 8, (51 - 32) / 2 = 9.5 -> 10.
    assert transforms.center_crop_box(49, 32, 32).x == 8
    assert transforms.center_crop_box(51, 32, 32).x == 10
    frame = (np.arange(48 * 64 * 3) % 253).astype(np.uint8).reshape(1, 48, 64, 3)
    out = transforms.eval_transform(frame, input_size=32, scale_size=36)
    expected = Image.fromarray(frame[0]).resize((48, 36), Image.BILINEAR).crop((8, 2, 40, 34))
    np.testing.assert_array_equal(out[0], np.asarray(expected))


def test_multi_crop_views():
    frame = (np.arange(48 * 64 * 3) % 253).astype(np.uint8).reshape(1, 48, 64, 3)
    three = transforms.eval_transform(frame, input_size=32, scale_size=36, num_crops=3)
    assert three.shape == (3, 1, 32, 32, 3)
    np.testing.assert_array_equal(three[1], transforms.eval_transform(frame, input_size=32,
                                                                      scale_size=36))
    boxes = [b for b, _ in transforms.eval_crop_views(48, 36, 32, 3)]
    assert [b.x for b in boxes] == [0, 8, 16] and {b.y for b in boxes} == {2}
    ten = transforms.eval_transform(frame, input_size=32, scale_size=36, num_crops=10)
    np.testing.assert_array_equal(ten[5], ten[0][:, :, ::-1])  # second five are flipped


def test_normalize_host_and_device_agree():
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    np.testing.assert_allclose(transforms.normalize(x), np.asarray(transforms.normalize_jnp(x)),
                               atol=1e-6)
    np.testing.assert_allclose(transforms.normalize(np.full((1, 3), 255, np.uint8))[0],
                               (1 - np.array(transforms.IMAGENET_MEAN)) /
                               np.array(transforms.IMAGENET_STD), rtol=1e-6)


# ---- labels ------------------------------------------------------------------------------

def test_label_order_official_quirks():
    # Eval: sorted, padded with -1.
    np.testing.assert_array_equal(arrange_labels((3, 7), 3, None, True), [3, 7, -1])
    # Train with 2 labels: swapped with probability 1/3 (the official property recursion).
    swaps = sum(arrange_labels((3, 7), 3, np.random.default_rng(s), True)[0] == 7
                for s in range(3000))
    assert abs(swaps / 3000 - 1 / 3) < 0.03
    # 3 labels: every permutation.
    perms = {tuple(arrange_labels((1, 2, 3), 3, np.random.default_rng(s), True))
             for s in range(200)}
    assert len(perms) == 6
    # Sth-Sth (shuffle_labels False) and one label: untouched.
    np.testing.assert_array_equal(arrange_labels((3, 7), 3, np.random.default_rng(0), False),
                                  [3, 7, -1])
    np.testing.assert_array_equal(arrange_labels((5,), 3, np.random.default_rng(0), True),
                                  [5, -1, -1])


# ---- JPEG decode -------------------------------------------------------------------------

def _encode(array, **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("kw", [dict(quality=90), dict(quality=75, progressive=True),
                                dict(quality=95, subsampling=0)])
def test_decode_matches_pil_bit_for_bit(kw):
    rng = np.random.default_rng(0)
    array = np.clip(rng.normal(128, 40, (37, 53, 3)), 0, 255).astype(np.uint8)
    data = _encode(array, **kw)
    ours = np.asarray(decode.decode_jpeg(data, "x.jpg"))
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(ours, pil)
    grey = _encode(array[..., 0])
    np.testing.assert_array_equal(np.asarray(decode.decode_jpeg(grey, "g.jpg")),
                                  np.asarray(Image.open(io.BytesIO(grey)).convert("RGB")))


def test_decode_rejects_corrupt_and_empty_files():
    data = _encode(np.full((32, 32, 3), 100, np.uint8))
    with pytest.raises(DataError, match="bad.jpg: corrupt JPEG"):
        decode.decode_jpeg(data[:len(data) // 2], "bad.jpg")
    with pytest.raises(DataError, match="e.jpg: empty"):
        decode.decode_jpeg(b"", "e.jpg")
    with pytest.raises(DataError, match="t.jpg: cannot decode"):
        decode.decode_jpeg(b"not an image at all", "t.jpg")
