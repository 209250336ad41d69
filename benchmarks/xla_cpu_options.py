"""Train steps of the full sthv2 model compiled with and without the library's CPU compiler options
(`adafocus_jax.parallel.compiler_options`: XLA:CPU's YNNPACK library fusions off),
side by side in one process with the plain-PyTorch reference step of benchmarks/train_step.py.

    python benchmarks/xla_cpu_options.py [--stages=stage1,stage2] [--steps=3]

Each round runs: the step as XLA compiles it by default, the step as the library compiles it, the
PyTorch step (A B C A B C ...); medians and ratios printed. Same weights, batch and random draws
for both JAX steps (each on its own copy of the train state).
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def steal_seconds() -> float:
    """CPU time the hypervisor took from this VM so far (Linux /proc/stat 'steal'; 0 elsewhere).
    On shared 2-core VMs it varies from run to run and slows whatever runs while it rises."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default="stage1,stage2")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--patch", type=int, default=144)
    args = p.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    import jax
    import torch

    import train_step as bench
    from adafocus_jax import inference, models, parallel, stages, train

    jax.config.update("jax_enable_compilation_cache", False)
    torch.set_num_threads(os.cpu_count())
    for stage in args.stages.split(","):
        config = inference.load_config(os.path.join(ROOT, "configs", "sthv2.py")
                                       + f":patch={args.patch}")
        batch_size = bench.OFFICIAL[stage]["batch"]
        library, state, batch, library_s = bench.prepare_step(config, stage, batch_size)
        model = models.create_model(config)
        recipe = stages.resolve_recipe(config, stage)
        _, schedules = train.create_train_state(state.params, state.batch_stats, recipe, 1000)
        mesh = parallel.make_mesh(jax.devices()[:1])
        start = time.perf_counter()
        default = jax.jit(train.make_train_step(model, recipe, schedules, seed=0),
                          out_shardings=parallel.replicated(mesh),
                          donate_argnums=(0,)).lower(state, batch).compile()
        default_s = time.perf_counter() - start
        states = {"default": jax.tree.map(lambda x: x.copy(), state), "library": state}
        steps = {"default": default, "library": library}
        reference = bench.torch_step(stage, batch_size, args.patch, config.model.num_classes)
        times = {"default": [], "library": [], "torch": []}
        steal_start = steal_seconds()
        for round_ in range(args.steps + 1):             # round 0 warms up
            for name in ("default", "library", "torch"):
                start = time.perf_counter()
                if name == "torch":
                    reference()
                else:
                    states[name], metrics = steps[name](states[name], batch)
                    jax.block_until_ready((states[name].params, metrics))
                if round_:
                    times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{stage} batch {batch_size}: s/step XLA default {med['default']:.2f}, library "
              f"{med['library']:.2f} ({med['default'] / med['library']:.2f}x), PyTorch "
              f"{med['torch']:.2f}; speedup vs PyTorch: default {med['torch'] / med['default']:.2f}x"
              f", library {med['torch'] / med['library']:.2f}x; compile default {default_s:.1f} s, "
              f"library {library_s:.1f} s; load average {os.getloadavg()[0]:.1f}, CPU stolen by the "
              f"hypervisor {steal_seconds() - steal_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
