"""Real early exit of Uni-AdaFocus (17 exits; TSM 2) vs the full model, wall-clock, random weights.

    python benchmarks/uni_early_exit.py                   # small networks at 112² (patch 64)
    python benchmarks/uni_early_exit.py --size=official --input_size=224 --patch=128  # official
    python benchmarks/uni_early_exit.py --size=tiny       # tiny widths (checks the script)
    python benchmarks/uni_early_exit.py --budgets=mid,2.5,50% --out=/tmp/uni_exit.json
    python benchmarks/uni_early_exit.py --family=sthv2 --budgets=mid   # the TSM variant (2 exits)

Builds the ActivityNet-family Uni-AdaFocus network (`models.uni_model_config`: MobileNetV2 +
ResNet-50, 48 candidate frames, 16 glanced, 16 chosen, exit MLPs of 4096, 200 classes; `--size`
small halves the networks' depth / width so that it compiles and runs on a small CPU) at
`--input_size` (box sides scaled from 96…224 px at 224²), or with `--family=sthv2` the TSM variant
(MobileNetV2-TSM on 8 glance frames, ResNet-50-TSM on 16 of 48 candidates, one box per video, 174
classes; its 2 exits: the glance stage alone or the full model), with random weights whose
BatchNorm statistics are calibrated on random videos (train-mode passes, so eval mode keeps
activations at their train-mode scale), on random noise videos (`config.data.format="random"`), and runs
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


def _random_variables(model, seed: int):
    """He-normal kernels, zero biases, unit BatchNorm (statistics set by the calibration); drawn
    on the abstract shapes (no init compile)."""
    import jax
    import numpy as np
    from adafocus_jax import models
    shapes = jax.eval_shape(lambda: model.init(
        {"params": jax.random.key(0), "patches": jax.random.key(1)},
        *models.dummy_inputs(model.config)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "'var'" in name or "'scale'" in name:
            return np.ones(leaf.shape, np.float32)
        if leaf.ndim == 1:
            return np.zeros(leaf.shape, np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


def build(input_size: int, patch: int, size: str, videos: int, seed: int = 0,
          family: str = "actnet"):
    """(config, model, calibrated random variables) for the benchmark."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from adafocus_jax import config_lib, models
    from adafocus_jax import data as data_lib
    from adafocus_jax.data.transforms import normalize_jnp

    config = config_lib.load_config_module(
        os.path.join(ROOT, "configs", "tiny.py")).get_config(family)
    if size == "tiny":     # the tests' tiny widths, 48 / 16 / 16 frames (TSM: 8 / 16 of 48)
        c = models.to_uni_model_config(models.tiny_model_config(family))
        c.patch_size = patch
        c.classifier.hidden_dim = 16
        c.policy.spatial_hidden = c.policy.temporal_hidden = 4
    else:
        c = models.uni_model_config(family, patch)
    if size == "small":    # half the depth and width of the glance / local networks
        c.glancer.width_mult = 0.5
        c.focuser.stage_sizes = (2, 2, 2, 2)
        c.classifier.hidden_dim = 1024
    scale = input_size / 224
    c.input_size = c.glance_size = input_size
    c.policy.side_range = (96.0 * scale, 224.0 * scale)
    config.model = c
    d = config.data
    d.num_classes, d.input_size, d.scale_size = c.num_classes, input_size, input_size
    config_lib.set_uni_data(config)     # TSM: glance frames + the N candidates as `focus`
    d.random.num_train, d.random.num_val, d.random.num_test = 16, videos, videos
    model = models.create_model(config)
    variables = _random_variables(model, seed)
    # BatchNorm calibration: train-mode passes move the running statistics towards those of
    # random videos (momentum 0.1 per pass).
    source = data_lib.create_source(d, "train")
    examples = [source.get(i, None) for i in range(8)]
    frames = [jnp.asarray(np.stack([e[key] for e in examples]))
              for key in ("glance", "focus") if key in examples[0]]

    @jax.jit
    def calibrate(variables, frames):
        _, updates = model.apply(variables, *map(normalize_jnp, frames), train=True,
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
    parser.add_argument("--family", default="actnet", choices=("actnet", "sthv2"),
                        help="actnet: the ActivityNet-family model (17 exits); sthv2: the TSM "
                             "variant (2 exits)")
    parser.add_argument("--size", default="small", choices=("official", "small", "tiny"),
                        help="networks: official (MobileNetV2 1.0 + ResNet-50, MLPs 4096), "
                             "small (MobileNetV2 0.5 + ResNet (2, 2, 2, 2), MLPs 1024), tiny")
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
    config, model, variables = build(args.input_size, args.patch, args.size, args.videos,
                                     family=args.family)
    full_cost = float(early_exit.make_runner(model, variables).step_gflops().sum())
    measure = [float(b[:-1]) / 100 * full_cost if b.endswith("%") else b
               for b in (b.strip() for b in args.budgets.split(",")) if b]
    section = early_exit.benchmark(
        config, variables, model, fit_split="val", test_split="test",
        num_budgets=args.num_budgets, batch_size=args.batch_size, repeats=args.repeats,
        timing_videos=args.videos, single_videos=args.single_videos, measure=measure)
    section["setup"] = {"family": args.family, "input_size": args.input_size,
                        "patch": args.patch, "size": args.size,
                        "weights": "random, BatchNorm calibrated on random videos",
                        "data": "random noise videos", "platform": jax.devices()[0].platform,
                        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                        "seconds": time.time() - start}
    costs = section["step_gflops"]
    later = f", each later local frame {costs[2]:.4f}" if len(costs) > 2 else ""
    print(f"GFLOPs per step: glance + exit 0 {costs[0]:.4f}, + policies + local frame(s) "
          f"{costs[1]:.4f}{later}; full {section['full']['gflops']:.4f}")
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
