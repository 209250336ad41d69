"""Extract JPEG frames from videos the way the official AdaFocus code expects, with PyAV.

    python -m adafocus_jax.tools.extract_frames --videos=DIR --output=DIR [--height=360] \\
        [--fps=F] [--template=image_{:05d}.jpg] [--workers=N] \\
        [--list_file=OUT.txt [--label=N | --class_index=classInd.txt | --activitynet_json=J]]

The official ActivityNet/FCVID/Mini-K preparation (`ops/video_jpg.py`, adafocus_v1.md §7.1) runs
`ffmpeg -i <video> -vf scale=-1:360 [-r fps] <out>/<name>/image_%05d.jpg`. This tool does the same
without an ffmpeg binary:

* every video under --videos (recursively; .mp4 .mkv .webm .avi .mov by default) becomes the
  folder `<output>/<relative path without extension>/`;
* frames are scaled to --height with FFmpeg's bicubic scaler, the width as `scale=-1:H` rounds it
  (--height=0 keeps the native size; TSM's Sth-Sth v2 frames are --height=256
  --template={:06d}.jpg);
* files are `template.format(i)` for i = 1, 2, ... (1-based, as the readers expect);
* --fps resamples to a constant rate, as FFmpeg's `-r` does by dropping or repeating frames:
  output frame k is the input frame on screen at time k / fps (from the first frame's
  timestamp); without it every decoded frame is written (native rate);
* a folder is written under a temporary name and renamed when complete, so an interrupted run
  never leaves a half-extracted folder that looks finished; finished folders are skipped unless
  --overwrite.

--list_file writes the list the frame reader reads (`<folder>,<num_frames>,<label>[,...]` with
--list_separator=comma; `space`/`space_path` for TSM/Mini-K style). Labels come from --label
(one class for all), --class_index (the name of the video's parent folder, Kinetics/FCVID
layout) or --activitynet_json (the annotations of the video's YouTube id; videos outside
--subset are left out of the list).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import shutil
import sys
import time
from typing import Callable, Iterator, Sequence

from PIL import Image

from adafocus_jax.data import lists
from adafocus_jax.data.ssv2_video import frame_to_rgb

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def find_videos(root: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[str]:
    """Relative paths of the videos under `root`, sorted."""
    exts = tuple(e.lower() for e in extensions)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if name.lower().endswith(exts):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def output_name(relative_video: str) -> str:
    """Frame folder (relative) of a video: its path without the extension."""
    return os.path.splitext(relative_video)[0]


def extract_video(video_path: str, out_dir: str, *, height: int = 360, fps: float = 0.0,
                  template: str = "image_{:05d}.jpg", quality: int = 95) -> int:
    """Writes the frames of one video to `out_dir` (created); returns how many were written.

    Raises RuntimeError (naming the video) if it cannot be decoded.
    """
    import av
    tmp_dir = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    written = 0
    try:
        with av.open(video_path) as container:
            if not container.streams.video:
                raise RuntimeError(f"{video_path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # one video at a time per process: use the codec's threads
            rate = float(stream.average_rate) if stream.average_rate else 25.0
            start = None
            next_slot = 0
            for position, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else position / rate
                if start is None:
                    start = t
                if fps > 0:
                    # Output frame k is the input frame on screen at time k / fps.
                    end = t - start + 1.0 / rate
                    repeats = 0
                    while (next_slot + repeats) / fps < end - 1e-9:
                        repeats += 1
                else:
                    repeats = 1
                if repeats == 0:
                    continue  # dropped: a frame for this output slot was already written
                image = Image.fromarray(frame_to_rgb(frame, height))
                for _ in range(repeats):
                    written += 1
                    image.save(os.path.join(tmp_dir, template.format(written)), format="JPEG",
                               quality=quality)
                next_slot += repeats
    except av.FFmpegError as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise RuntimeError(f"{video_path}: decoding failed ({type(e).__name__}: {e})") from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if written == 0:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise RuntimeError(f"{video_path}: no frames decoded")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp_dir, out_dir)
    return written


def count_existing(out_dir: str, template: str) -> int:
    """Frames 1, 2, ... already in `out_dir` (a finished folder; 0 if none)."""
    n = 0
    while os.path.exists(os.path.join(out_dir, template.format(n + 1))):
        n += 1
    return n


def _job(args) -> tuple[str, int, str | None]:
    relative, videos, output, height, fps, template, quality, overwrite = args
    out_dir = os.path.join(output, output_name(relative))
    if not overwrite and os.path.isdir(out_dir):
        n = count_existing(out_dir, template)
        if n:
            return relative, n, None
    try:
        n = extract_video(os.path.join(videos, relative), out_dir, height=height, fps=fps,
                          template=template, quality=quality)
        return relative, n, None
    except Exception as e:  # reported per video, the run goes on
        return relative, 0, str(e)


def run_jobs(fn: Callable, jobs: Sequence, workers: int, *, progress: bool = True,
             unit: str = "video") -> Iterator:
    """Yields `fn(job)` for every job, in order, with a progress bar (rate and ETA).

    workers 1 runs in this process; more use a process pool (`fn` must be picklable).
    """
    from tqdm import tqdm  # a dependency of tensorflow-datasets
    with tqdm(total=len(jobs), unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1:
            for job in jobs:
                yield fn(job)
                bar.update(1)
        else:
            with concurrent.futures.ProcessPoolExecutor(workers) as pool:
                for result in pool.map(fn, jobs, chunksize=1):
                    yield result
                    bar.update(1)


class _Labeller:
    """Labels of a video for the list file, from the chosen source."""

    def __init__(self, args):
        self.constant = args.label
        self.class_index = None
        self.anet = None
        if args.class_index:
            self.class_index = {n: i for i, n in enumerate(lists.read_class_names(args.class_index))}
        if args.activitynet_json:
            with open(args.activitynet_json, encoding="utf-8") as f:
                data = json.load(f)
            names = (lists.read_class_names(args.class_index) if args.class_index
                     else lists.activitynet_classes(data, args.activitynet_json))
            index = {n: i for i, n in enumerate(names)}
            self.anet = {}
            for vid, entry in data.get("database", {}).items():
                if entry.get("subset") != args.subset:
                    continue
                self.anet[vid] = [index[a["label"]] for a in entry.get("annotations", [])
                                  if a.get("label") in index]
            self.class_index = None
        if sum(x is not None for x in (self.constant, self.class_index, self.anet)) != 1:
            raise SystemExit("--list_file needs exactly one of --label, --class_index, "
                             "--activitynet_json")

    def __call__(self, relative: str) -> list[int] | None:
        """Labels (None: leave the video out of the list)."""
        if self.constant is not None:
            return [self.constant]
        if self.anet is not None:
            vid = os.path.basename(output_name(relative))
            for key in (vid, vid[2:] if vid.startswith("v_") else "v_" + vid):
                if key in self.anet:
                    return self.anet[key]
            return None
        parent = os.path.basename(os.path.dirname(relative))
        if parent not in self.class_index:
            raise SystemExit(f"{relative}: parent folder {parent!r} is not a class in "
                             f"--class_index")
        return [self.class_index[parent]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", required=True, help="folder of videos (searched recursively)")
    p.add_argument("--output", required=True, help="folder for the per-video frame folders")
    p.add_argument("--height", type=int, default=360, help="frame height (0 = native)")
    p.add_argument("--fps", type=float, default=0.0, help="resample to this rate (0 = native)")
    p.add_argument("--template", default="image_{:05d}.jpg", help="frame file name (1-based)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--workers", type=int, default=1, help="videos extracted in parallel")
    p.add_argument("--extensions", default=",".join(VIDEO_EXTENSIONS))
    p.add_argument("--overwrite", action="store_true", help="re-extract finished folders")
    p.add_argument("--list_file", default="", help="write the list file here")
    p.add_argument("--list_separator", default="comma", choices=lists.SEPARATORS)
    p.add_argument("--list_prefix", default="", help="prepended to each folder in the list "
                   "(e.g. images/val/ when --output is <root>/images/val)")
    p.add_argument("--label", type=int, default=None, help="one label for every video")
    p.add_argument("--class_index", default="", help="class names; label = parent folder name")
    p.add_argument("--activitynet_json", default="", help="ActivityNet v1.3 JSON for labels")
    p.add_argument("--subset", default="training", help="ActivityNet subset for the list")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        template_ok = args.template.format(1) != args.template.format(2)
    except (IndexError, KeyError, ValueError):
        template_ok = False
    if not template_ok:
        p.error(f"--template {args.template!r} must format the frame index, e.g. image_{{:05d}}.jpg")
    if args.height < 0 or args.fps < 0 or args.workers < 1:
        p.error("--height and --fps must be >= 0, --workers >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    labeller = _Labeller(args) if args.list_file else None
    videos = find_videos(args.videos, [e.strip() for e in args.extensions.split(",") if e.strip()])
    if not videos:
        print(f"no videos with extensions {args.extensions} under {args.videos}", file=sys.stderr)
        return 1
    os.makedirs(args.output, exist_ok=True)
    jobs = [(v, args.videos, args.output, args.height, args.fps, args.template, args.quality,
             args.overwrite) for v in videos]
    t0 = time.time()
    results = {relative: (n, error) for relative, n, error in
               run_jobs(_job, jobs, args.workers, progress=not args.no_progress)}
    failed = {v: e for v, (n, e) in results.items() if e}
    total = sum(n for n, _ in results.values())
    print(f"{len(videos) - len(failed)}/{len(videos)} videos, {total} frames in "
          f"{time.time() - t0:.1f} s -> {args.output}")
    for video, error in sorted(failed.items()):
        print(f"FAILED {error}", file=sys.stderr)
    if labeller is not None:
        rows, left_out = [], 0
        for video in videos:
            n, error = results[video]
            labels = labeller(video) if not error else None
            if error or not labels:
                left_out += 1
                continue
            folder = os.path.join(args.list_prefix, output_name(video)) if args.list_prefix \
                else output_name(video)
            rows.append(lists.format_row(folder, n, labels, args.list_separator))
        os.makedirs(os.path.dirname(os.path.abspath(args.list_file)), exist_ok=True)
        with open(args.list_file, "w", encoding="utf-8") as f:
            f.write("".join(r + "\n" for r in rows))
        print(f"wrote {len(rows)} rows to {args.list_file} ({left_out} videos left out)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
