"""Recognises videos with a trained AdaFocus model: top-k classes, confidence, and where it looked.

    python -m adafocus_jax.tools.predict --config=configs/actnet.py --checkpoint=/ckpt/anet \\
        video.mp4 clip.webm frames_folder/ [--top_k=5] [--class_names=classInd.txt] [--json]
        [--overlay=out.gif | out.mp4]

Each VIDEO is a video file PyAV can decode (.mp4, .webm, .avi, ...) or a folder of frame images
(.jpg / .jpeg / .png, in file-name order). Frames are sampled and cropped as in the dataset's
evaluation (`config.data`: segment-centre frames, shorter side to `scale_size`, centre crop of
`input_size`; 1 clip × 1 crop), and the deterministic policy picks the patches. For every video it
prints the top-k class names (from `--class_names`, else the dataset's category file when the
config points at one, else "class <i>") with their softmax probability, and the patch of every
policy step: its top-left (row, col) and size in pixels of the `input_size` frame, and which local
frames it was cropped from. `--json` prints one JSON object instead (schema: `predict_video`).

`--overlay out.gif` (or `.mp4`) writes, per local frame, the glance frame as the glance network saw
it (resized to `glance_size`, shown enlarged back to `input_size`) next to the frame the local
network's patch was cropped from, with the patch drawn as a box; with several videos the files are
`out_0.gif`, `out_1.gif`, ...

Exit status 0 on success; a missing checkpoint, an unreadable video, a checkpoint of another
architecture or a class-name file with the wrong count is an error naming the file (status 2).
"""

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from adafocus_jax.data.errors import DataError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
BOX_COLOR = (255, 0, 0)
BOX_WIDTH = 2
PANEL_GAP = 4      # pixels of black between the glance and the local panel


def frame_files(folder: str) -> list[str]:
    """The image files of a frame folder, sorted by name; DataError when there is none."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTENSIONS))
    if not names:
        raise DataError(folder, f"frame folder holds no {'/'.join(FRAME_EXTENSIONS)} files")
    return [os.path.join(folder, n) for n in names]


def _eval_maker(data_config):
    """The dataset's evaluation sampling and crop with one view (1 clip x 1 crop)."""
    from adafocus_jax.data import frames as frames_lib
    config = data_config.copy_and_resolve_references()
    config.eval_num_clips = 1
    config.eval_num_crops = 1
    return frames_lib.ExampleMaker(config)


def load_video(path: str, data_config) -> dict[str, np.ndarray]:
    """One video file or frame folder → an example (docs/CONTRACTS.md) with one view.

    Returns `glance` uint8 `[T_G, S, S, 3]` (and `focus` `[T_L, S, S, 3]` when the dataset
    samples the local frames separately), plus `glance_indices` / `focus_indices`: the 1-based
    frame numbers sampled. Raises DataError naming `path` when it cannot be read.
    """
    from adafocus_jax.data import decode, ssv2_video
    maker = _eval_maker(data_config)
    if os.path.isdir(path):
        files = frame_files(path)
        num_frames = len(files)

        def load(indices: Sequence[int]) -> list[Image.Image]:
            out = []
            for i in indices:
                file = files[i - 1]
                data = decode.read_file(file, path)
                try:
                    if file.lower().endswith((".jpg", ".jpeg")):
                        out.append(decode.decode_jpeg(data, file))
                    else:
                        import io
                        out.append(Image.open(io.BytesIO(data)).convert("RGB"))
                except (OSError, ValueError) as e:
                    raise DataError(file, f"cannot decode frame ({e})") from None
            return out
    elif os.path.isfile(path):
        index = ssv2_video.index_video(path, path)
        num_frames = index.num_frames
        if num_frames < 1:
            raise DataError(path, "no video frames")

        def load(indices: Sequence[int]) -> list[Image.Image]:
            arrays = ssv2_video.decode_video_frames(path, list(indices), path, 0, index)
            return [Image.fromarray(a) for a in arrays]
    else:
        raise DataError(path, "no such video file or frame folder")
    example = maker(num_frames, [], load, None, 0)
    lists_ = maker.frame_lists(num_frames, None)[0]
    example["glance_indices"] = np.asarray(lists_[0], np.int64)
    if lists_[1] is not None:
        example["focus_indices"] = np.asarray(lists_[1], np.int64)
    return example


class Predictor:
    """A model and its variables, jitted once: `predictor(example) -> numpy outputs`.

    Outputs (one video): `probabilities` `[C]`, `logits` `[C]`, `step_logits` `[St, C]`,
    `patch_offsets` `[St, 2]` int (top-left row, col), `glance_view` uint8 `[T_G, G, G, 3]` (the
    frames the glance network saw, G = glance_size).
    """

    def __init__(self, config, variables, model=None):
        import jax
        from adafocus_jax import inference, models
        self.config = config
        self.model = model or models.create_model(config)
        self.variables = jax.device_put(variables)
        from adafocus_jax.parallel import compiler_options
        self._fn = jax.jit(inference.predict_fn(self.model), compiler_options=compiler_options())
        self._resize = jax.jit(lambda frames: self.model.apply(
            {}, frames.astype(jax.numpy.float32), method="resize_for_glance"),
            compiler_options=compiler_options())

    def __call__(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        glance = example["glance"][None]
        focus = example["focus"][None] if "focus" in example else None
        out = {k: np.asarray(v)[0] for k, v in self._fn(self.variables, glance, focus).items()}
        view = np.asarray(self._resize(glance))[0]
        out["glance_view"] = np.clip(np.round(view), 0, 255).astype(np.uint8)
        return out


def step_frames(model_config, step: int) -> list[int]:
    """0-based local frames cropped at policy step `step`: frame `step` for per-frame policies,
    every local frame for the one-step-per-video policy (Sth-Sth)."""
    if model_config.policy.per_frame:
        return [step]
    return list(range(int(model_config.num_focus_frames)))


def describe(path: str, example, out, model_config, names: list[str] | None,
             top_k: int, gflops: float | None = None) -> dict[str, Any]:
    """The JSON object of one video:

        {"video": path, "num_classes": C,
         "top_k": [{"class": i, "name": str, "confidence": p}, ...],       # descending
         "patches": [{"step": s, "row": r, "col": c, "size": P, "frames": [..]}, ...],
         "frame_indices": {"glance": [...], "focus": [...]},               # 1-based
         "frame_size": S, "glance_size": G, "gflops": float | None}
    """
    probs = out["probabilities"]
    order = np.argsort(-probs, kind="stable")[:top_k]
    patch = int(model_config.patch_size)
    glance_idx = [int(i) for i in example["glance_indices"]]
    focus_idx = [int(i) for i in example.get("focus_indices", example["glance_indices"])]
    return {
        "video": path, "num_classes": int(probs.shape[0]),
        "top_k": [{"class": int(c), "name": names[c] if names else f"class {int(c)}",
                   "confidence": float(probs[c])} for c in order],
        "patches": [{"step": s, "row": int(r), "col": int(c), "size": patch,
                     "frames": step_frames(model_config, s)}
                    for s, (r, c) in enumerate(out["patch_offsets"])],
        "frame_indices": {"glance": glance_idx, "focus": focus_idx},
        "frame_size": int(model_config.input_size), "glance_size": int(model_config.glance_size),
        "gflops": gflops,
    }


def draw_box(frame: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """A copy of uint8 `[H, W, 3]` with a `BOX_WIDTH`-pixel `BOX_COLOR` outline whose outer edge
    is the patch `[row, row + size) x [col, col + size)`."""
    image = Image.fromarray(frame)
    ImageDraw.Draw(image).rectangle([col, row, col + size - 1, row + size - 1],
                                    outline=BOX_COLOR, width=BOX_WIDTH)
    return np.asarray(image)


def overlay_frames(example, out, model_config,
                   more_offsets: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
    """One uint8 `[S, (1 + n) S + n PANEL_GAP, 3]` image per local frame (n = 1 + len(more_offsets)):
    left the glance frame the glance network saw (nearest-enlarged from G to S; glance frame
    ⌊t·T_G/T_L⌋ for local frame t), then local frame t with the patch of its policy step drawn on
    it, from `out["patch_offsets"]` `[St, 2]` and then from each of `more_offsets` (`[St, 2]` int,
    e.g. random patches to compare with), one panel each."""
    local = example.get("focus", example["glance"])
    glance = out["glance_view"]
    size = local.shape[1]
    t_local, t_glance = local.shape[0], glance.shape[0]
    patch = int(model_config.patch_size)
    patch_sets = [np.asarray(out["patch_offsets"])] + [np.asarray(o) for o in more_offsets]
    for offsets in patch_sets[1:]:
        if offsets.shape != patch_sets[0].shape:
            raise ValueError(f"overlay_frames: more_offsets of shape {offsets.shape}, expected "
                             f"{patch_sets[0].shape} (one [row, col] per policy step)")
    step_of = {}
    for s in range(patch_sets[0].shape[0]):
        for t in step_frames(model_config, s):
            step_of[t] = s
    frames = []
    for t in range(t_local):
        g = glance[min(t_glance - 1, t * t_glance // t_local)]
        canvas = np.zeros((size, (1 + len(patch_sets)) * (size + PANEL_GAP) - PANEL_GAP, 3),
                          np.uint8)
        canvas[:, :size] = np.asarray(Image.fromarray(g).resize((size, size), Image.NEAREST))
        for k, offsets in enumerate(patch_sets, start=1):
            row, col = (int(v) for v in offsets[step_of[t]])
            left = k * (size + PANEL_GAP)
            canvas[:, left:left + size] = draw_box(local[t], row, col, patch)
        frames.append(canvas)
    return frames


def encode_gif(frames: Sequence[np.ndarray], fps: float = 4.0) -> bytes:
    """uint8 `[H, W, 3]` frames as the bytes of a looping animated GIF (PIL)."""
    import io
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=int(round(1000 / fps)), optimize=False)
    return buffer.getvalue()


def write_overlay(frames: list[np.ndarray], path: str, fps: float = 4.0) -> None:
    """Writes the overlay frames as an animated GIF (PIL) or an H.264 .mp4 (PyAV)."""
    ext = os.path.splitext(path)[1].lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".gif":
        with open(path, "wb") as f:
            f.write(encode_gif(frames, fps))
    elif ext == ".mp4":
        import av
        h, w = frames[0].shape[:2]
        ph, pw = h + h % 2, w + w % 2   # yuv420p needs even sizes
        with av.open(path, "w") as container:
            stream = container.add_stream("libx264", rate=max(1, int(round(fps))))
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            stream.options = {"crf": "12", "preset": "veryfast"}
            for f in frames:
                padded = np.zeros((ph, pw, 3), np.uint8)
                padded[:h, :w] = f
                for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    else:
        raise ValueError(f"--overlay={path}: the extension must be .gif or .mp4")


def overlay_path(base: str, index: int, count: int) -> str:
    if count == 1:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}_{index}{ext}"


def format_text(result: dict[str, Any]) -> str:
    lines = [f"{result['video']}:"]
    for rank, item in enumerate(result["top_k"], 1):
        label = item["name"] if item["name"] == f"class {item['class']}" else \
            f"{item['name']} (class {item['class']})"
        lines.append(f"  {rank}. {label}: "
                     f"{100 * item['confidence']:.2f}%")
    for p in result["patches"]:
        frames = p["frames"]
        where = f"frame {frames[0]}" if len(frames) == 1 else f"frames {frames[0]}-{frames[-1]}"
        lines.append(f"  step {p['step']}: patch {p['size']}x{p['size']} at (row {p['row']}, "
                     f"col {p['col']}) of the {result['frame_size']}px {where}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or frame folders")
    p.add_argument("--config", required=True, help="config file, e.g. configs/actnet.py[:patch=96]")
    p.add_argument("--checkpoint", required=True,
                   help="run / stage / converted directory or official .pth.tar")
    p.add_argument("--class_names", default="", help="one class name per line (index order)")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--overlay", default="", help="write the patch overlay (.gif or .mp4)")
    p.add_argument("--fps", type=float, default=4.0, help="overlay frame rate")
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error("--top_k must be >= 1")
    if args.overlay and os.path.splitext(args.overlay)[1].lower() not in (".gif", ".mp4"):
        p.error(f"--overlay={args.overlay}: the extension must be .gif or .mp4")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Predicts every video of `args`; returns the JSON document {"model": ..., "videos": [...]}."""
    from adafocus_jax import evaluate, inference
    config = inference.load_config(args.config)
    names = inference.class_names(config, args.class_names)
    variables = inference.load_checkpoint(config, args.checkpoint)
    predictor = Predictor(config, variables)
    gflops = evaluate.gflops_per_video(config, predictor.model, "policy", views=1)
    model_config = config.model
    results = []
    for i, path in enumerate(args.videos):
        example = load_video(path, config.data)
        out = predictor(example)
        result = describe(path, example, out, model_config, names,
                          min(args.top_k, int(model_config.num_classes)), gflops)
        if args.overlay:
            target = overlay_path(args.overlay, i, len(args.videos))
            write_overlay(overlay_frames(example, out, model_config), target, args.fps)
            result["overlay"] = target
        results.append(result)
    return {"config": args.config, "checkpoint": args.checkpoint, "videos": results}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        document = run(args)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print("\n".join(format_text(r) for r in document["videos"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
