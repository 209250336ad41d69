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
    the upper bound of any policy on these networks;
  * "glancer" / "focuser": the stage-0 single-network heads on whole frames, averaged over frames.

Multi-clip / multi-crop testing (`config.data.eval_num_clips`, `eval_num_crops`; examples with V
views, `glance` `[V, T, S, S, 3]`): the V views of a video run as V batch rows and their softmax
probabilities are averaged; every metric uses the averaged scores (see `make_eval_step`).
"""

import logging
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from adafocus_jax import crop as crop_lib
from adafocus_jax import data as data_lib
from adafocus_jax import metrics as metrics_lib
from adafocus_jax import parallel
from adafocus_jax.data.transforms import normalize_jnp

EVAL_PATCH_MODES = ("policy", "random", "random_grid", "center", "oracle", "glancer", "focuser")

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

    Returns a dict of scalars `correct1`, `correct5`, `loss_sum`, `count`, `target_hit_sum`
    (masked sums; the last is the summed fraction of frames whose patch holds the whole
    `batch["target_box"]` when the data provides one (single view), else 0) and, with
    `with_scores`, `scores` `[B, C]` softmax probabilities (view-averaged) for the mAP.
    """
    if patch_mode not in EVAL_PATCH_MODES:
        raise ValueError(f"patch_mode must be one of {EVAL_PATCH_MODES}, got {patch_mode!r}")

    def step(variables, batch, batch_index):
        target_hit = jnp.zeros((), jnp.float32)
        glance = normalize_jnp(batch["glance"])
        focus = normalize_jnp(batch["focus"]) if "focus" in batch else None
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
                target_hit = jnp.sum(metrics_lib.patch_hit_fraction(
                    output.patch_offsets, batch["target_box"], int(model.config.patch_size))
                    * mask)
        logits = logits.astype(jnp.float32)
        if views:
            # Mean of the V probability vectors, kept in log space: log(mean_v p_v) =
            # logsumexp_v(log p_v) − log V. These normalised log-probabilities act as logits below
            # (same top-k as the averaged probabilities; CE = −log of the averaged label prob).
            log_probs = jax.nn.log_softmax(logits, axis=-1).reshape(
                (-1, views) + logits.shape[1:])
            logits = jax.nn.logsumexp(log_probs, axis=1) - jnp.log(float(views))
        out = {
            "correct1": jnp.sum(metrics_lib.topk_correct(logits, labels, 1) * mask),
            "correct5": jnp.sum(metrics_lib.topk_correct(logits, labels, 5) * mask),
            "loss_sum": jnp.sum(metrics_lib.cross_entropy(logits, labels) * mask),
            "count": jnp.sum(mask),
            "target_hit_sum": target_hit,
        }
        if with_scores:
            out["scores"] = jax.nn.softmax(logits, axis=-1)
        return out

    return step


# The per-batch masked sums every eval step returns.
_SUMS = ("correct1", "correct5", "loss_sum", "count", "target_hit_sum")


def _jitted_step(model, patch_mode: str, seed: int, with_scores: bool, mesh):
    key = (id(model), patch_mode, seed, with_scores, id(mesh))
    cached = _STEP_CACHE.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    out_shardings = {k: parallel.replicated(mesh) for k in _SUMS}
    if with_scores:
        out_shardings["scores"] = parallel.batch_sharding(mesh)
    fn = jax.jit(make_eval_step(model, patch_mode, seed, with_scores),
                 out_shardings=out_shardings)
    _STEP_CACHE[key] = (model, fn)
    return fn


def evaluate_model(config, model, variables: Mapping, source, *, patch_mode: str,
                   batch_size: int, mesh=None, max_batches: int = 0) -> dict[str, float]:
    """Evaluates `variables` on every video of `source` (or the first `max_batches` batches).

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

    Returns:
      {"top1", "top5", "loss", "map", "num_videos"}: accuracies and mAP in percent; "map" is the
      official mAP when `config.eval.metric == "map"`, else NaN. With data that provides
      `target_box` (synthetic) and a patch mode, also "target_hit": the percentage of frames
      whose patch holds the whole target.
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
    totals = {k: 0.0 for k in _SUMS}
    has_target = False
    scores, labels, masks = [], [], []
    start = time.time()
    num_batches = 0
    for index, host_batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        has_target = has_target or "target_box" in host_batch
        batch = parallel.shard_batch(host_batch, mesh)
        out = step(variables, batch, np.int32(index))
        for k in totals:
            totals[k] += float(jax.device_get(out[k]))
        if with_map:
            scores.append(parallel.host_gather(out["scores"]))
            labels.append(parallel.host_gather(batch["labels"] if "labels" in batch
                                               else batch["label"]))
            masks.append(parallel.host_gather(batch["mask"]))
        num_batches += 1
    count = totals["count"]
    if count == 0:
        raise ValueError(f"evaluation saw no valid video ({len(source)} in the split, "
                         f"{num_batches} batches)")
    result = {"top1": 100.0 * totals["correct1"] / count,
              "top5": 100.0 * totals["correct5"] / count,
              "loss": totals["loss_sum"] / count, "num_videos": int(round(count)),
              "map": float("nan")}
    if has_target and patch_mode in ("policy", "random", "random_grid", "center", "oracle"):
        result["target_hit"] = 100.0 * totals["target_hit_sum"] / count
    if with_map:
        keep = np.concatenate(masks).astype(bool)
        result["map"] = metrics_lib.mean_average_precision(
            np.concatenate(scores)[keep], np.concatenate(labels)[keep],
            multi_label=bool(config.eval.multi_label))
    logging.info("evaluated %d videos in %d batches (%.1f s)", result["num_videos"], num_batches,
                 time.time() - start)
    return result
