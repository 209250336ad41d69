"""Real early exit of Uni-AdaFocus (its 17 exits) against the full model, wall-clock, random weights.

    python benchmarks/uni_early_exit.py                   # official network at 112² (patch 64)
    python benchmarks/uni_early_exit.py --input_size=224 --patch=128    # the official sizes
    python benchmarks/uni_early_exit.py --quick           # tiny widths (checks the script)
    python benchmarks/uni_early_exit.py --budgets=mid,2.5,50% --out=/tmp/uni_exit.json

Builds the ActivityNet-family Uni-AdaFocus network (`models.uni_model_config`: MobileNetV2 +
ResNet-50, 48 candidate frames, 16 glanced, 16 chosen, exit MLPs of 4096, 200 classes) at
`--input_size` (box sides scaled from 96…224 px at 224²), with random weights whose BatchNorm
statistics are calibrated on random videos (train-mode passes, so eval mode keeps activations at
their train-mode scale), on random noise videos (`config.data.format="random"`), and runs
`adafocus_jax.early_exit.benchmark`, the function behind `python -m adafocus_jax.benchmark
--early_exit`: thresholds fitted on the val split for each budget, real exits checked against the
offline simulation on the test split, then full model / stepwise without exit / exit compact /
exit masked timed interleaved A B C D …, medians. Random weights make accuracy meaningless; what
carries is the measured time at a given cost. Absolute times depend on the machine and its load.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build(input_size: int, patch: int, quick: bool, videos: int, seed: int = 0):
    """(config, model, calibrated random variables) for the benchmark."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from adafocus_jax import config_lib, models
    from adafocus_jax import data as data_lib
    from adafocus_jax.data.transforms import normalize_jnp

    config = config_lib.load_config_module(
        os.path.join(ROOT, "configs", "tiny.py")).get_config("actnet")
    if quick:     # the tests' tiny widths, 48 / 16 / 16 frames
        c = models.to_uni_model_config(models.tiny_model_config("actnet"))
        c.patch_size = patch
        c.classifier.hidden_dim = 16
        c.policy.spatial_hidden = c.policy.temporal_hidden = 4
    else:
        c = models.uni_model_config("actnet", patch)
    scale = input_size / 224
    c.input_size = c.glance_size = input_size
    c.policy.side_range = (96.0 * scale, 224.0 * scale)
    config.model = c
    d = config.data
    d.num_classes, d.input_size, d.scale_size = c.num_classes, input_size, input_size
    d.num_glance_frames = c.num_candidate_frames
    d.random.num_train, d.random.num_val, d.random.num_test = 16, videos, videos
    model = models.create_model(config)
    variables = models.init_variables(model, jax.random.key(seed))
    # BatchNorm calibration: train-mode passes move the running statistics towards those of
    # random videos (momentum 0.1 per pass).
    source = data_lib.create_source(d, "train")
    frames = jnp.asarray(np.stack([source.get(i, None)["glance"] for i in range(8)]))

    @jax.jit
    def calibrate(variables, frames):
        _, updates = model.apply(variables, normalize_jnp(frames), train=True,
                                 rngs={"dropout": jax.random.key(1),
                                       "patches": jax.random.key(2)},
                                 mutable=["batch_stats"])
        return {"params": variables["params"], "batch_stats": updates["batch_stats"]}

    for _ in range(20):
        variables = calibrate(variables, frames)
    return config, model, jax.tree.map(np.asarray, variables)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_size", type=int, default=112)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="tiny widths")
    parser.add_argument("--videos", type=int, default=48, help="videos of the val / test split")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--single_videos", type=int, default=8, help="videos timed at batch 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_budgets", type=int, default=9)
    parser.add_argument("--budgets", default="mid,66.5%",
                        help="measured points, comma-separated: mid, cheapest, GFLOPs per video "
                             "or a %% of the full model's (66.5%% = the paper's 18.1 of 27.2)")
    parser.add_argument("--out", default="", help="write the section as JSON here")
    args = parser.parse_args(argv)
    import jax
    from adafocus_jax import early_exit
    start = time.time()
    config, model, variables = build(args.input_size, args.patch, args.quick, args.videos)
    full_cost = float(early_exit.uni_step_gflops(model).sum())
    measure = [float(b[:-1]) / 100 * full_cost if b.endswith("%") else b
               for b in (b.strip() for b in args.budgets.split(",")) if b]
    section = early_exit.benchmark(
        config, variables, model, fit_split="val", test_split="test",
        num_budgets=args.num_budgets, batch_size=args.batch_size, repeats=args.repeats,
        timing_videos=args.videos, single_videos=args.single_videos, measure=measure)
    section["setup"] = {"input_size": args.input_size, "patch": args.patch, "quick": args.quick,
                        "weights": "random, BatchNorm calibrated on random videos",
                        "data": "random noise videos", "platform": jax.devices()[0].platform,
                        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                        "seconds": time.time() - start}
    costs = section["step_gflops"]
    print(f"GFLOPs per step: glance + exit 0 {costs[0]:.4f}, + policies + local frame 1 "
          f"{costs[1]:.4f}, each later local frame {costs[2]:.4f}; full "
          f"{section['full']['gflops']:.4f}")
    print("| budget | GFLOPs / video | local frames / video | ms / video: full | stepwise, no "
          "exit | exit compact | exit masked | speed-up (compact) | batch 1: full / exit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in section["measured"]:
        ms, one = m["ms_per_video"], m["batch_size_1"]["ms_per_video"]
        print(f"| {m['budget']:.3f} | {m['gflops']:.3f} | {m['mean_frames']:.2f} | "
              f"{ms['full']:.1f} | {ms['stepwise_no_exit']:.1f} | {ms['exit_compact']:.1f} | "
              f"{ms['exit_masked']:.1f} | {m['speedup_vs_full']['exit_compact']:.2f}x | "
              f"{one['full']:.1f} / {one['exit']:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(section, f, indent=2)
    return section


if __name__ == "__main__":
    main()
