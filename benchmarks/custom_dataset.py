"""Your own videos, end to end, on a dataset made by another generator than the built-in one:
render a class-per-subfolder tree of frame folders, prepare it with tools/prepare_dataset, train
configs/custom.py's small preset through main.py, and report held-out top-1 of the learned policy
against random and centre patches.

    python benchmarks/custom_dataset.py --workdir=DIR [--videos_per_class=60] [--seed=0] \\
        [--config_options=size=small] [--skip_train]

The data (`render_dataset`): 10 classes of moving digits among clutter, 256 x 256 frames, 16 frames
per video, 60 videos per class; `prepare_dataset --val_fraction=0.25` splits them 450 / 150. It
shares nothing with adafocus_jax/data/synthetic.py (sklearn 8x8 digits drawn as checkerboards on a
tinted plate, one of 3x3 regions): here each digit is a glyph of Pillow's built-in TrueType font
(DejaVu-like, 40-56 px, random colour with a dark outline) that drifts along a straight line
bouncing off the frame edges, on a smooth random-colour background with static lines and
rectangles, among 4 moving distractor letters of the same font and size range. The policy has no
fixed region to learn: the digit can be anywhere.

Writes `DIR/videos/` (the tree), `DIR/data/` (the prepared dataset), `DIR/run/` (training) and
`DIR/custom_dataset.json` = the benchmark table of the run plus the preparation summary and the
CPU seconds of the training process (user + system, all threads: `resource.getrusage` of the
child).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DISTRACTORS = "ACEFHKLMPRTUVWXY"
SIZE, FRAMES = 256, 16


def _background(rng: np.random.Generator) -> Image.Image:
    """Smooth colour noise (an 8 x 8 random field upsampled) with static lines and boxes."""
    field = rng.uniform(40, 170, size=(8, 8, 3)).astype(np.uint8)
    image = Image.fromarray(field).resize((SIZE, SIZE), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        xy = [tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(2)]
        draw.line(xy, fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 4)))
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - 40, 2))
        w, h = (int(v) for v in rng.integers(12, 40, 2))
        draw.rectangle([x0, y0, x0 + w, y0 + h],
                       outline=tuple(int(v) for v in rng.integers(0, 256, 3)), width=2)
    return image.filter(ImageFilter.GaussianBlur(0.6))


class _Sprite:
    """A glyph moving on a straight line and bouncing off the edges."""

    def __init__(self, text: str, rng: np.random.Generator,
                 fonts: dict[int, ImageFont.FreeTypeFont]):
        self.text = text
        self.font = fonts[int(rng.choice(sorted(fonts)))]
        left, top, right, bottom = self.font.getbbox(text, stroke_width=2)
        self.offset = np.array([left, top], float)
        self.extent = np.array([right - left, bottom - top], float)
        self.pos = rng.uniform(0, SIZE - self.extent)
        speed = rng.uniform(3.0, 8.0)
        angle = rng.uniform(0, 2 * np.pi)
        self.vel = speed * np.array([np.cos(angle), np.sin(angle)])
        self.colour = tuple(int(v) for v in rng.integers(140, 256, 3))

    def draw(self, draw: ImageDraw.ImageDraw) -> None:
        x, y = self.pos - self.offset
        draw.text((float(x), float(y)), self.text, font=self.font, fill=self.colour,
                  stroke_width=2, stroke_fill=(10, 10, 10))

    def step(self) -> None:
        self.pos = self.pos + self.vel
        for axis in range(2):
            high = SIZE - self.extent[axis]
            if self.pos[axis] < 0 or self.pos[axis] > high:
                self.vel[axis] = -self.vel[axis]
                self.pos[axis] = float(np.clip(self.pos[axis], 0, high))


def render_video(label: int, rng: np.random.Generator,
                 fonts: dict[int, ImageFont.FreeTypeFont]) -> list[Image.Image]:
    """16 RGB frames [256, 256] of one video of class `label`."""
    background = _background(rng)
    sprites = [_Sprite(str(label), rng, fonts)]
    sprites += [_Sprite(str(rng.choice(list(DISTRACTORS))), rng, fonts) for _ in range(4)]
    order = rng.permutation(len(sprites))          # the digit is not always drawn on top
    frames = []
    for _ in range(FRAMES):
        image = background.copy()
        draw = ImageDraw.Draw(image)
        for k in order:
            sprites[k].draw(draw)
            sprites[k].step()
        frames.append(image)
    return frames


def render_dataset(out_dir: str, videos_per_class: int, seed: int) -> int:
    """Writes `out_dir/<class name>/<video>/frame_XX.jpg`; returns the number of videos."""
    fonts = {s: ImageFont.load_default(size=s) for s in (40, 48, 56)}
    count = 0
    for label, name in enumerate(CLASS_NAMES):
        for k in range(videos_per_class):
            folder = os.path.join(out_dir, name, f"{name}_{k:03d}")
            if os.path.isdir(folder) and len(os.listdir(folder)) == FRAMES:
                count += 1
                continue
            os.makedirs(folder, exist_ok=True)
            rng = np.random.default_rng([seed, label, k])
            for t, frame in enumerate(render_video(label, rng, fonts), start=1):
                frame.save(os.path.join(folder, f"frame_{t:02d}.jpg"), quality=90)
            count += 1
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--videos_per_class", type=int, default=60)
    p.add_argument("--seed", type=int, default=0, help="data seed (the split and training too)")
    p.add_argument("--config_options", default="size=small",
                   help="options of configs/custom.py after root=")
    p.add_argument("--overrides", nargs="*", default=[],
                   help="extra main.py flags, e.g. --config.stages.stage2.num_epochs=4")
    p.add_argument("--skip_train", action="store_true", help="only render and prepare")
    args = p.parse_args(argv)
    videos, data, run = (os.path.join(args.workdir, d) for d in ("videos", "data", "run"))
    t0 = time.time()
    n = render_dataset(videos, args.videos_per_class, args.seed)
    print(f"rendered {n} videos in {time.time() - t0:.0f} s -> {videos}", flush=True)
    sys.path.insert(0, ROOT)
    from adafocus_jax.tools import prepare_dataset
    rc = prepare_dataset.main([f"--input={videos}", f"--output={data}", "--val_fraction=0.25",
                               f"--seed={args.seed}", "--no_progress"])
    if rc:
        return rc
    with open(os.path.join(data, "summary.json")) as f:
        summary = json.load(f)
    if args.skip_train:
        return 0
    options = ",".join(o for o in (f"root={data}", args.config_options) if o)
    config = os.path.join(ROOT, "configs", "custom.py")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), f"--config={config}:{options}",
           f"--workdir={run}", f"--config.seed={args.seed}"] + list(args.overrides)
    print(" ".join(cmd), flush=True)
    t1 = time.time()
    rc = subprocess.call(cmd, env=dict(os.environ, PYTHONPATH=ROOT))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.time() - t1
    if rc:
        print(f"training failed with exit status {rc}", file=sys.stderr)
        return rc
    with open(os.path.join(run, "custom_benchmark.json")) as f:
        table = json.load(f)
    report = dict(benchmark=table, prepare=dict(videos=summary["videos"],
                                                classes=summary["classes"],
                                                skipped=len(summary["skipped"])),
                  train_cpu_seconds=round(usage.ru_utime + usage.ru_stime, 1),
                  train_wall_seconds=round(wall, 1), command=cmd)
    with open(os.path.join(args.workdir, "custom_dataset.json"), "w") as f:
        json.dump(report, f, indent=1)
    rows = {k: v for k, v in table.items() if k != "meta"}
    print(json.dumps({k: v.get("accuracy") for k, v in rows.items()}),
          f"train CPU {report['train_cpu_seconds']:.0f} s, wall {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
