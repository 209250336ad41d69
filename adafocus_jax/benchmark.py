"""End-of-run benchmark: where the patches come from, at what cost (the synthetic benchmark's table).

On a held-out split (`config.benchmark.split`, "test" for the synthetic data: digits never seen in
training) it evaluates, with `adafocus_jax.evaluate.evaluate_model`:

| key | what runs | patches |
|---|---|---|
| `learned` | glance → policy → local network on patches → classifier | the deterministic policy |
| `random` | the same networks | uniformly random patches (official baseline) |
| `center` | the same networks | the centre patch of every frame |
| `oracle` | the same networks | the patch centred on the digit (the data knows it): what a perfect locator would show (not a bound: the networks are fine-tuned on grid-cell patches, where the digit sits off-centre) |
| `full_frame` | the local network + its fc on every whole frame (stage-0 head) | none |
| `glance_only` | the glance network + its head on every frame (stage-0 head) | none |
| `uniform_frames` | Uni-AdaFocus only: the same networks on uniformly spaced frames (`config.model.policy.frame_choice = "uniform"`) | the learned boxes |

A Uni-AdaFocus run (`config.model.version == "uni"`, configs/synthetic.py:mode=uni) evaluates
`learned` (the temporal policy's frames, the spatial policy's boxes), `uniform_frames` (same number
of local frames, same boxes policy, equal cost), `random` / `center` (the policy's frames, random or
centre boxes of side P), `full_frame` and `glance_only` (on all N candidate frames); no `oracle`
(the model takes no given boxes). Its JSON adds `uni_learned` and `uni_uniform_frames` (copies of
those rows), per patch row `frame_hit` (% of the chosen frames that show the digit, on data with
`target_present`), and in `meta` `margin_vs_uniform_frames` and `required_frame_margin`
(`config.benchmark.required_frame_margin`, 5 points); `passed` then also needs that margin.

and writes `WORKDIR/<dataset>_benchmark.json` (`synthetic_benchmark.json` for the synthetic data):

    {"learned": {"accuracy": 66.4, "gflops": 0.0236, "target_hit": 45.4},
     "random": {"accuracy": 24.6, "gflops": 0.023, "target_hit": 4.4}, "center": {...},
     "oracle": {...}, "full_frame": {"accuracy": 23.4, "gflops": 0.0609}, "glance_only": {...},
     "meta": {"split": "test", "num_videos": 1000, "seed": 0, "frame_size": 144, "glance_size": 72,
              "patch_size": 48, "patch_area_fraction": 0.111, "margin_vs_random": 41.8,
              "margin_vs_center": 39.7, "required_margin": 15.0, "passed": true,
              "full_frame_variables": "stage0_focuser", "seconds": 98.0}}

(the numbers of one run of configs/synthetic.py, seed 0, on 2 CPU cores). `target_hit` is the % of
frames whose patch holds the whole digit (variants with patches, data that records the digit box).

Accuracy is top-1 in percent; GFLOPs are multiply-accumulates per video counted from the model
(`adafocus_jax.flops.variant_gflops`), so `learned` differs from `random`/`center` only by the
policy network. `full_frame` uses the local network of `config.benchmark.full_frame_stage`
(stage0_focuser: the stage that trained its fc; later stages fine-tune the trunk on patches and
leave the fc behind) when that stage's checkpoint is in WORKDIR, else `variables`. The synthetic
recipe pre-trains that network on digit-holding patches, so on whole frames (digit small among
clutter) it reads poorly: the row shows what a whole frame costs, not what it could reach.

Entry points:

    benchmark.run(config, workdir, variables, *, model=None, mesh=None) -> dict
        # called by adafocus_jax.train.train_and_evaluate after the last stage when
        # config.benchmark.enabled; `variables` = {"params", "batch_stats"} of the final model.
    python -m adafocus_jax.benchmark --config=configs/synthetic.py --workdir=DIR
        # re-runs it on a finished run (variables of the last stage of config.run_stages).
    python -m adafocus_jax.benchmark --config=configs/synthetic.py --workdir=DIR --early_exit
        # adds the real early-exit section `early_exit` (early_exit_section) to the JSON.

Config keys read: `config.benchmark.{split, full_frame_stage, batch_size, max_batches,
required_margin, required_frame_margin, variants}` (all optional but `split`), `config.dataset`,
`config.seed`.
"""

import json
import logging
import os
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from adafocus_jax import checkpoint as ckpt_lib
from adafocus_jax import flops as flops_lib
from adafocus_jax import handoff, json_io, models, parallel, stages

# Variant → evaluate_model patch mode (adafocus_jax.patch_modes).
VARIANT_PATCH_MODE = {"learned": "policy", "random": "random", "center": "center", "oracle": "oracle",
               "full_frame": "focuser", "glance_only": "glancer", "uniform_frames": "policy"}
# Variants that run the model with another `config.model.policy.frame_choice` (Uni-AdaFocus).
VARIANT_FRAME_CHOICE = {"uniform_frames": "uniform"}
REQUIRED = ("learned", "random", "center", "full_frame")
DEFAULT_VARIANTS = "learned,random,center,oracle,full_frame,glance_only"
# Uni-AdaFocus: its frames are the temporal policy's (or uniformly spaced ones), and it takes no
# given boxes, so no oracle.
UNI_REQUIRED = REQUIRED + ("uniform_frames",)
UNI_DEFAULT_VARIANTS = "learned,uniform_frames,random,center,full_frame,glance_only"


def benchmark_path(config: ml_collections.ConfigDict, workdir: str) -> str:
    """`WORKDIR/<dataset>_benchmark.json`."""
    return os.path.join(workdir, f"{config.dataset}_benchmark.json")


def _is_uni(config) -> bool:
    return config.model.get("version", "v1") == "uni"


def _variants(config) -> list[str]:
    uni = _is_uni(config)
    spec = str(config.benchmark.get("variants", UNI_DEFAULT_VARIANTS if uni else DEFAULT_VARIANTS))
    names = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANT_PATCH_MODE]
    if unknown:
        raise ValueError(f"config.benchmark.variants: unknown {unknown}; expected a subset of "
                         f"{list(VARIANT_PATCH_MODE)}")
    unfit = [v for v in names if v == ("oracle" if uni else "uniform_frames")]
    if unfit:
        raise ValueError(f"config.benchmark.variants: {unfit} needs "
                         + ("a model that takes given boxes (V1 / V2), not Uni-AdaFocus" if uni
                            else "a model that chooses its frames (config.model.version = 'uni')"))
    required = UNI_REQUIRED if uni else REQUIRED
    missing = [v for v in required if v not in names]
    if missing:
        raise ValueError(f"config.benchmark.variants must include {list(required)} "
                         f"(missing {missing})")
    return names


def _variant_model(config, model, name: str):
    """The module a variant runs: `model`, or (`VARIANT_FRAME_CHOICE`) the same networks with
    another `config.model.policy.frame_choice` (same parameters)."""
    choice = VARIANT_FRAME_CHOICE.get(name)
    if choice is None:
        return model
    model_config = ml_collections.ConfigDict(model.config.to_dict())
    model_config.policy.frame_choice = choice
    return models.create_model(model_config)


def _batch_size(config, mesh) -> int:
    """The eval batch rounded down to a multiple of the device and process counts."""
    size = int(config.benchmark.get("batch_size", 0)) or int(config.train.get(
        "eval_batch_size", 0)) or 32
    return parallel.round_batch_size(size, mesh)


def _full_frame_variables(config, workdir: str, variables: Mapping) -> tuple[Mapping, str]:
    """The variables for `full_frame`: the stage named by `config.benchmark.full_frame_stage` if
    its checkpoint is in `workdir`, else the final `variables`. Returns (variables, where from)."""
    stage = str(config.benchmark.get("full_frame_stage", "") or "")
    if not stage:
        return variables, "final"
    stage_dir = os.path.join(workdir, stage)
    try:
        return ckpt_lib.load_variables_from_dir(stage_dir), stage
    except FileNotFoundError as e:
        logging.warning("benchmark: %s; full_frame uses the final variables", e)
        return variables, "final"


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text table of the variants (accuracy %, GFLOPs per video, cost vs full frame, and
    the % of frames whose patch holds the whole target where the data knows it)."""
    full = results.get("full_frame", {}).get("gflops")
    frames = any("frame_hit" in row for name, row in results.items() if name != "meta")
    lines = [f"{'variant':<18s} {'accuracy %':>10s} {'GFLOPs/video':>13s} {'vs full frame':>14s}"
             f" {'on target %':>12s}" + (f" {'frames w/ target %':>19s}" if frames else "")]
    for name, row in results.items():
        if name == "meta":
            continue
        rel = f"{row['gflops'] / full:13.2f}x" if full else f"{'':>14s}"
        hit = f"{row['target_hit']:12.1f}" if "target_hit" in row else f"{'':>12s}"
        shown = (f" {row['frame_hit']:19.1f}" if "frame_hit" in row else f" {'':>19s}") \
            if frames else ""
        lines.append(f"{name:<18s} {row['accuracy']:10.2f} {row['gflops']:13.4f} {rel} {hit}"
                     f"{shown}")
    meta = results.get("meta", {})
    if "margin_vs_random" in meta:
        line = (f"learned − random: {meta['margin_vs_random']:+.2f} points, learned − center: "
                f"{meta['margin_vs_center']:+.2f} points (required ≥ {meta['required_margin']:g})")
        if "margin_vs_uniform_frames" in meta:
            line += (f", learned − uniform frames: {meta['margin_vs_uniform_frames']:+.2f} points "
                     f"(required ≥ {meta['required_frame_margin']:g})")
        lines.append(f"{line}: {'PASS' if meta['passed'] else 'FAIL'}")
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str, variables: Mapping, *, model=None,
        mesh=None) -> dict[str, Any]:
    """Evaluates every variant on `config.benchmark.split`, writes the JSON, prints the table.

    Args:
      config: the run config (`configs/synthetic.py`).
      workdir: the run directory (holds the stage directories; the JSON is written here).
      variables: `{"params", "batch_stats"}` of the final model (host or device arrays).
      model: the `AdaFocus` module (default: `models.create_model(config)`).
      mesh: the data mesh (default: every device).

    Returns:
      The dict written to `benchmark_path(config, workdir)`.
    """
    from adafocus_jax import data as data_lib
    from adafocus_jax import evaluate as eval_lib

    start = time.time()
    names = _variants(config)
    model = model or models.create_model(config)
    mesh = parallel.make_mesh() if mesh is None else mesh
    split = str(config.benchmark.split)
    source = data_lib.create_source(config.data, split)
    batch_size = _batch_size(config, mesh)
    max_batches = int(config.benchmark.get("max_batches", 0))
    full_vars, full_from = _full_frame_variables(config, workdir, variables)
    results: dict[str, Any] = {}
    num_videos = None
    for name in names:
        mode = VARIANT_PATCH_MODE[name]
        var = full_vars if name == "full_frame" else variables
        runs = _variant_model(config, model, name)
        t0 = time.time()
        out = eval_lib.evaluate_model(config, runs, var, source, patch_mode=mode,
                                      batch_size=batch_size, mesh=mesh, max_batches=max_batches)
        gflops, _ = flops_lib.variant_gflops(runs, name)
        results[name] = {"accuracy": float(out["top1"]), "gflops": float(gflops)}
        # % of frames whose patch holds the whole digit; Uni-AdaFocus on data where only some
        # frames show it: % of its chosen frames that show it.
        for key in ("target_hit", "frame_hit"):
            if key in out:
                results[name][key] = round(float(out[key]), 2)
        num_videos = int(out["num_videos"])
        logging.info("benchmark %s (%s): top-1 %.2f%%, %.4f GFLOPs/video (%.1f s)", name, mode,
                     out["top1"], gflops, time.time() - t0)
    required = float(config.benchmark.get("required_margin", 15.0))
    margin_random = results["learned"]["accuracy"] - results["random"]["accuracy"]
    margin_center = results["learned"]["accuracy"] - results["center"]["accuracy"]
    results["meta"] = {
        "split": split, "num_videos": num_videos, "seed": int(config.seed),
        "frame_size": int(config.model.input_size), "glance_size": int(config.model.glance_size),
        "patch_size": int(config.model.patch_size),
        "patch_area_fraction": float(config.model.patch_size ** 2 / config.model.input_size ** 2),
        "margin_vs_random": float(margin_random), "margin_vs_center": float(margin_center),
        "required_margin": required,
        "passed": bool(margin_random >= required and margin_center >= required),
        "full_frame_variables": full_from, "seconds": round(time.time() - start, 1),
        "mechanism": str(config.model.get("version", "v1")),
    }
    if results["meta"]["mechanism"] == "v2":
        # An AdaFocusV2 run (configs/synthetic.py:mode=v2): its learned row is "V2 end-to-end".
        results["v2_learned"] = dict(results["learned"])
    if results["meta"]["mechanism"] == "uni":
        # A Uni-AdaFocus run (configs/synthetic.py:mode=uni): the policy's frames must beat
        # uniformly spaced ones at equal cost (same boxes policy, same number of local frames).
        frame_margin = results["learned"]["accuracy"] - results["uniform_frames"]["accuracy"]
        required_frames = float(config.benchmark.get("required_frame_margin", 5.0))
        results["meta"].update(
            margin_vs_uniform_frames=float(frame_margin), required_frame_margin=required_frames,
            passed=results["meta"]["passed"] and frame_margin >= required_frames,
            num_candidate_frames=int(config.model.num_candidate_frames),
            num_glance_frames=int(config.model.num_glance_frames),
            num_focus_frames=int(config.model.num_focus_frames),
            digit_frames=int(config.data.get("synthetic", {}).get("digit_frames", 0)))
        results["uni_learned"] = dict(results["learned"])
        results["uni_uniform_frames"] = dict(results["uniform_frames"])
    if jax.process_index() == 0:
        path = benchmark_path(config, workdir)
        os.makedirs(workdir, exist_ok=True)
        json_io.write_json(path, results)
        table = format_table(results)
        print(f"\nBenchmark on the {split} split ({num_videos} videos), written to {path}:\n"
              f"{table}\n", flush=True)
        logging.info("benchmark:\n%s", table)
    return results


def early_exit_section(config, workdir: str, variables: Mapping, *, model=None,
                       **kwargs) -> dict[str, Any]:
    """Real early exit (`adafocus_jax.early_exit.benchmark`): fits thresholds on the val split,
    evaluates on `config.benchmark.split`, times exiting vs full inference; stores the section as
    `early_exit` in `benchmark_path(config, workdir)` (other keys kept) and the plot as
    `WORKDIR/early_exit.png`. `kwargs` go to `early_exit.benchmark`."""
    from adafocus_jax import early_exit
    plot = os.path.join(workdir, "early_exit.png") if jax.process_index() == 0 else ""
    section = early_exit.benchmark(config, variables, model, plot_path=plot, **kwargs)
    if jax.process_index() == 0:
        path = benchmark_path(config, workdir)
        results = {}
        if os.path.exists(path):
            with open(path) as f:
                results = json.load(f)
        results["early_exit"] = section
        json_io.write_json(path, results)
        for m in section["measured"]:
            print(f"early exit at {m['gflops']:.4f} GFLOPs/video (full "
                  f"{section['full']['gflops']:.4f}): top-1 {m['accuracy']:.2f}% (full "
                  f"{section['full']['accuracy']:.2f}%), {m['ms_per_video']['exit_compact']:.3f}"
                  f" ms/video vs full {m['ms_per_video']['full']:.3f} at batch "
                  f"{m['batch_size']} ({m['speedup_vs_full']['exit_compact']:.2f}x)", flush=True)
    return section


def _final_variables(config, workdir: str) -> dict:
    """Variables the last stage of `config.run_stages` in `workdir` hands on (its last state, or
    its best-validated one with `config.train.handoff="best"`), as `train_and_evaluate` does."""
    last = stages.stage_names(config)[-1]
    variables = handoff.handoff_variables(config, os.path.join(workdir, last))
    return jax.tree.map(np.asarray, variables)


def main(argv):
    from absl import flags
    del argv
    config = flags.FLAGS.config
    workdir = flags.FLAGS.workdir
    if flags.FLAGS.early_exit:
        early_exit_section(config, workdir, _final_variables(config, workdir))
    else:
        run(config, workdir, _final_variables(config, workdir))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "The finished run's directory.")
    flags.DEFINE_bool("early_exit", False, "Only the real early-exit section (per-frame models "
                      "and the ActivityNet-family Uni-AdaFocus): "
                      "adds `early_exit` to the JSON and writes WORKDIR/early_exit.png.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
