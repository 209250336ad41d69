"""Pictures of a run for the notebooks (colabs/) and reports: training curves, and the learned
patches next to random ones.

    curves = training_curves(workdir)             # {stage: {metric: (steps [N], values [N])}}
    figure = plot_training_curves(workdir)        # matplotlib: a column per stage
    frames = compare_patches(example, out, model, seed=0)   # [learned | random] per local frame
    IPython.display.Image(data=predict.encode_gif(frames))  # animated in a notebook

`training_curves` reads the TensorBoard event files the training loop's clu writer leaves in the
run directory (tags `<stage>/train_<metric>` and `<stage>/eval_<metric>`; `tensorboard` is a
dependency). Plotting needs matplotlib (the `notebook` extra; preinstalled on Colab).
"""
from __future__ import annotations

import glob
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from adafocus_jax import crop as crop_lib
from adafocus_jax.tools import predict

CAPTION_HEIGHT = 14    # pixels of the caption strip above the panels of compare_patches


def _read_events(workdir: str):
    """({tag: {step: value}}, {tag: wall time of its first event}) of `workdir`'s event files."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util
    files = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
    if not files:
        raise FileNotFoundError(f"{workdir}: no TensorBoard event file (events.out.tfevents.*); "
                                "is it a training run directory?")
    points: dict[str, dict[int, float]] = {}
    first: dict[str, float] = {}
    for path in files:
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = tensor_util.make_ndarray(value.tensor)
                elif value.HasField("simple_value"):
                    number = value.simple_value
                else:
                    continue
                if np.size(number) == 1:
                    points.setdefault(value.tag, {})[int(event.step)] = float(np.ravel(number)[0])
                    first[value.tag] = min(first.get(value.tag, np.inf), float(event.wall_time))
    return points, first


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar of the event files in `workdir` (not its subfolders): {tag: (steps int64 [N],
    values float64 [N])}, sorted by step (a step written twice, e.g. by a resumed run: the last
    write wins). FileNotFoundError naming `workdir` when it holds no event file."""
    return _as_arrays(_read_events(workdir)[0])


def _as_arrays(points: Mapping[str, Mapping[int, float]]):
    out = {}
    for tag, by_step in points.items():
        steps = np.array(sorted(by_step), np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], np.float64))
    return out


def training_curves(workdir: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The run's per-stage curves: {stage: {"train_loss": (steps, values), "eval_top1": ...}},
    the stages in the order they started logging (tags without a `<stage>/` prefix, such as
    clu's `steps_per_sec`, are left out)."""
    points, first = _read_events(workdir)
    scalars = _as_arrays(points)
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    start: dict[str, float] = {}
    for tag in sorted(scalars):
        stage, _, metric = tag.partition("/")
        if metric:
            curves.setdefault(stage, {})[metric] = scalars[tag]
            start[stage] = min(start.get(stage, np.inf), first[tag])
    return {s: curves[s] for s in sorted(curves, key=lambda s: (start[s], s))}


def plot_training_curves(workdir: str, metrics: Sequence[str] = ("train_loss", "eval_top1"),
                         stages: Sequence[str] | None = None):
    """A matplotlib figure: one column per stage, one row per metric (a metric a stage did not
    log leaves its panel empty); single evaluations show as dots. Returns the figure."""
    import matplotlib.pyplot as plt
    curves = training_curves(workdir)
    stages = list(stages) if stages is not None else list(curves)
    unknown = [s for s in stages if s not in curves]
    if unknown:
        raise ValueError(f"plot_training_curves: {workdir} logged no stage {unknown}; it has "
                         f"{list(curves)}")
    fig, axes = plt.subplots(len(metrics), len(stages), squeeze=False,
                             figsize=(3.2 * len(stages), 2.4 * len(metrics)))
    for col, stage in enumerate(stages):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            if metric in curves[stage]:
                steps, values = curves[stage][metric]
                ax.plot(steps, values, marker="o" if len(steps) < 4 else None)
            ax.set_title(stage if row == 0 else "", fontsize=9)
            ax.set_xlabel("step" if row == len(metrics) - 1 else "", fontsize=8)
            ax.set_ylabel(metric if col == 0 else "", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def random_patch_offsets(model, seed: int = 0, num_videos: int = 1) -> np.ndarray:
    """The random-patch baseline's offsets (the benchmark's "random" row, `crop.random_offsets`):
    int `[num_videos, St, 2]` (top-left row, col) of `model.config.patch_size` patches."""
    import jax
    cfg = model.config
    return np.asarray(crop_lib.random_offsets(jax.random.key(seed),
                                              (num_videos, model.policy_steps),
                                              int(cfg.input_size), int(cfg.patch_size)))


def caption(frames: Sequence[np.ndarray], titles: Sequence[str], panel: int,
            gap: int = predict.PANEL_GAP) -> list[np.ndarray]:
    """Frames uint8 `[H, W, 3]` made of side-by-side panels `panel` pixels wide (`gap` apart) with
    a `CAPTION_HEIGHT` strip on top holding `titles[k]` above panel k: `[H + CAPTION_HEIGHT, W, 3]`."""
    strip = Image.new("RGB", (frames[0].shape[1], CAPTION_HEIGHT))
    draw = ImageDraw.Draw(strip)
    for k, title in enumerate(titles):
        draw.text((k * (panel + gap) + 2, 1), title, fill=(255, 255, 255))
    top = np.asarray(strip)
    return [np.concatenate([top, f], axis=0) for f in frames]


def compare_patches(example: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray], model,
                    seed: int = 0, random_offsets: np.ndarray | None = None) -> list[np.ndarray]:
    """Per local frame, captioned panels: the glance frame, the learned patch (`out` of
    `predict.Predictor`: its `patch_offsets` `[St, 2]` and `glance_view`), and a random patch
    (`random_offsets` `[St, 2]`, default `random_patch_offsets(model, seed)[0]`) drawn on the
    local frame. Returns uint8 `[S + CAPTION_HEIGHT, 3 S + 2 PANEL_GAP, 3]` frames."""
    if random_offsets is None:
        random_offsets = random_patch_offsets(model, seed)[0]
    frames = predict.overlay_frames(example, out, model.config, [random_offsets])
    size = example.get("focus", example["glance"]).shape[1]
    return caption(frames, ("glance", "learned", "random"), size)
