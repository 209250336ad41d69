"""Train-step throughput of the FULL Something-Something V2 model (configs/sthv2.py) on this machine,
side by side with the same step in plain PyTorch.

    python benchmarks/train_step.py                      # both stages, table + JSON
    python benchmarks/train_step.py --stages=stage2 --steps=3 --out=/tmp/bench.json
    python benchmarks/train_step.py --no-torch           # JAX only

Measures, per stage, in a fresh subprocess each (so the peak RSS is that stage's alone):
  * compile time of the jitted train step (lower + compile, no persistent cache);
  * the median wall time per step after one warm-up step, and videos/s = batch / median;
  * peak resident memory of the process (ru_maxrss).
Batch sizes follow /work/shared/reference/official_speed.md so the numbers compare with the official
PyTorch code on the same kind of CPU: stage 1 (random patches, focuser + classifier backward) at
batch 4, stage 2 (the fused PPO step: glancer, policy, two ResNet-50 passes, PPO update) at batch 8.
Weights are random (drawn with NumPy on the abstract shapes: no init compile); frames are random
uint8, as the device sees them.

The PyTorch reference step (`torch_step`, built from tests/torch_reference.py's official-structure
modules, random weights, `torch.set_num_threads(cpu count)`) does what the official scripts do per
step: stage 1 — glancer in eval under no_grad, one uniform random patch per video, focuser in
train mode, dropout, classifier, logit sum, CE, backward, SGD (momentum 0.9) on focuser +
classifier; stage 2 — glancer and focuser in eval under no_grad, the policy (train-mode BN) acts
(clamped Gaussian sample), the focuser runs on the policy patches and on random baseline patches,
reward p(y|policy) − p(y|random), normalised return, one PPO update (policy re-evaluated, clipped
surrogate + value loss), Adam. Its timed calls are interleaved with the JAX ones (A B A B);
`speedup` = torch median / JAX median (> 1: JAX faster). Peak RSS is read before the first
PyTorch call, so it is JAX's alone.
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
sys.path.insert(0, os.path.join(ROOT, "tests"))

OFFICIAL = {  # official_speed.md: torch 2.14.1 CPU, 2 threads, median s per call
    "stage1": {"batch": 4, "seconds": 2.96, "videos_per_s": 1.35},
    "stage2": {"batch": 8, "seconds": 6.69, "videos_per_s": 1.20},
}


def torch_step(stage: str, batch_size: int, patch: int, num_classes: int = 174):
    """The official-style PyTorch train step of `stage` at `batch_size` (see the module docstring);
    returns a zero-argument callable that runs one step on fixed random inputs."""
    import torch
    import torch.nn.functional as F
    import torch_reference as tr

    torch.manual_seed(0)
    t_g, t_l, size = 8, 12, 224
    glancer = tr.Glancer(tr.MobileNetV2("tsm", num_classes, num_segments=t_g)).eval()
    focuser = tr.SthSthFocuser(num_segments=t_l)
    fc = torch.nn.Linear(focuser.num_features, num_classes)
    gen = torch.Generator().manual_seed(1)
    glance = torch.randn(batch_size, t_g, 3, size, size, generator=gen)
    focus = torch.randn(batch_size, t_l, 3, size, size, generator=gen)
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen)
    dropout = torch.nn.Dropout(0.5)

    def local_logits(patches):
        feats = focuser(patches.reshape(batch_size * t_l, 3, patch, patch))
        return fc(dropout(feats)).reshape(batch_size, t_l, -1).mean(1)

    if stage == "stage1":
        focuser.train()
        opt = torch.optim.SGD(list(focuser.parameters()) + list(fc.parameters()), lr=1e-5,
                              momentum=0.9, weight_decay=1e-4)

        def step():
            with torch.no_grad():
                _, g_logits = glancer.get_featmap(glance.flatten(0, 1))
            patches, _ = tr.get_patch(focus.flatten(1, 2), torch.rand(batch_size, 2), patch)
            logits = local_logits(patches) + g_logits.reshape(batch_size, t_g, -1).mean(1)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        return step

    focuser.eval()
    policy = tr.ContinuousActorCritic(t_g * 1280, 7).train()
    policy_old = tr.ContinuousActorCritic(t_g * 1280, 7).train()
    policy_old.load_state_dict(policy.state_dict())
    opt = torch.optim.Adam(policy.parameters(), lr=3e-4)
    std = 0.25

    def step():
        with torch.no_grad():
            maps, g_logits = glancer.get_featmap(glance.flatten(0, 1))
            state = maps.reshape(batch_size, t_g * maps.shape[1], *maps.shape[2:])
            g_mean = g_logits.reshape(batch_size, t_g, -1).mean(1)
            mean, _, _ = policy_old.step(state)
            action = torch.clamp(mean + std * torch.randn_like(mean), 0, 1)
            logp_old = torch.distributions.Normal(mean, std).log_prob(action).sum(-1)
            images = focus.flatten(1, 2)
            p_policy = F.softmax(local_logits(tr.get_patch(images, action, patch)[0]) + g_mean, -1)
            p_random = F.softmax(local_logits(tr.get_patch(images, torch.rand(batch_size, 2),
                                                           patch)[0]) + g_mean, -1)
            reward = (p_policy - p_random).gather(1, labels[:, None])[:, 0]
            returns = (reward - reward.mean()) / (reward.std() + 1e-5)
        mean, value, _ = policy.step(state)
        logp = torch.distributions.Normal(mean, std).log_prob(action).sum(-1)
        ratio = torch.exp(logp - logp_old)
        adv = returns - value.detach()
        loss = (-torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv).mean()
                + 0.5 * F.mse_loss(value, returns))
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy_old.load_state_dict(policy.state_dict())
        return loss
    return step


def prepare_step(config, stage: str, batch_size: int, seed: int = 0):
    """The jitted train step of `stage` on one device, compiled: (compiled, state, batch,
    compile seconds). Random weights drawn with NumPy on the abstract shapes (no init compile),
    unit BN variances, random uint8 frames as the device sees them."""
    import jax
    import numpy as np

    from adafocus_jax import models, parallel, stages, train
    model = models.create_model(config)
    mc = config.model
    glance, focus = models.dummy_inputs(mc, 1)
    rngs = {k: jax.random.key(0) for k in ("params", "dropout", "patches", "actions")}
    shapes = jax.eval_shape(lambda: model.init(rngs, glance, focus, patch_mode="policy"))
    gen = np.random.default_rng(seed)
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
    return compiled, state, batch, time.perf_counter() - start


def _measure(stage: str, steps: int, patch: int, with_torch: bool = True) -> dict:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    import jax

    from adafocus_jax import inference

    jax.config.update("jax_enable_compilation_cache", False)
    config = inference.load_config(os.path.join(ROOT, "configs", "sthv2.py") + f":patch={patch}")
    batch_size = OFFICIAL[stage]["batch"]
    mc = config.model
    compiled, state, batch, compile_s = prepare_step(config, stage, batch_size)
    state, metrics = compiled(state, batch)          # warm-up
    jax.block_until_ready(metrics)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    reference = None
    if with_torch:
        import torch
        torch.set_num_threads(os.cpu_count())
        reference = torch_step(stage, batch_size, patch, mc.num_classes)
        reference()                                  # warm-up
    times, torch_times = [], []
    for _ in range(steps):                           # interleaved: JAX, torch, JAX, torch, ...
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state.params, metrics))
        times.append(time.perf_counter() - start)
        if reference is not None:
            start = time.perf_counter()
            reference()
            torch_times.append(time.perf_counter() - start)
    median = statistics.median(times)
    out = {"stage": stage, "batch": batch_size, "patch": patch, "compile_s": compile_s,
           "step_s_median": median, "step_s_all": times, "videos_per_s": batch_size / median,
           "peak_rss_gib": peak_rss, "loss": float(metrics["loss"]),
           "devices": jax.device_count(), "backend": jax.default_backend()}
    if torch_times:
        t = statistics.median(torch_times)
        out.update(torch_step_s_median=t, torch_step_s_all=torch_times,
                   torch_videos_per_s=batch_size / t, speedup=t / median)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="stage1,stage2")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--patch", type=int, default=144)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "train_step.json"))
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="skip the side-by-side PyTorch reference step")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_measure(args.child, args.steps, args.patch, args.torch)), flush=True)
        return
    results = []
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if stage not in OFFICIAL:
            raise SystemExit(f"--stages: unknown stage {stage!r}; expected {sorted(OFFICIAL)}")
        proc = subprocess.run([sys.executable, __file__, f"--child={stage}",
                               f"--steps={args.steps}", f"--patch={args.patch}"]
                              + ([] if args.torch else ["--no-torch"]),
                              capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{stage} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    header = (f"{'stage':7} {'batch':>5} {'compile s':>9} {'s/step':>7} {'videos/s':>8} "
              f"{'peak RSS GiB':>12} | {'torch s/step':>12} {'speedup':>7} | "
              f"{'official s/step (other run)':>27}")
    print(header)
    print("-" * len(header))
    for r in results:
        o = OFFICIAL[r["stage"]]
        ref = (f"{r['torch_step_s_median']:>12.2f} {r['speedup']:>6.2f}x" if "speedup" in r
               else f"{'-':>12} {'-':>7}")
        print(f"{r['stage']:7} {r['batch']:>5} {r['compile_s']:>9.1f} {r['step_s_median']:>7.2f} "
              f"{r['videos_per_s']:>8.2f} {r['peak_rss_gib']:>12.2f} | {ref} | "
              f"{o['seconds']:>27.2f}")
    payload = {"results": results, "official": OFFICIAL, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "load_avg_at_end": os.getloadavg()}}
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
