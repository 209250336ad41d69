"""The synthetic benchmark (the README's main job) over several seeds and float paths.

    python benchmarks/synthetic_seeds.py --workdir=DIR                      # seeds 0-4, default path
    python benchmarks/synthetic_seeds.py --workdir=DIR --seeds=0,1 --paths=fast_math,threads1,devices2
    python benchmarks/synthetic_seeds.py --workdir=DIR --report_only        # re-read finished runs

Each (path, seed) is one run of `main.py --config=configs/synthetic.py --config.seed=SEED` in its
own process and directory, `DIR/<path>/seed<SEED>`; a run whose `synthetic_benchmark.json` exists is
not repeated (so the script resumes). The held-out test videos are the same in every run (they
depend on `config.data.synthetic.seed`, not on `config.seed`); the seed changes the initialisation,
the training videos, their order and every sampled patch and action.

A *float path* is the same computation with other rounding: XLA:CPU's fast-math on, one thread, or
the batch split over two data-parallel devices (other reduction orders in BatchNorm and the loss).
Training is chaotic, so a path that rounds differently follows another trajectory: a result that
holds on one path only is float noise, not a result.

Reported (printed as Markdown and written to `DIR/seeds_summary.json`):
  * per run: every variant's top-1 and the % of frames whose patch holds the whole digit
    (`target_hit`), the margins learned - random and learned - centre, the wall and CPU time;
  * per variant: mean ± std and min over all runs;
  * stage-2 curves per run (reward, policy entropy, and the sampled patches' target hit rate at
    each logged step, read from the TensorBoard events) as CSV, `DIR/curves.csv`;
  * `all_passed`: whether learned beats random and centre by >= the required margin in every run.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Float paths: extra XLA flags (appended to any the caller set).
PATHS = {
    "default": "",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "threads1": "--xla_cpu_multi_thread_eigen=false",
    "devices2": "--xla_force_host_platform_device_count=2",
}
VARIANTS = ("learned", "random", "center", "full_frame", "glance_only")
CURVE_TAGS = ("train_reward", "train_entropy", "train_target_hit", "train_random_target_hit")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                    if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags"))
        isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
        return f"{name}, {isa}, {os.cpu_count()} cores"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def run_one(workdir: str, path: str, seed: int, config: str, extra: list[str]) -> dict:
    """Runs (or re-reads) one seed on one float path; returns its row."""
    run_dir = os.path.join(workdir, path, f"seed{seed}")
    result_file = os.path.join(run_dir, "synthetic_benchmark.json")
    if not os.path.exists(result_file):
        os.makedirs(run_dir, exist_ok=True)
        env = dict(os.environ)
        env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS", ""), PATHS[path]]))
        cmd = [sys.executable, os.path.join(ROOT, "main.py"), f"--config={config}",
               f"--config.seed={seed}", f"--workdir={run_dir}", *extra]
        print(f"[{time.strftime('%H:%M:%S')}] {path} seed {seed}: {' '.join(cmd[1:])}", flush=True)
        start = time.time()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(run_dir, "log.txt"), "a") as log:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = round(time.time() - start, 1)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_seconds = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
        if proc.returncode != 0 or not os.path.exists(result_file):
            raise RuntimeError(f"{path} seed {seed} failed (exit {proc.returncode}); see "
                               f"{os.path.join(run_dir, 'log.txt')}")
        with open(os.path.join(run_dir, "timing.json"), "w") as f:
            json.dump({"wall_seconds": seconds, "cpu_seconds": cpu_seconds}, f)
    timing = {}
    if os.path.exists(os.path.join(run_dir, "timing.json")):
        with open(os.path.join(run_dir, "timing.json")) as f:
            timing = json.load(f)
    with open(result_file) as f:
        bench = json.load(f)
    stage_top1 = {}
    for stage in sorted(os.listdir(run_dir)):
        results = os.path.join(run_dir, stage, "results.json")
        if os.path.exists(results):
            with open(results) as f:
                final = json.load(f).get("final_eval") or {}
            if final.get("top1") is not None:
                stage_top1[stage] = round(float(final["top1"]), 2)
    return {"path": path, "seed": seed, "dir": run_dir, "seconds": timing.get("wall_seconds"),
            "cpu_seconds": timing.get("cpu_seconds"),
            "benchmark": bench, "stage_val_top1": stage_top1}


def stage2_curves(run_dir: str) -> list[dict]:
    """Stage-2 training curves of one run from its TensorBoard events: [{step, tag: value}]."""
    import tensorflow as tf   # clu's writer wrote the events with it
    rows: dict[int, dict] = {}
    for name in sorted(os.listdir(run_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
            for value in event.summary.value:
                stage, _, short = value.tag.partition("/")
                if stage != "stage2" or short not in CURVE_TAGS:
                    continue
                number = (value.simple_value if value.HasField("simple_value")
                          else float(tf.make_ndarray(value.tensor)))
                rows.setdefault(int(event.step), {"step": int(event.step)})[short] = number
    return [rows[s] for s in sorted(rows)]


def summarize(rows: list[dict], required: float) -> dict:
    per_variant = {}
    for v in VARIANTS:
        values = [r["benchmark"][v]["accuracy"] for r in rows if v in r["benchmark"]]
        if values:
            per_variant[v] = {"mean": statistics.fmean(values),
                              "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                              "min": min(values), "max": max(values), "n": len(values)}
    margins = [min(r["benchmark"]["meta"]["margin_vs_random"],
                   r["benchmark"]["meta"]["margin_vs_center"]) for r in rows]
    return {"per_variant": per_variant, "min_margin": min(margins) if margins else None,
            "required_margin": required,
            "all_passed": bool(margins) and all(m >= required for m in margins)}


def markdown(rows: list[dict], summary: dict) -> str:
    head = ("| path | seed | " + " | ".join(VARIANTS)
            + " | learned − random | learned − centre | learned / random on target (%) | wall / CPU (min) |")
    lines = [head, "|" + "---|" * (len(VARIANTS) + 7)]
    for r in rows:
        b = r["benchmark"]
        m = b["meta"]
        hits = (f"{b['learned'].get('target_hit', float('nan')):.0f} / "
                f"{b['random'].get('target_hit', float('nan')):.0f}")
        wall = (f"{r['seconds'] / 60:.1f} / {r['cpu_seconds'] / 60:.1f}" if r["seconds"]
                and r["cpu_seconds"] else "–")
        lines.append(f"| {r['path']} | {r['seed']} | "
                     + " | ".join(f"{b[v]['accuracy']:.1f}" if v in b else "–" for v in VARIANTS)
                     + f" | {m['margin_vs_random']:+.1f} | {m['margin_vs_center']:+.1f} | {hits} | "
                       f"{wall} |")
    pv = summary["per_variant"]
    lines.append("| **mean ± std** | | " + " | ".join(
        f"{pv[v]['mean']:.1f} ± {pv[v]['std']:.1f}" if v in pv else "–" for v in VARIANTS)
        + " | | | | |")
    lines.append("| **min** | | " + " | ".join(
        f"{pv[v]['min']:.1f}" if v in pv else "–" for v in VARIANTS) + " | | | | |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--paths", default="default",
                        help=f"comma-separated float paths from {sorted(PATHS)}")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "synthetic.py"))
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at once (wall and CPU times are then per run under sharing)")
    parser.add_argument("--report_only", action="store_true",
                        help="only read runs that finished; start none")
    parser.add_argument("extra", nargs="*", help="extra main.py flags, after --")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"--paths: unknown {unknown}; expected some of {sorted(PATHS)}")
    jobs = []
    for path in paths:
        for seed in seeds:
            done = os.path.exists(os.path.join(args.workdir, path, f"seed{seed}",
                                               "synthetic_benchmark.json"))
            if args.report_only and not done:
                continue
            jobs.append((path, seed))
    # Runs in parallel share the cores: each takes longer, the study as a whole about as long.
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
        rows = list(pool.map(
            lambda job: run_one(args.workdir, job[0], job[1], args.config, args.extra), jobs))
    if not rows:
        print("no finished runs", file=sys.stderr)
        return 1
    required = float(rows[0]["benchmark"]["meta"].get("required_margin", 15.0))
    summary = summarize(rows, required)
    curves_path = os.path.join(args.workdir, "curves.csv")
    with open(curves_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "seed", "step", *CURVE_TAGS])
        writer.writeheader()
        for r in rows:
            for point in stage2_curves(r["dir"]):
                writer.writerow({"path": r["path"], "seed": r["seed"], **point})
    out = {"machine": _cpu(), "rows": rows, **summary}
    with open(os.path.join(args.workdir, "seeds_summary.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nSynthetic benchmark over {len(rows)} runs on {out['machine']}:\n")
    print(markdown(rows, summary))
    print(f"\nminimum margin over runs (learned vs the better of random/centre): "
          f"{summary['min_margin']:+.1f} points; required ≥ {required:g} in every run: "
          f"{'PASS' if summary['all_passed'] else 'FAIL'}")
    print(f"stage-2 curves: {curves_path}")
    return 0 if summary["all_passed"] else 2


if __name__ == "__main__":
    sys.exit(main())
