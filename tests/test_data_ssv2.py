"""The SSv2 webm reader: official-release layout, PyAV decode of only the needed frames, errors."""
import json
import os

import numpy as np
import pytest

from adafocus_jax import data as data_lib
from adafocus_jax.data import ssv2_video
from adafocus_jax.data.errors import DataError

from test_data_util import frame_ids, small_config, write_webm

CLASSES = {"Approaching something": "0", "Holding something next to something": "1"}


def _release(root, videos, split_file="validation.json", resize_height=0):
    """A tiny official-style release: <root>/videos/<id>.webm + labels/split JSONs."""
    entries = []
    for vid, n, template in videos:
        write_webm(os.path.join(root, "videos", f"{vid}.webm"), n)
        entries.append({"id": vid, "label": "x", "template": template, "placeholders": []})
    with open(os.path.join(root, "labels.json"), "w") as f:
        json.dump(CLASSES, f)
    with open(os.path.join(root, split_file), "w") as f:
        json.dump(entries, f)
    return small_config("sthv2", root, format="webm", num_classes=2, **{
        "webm.video_dir": "videos", "webm.resize_height": resize_height})


def test_webm_eval_example_matches_hand_computed_indices(tmp_path):
    c = _release(str(tmp_path), [("11", 20, "Holding [something] next to [something]"),
                                 ("12", 30, "Approaching [something]")])
    source = data_lib.create_source(c, "val")
    assert len(source) == 2
    ex = source.get(0, None)
    np.testing.assert_array_equal(frame_ids(ex["glance"]), [2, 4, 7, 9, 12, 14, 17, 19])
    np.testing.assert_array_equal(frame_ids(ex["focus"]),
                                  [1, 3, 5, 6, 8, 10, 11, 13, 15, 16, 18, 20])
    assert ex["glance"].shape == (8, 32, 32, 3) and ex["focus"].shape == (12, 32, 32, 3)
    assert ex["label"] == 1 and source.get(1, None)["label"] == 0
    assert source.num_frames(1) == 30


def test_decode_stops_after_the_last_needed_frame(tmp_path, monkeypatch):
    path = str(tmp_path / "v.webm")
    write_webm(path, 30)
    converted = []
    real = ssv2_video.frame_to_rgb
    monkeypatch.setattr(ssv2_video, "frame_to_rgb",
                        lambda frame, h=0: converted.append(frame.pts) or real(frame, h))
    frames = ssv2_video.decode_video_frames(path, [3, 4, 10], "o")
    assert frame_ids(np.stack(frames)).tolist() == [3, 4, 10]
    assert len(converted) == 3  # only the wanted frames are converted to RGB
    with pytest.raises(DataError, match=r"o: .*v.webm: only 30 frames could be decoded, frame 31"):
        ssv2_video.decode_video_frames(path, [2, 31], "o")


def test_resize_height_like_ffmpeg_scale(tmp_path):
    # 64 x 48 -> height 256: width 64 * 256 / 48 = 341.33 -> 341.
    assert ssv2_video.scaled_width(64, 48, 256) == 341
    assert ssv2_video.scaled_width(427, 240, 256) == 455  # an SSv2 clip: 455.47 -> 455
    assert ssv2_video.scaled_width(3, 2, 1) == 2          # 1.5 rounds away from zero
    path = str(tmp_path / "v.webm")
    write_webm(path, 4)
    (frame,) = ssv2_video.decode_video_frames(path, [2], "o", resize_height=256)
    assert frame.shape == (256, 341, 3) and frame_ids(frame) == 2


def test_train_sampling_and_loader(tmp_path):
    c = _release(str(tmp_path), [(str(i), 24 + i, "Approaching [something]") for i in range(3)],
                 split_file="train.json")
    source = data_lib.create_source(c, "train")
    ex = source.get(2, np.random.default_rng(0))
    ids = frame_ids(ex["glance"])
    # n = 26, T = 8: avg 3, one frame per segment [3k+1, 3k+3].
    assert all(3 * k + 1 <= i <= 3 * k + 3 for k, i in enumerate(ids)), ids
    batch = next(iter(data_lib.make_loader(source, batch_size=3, shuffle=True, seed=0,
                                           num_workers=2)))
    assert batch["focus"].shape == (3, 12, 32, 32, 3) and batch["mask"].all()


def test_missing_and_corrupt_videos(tmp_path):
    c = _release(str(tmp_path), [("1", 12, "Approaching [something]"),
                                 ("2", 12, "Approaching [something]"),
                                 ("3", 2, "Approaching [something]")])
    os.remove(os.path.join(c.root, "videos", "1.webm"))
    with open(os.path.join(c.root, "videos", "2.webm"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 40)  # garbage inside the EBML headers
        f.truncate(160)
    source = data_lib.create_source(c, "val")
    where = os.path.join(c.root, "validation.json")
    with pytest.raises(DataError, match=rf"{where}:entry 1: missing video file .*1.webm"):
        source.get(0, None)
    with pytest.raises(DataError, match=rf"{where}:entry 2: .*2.webm"):
        source.get(1, None)
    with pytest.raises(DataError, match=rf"{where}:entry 3: .*2 frames, fewer than min_frames"):
        source.get(2, None)


def test_seeks_to_the_key_frame_before_the_first_wanted_frame(tmp_path, monkeypatch):
    import av
    path = str(tmp_path / "gop.webm")
    with av.open(path, "w") as container:  # key frame every 8 frames
        stream = container.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "10", "deadline": "realtime", "cpu-used": "8", "g": "8",
                          "keyint_min": "8"}
        from test_data_util import frame_array
        for i in range(1, 41):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_array(i), "rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    index = ssv2_video.index_video(path, "o")
    assert index.num_frames == 40 and index.keyframes[:3] == (0, 8, 16)
    assert index.seek_start(30) == (24, index.pts[24]) and index.seek_start(5) is None
    converted = []
    real = ssv2_video.frame_to_rgb
    monkeypatch.setattr(ssv2_video, "frame_to_rgb",
                        lambda frame, h=0: converted.append(frame.pts) or real(frame, h))
    decoded = []
    real_decode = av.container.InputContainer.decode

    def counting_decode(self, *args, **kwargs):
        for frame in real_decode(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(av.container.InputContainer, "decode", counting_decode)
    seeked = ssv2_video.decode_video_frames(path, [27, 30, 35], "o", index=index)
    assert len(decoded) == 35 - 24  # from key frame 25 (position 24) to frame 35
    decoded.clear()
    plain = ssv2_video.decode_video_frames(path, [27, 30, 35], "o")
    assert len(decoded) == 35
    for a, b in zip(seeked, plain):
        np.testing.assert_array_equal(a, b)
    assert frame_ids(np.stack(seeked)).tolist() == [27, 30, 35]
