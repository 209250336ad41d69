"""The AdaFocusV2 training loss (stage recipe `loss="v2"`, adafocus_family.md §1.2).

One stage trains every network end to end: the differentiable crop lets the local network's
loss reach the policy. Per step, with y the video label and masked means over the batch:

  * the fused prediction: ActivityNet family, CE of every step of the FrameExit classifier
    (mean over steps); Sth-Sth, CE of `mean_t glance logits + mean_t local logits` (heads on
    detached features: they train only themselves);
  * auxiliary global-only and local-only terms: ActivityNet family, per-frame CE of the glance
    head and of the local head (non-detached); Sth-Sth, CE of the frame-averaged "reg" heads of
    the glance and of the local network (non-detached: the training signal of the backbones and,
    through the crop, of the policy);
  * diversity augmentation: the terms are computed for the policy patches and for uniformly random
    patches (see `AdaFocusV2.train_outputs`) and the two totals are averaged:

        loss = ½ Σ_{k ∈ {policy, random}} [fused_k + global + local_k]

With train-mode BatchNorm the local network runs once per patch set, as the official code does, so
each set has its own batch statistics (one call over both would let the random patches' loss reach
the policy through the shared statistics; `tests/test_v2.py` checks that it does not). In eval mode
both sets are one call of 2B videos.
"""

from typing import Mapping

import jax
import jax.numpy as jnp

from adafocus_jax import metrics as metrics_lib
from adafocus_jax.data.transforms import normalize_batch_frames
from adafocus_jax.models import Modes


def _per_frame_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """`[N, T, K]`, `[N]` → mean over T of CE: `[N]`."""
    y = jnp.broadcast_to(labels[:, None], logits.shape[:2])
    return metrics_lib.cross_entropy(logits, y).mean(axis=1)


def v2_loss_terms(outputs: Mapping, labels: jax.Array, frame_exit: bool) -> dict[str, jax.Array]:
    """Per-example loss terms from `AdaFocusV2.train_outputs`.

    Args:
      outputs: `glance` (logits / reg_logits `[B, T_G, K]`), `local` (`[2B, T_L, K]`, policy rows
        first), `logits` `[2B, K]`, `step_logits` `[2B, St, K]`.
      labels: int `[B]`.
      frame_exit: ActivityNet-family terms (per-frame CE) instead of Sth-Sth ones.

    Returns:
      dict of `[B]` arrays: `fused_policy`, `fused_random`, `global`, `local_policy`,
      `local_random`, and `total` = ½ (fused_policy + local_policy + fused_random + local_random)
      + global.
    """
    b = labels.shape[0]
    both = jnp.concatenate([labels, labels], axis=0)
    glance, local = outputs["glance"], outputs["local"]
    if frame_exit:
        fused = _per_frame_ce(outputs["step_logits"], both)
        global_ = _per_frame_ce(glance["logits"], labels)
        local_ = _per_frame_ce(local["logits"], both)
    else:
        fused = metrics_lib.cross_entropy(outputs["logits"], both)
        global_ = metrics_lib.cross_entropy(glance["reg_logits"].mean(axis=1), labels)
        local_ = metrics_lib.cross_entropy(local["reg_logits"].mean(axis=1), both)
    terms = {"fused_policy": fused[:b], "fused_random": fused[b:], "global": global_,
             "local_policy": local_[:b], "local_random": local_[b:]}
    terms["total"] = 0.5 * (terms["fused_policy"] + terms["local_policy"]
                            + terms["fused_random"] + terms["local_random"]) + global_
    return terms


def v2_loss(model, recipe, variables: Mapping, batch: Mapping[str, jax.Array], rng: jax.Array):
    """Forward pass and masked V2 loss (the `classification_loss` contract of `train`).

    Args:
      model: an `AdaFocusV2`.
      recipe: a stage recipe with `loss == "v2"` (its `modes` set BN/dropout per network).
      variables: `{"params", "batch_stats"}`.
      batch: `glance` uint8 `[B, T_G, S, S, 3]`, optional `focus`, `label` `[B]`, `mask` `[B]`.
      rng: this step's key (streams `dropout`, `patches` for the random locations).

    Returns:
      (loss `[]`, (new batch_stats, policy-patch logits `[B, K]`)).
    """
    if not hasattr(model, "train_outputs"):
        raise ValueError(f"stage {recipe.name}: loss 'v2' needs config.model.version = 'v2' "
                         "(an AdaFocusV2 model)")
    glance, focus = normalize_batch_frames(batch)
    labels, mask = batch["label"], batch["mask"]
    dropout, patches = jax.random.split(rng)
    outputs, updates = model.apply(variables, glance, focus, Modes(**recipe.modes),
                                   method="train_outputs", mutable=["batch_stats"],
                                   rngs={"dropout": dropout, "patches": patches})
    terms = v2_loss_terms(outputs, labels, model.config.classifier.kind == "frame_exit")
    loss = metrics_lib.masked_mean(terms["total"], mask)
    return loss, (updates["batch_stats"], outputs["logits"][:labels.shape[0]])
