"""Train-step throughput of the FULL Something-Something V2 model (configs/sthv2.py) on this machine.

    python benchmarks/train_step.py                      # both stages, table + JSON
    python benchmarks/train_step.py --stages=stage2 --steps=3 --out=/tmp/bench.json

Measures, per stage, in a fresh subprocess each (so the peak RSS is that stage's alone):
  * compile time of the jitted train step (lower + compile, no persistent cache);
  * the median wall time per step after one warm-up step, and videos/s = batch / median;
  * peak resident memory of the process (ru_maxrss).
Batch sizes follow /work/shared/reference/official_speed.md so the numbers compare with the official
PyTorch code on the same kind of CPU: stage 1 (random patches, focuser + classifier backward) at
batch 4, stage 2 (the fused PPO step: glancer, policy, two ResNet-50 passes, PPO update) at batch 8.
Weights are random (drawn with NumPy on the abstract shapes: no init compile); frames are random
uint8, as the device sees them.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

OFFICIAL = {  # official_speed.md: torch 2.14.1 CPU, 2 threads, median s per call
    "stage1": {"batch": 4, "seconds": 2.96, "videos_per_s": 1.35},
    "stage2": {"batch": 8, "seconds": 6.69, "videos_per_s": 1.20},
}


def _measure(stage: str, steps: int, patch: int) -> dict:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    import jax
    import numpy as np

    from adafocus_jax import config_lib, models, parallel, stages, train

    jax.config.update("jax_enable_compilation_cache", False)
    config = config_lib.build_config("sthv2", f"patch={patch}", allowed_patches=(144, 160, 176))
    batch_size = OFFICIAL[stage]["batch"]
    model = models.create_model(config)
    mc = config.model
    glance, focus = models.dummy_inputs(mc, 1)
    rngs = {k: jax.random.key(0) for k in ("params", "dropout", "patches", "actions")}
    shapes = jax.eval_shape(lambda: model.init(rngs, glance, focus, patch_mode="policy"))
    gen = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.02 * gen.standard_normal(s.shape)).astype(s.dtype),
                          shapes["params"])
    stats = jax.tree_util.tree_map_with_path(
        lambda p, s: np.full(s.shape, 1.0 if "var" in jax.tree_util.keystr(p) else 0.0, s.dtype),
        shapes["batch_stats"])
    recipe = stages.resolve_recipe(config, stage)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state, schedules = train.create_train_state(params, stats, recipe, 1000)
    state = parallel.replicate(state, mesh)
    s = mc.input_size
    host = {"glance": gen.integers(0, 255, (batch_size, mc.num_glance_frames, s, s, 3), np.uint8),
            "focus": gen.integers(0, 255, (batch_size, mc.num_focus_frames, s, s, 3), np.uint8),
            "label": gen.integers(0, mc.num_classes, (batch_size,)).astype(np.int32),
            "mask": np.ones((batch_size,), bool)}
    batch = parallel.shard_batch(host, mesh)
    step = train.jit_train_step(train.make_train_step(model, recipe, schedules, seed=0), mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch)          # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state.params, metrics))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"stage": stage, "batch": batch_size, "patch": patch, "compile_s": compile_s,
            "step_s_median": median, "step_s_all": times, "videos_per_s": batch_size / median,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "loss": float(metrics["loss"]), "devices": jax.device_count(),
            "backend": jax.default_backend()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="stage1,stage2")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--patch", type=int, default=144)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "train_step.json"))
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_measure(args.child, args.steps, args.patch)), flush=True)
        return
    results = []
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if stage not in OFFICIAL:
            raise SystemExit(f"--stages: unknown stage {stage!r}; expected {sorted(OFFICIAL)}")
        proc = subprocess.run([sys.executable, __file__, f"--child={stage}",
                               f"--steps={args.steps}", f"--patch={args.patch}"],
                              capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{stage} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    header = (f"{'stage':7} {'batch':>5} {'compile s':>9} {'s/step':>7} {'videos/s':>8} "
              f"{'peak RSS GiB':>12} | {'official s/step':>15} {'official videos/s':>17}")
    print(header)
    print("-" * len(header))
    for r in results:
        o = OFFICIAL[r["stage"]]
        print(f"{r['stage']:7} {r['batch']:>5} {r['compile_s']:>9.1f} {r['step_s_median']:>7.2f} "
              f"{r['videos_per_s']:>8.2f} {r['peak_rss_gib']:>12.2f} | {o['seconds']:>15.2f} "
              f"{o['videos_per_s']:>17.2f}")
    payload = {"results": results, "official": OFFICIAL, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "load_avg_at_end": os.getloadavg()}}
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
