"""Inference speed of adafocus_jax side by side with plain PyTorch on the SAME weights and inputs.

    python benchmarks/inference.py --quick                  # sthv2 patch 144, batch 1, fp32 + bf16
    python benchmarks/inference.py                          # sthv2 144/176, actnet 128; batch 1, 8
    python benchmarks/inference.py --configs=sthv2:144 --batches=1,8,32 --dtypes=float32 --repeats=5
    python benchmarks/inference.py --no-torch --out=/tmp/inference.json

The PyTorch side is `tests/torch_reference.py`: plain `torch.nn` modules with the official
networks' structure and state-dict names (TSM MobileNetV2 / ResNet-50, the policies, the
classifiers, the official crop loop). Its random weights (BatchNorm statistics calibrated, then
randomised) are saved in the official file layout and converted with `adafocus_jax.convert`, so
both sides compute the same function (tests/test_parity.py) on the same inputs.

Rows per (config, batch, dtype): `glance` (MobileNetV2 on the B·T_G frames, feature maps + own
logits / pooled features), `policy` (state → distribution parameters and values), `local`
(ResNet-50 on the B·T_L patches), `classifier` (fusion of glance and local outputs) and `full`
(glance → policy → crop → local → fuse, the official inference path). JAX runs each piece as one
jitted call; PyTorch runs under `torch.no_grad()` (bf16: `torch.autocast("cpu", torch.bfloat16)`,
JAX: `config.model.dtype="bfloat16"`). Every timed call is interleaved A B A B after one warm-up
call each; medians, videos/s = batch / median, `speedup` = torch median / jax median (> 1: JAX is
faster). JAX compile time (lower + compile, no persistent cache) of each full model is reported.
Absolute times depend on the machine and its load; ratios from one run are what carry.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

ROWS = ("glance", "policy", "local", "classifier", "full")
DEFAULT_CONFIGS = "sthv2:144,sthv2:176,actnet:128"


def _model_config(spec: str):
    from adafocus_jax import models
    dataset, _, patch = spec.partition(":")
    if dataset not in models.NUM_CLASSES:
        raise SystemExit(f"--configs: unknown dataset {dataset!r} in {spec!r}")
    if patch == "tiny":  # the tests' tiny widths (checks this script quickly)
        return models.tiny_model_config(dataset)
    if patch and not patch.isdigit():
        raise SystemExit(f"--configs: patch in {spec!r} must be a number or 'tiny'")
    if not patch:   # the default patch size: the first of configs/<dataset>.py's PATCH_SIZES
        from adafocus_jax import config_lib
        path = os.path.join(ROOT, "configs", f"{dataset}.py")
        patch = config_lib.load_config_module(path).PATCH_SIZES[0]
    return models.default_model_config(dataset, int(patch))


def build_pair(spec: str, workdir: str):
    """(model config, torch reference in eval mode, converted Flax variables) for `spec`."""
    import torch
    import torch_reference as tr

    from adafocus_jax import convert, models
    config = _model_config(spec)
    sth = config.classifier.kind == "logit_sum"
    build, make_file = ((tr.build_sthsth, lambda m: tr.sthsth_file(m, 3)) if sth else
                        (tr.build_anet, lambda m: tr.anet_file(m, True)))
    reference = build(config, seed=0, calibration_batch=2)
    path = os.path.join(workdir, f"{spec.replace(':', '_')}.pth.tar")
    torch.save(make_file(reference), path)
    variables = convert.load_torch_checkpoint(path, config)
    del models
    return config, reference, variables


class Case:
    """The inputs and the five (torch, jax) callables of one (config, batch, dtype)."""

    def __init__(self, config, reference, variables, batch: int, dtype: str, seed: int = 0):
        import jax
        import jax.numpy as jnp
        import numpy as np
        import torch
        import torch_reference as tr

        from adafocus_jax import models
        self.config = config.copy_and_resolve_references()
        self.config.dtype = dtype
        c = self.config
        self.sth = c.classifier.kind == "logit_sum"
        self.model = model = models.create_model(c)
        self.reference, self.batch, self.dtype = reference, batch, dtype
        gen = torch.Generator().manual_seed(seed)
        glance = tr.random_frames(batch, c.num_glance_frames, c.input_size, gen)
        focus = (tr.random_frames(batch, c.num_focus_frames, c.input_size, gen) if self.sth
                 else glance)
        nhwc = lambda t: jnp.asarray(np.moveaxis(t.numpy(), -3, -1))
        v = jax.device_put(variables)
        self.variables = v
        j_glance, j_focus = nhwc(glance), nhwc(focus)
        p, t_g, t_l = c.patch_size, c.num_glance_frames, c.num_focus_frames

        # Intermediate inputs of the per-network rows, computed once by the JAX model.
        maps, glance_out = jax.jit(lambda v, g: model.apply(v, g, method="glance"))(v, j_glance)
        states = model.apply(v, maps, method="policy_states")
        offsets = model.apply(v, batch, method="center_offsets")
        patches = jax.jit(lambda v, f, o: model.apply(v, f, o, method="crop"))(v, j_focus,
                                                                              offsets)
        local = jax.jit(lambda v, x: model.apply(v, x, method="local_features"))(v, patches)
        to_torch = lambda x, perm=None: torch.from_numpy(
            np.ascontiguousarray(np.asarray(x, np.float32) if perm is None
                                 else np.transpose(np.asarray(x, np.float32), perm)))
        t_frames = glance.flatten(0, 1)
        t_patches = to_torch(patches.reshape(batch * t_l, p, p, 3), (0, 3, 1, 2))
        t_maps = to_torch(maps, (0, 1, 4, 2, 3))  # [B, T, C, h, w]
        t_glance_out, t_local = to_torch(glance_out), to_torch(local)
        ref = reference

        def t_policy():
            if self.sth:
                return ref.policy.step(t_maps.reshape(batch, -1, *t_maps.shape[3:]))
            hidden, outs = None, []
            for step in range(t_g):
                probs, value, hidden = ref.policy.step(t_maps[:, step], hidden)
                outs.append(probs)
            return outs

        def t_classifier():
            if self.sth:
                return ref.fc(t_local).mean(1) + t_glance_out.mean(1)
            return ref.fc(torch.cat([t_glance_out, t_local], dim=2))

        self.torch_fns = {
            "glance": lambda: ref.glancer.get_featmap(t_frames),
            "policy": t_policy,
            "local": lambda: ref.focuser(t_patches),
            "classifier": t_classifier,
            "full": (lambda: ref(glance, focus)) if self.sth else (lambda: ref(glance)),
        }
        # compiled as the library compiles (parallel.compiler_options: XLA:CPU without YNNPACK)
        from adafocus_jax import parallel
        jit = lambda f: jax.jit(f, compiler_options=parallel.compiler_options())
        self.jax_fns = {
            "glance": (jit(lambda v, g: model.apply(v, g, method="glance")), (v, j_glance)),
            "policy": (jit(lambda v, s: model.apply(v, s, method="policy_forward")), (v, states)),
            "local": (jit(lambda v, x: model.apply(v, x, method="local_features")), (v, patches)),
            "classifier": (jit(lambda v, g, l: model.apply(v, g, l, method="classify")),
                           (v, glance_out, local)),
            "full": (jit(lambda v, g, f: model.apply(v, g, f, train=False).logits),
                     (v, j_glance, None if not self.sth else j_focus)),
        }

    def compile_full_s(self) -> float:
        fn, args = self.jax_fns["full"]
        start = time.perf_counter()
        fn.lower(*args).compile()
        return time.perf_counter() - start

    def run_torch(self, row: str) -> float:
        import torch
        fn = self.torch_fns[row]
        start = time.perf_counter()
        with torch.no_grad():
            if self.dtype == "bfloat16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    fn()
            else:
                fn()
        return time.perf_counter() - start

    def run_jax(self, row: str) -> float:
        import jax
        fn, args = self.jax_fns[row]
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - start


def precision_drift(config, variables, batch: int, seed: int = 1) -> dict:
    """bfloat16 vs float32 on the full model, same weights and `batch` random videos: max and
    mean |Δ logits| (and the logits' scale), top-1 agreement, how often the policy picks the
    same patch (exact offsets; mean |Δ offset| in pixels), and the max |Δ logits| of bfloat16 run
    on float32's patches (`max_abs_logit_diff_same_patches`: the networks' drift alone)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torch_reference as tr

    from adafocus_jax import models
    c = config
    gen = torch.Generator().manual_seed(seed)
    nhwc = lambda t: jnp.asarray(np.moveaxis(t.numpy(), -3, -1))
    glance = nhwc(tr.random_frames(batch, c.num_glance_frames, c.input_size, gen))
    sth = c.classifier.kind == "logit_sum"
    focus = nhwc(tr.random_frames(batch, c.num_focus_frames, c.input_size, gen)) if sth else None
    outs = {}
    for dtype in ("float32", "bfloat16"):
        mc = config.copy_and_resolve_references()
        mc.dtype = dtype
        model = models.create_model(mc)
        outs[dtype] = jax.jit(lambda v, g, f: model.apply(v, g, f, train=False))(
            variables, glance, focus)
        if dtype == "bfloat16":
            # The same networks on float32's patches: the drift of the CNNs and heads alone,
            # without the policy's (chaotic, for random weights) choice of another patch.
            given = jax.jit(lambda v, g, f, o: model.apply(
                v, g, f, train=False, patch_mode="given", patch_offsets=o))(
                variables, glance, focus, outs["float32"].patch_offsets)
    a, b = outs["float32"], outs["bfloat16"]
    diff = np.abs(np.asarray(a.logits) - np.asarray(b.logits))
    given_diff = np.abs(np.asarray(a.logits) - np.asarray(given.logits))
    offsets_a, offsets_b = np.asarray(a.patch_offsets), np.asarray(b.patch_offsets)
    same = np.all(offsets_a == offsets_b, axis=-1)
    return {"batch": batch, "max_abs_logit_diff": float(diff.max()),
            "max_abs_logit_diff_same_patches": float(given_diff.max()),
            "mean_abs_logit_diff": float(diff.mean()),
            "logit_scale": float(np.max(np.abs(np.asarray(a.logits)))),
            "top1_agreement": float(np.mean(np.argmax(a.logits, -1) == np.argmax(b.logits, -1))),
            "patch_agreement": float(same.mean()),
            "mean_abs_offset_diff_px": float(np.abs(offsets_a - offsets_b).mean())}


def measure(case: Case, rows, repeats: int, with_torch: bool) -> list[dict]:
    """Interleaved A B A B timing of each row; one warm-up call per side first."""
    results = []
    for row in rows:
        case.run_jax(row)
        if with_torch:
            case.run_torch(row)
        jax_times, torch_times = [], []
        for _ in range(repeats):
            jax_times.append(case.run_jax(row))
            if with_torch:
                torch_times.append(case.run_torch(row))
        r = {"row": row, "batch": case.batch, "dtype": case.dtype,
             "jax_s": statistics.median(jax_times), "jax_s_all": jax_times}
        r["jax_videos_per_s"] = case.batch / r["jax_s"]
        if with_torch:
            r.update(torch_s=statistics.median(torch_times), torch_s_all=torch_times)
            r["torch_videos_per_s"] = case.batch / r["torch_s"]
            r["speedup"] = r["torch_s"] / r["jax_s"]
        results.append(r)
        print(_fmt(r), flush=True)
    return results


def _fmt(r: dict) -> str:
    line = (f"  {r['row']:10} b{r['batch']:<3} {r['dtype']:8} jax {r['jax_s'] * 1e3:9.1f} ms "
            f"({r['jax_videos_per_s']:7.2f} videos/s)")
    if "torch_s" in r:
        line += (f" | torch {r['torch_s'] * 1e3:9.1f} ms ({r['torch_videos_per_s']:7.2f} videos/s)"
                 f" | speedup {r['speedup']:5.2f}x")
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma list of dataset[:patch] (sthv2:144, sthv2:176, actnet:128; "
                        "dataset:tiny = tiny widths, for tests)")
    parser.add_argument("--batches", default="1,8", help="comma list of batch sizes (e.g. 1,8,32)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side and row")
    parser.add_argument("--quick", action="store_true",
                        help="sthv2:144, batch 1, 2 repeats (a few minutes on 2 cores)")
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="time only the JAX side")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch intra-op threads (JAX's XLA:CPU uses every core)")
    parser.add_argument("--drift", type=int, default=0, metavar="B",
                        help="also report bf16-vs-fp32 logit drift and patch agreement of the "
                        "full model on B random videos per config")
    parser.add_argument("--no-timing", dest="timing", action="store_false",
                        help="skip the timing (e.g. with --drift only)")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.batches, args.repeats = "sthv2:144", "1", 2
    rows = [r for r in args.rows.split(",") if r]
    for r in rows:
        if r not in ROWS:
            raise SystemExit(f"--rows: unknown row {r!r}; expected some of {ROWS}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in ("float32", "bfloat16"):
            raise SystemExit(f"--dtypes: unknown dtype {d!r}; expected float32 or bfloat16")
    batches = [int(b) for b in args.batches.split(",") if b]

    import jax
    import torch
    jax.config.update("jax_enable_compilation_cache", False)
    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device(s)), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    payload = {"results": [], "compile": [], "drift": [], "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
        "jax": jax.__version__, "torch": torch.__version__, "torch_threads": args.threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_avg_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as workdir:
        for spec in [s for s in args.configs.split(",") if s]:
            config, reference, variables = build_pair(spec, workdir)
            if args.drift:
                d = {"config": spec, **precision_drift(config, variables, args.drift)}
                print("bf16 vs fp32: " + json.dumps(d), flush=True)
                payload["drift"].append(d)
            for batch in (batches if args.timing else []):
                for dtype in dtypes:
                    case = Case(config, reference, variables, batch, dtype)
                    compile_s = case.compile_full_s()
                    print(f"{spec} batch {batch} {dtype}: JAX full-model compile {compile_s:.1f} s",
                          flush=True)
                    payload["compile"].append({"config": spec, "batch": batch, "dtype": dtype,
                                               "full_compile_s": compile_s})
                    for r in measure(case, rows, args.repeats, args.torch):
                        payload["results"].append({"config": spec, **r})
                    del case
    payload["machine"]["load_avg_at_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
