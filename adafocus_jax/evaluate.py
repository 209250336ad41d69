"""Evaluation of a model on a whole split: top-1/top-5, the official mAP, the CE loss.

    result = evaluate_model(config, model, variables, source, patch_mode="policy", batch_size=32)
    result["top1"], result["top5"], result["map"], result["loss"], result["num_videos"]

Every video is counted exactly once: the loader pads the last batch with `mask=False` rows and every
sum is weighted by the mask (on every host, with the same number of batches). All networks run in
eval mode. Patch modes:
  * "policy": the deterministic policy (Gaussian mean / first argmax), the official inference;
  * "random": the official random baseline patches (stage-1 validation; key = fold_in(seed, batch));
  * "center": the centre patch;
  * "oracle": the patch centred on the known target (`batch["target_box"]`, synthetic data only):
    what a perfect locator would show these networks;
  * "glancer" / "focuser": the stage-0 single-network heads on whole frames, averaged over frames.

Multi-clip / multi-crop testing (`config.data.eval_num_clips`, `eval_num_crops`; examples with V
views, `glance` `[V, T, S, S, 3]`): the V views of a video run as V batch rows and their softmax
probabilities are averaged; every metric uses the averaged scores (see `make_eval_step`).
"""

import logging
import math
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from adafocus_jax import crop as crop_lib
from adafocus_jax import data as data_lib
from adafocus_jax import metrics as metrics_lib
from adafocus_jax import json_io, parallel
from adafocus_jax.data.transforms import normalize_batch_frames
from adafocus_jax.models.uni import take_frames
from adafocus_jax.patch_modes import patch_modes

EVAL_PATCH_MODES = patch_modes("eval")   # see adafocus_jax.patch_modes

# (id(model), patch_mode, with_scores, mesh) → (model, jitted step); keeps compiled steps across the
# periodic evaluations of a run.
_STEP_CACHE: dict[tuple, tuple[Any, Any]] = {}


def make_eval_step(model, patch_mode: str, seed: int, with_scores: bool):
    """`(variables, batch, batch_index) -> sums` for one batch (un-jitted).

    `batch["glance"]` is `[B, T_G, S, S, 3]` (one view per video) or `[B, V, T_G, S, S, 3]`
    (multi-clip / multi-crop testing, `config.data.eval_num_clips * eval_num_crops = V`; `focus`
    likewise). With V views the step folds them into the batch (`[B·V, ...]`), runs the model once,
    and averages the V softmax probability vectors of each video; top-1/top-5, the CE loss
    (−log of the averaged probability of the label) and the mAP scores all use that average.
    V identical views give the single-view result.

    Returns a dict of masked sums: scalars `correct1`, `correct5`, `loss_sum`, `count`,
    `target_hit_sum` (the summed fraction of frames whose patch holds the whole
    `batch["target_box"]` when the data provides one (single view), else 0; see `target_hits`),
    `frame_hit_sum` (Uni-AdaFocus on data with `target_present`: the summed fraction of chosen
    frames that show the target, else 0), and per class
    `class_correct`, `class_count` `[C]` (top-1 hits and videos by label; label -1 is not
    counted); with `with_scores` also `scores` `[B, C]` softmax probabilities (view-averaged) for
    the mAP.
    """
    if patch_mode not in EVAL_PATCH_MODES:
        raise ValueError(f"patch_mode must be one of {EVAL_PATCH_MODES}, got {patch_mode!r}")

    def step(variables, batch, batch_index):
        target_hit = frame_hit = jnp.zeros((), jnp.float32)
        glance, focus = normalize_batch_frames(batch)
        labels = batch["label"]
        mask = batch["mask"].astype(jnp.float32)
        if glance.ndim not in (5, 6):
            raise ValueError(f"eval batch: glance must be [B, T, S, S, 3] or [B, V, T, S, S, 3], "
                             f"got shape {glance.shape}")
        views = glance.shape[1] if glance.ndim == 6 else 0
        if views:
            glance = glance.reshape((-1,) + glance.shape[2:])
            if focus is not None:
                if focus.ndim != 6 or focus.shape[1] != views:
                    raise ValueError(f"eval batch: glance has {views} views {batch['glance'].shape}"
                                     f" but focus has shape {focus.shape}")
                focus = focus.reshape((-1,) + focus.shape[2:])
        if patch_mode == "glancer":
            logits = model.apply(variables, glance, False, method="glancer_logits")
        elif patch_mode == "focuser":
            logits = model.apply(variables, glance if focus is None else focus, False,
                                 method="focuser_logits")
        else:
            key = jax.random.fold_in(jax.random.key(seed), batch_index)
            rngs = dict(zip(("patches", "actions", "dropout"), jax.random.split(key, 3)))
            given = None
            if patch_mode == "oracle":
                if "target_box" not in batch or views:
                    raise ValueError("patch_mode 'oracle' needs single-view data that provides "
                                     "target_box (the synthetic benchmark)")
                cfg = model.config
                given = crop_lib.oracle_offsets(batch["target_box"], int(cfg.patch_size),
                                                int(cfg.input_size), model.policy_steps)
            output = model.apply(variables, glance, focus, train=False,
                                 patch_mode="given" if given is not None else patch_mode,
                                 patch_offsets=given, rngs=rngs)
            logits = output.logits
            if "target_box" in batch and not views:
                # Data that knows where the target is (synthetic): patches holding all of it.
                hit, chosen = target_hits(model.config, output, batch)
                target_hit = jnp.sum(hit * mask)
                frame_hit = jnp.sum(chosen * mask)
        logits = logits.astype(jnp.float32)
        if views:
            # Mean of the V probability vectors, kept in log space: log(mean_v p_v) =
            # logsumexp_v(log p_v) − log V. These normalised log-probabilities act as logits below
            # (same top-k as the averaged probabilities; CE = −log of the averaged label prob).
            log_probs = jax.nn.log_softmax(logits, axis=-1).reshape(
                (-1, views) + logits.shape[1:])
            logits = jax.nn.logsumexp(log_probs, axis=1) - jnp.log(float(views))
        correct1 = metrics_lib.topk_correct(logits, labels, 1) * mask
        num_classes = logits.shape[-1]
        by_class = jnp.where(labels >= 0, labels, num_classes)  # out of range: dropped
        out = {
            "correct1": jnp.sum(correct1),
            "correct5": jnp.sum(metrics_lib.topk_correct(logits, labels, 5) * mask),
            "loss_sum": jnp.sum(metrics_lib.cross_entropy(logits, labels) * mask),
            "count": jnp.sum(mask),
            "target_hit_sum": target_hit,
            "frame_hit_sum": frame_hit,
            "class_correct": jnp.zeros(num_classes, jnp.float32).at[by_class].add(
                correct1, mode="drop"),
            "class_count": jnp.zeros(num_classes, jnp.float32).at[by_class].add(
                mask, mode="drop"),
        }
        if with_scores:
            out["scores"] = jax.nn.softmax(logits, axis=-1)
        return out

    return step


def target_hits(model_config, output, batch) -> tuple[jax.Array, jax.Array]:
    """Per video: (fraction of the local network's frames whose patch holds the whole target,
    fraction of those frames that show the target at all), both float32 `[B]`.

    V1 / V2: the P × P patch at `output.patch_offsets` of each frame. Uni-AdaFocus
    (`output.frame_indices` set): its box of free size (`crop.uni_boxes` of `output.actions`) at
    each chosen frame, against that frame's target box. A frame that does not show the target
    (`batch["target_present"]`, synthetic `digit_frames`) is never a hit; without that key every
    frame shows it (the second fraction is then 1 for Uni, 0 otherwise).
    """
    boxes, present = batch["target_box"], batch.get("target_present")
    offsets, side = output.patch_offsets, int(model_config.patch_size)
    chosen = jnp.zeros(boxes.shape[:1], jnp.float32)
    if output.frame_indices is not None:
        idx = output.frame_indices
        boxes = take_frames(boxes, idx)
        present = None if present is None else take_frames(present, idx)
        s, p = int(model_config.input_size), int(model_config.patch_size)
        offsets, side = crop_lib.uni_boxes(output.actions, s, p, p,
                                           tuple(model_config.policy.side_range))
        chosen = (jnp.ones(idx.shape, jnp.float32) if present is None
                  else present.astype(jnp.float32)).mean(axis=1)
    return metrics_lib.patch_hit_fraction(offsets, boxes, side, present), chosen


# The per-batch masked sums every eval step returns (accumulated on the device).
SUM_KEYS = ("correct1", "correct5", "loss_sum", "count", "target_hit_sum", "frame_hit_sum",
            "class_correct", "class_count")


def _jitted_step(model, patch_mode: str, seed: int, with_scores: bool, mesh):
    """The jitted `(variables, batch, batch_index, totals) -> (totals + sums of the batch,
    scores or None)`: the running sums stay on the device (replicated), so the evaluation loop
    never waits for a batch's numbers; the host reads them once at the end."""
    key = (id(model), patch_mode, seed, with_scores, id(mesh))
    cached = _STEP_CACHE.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    step = make_eval_step(model, patch_mode, seed, with_scores)

    def accumulate(variables, batch, batch_index, totals):
        out = step(variables, batch, batch_index)
        totals = {k: totals[k] + out[k] for k in SUM_KEYS}
        return totals, out.get("scores")

    totals_sharding = {k: parallel.replicated(mesh) for k in SUM_KEYS}
    # The running totals are not donated: the loop waits on the totals of a batch two behind to
    # bound the batches in flight, and a donated buffer could not be waited on (a few floats per
    # class, so donation would save nothing).
    fn = jax.jit(accumulate, out_shardings=(
        totals_sharding, parallel.batch_sharding(mesh) if with_scores else None))
    _STEP_CACHE[key] = (model, fn)
    return fn


def _zero_totals(num_classes: int, mesh) -> dict[str, jax.Array]:
    zeros = {k: np.zeros((num_classes,) if k.startswith("class_") else (), np.float32)
             for k in SUM_KEYS}
    return jax.device_put(zeros, parallel.replicated(mesh))


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar (rate and ETA) on stderr on process 0, or None."""
    if not enabled or jax.process_index() != 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency of clu/orbax, but stay usable without it
        return None
    return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True)


def evaluate_model(config, model, variables: Mapping, source, *, patch_mode: str,
                   batch_size: int, mesh=None, max_batches: int = 0, details: bool = False,
                   progress: bool = False) -> dict[str, Any]:
    """Evaluates `variables` on every video of `source` (or the first `max_batches` batches).

    The loop only dispatches: each batch's sums are added to running totals on the device and
    the host fetches them once after the last batch (the mAP scores likewise stay on the device
    until the end), so reading batch i+1 overlaps the device computing batch i. The loop waits
    for a batch two behind (readiness only, no transfer) to bound how many batches are in
    flight.

    Args:
      config: the run config (`seed`, `eval.metric`, `eval.multi_label`, `data.on_error`,
        `train.num_workers`).
      model: the AdaFocus module.
      variables: `{"params", "batch_stats"}` (host or device arrays).
      source: a data source (`len`, `get(index, None)`).
      patch_mode: policy | random | center | glancer | focuser.
      batch_size: the global eval batch (a multiple of the device count).
      mesh: the data mesh (default: every device).
      max_batches: > 0 stops after that many batches.
      details: also return `per_class_accuracy` (list of C percentages, NaN for a class with no
        video), `mean_class_accuracy`, `wall_seconds`, `videos_per_second`, `num_batches`.
      progress: show a progress bar with rate and ETA (process 0, stderr).

    Returns:
      {"top1", "top5", "loss", "map", "num_videos"} (+ the `details` keys): accuracies and mAP in
      percent; "map" is the official mAP when `config.eval.metric == "map"`, else NaN. With the mAP
      also "map_absent_classes": how many classes have no positive among the evaluated videos (the
      mAP averages over the others; logged when > 0, see `metrics.mean_average_precision_detail`).
      With data that provides `target_box` (synthetic) and a patch mode, also "target_hit": the
      percentage of frames whose patch holds the whole target; for Uni-AdaFocus on data with
      `target_present` also "frame_hit": the percentage of chosen frames that show the target.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_batch_size(batch_size, mesh, "eval batch size")
    with_map = config.eval.metric == "map"
    step = _jitted_step(model, patch_mode, int(config.seed), with_map, mesh)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if not parallel.is_replicated(variables, mesh):
        variables = parallel.replicate(variables, mesh)
    loader = data_lib.make_loader(
        source, batch_size=batch_size, shuffle=False, seed=int(config.seed), drop_remainder=False,
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_workers=int(config.train.get("num_workers", 0)), num_epochs=1,
        on_error=config.data.get("on_error", "raise"))
    total_batches = min(len(loader), max_batches) if max_batches else len(loader)
    bar = _progress(total_batches, progress, f"eval {patch_mode}")
    totals = _zero_totals(int(model.config.num_classes), mesh)
    has_target = has_present = False
    scores, labels, masks = [], [], []
    in_flight: list[jax.Array] = []
    start = time.time()
    num_batches = 0
    for index, host_batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        has_target = has_target or "target_box" in host_batch
        has_present = has_present or "target_present" in host_batch
        batch = parallel.shard_batch(host_batch, mesh)
        totals, batch_scores = step(variables, batch, np.int32(index), totals)
        in_flight.append(totals["count"])
        if len(in_flight) > 2:
            in_flight.pop(0).block_until_ready()
        if with_map:
            scores.append(batch_scores)
            labels.append(batch["labels"] if "labels" in batch else batch["label"])
            masks.append(batch["mask"])
        num_batches += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    totals = {k: np.asarray(v, np.float64) for k, v in jax.device_get(totals).items()}
    count = float(totals["count"])
    if count == 0:
        raise ValueError(f"evaluation saw no valid video ({len(source)} in the split, "
                         f"{num_batches} batches)")
    result: dict[str, Any] = {
        "top1": 100.0 * float(totals["correct1"]) / count,
        "top5": 100.0 * float(totals["correct5"]) / count,
        "loss": float(totals["loss_sum"]) / count, "num_videos": int(round(count)),
        "map": float("nan")}
    if has_target and patch_mode in ("policy", "random", "random_grid", "center", "oracle"):
        result["target_hit"] = 100.0 * float(totals["target_hit_sum"]) / count
        if has_present and model.config.get("version", "v1") == "uni":
            result["frame_hit"] = 100.0 * float(totals["frame_hit_sum"]) / count
    if with_map:
        keep = np.concatenate([parallel.host_gather(m) for m in masks]).astype(bool)
        detail = metrics_lib.mean_average_precision_detail(
            np.concatenate([parallel.host_gather(s) for s in scores])[keep],
            np.concatenate([parallel.host_gather(x) for x in labels])[keep],
            multi_label=bool(config.eval.multi_label))
        result["map"] = detail.map
        result["map_absent_classes"] = detail.num_absent
        if detail.num_absent:
            logging.warning("mAP over the %d classes with a positive among the %d evaluated videos:"
                            " %d of %d classes have none here (a subset of the split: "
                            "max_eval_batches, skipped videos, or a small split)",
                            detail.num_present, result["num_videos"], detail.num_absent,
                            detail.num_present + detail.num_absent)
    seconds = time.time() - start
    if details:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = 100.0 * totals["class_correct"] / totals["class_count"]
        present = totals["class_count"] > 0
        result.update(
            per_class_accuracy=[float(x) for x in per_class],
            mean_class_accuracy=float(per_class[present].mean()) if present.any() else math.nan,
            wall_seconds=seconds, videos_per_second=count / seconds if seconds > 0 else math.nan,
            num_batches=num_batches)
    logging.info("evaluated %d videos in %d batches (%.1f s)", result["num_videos"], num_batches,
                 seconds)
    return result


def gflops_per_video(config, model, patch_mode: str, views: int | None = None) -> float:
    """GMACs per video of one evaluation (counted from the model, `adafocus_jax.flops`), times
    the views per video (default `config.data.eval_num_clips * eval_num_crops`)."""
    from adafocus_jax import flops as flops_lib
    if patch_mode in ("glancer", "focuser"):
        gflops, _ = flops_lib.count_method_gflops(model, f"{patch_mode}_logits")
    else:
        # A given (oracle) patch costs what the centre patch does: no policy network runs.
        gflops, _ = flops_lib.count_gflops(
            model, patch_mode="center" if patch_mode == "oracle" else patch_mode)
    if views is None:
        views = num_views(config)
    return float(gflops) * views


def num_views(config) -> int:
    """Views per evaluated video: `config.data.eval_num_clips * eval_num_crops`."""
    return int(config.data.get("eval_num_clips", 1)) * int(config.data.get("eval_num_crops", 1))


def eval_path(workdir: str, split: str) -> str:
    """`WORKDIR/eval_<split>.json`."""
    return os.path.join(workdir, f"eval_{split}.json")


def evaluate_split(config, workdir: str, *, checkpoint: str = "", split: str = "",
                   patch_mode: str = "policy", batch_size: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """`main.py --mode=eval`: scores one split and writes `WORKDIR/eval_<split>.json`.

    Args:
      config: the run config (`data` says where the split is, `data.eval_num_clips` /
        `eval_num_crops` the views per video: 1 × 1 unless set).
      workdir: where the JSON goes; also the checkpoint when `checkpoint` is empty (the variables
        the last stage of `config.run_stages` hands on, as after training).
      checkpoint: a run / stage / converted directory or an official `.pth.tar` (converted on the
        fly), see `adafocus_jax.inference.load_checkpoint`.
      split: "" = `config.eval.split`.
      patch_mode: see `EVAL_PATCH_MODES` ("policy" = the official inference).
      batch_size: 0 = `config.train.eval_batch_size` (rounded down to the device count).

    Returns:
      The JSON's dict: `evaluate_model`'s metrics with `details`, plus `gflops_per_video`,
      `split`, `patch_mode`, `views`, `checkpoint`, `batch_size`.
    """
    from adafocus_jax import inference, models
    split = split or str(config.eval.split)
    mesh = parallel.make_mesh()
    model = models.create_model(config)
    source_path = checkpoint or workdir
    variables = inference.load_checkpoint(config, source_path, model)
    source = data_lib.create_source(config.data, split)
    size = parallel.round_batch_size(
        batch_size or int(config.train.get("eval_batch_size", 0)) or 32, mesh)
    result = evaluate_model(config, model, variables, source, patch_mode=patch_mode,
                            batch_size=size, mesh=mesh, details=True, progress=progress)
    views = num_views(config)
    result.update(split=split, patch_mode=patch_mode, views=views,
                  checkpoint=os.path.abspath(source_path), batch_size=size,
                  gflops_per_video=gflops_per_video(config, model, patch_mode),
                  metric=str(config.eval.metric), dataset=str(config.dataset))
    os.makedirs(workdir, exist_ok=True)
    path = eval_path(workdir, split)
    json_io.write_json(path, result, strict=True, sort_keys=True)
    if jax.process_index() == 0:
        logging.info("eval %s: top-1 %.2f%%, top-5 %.2f%%, mAP %s, %d videos, %.4f GFLOPs/video, "
                     "%.1f s (%.1f videos/s); written to %s", split, result["top1"],
                     result["top5"], result["map"], result["num_videos"],
                     result["gflops_per_video"], result["wall_seconds"],
                     result["videos_per_second"], path)
    return result

