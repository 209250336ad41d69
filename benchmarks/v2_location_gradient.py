"""Can AdaFocusV2's differentiable crop find the digit of the synthetic benchmark? Two measurements.

    python benchmarks/v2_location_gradient.py --stage_dir=RUN/stage0_focuser [--config_arg=mode=v2]
    python benchmarks/v2_location_gradient.py --stage_dir=RUN/v2 --out=FILE.json

V2 trains its policy with the gradient of the local network's loss w.r.t. the patch location,
through a bilinear crop (`crop.bilinear_crop`, PyTorch `grid_sample`). On held-out synthetic
videos (`configs/synthetic.py:<config_arg>`, "test" split), with the local network and its own
head (`focuser` `fc`, the V2 local-only term) from a finished stage directory:

1. **Sub-pixel phase**: accuracy and CE of the local head on patches centred on the digit, moved
   by 0, ¼, ½, ¾, 1 px along one or both axes. A bilinear resample at a fractional offset
   low-passes the halftone strokes (`synthetic.halftone_carrier`); if accuracy collapses at ½ px,
   the patches V2 crops at its continuous locations hide the digit.
2. **Gradient direction**: patches whose centre is `d` px from the digit centre (8 directions,
   d = 0…56); per frame, whether the descent direction −∂CE/∂(top-left) points back towards the
   digit (cos > 0), the mean cosine, and the gradient norm. A usable training signal for the
   policy needs P(towards) well above 0.5 at the distances a patch starts from.

Frames whose moved patch would leave the frame are skipped (counted in `frames`).
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DISTANCES = (0, 8, 16, 24, 32, 40, 48, 56)
PHASES = (0.0, 0.25, 0.5, 0.75, 1.0)


def measure(config, variables, num_videos: int = 48) -> dict:
    """Both measurements for the model of `config` with `variables` ({"params", "batch_stats"})."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from adafocus_jax import crop as crop_lib
    from adafocus_jax import data, metrics, models
    from adafocus_jax.data.transforms import normalize_jnp

    model = models.create_model(config.model)
    size, patch = config.model.input_size, config.model.patch_size
    source = data.create_source(config.data, "test")
    examples = [source.get(i, None) for i in range(num_videos)]
    frames = normalize_jnp(jnp.asarray(np.stack([e["glance"] for e in examples])))   # [N,T,S,S,3]
    boxes = np.stack([e["target_box"] for e in examples]).astype(np.float64)        # [N, T, 4]
    labels = jnp.asarray([int(e["label"]) for e in examples])
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0                               # [N, T, 2]

    def local_ce(top_left):
        """`[N, T, 2]` float top-left → per-frame CE `[N, T]`, correct `[N, T]`."""
        patches = crop_lib.bilinear_crop(frames, top_left, patch)
        logits = model.apply(variables, patches, False, method="local_v2")["logits"]
        y = jnp.broadcast_to(labels[:, None], logits.shape[:2])
        return metrics.cross_entropy(logits, y), jnp.argmax(logits, -1) == y

    ce_fn = jax.jit(local_ce)
    grad_fn = jax.jit(jax.grad(lambda tl: local_ce(tl)[0].sum()))

    phase_rows = []
    base = np.clip(np.floor(centres - patch / 2.0), 1, size - patch - 1)
    for phase in PHASES:
        for axes, name in (((1, 0), "rows"), ((1, 1), "rows+cols")):
            ce, correct = ce_fn(jnp.asarray(base + phase * np.asarray(axes), jnp.float32))
            phase_rows.append(dict(shift_px=phase, axes=name,
                                   accuracy=100 * float(np.mean(correct)), ce=float(np.mean(ce))))

    gradient_rows = []
    for distance in DISTANCES:
        n = 0
        sums = dict(correct=0.0, ce=0.0, towards=0.0, cos=0.0, norm=0.0)
        for k in range(8):
            direction = np.array([np.sin(k * np.pi / 4), np.cos(k * np.pi / 4)])
            shift = distance * direction
            top_left = centres - patch / 2.0 + shift          # patch centre = digit centre + shift
            valid = np.all((top_left >= 0) & (top_left <= size - patch), axis=-1)
            top_left = jnp.asarray(np.clip(top_left, 0, size - patch), jnp.float32)
            ce, correct = (np.asarray(a) for a in ce_fn(top_left))
            grad = np.asarray(grad_fn(top_left))
            norm = np.linalg.norm(grad, axis=-1)
            cos = (-grad * -shift).sum(-1) / (norm * max(distance, 1e-9) + 1e-12)
            n += int(valid.sum())
            sums["correct"] += float(correct[valid].sum())
            sums["ce"] += float(ce[valid].sum())
            sums["norm"] += float(norm[valid].sum())
            if distance:
                sums["towards"] += float((cos[valid] > 0).sum())
                sums["cos"] += float(cos[valid].sum())
        mean = {k: v / max(n, 1) for k, v in sums.items()}
        gradient_rows.append(dict(
            distance_px=distance, frames=n, accuracy=100 * mean["correct"], ce=mean["ce"],
            p_towards=mean["towards"] if distance else None,
            mean_cos=mean["cos"] if distance else None, grad_norm=mean["norm"]))
    return {"num_videos": num_videos, "patch_size": patch, "frame_size": size,
            "halftone_period": int(config.data.synthetic.get("halftone_period", 2)),
            "subpixel_phase": phase_rows, "gradient_direction": gradient_rows}


def format_report(result: dict) -> str:
    lines = [f"patch {result['patch_size']} on {result['frame_size']}-px frames, halftone period "
             f"{result['halftone_period']}, {result['num_videos']} test videos",
             "| shift (px) | axes | local top-1 | CE |", "|---|---|---|---|"]
    lines += [f"| {r['shift_px']:.2f} | {r['axes']} | {r['accuracy']:.1f} % | {r['ce']:.2f} |"
              for r in result["subpixel_phase"]]
    lines += ["", "| distance (px) | frames | local top-1 | CE | P(descent points to digit) | "
              "mean cos | grad norm |", "|---|---|---|---|---|---|---|"]
    for r in result["gradient_direction"]:
        towards = "–" if r["p_towards"] is None else f"{r['p_towards']:.2f}"
        cos = "–" if r["mean_cos"] is None else f"{r['mean_cos']:+.2f}"
        lines.append(f"| {r['distance_px']} | {r['frames']} | {r['accuracy']:.1f} % | "
                     f"{r['ce']:.2f} | {towards} | {cos} | {r['grad_norm']:.3g} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage_dir", required=True,
                        help="a finished stage directory of a configs/synthetic.py run")
    parser.add_argument("--config_arg", default="mode=v2",
                        help="the configs/synthetic.py argument of that run")
    parser.add_argument("--num_videos", type=int, default=48)
    parser.add_argument("--out", default="", help="also write the result as JSON here")
    args = parser.parse_args(argv)

    from adafocus_jax import checkpoint
    from configs import synthetic
    config = synthetic.get_config(args.config_arg)
    if config.model.get("version", "v1") != "v2":
        raise SystemExit(f"--config_arg={args.config_arg!r}: needs a V2 model (mode=v2)")
    variables = checkpoint.load_variables_from_dir(args.stage_dir)
    result = measure(config, variables, args.num_videos)
    result["stage_dir"] = os.path.abspath(args.stage_dir)
    print(format_report(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
