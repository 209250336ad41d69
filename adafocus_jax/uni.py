"""The Uni-AdaFocus training loss (stage recipe `loss="uni"`, adafocus_family.md §1.4).

One stage trains every network. Per video (label y; masked means over the batch), from
`UniAdaFocus.train_outputs` with the policy boxes (p) and the random boxes of side P (r) through
the local network in one call:

  * fused_k: CE of every one of the G + K exits of the classifier (mean over the exits);
  * global: per-frame CE of the glance head on the G glance frames;
  * local_k: per-frame CE of the local head on the K chosen frames;
  * temporal: CE of the temporal policy's Monte-Carlo surrogate (`rl.mc_surrogate_logits`);
  * spatial: CE of the spatial policy's proxy (`UniPolicy.proxy_logits`);
  * scale: mean over frames and axes of (s − 1)², pulling the boxes towards the largest one;
  * kl: KL(weights ‖ uniform over K), sum_t w_t (log w_t + log K) (weight 0 in every official run).

    loss = ½ (fused_p + fused_r + local_p + local_r) + global + temporal + spatial
           + norm_ratio · scale + kl_ratio · kl

(the official sum halves two copies of the global, temporal and spatial terms).
"""

from typing import Mapping

import jax
import jax.numpy as jnp

from adafocus_jax import metrics as metrics_lib
from adafocus_jax.data.transforms import normalize_batch_frames
from adafocus_jax.models import Modes
from adafocus_jax.v2 import per_frame_ce


def uni_loss_terms(outputs: Mapping, labels: jax.Array, *, norm_ratio: float,
                   kl_ratio: float = 0.0) -> dict[str, jax.Array]:
    """Per-example loss terms from `UniAdaFocus.train_outputs`.

    Args:
      outputs: `glance` (`logits` `[B, G, C]`), `local` (`logits` `[2B, K, C]`, policy rows
        first), `step_logits` `[2B, G + K, C]`, `temporal_logits`, `spatial_logits` `[B, C]`,
        `proxy_actions` `[B, G, 4]`, `weights` `[B, G]`.
      labels: int `[B]`.
      norm_ratio, kl_ratio: weights of the scale regulariser and of the KL term.

    Returns:
      dict of `[B]` arrays: `fused_policy`, `fused_random`, `global`, `local_policy`,
      `local_random`, `temporal`, `spatial`, `scale`, `kl` and `total`.
    """
    b = labels.shape[0]
    both = jnp.concatenate([labels, labels], axis=0)
    fused = per_frame_ce(outputs["step_logits"], both)
    local = per_frame_ce(outputs["local"]["logits"], both)
    weights = outputs["weights"]
    num_focus = outputs["local"]["logits"].shape[1]
    terms = {
        "fused_policy": fused[:b], "fused_random": fused[b:],
        "global": per_frame_ce(outputs["glance"]["logits"], labels),
        "local_policy": local[:b], "local_random": local[b:],
        "temporal": metrics_lib.cross_entropy(outputs["temporal_logits"], labels),
        "spatial": metrics_lib.cross_entropy(outputs["spatial_logits"], labels),
        "scale": jnp.mean(jnp.square(outputs["proxy_actions"][..., 2:] - 1.0), axis=(1, 2)),
        "kl": jnp.sum(weights * (jnp.log(weights) + jnp.log(float(num_focus))), axis=1),
    }
    terms["total"] = (0.5 * (terms["fused_policy"] + terms["fused_random"] + terms["local_policy"]
                             + terms["local_random"])
                      + terms["global"] + terms["temporal"] + terms["spatial"]
                      + norm_ratio * terms["scale"] + kl_ratio * terms["kl"])
    return terms


def uni_loss(model, recipe, variables: Mapping, batch: Mapping[str, jax.Array], rng: jax.Array):
    """Forward pass and masked Uni-AdaFocus loss (the `classification_loss` contract of `train`).

    Args:
      model: a `UniAdaFocus`.
      recipe: a stage recipe with `loss == "uni"` (`modes` per network; `uni.norm_ratio`,
        `uni.kl_ratio`).
      variables: `{"params", "batch_stats"}`.
      batch: `glance` uint8 `[B, N, S, S, 3]` (the N candidate frames), `label` `[B]`, `mask`
        `[B]`.
      rng: this step's key (streams `dropout`, `patches` for the random boxes, `frames` for the
        glance offsets, the stratified thresholds and the Monte-Carlo removals).

    Returns:
      (loss `[]`, (new batch_stats, policy-box logits `[B, C]`)).
    """
    if model.config.get("version", "v1") != "uni":
        raise ValueError(f"stage {recipe.name}: loss 'uni' needs config.model.version = 'uni' "
                         "(models.to_uni_model_config)")
    frames, focus = normalize_batch_frames(batch)
    if focus is not None:
        raise ValueError(f"stage {recipe.name}: Uni-AdaFocus reads only the candidate frames "
                         "(batch['glance']); this batch also has 'focus' frames")
    labels, mask = batch["label"], batch["mask"]
    dropout, patches, frame_key = jax.random.split(rng, 3)
    outputs, updates = model.apply(variables, frames, None, Modes(**recipe.modes),
                                   method="train_outputs", mutable=["batch_stats"],
                                   rngs={"dropout": dropout, "patches": patches,
                                         "frames": frame_key})
    options = dict(recipe.uni)
    terms = uni_loss_terms(outputs, labels, norm_ratio=float(options["norm_ratio"]),
                           kl_ratio=float(options.get("kl_ratio", 0.0)))
    loss = metrics_lib.masked_mean(terms["total"], mask)
    return loss, (updates["batch_stats"], outputs["logits"][:labels.shape[0]])
