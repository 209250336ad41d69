"""One-GPU benchmark of adafocus_jax: inference, train steps, compile times, peak memory, MFU → one JSON.

    bash benchmarks/gpu.sh                                 # on a GPU machine (<= 8 minutes)
    python benchmarks/gpu.py --out=gpu.json [--peak-tflops=989] [--budget-s=450]
    python benchmarks/gpu.py --cpu-smoke --out=/tmp/smoke.json   # tiny configs on CPU (tests)

What it measures (random weights, random inputs, one device):
  * inference (`model.apply(..., train=False)`, the official path: glance → policy → crop → local
    → fuse) for sthv2 patch 144 and actnet patch 128, batch 1 / 32 / 128, float32 and bfloat16
    (`config.model.dtype`): compile seconds, median latency, videos/s;
  * train steps of sthv2 stage 1 and stage 2 (float32 and bfloat16) at the largest batch of
    `--train-batches` that compiles and runs (a RESOURCE_EXHAUSTED moves on to the next smaller);
  * peak device memory per case (`device.memory_stats()["peak_bytes_in_use"]`, where the backend
    reports it; the peak is cumulative over the process, so cases run from small to large);
  * model FLOP utilisation: FLOPs of the compiled computation (XLA's cost analysis) × calls/s ÷
    the device's peak dense FLOP/s for that dtype (`PEAK_TFLOPS`, or `--peak-tflops`).
Cases are skipped (and listed as skipped) once `--budget-s` is spent, so the run ends in time.
Float32 matmuls run at JAX's default precision (TF32 on NVIDIA GPUs); MFU for float32 is quoted
against the TF32 peak.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Dense peak TFLOP/s per device (vendor datasheets, SXM parts, no sparsity): bf16 tensor cores and
# TF32 tensor cores (what float32 matmuls use at JAX's default precision on these GPUs).
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 494.0},
    "H200": {"bfloat16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


def device_peak_tflops(device_kind: str, dtype: str, override: float | None) -> float | None:
    """The peak of `PEAK_TFLOPS` whose key occurs in the device kind (e.g. "NVIDIA H200"), the
    override if given, or None (unknown device: MFU is not reported)."""
    if override:
        return float(override)
    for name, peaks in PEAK_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peaks[dtype]
    return None


def _is_oom(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        value = float(cost.get("flops", 0.0))
        return value if value > 0 else None
    except Exception:  # noqa: BLE001 - some backends have no cost analysis
        return None


def _peak_bytes():
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _time(fn, repeats: int) -> list[float]:
    import jax
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def _summarise(case: dict, compiled, times, batch: int, peak_tflops) -> dict:
    median = statistics.median(times)
    flops = _flops(compiled)
    case.update(median_s=median, times_s=times, videos_per_s=batch / median,
                flops_per_call=flops, peak_bytes_in_use=_peak_bytes())
    if flops and peak_tflops:
        case["mfu"] = flops / median / (peak_tflops * 1e12)
    return case


def inference_case(config, batch: int, dtype: str, repeats: int, peak_tflops) -> dict:
    import jax
    import jax.numpy as jnp

    from adafocus_jax import models
    config = config.copy_and_resolve_references()
    config.model.dtype = dtype
    model = models.create_model(config)
    mc = config.model
    glance, focus = models.dummy_inputs(mc, 1)
    rngs = {k: jax.random.key(0) for k in ("params", "patches", "actions")}
    variables = jax.jit(lambda: model.init(rngs, glance, focus, patch_mode="policy"))()
    key = jax.random.key(1)
    s = mc.input_size
    g = jax.random.normal(key, (batch, mc.num_glance_frames, s, s, 3), jnp.float32)
    f = jax.random.normal(key, (batch, mc.num_focus_frames, s, s, 3), jnp.float32)
    fn = jax.jit(lambda v, g, f: model.apply(v, g, f, train=False).logits)
    start = time.perf_counter()
    compiled = fn.lower(variables, g, f).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(variables, g, f))
    times = _time(lambda: compiled(variables, g, f), repeats)
    return _summarise({"kind": "inference", "batch": batch, "dtype": dtype,
                       "compile_s": compile_s}, compiled, times, batch, peak_tflops)


def train_case(config, stage: str, batch: int, dtype: str, repeats: int, peak_tflops) -> dict:
    import jax

    from train_step import prepare_step
    config = config.copy_and_resolve_references()
    config.model.dtype = dtype
    compiled, state, data, compile_s = prepare_step(config, stage, batch)
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, data)
        jax.block_until_ready((state.params, metrics))
        times.append(time.perf_counter() - start)
    return _summarise({"kind": "train", "stage": stage, "batch": batch, "dtype": dtype,
                       "compile_s": compile_s, "loss": float(metrics["loss"])},
                      compiled, times, batch, peak_tflops)


def _configs(smoke: bool):
    """{name: full config} of the measured settings (tiny widths for the CPU smoke test)."""
    from adafocus_jax import inference, models

    def official(dataset: str, arg: str = ""):   # configs/<dataset>.py[:arg]
        return inference.load_config(os.path.join(ROOT, "configs", f"{dataset}.py") + f":{arg}")

    if smoke:
        out = {}
        for name, dataset in (("sthv2-tiny", "sthv2"), ("actnet-tiny", "actnet")):
            c = official(dataset)
            c.model = models.tiny_model_config(dataset)
            out[name] = c
        return out
    return {"sthv2-144": official("sthv2", "patch=144"),
            "actnet-128": official("actnet", "patch=128")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_benchmark.json")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny networks, batches 1/2, 2 repeats: checks the script on a CPU")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak dense TFLOP/s for MFU (default: PEAK_TFLOPS by name)")
    parser.add_argument("--inference-batches", default=None,
                        help="default 1,32,128 (--cpu-smoke: 1,2)")
    parser.add_argument("--train-batches", default=None,
                        help="train batches tried largest first, the first that fits is kept; "
                        "default 128,64,32,16 (--cpu-smoke: 4,2)")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--repeats", type=int, default=None, help="default 10 (--cpu-smoke: 2)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting new cases after this many seconds")
    args = parser.parse_args(argv)
    smoke = {"inference_batches": "1,2", "train_batches": "4,2", "repeats": 2}
    full = {"inference_batches": "1,32,128", "train_batches": "128,64,32,16", "repeats": 10}
    for key, value in (smoke if args.cpu_smoke else full).items():
        if getattr(args, key) is None:  # explicit flags win over the --cpu-smoke defaults
            setattr(args, key, value)

    import jax
    jax.config.update("jax_enable_compilation_cache", False)
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", str(device))
    start = time.perf_counter()
    dtypes = [d for d in args.dtypes.split(",") if d]
    result = {"device": {"kind": kind, "platform": device.platform,
                         "count": jax.device_count(), "jax": jax.__version__,
                         "host": platform.platform()},
              "peak_tflops": {d: device_peak_tflops(kind, d, args.peak_tflops) for d in dtypes},
              "cpu_smoke": bool(args.cpu_smoke), "inference": [], "train": [], "skipped": []}
    configs = _configs(args.cpu_smoke)

    def out_of_time():
        return time.perf_counter() - start > args.budget_s

    for name, config in configs.items():
        for dtype in dtypes:
            for batch in [int(b) for b in args.inference_batches.split(",") if b]:
                case = {"config": name, "batch": batch, "dtype": dtype}
                if out_of_time():
                    result["skipped"].append({"kind": "inference", **case, "why": "budget"})
                    continue
                try:
                    case.update(inference_case(config, batch, dtype, args.repeats,
                                               result["peak_tflops"][dtype]))
                except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                    if not _is_oom(err):
                        raise
                    result["skipped"].append({"kind": "inference", **case, "why": "OOM"})
                    continue
                result["inference"].append({"config": name, **case})
                print(json.dumps(result["inference"][-1]), flush=True)
    train_config = next(iter(configs.values()))  # sthv2
    for stage in ("stage1", "stage2"):
        for dtype in dtypes:
            for batch in [int(b) for b in args.train_batches.split(",") if b]:
                case = {"config": next(iter(configs)), "stage": stage, "batch": batch,
                        "dtype": dtype}
                if out_of_time():
                    result["skipped"].append({"kind": "train", **case, "why": "budget"})
                    break
                try:
                    case.update(train_case(train_config, stage, batch, dtype, args.repeats,
                                           result["peak_tflops"][dtype]))
                except Exception as err:  # noqa: BLE001
                    if not _is_oom(err):
                        raise
                    result["skipped"].append({"kind": "train", **case, "why": "OOM"})
                    continue
                result["train"].append(case)
                print(json.dumps(case), flush=True)
                break  # the largest batch that fits
    result["wall_s"] = time.perf_counter() - start
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
