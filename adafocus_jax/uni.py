"""The Uni-AdaFocus training loss (stage recipe `loss="uni"`, adafocus_family.md §1.4).

One stage trains every network. Per video (label y; masked means over the batch), from
`UniAdaFocus.train_outputs` with the policy boxes (p) and the random boxes of side P (r) through
the local network in one call, the AdaFocusV2 terms of the model's family
(`v2.v2_loss_terms`):

  * fused_k: ActivityNet family, CE of every one of the G + K exits of the classifier (mean
    over the exits); TSM (Sth-Sth), CE of the summed logits (heads on detached features);
  * global: ActivityNet family, per-frame CE of the glance head on the G glance frames; TSM, CE
    of the frame-averaged glance "reg" logits;
  * local_k: the same for the local head on the K chosen frames;

and the Uni-AdaFocus terms:

  * temporal: CE of the temporal policy's Monte-Carlo surrogate (`rl.mc_surrogate_logits`);
  * spatial: CE of the spatial policy's proxy (`UniPolicy.proxy_logits`);
  * scale: mean over boxes and axes of (s − 1)², pulling the boxes towards the largest one;
  * kl: KL(weights ‖ uniform over K), sum_t w_t (log w_t + log K) (weight 0 in every official run;
    the TSM code has no such term).

    loss = ½ (fused_p + fused_r + local_p + local_r) + global + temporal + spatial
           + norm_ratio · scale + kl_ratio · kl

(the official sum halves two copies of the global, temporal and spatial terms; the same in both
official code bases).
"""

from typing import Mapping

import jax
import jax.numpy as jnp

from adafocus_jax import metrics as metrics_lib
from adafocus_jax.data.transforms import normalize_batch_frames
from adafocus_jax.models import Modes, is_uni_tsm
from adafocus_jax.v2 import v2_loss_terms


def uni_loss_terms(outputs: Mapping, labels: jax.Array, *, norm_ratio: float,
                   kl_ratio: float = 0.0, frame_exit: bool = True) -> dict[str, jax.Array]:
    """Per-example loss terms from `UniAdaFocus.train_outputs`.

    Args:
      outputs: `glance` (`logits` `[B, G, C]`; TSM `reg_logits`), `local` (`logits` `[2B, K, C]`,
        TSM `reg_logits`, policy rows first), `logits` `[2B, C]`, `step_logits`
        `[2B, G + K, C]` (ActivityNet family), `temporal_logits`, `spatial_logits` `[B, C]`,
        `proxy_actions` `[B, St, 4]`, `weights` `[B, G]`.
      labels: int `[B]`.
      norm_ratio, kl_ratio: weights of the scale regulariser and of the KL term.
      frame_exit: the ActivityNet-family terms (exit classifier, per-frame CE); False for the
        TSM variant (summed logits, frame-averaged "reg" logits).

    Returns:
      dict of `[B]` arrays: `fused_policy`, `fused_random`, `global`, `local_policy`,
      `local_random`, `temporal`, `spatial`, `scale`, `kl` and `total`.
    """
    terms = v2_loss_terms(outputs, labels, frame_exit)
    weights = outputs["weights"]
    num_focus = outputs["local"]["logits"].shape[1]
    terms.update({
        "temporal": metrics_lib.cross_entropy(outputs["temporal_logits"], labels),
        "spatial": metrics_lib.cross_entropy(outputs["spatial_logits"], labels),
        "scale": jnp.mean(jnp.square(outputs["proxy_actions"][..., 2:] - 1.0), axis=(1, 2)),
        "kl": jnp.sum(weights * (jnp.log(weights) + jnp.log(float(num_focus))), axis=1),
    })
    terms["total"] = (terms["total"] + terms["temporal"] + terms["spatial"]
                      + norm_ratio * terms["scale"] + kl_ratio * terms["kl"])
    return terms


def uni_loss(model, recipe, variables: Mapping, batch: Mapping[str, jax.Array], rng: jax.Array):
    """Forward pass and masked Uni-AdaFocus loss (the `classification_loss` contract of `train`).

    Args:
      model: a `UniAdaFocus`.
      recipe: a stage recipe with `loss == "uni"` (`modes` per network; `uni.norm_ratio`,
        `uni.kl_ratio`).
      variables: `{"params", "batch_stats"}`.
      batch: `glance` uint8 `[B, N, S, S, 3]` (the N candidate frames; TSM variant: the G
        glance frames, and `focus` `[B, N, S, S, 3]` the candidates), `label` `[B]`, `mask`
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
    tsm = is_uni_tsm(model.config)
    if (focus is None) == tsm:
        raise ValueError(
            f"stage {recipe.name}: " + (
                "Uni-AdaFocus-TSM reads the glance frames (batch['glance']) and the candidate "
                "frames (batch['focus']); this batch has no 'focus'" if tsm else
                "Uni-AdaFocus reads only the candidate frames (batch['glance']); this batch "
                "also has 'focus' frames"))
    labels, mask = batch["label"], batch["mask"]
    dropout, patches, frame_key = jax.random.split(rng, 3)
    outputs, updates = model.apply(variables, frames, focus, Modes(**recipe.modes),
                                   method="train_outputs", mutable=["batch_stats"],
                                   rngs={"dropout": dropout, "patches": patches,
                                         "frames": frame_key})
    options = dict(recipe.uni)
    terms = uni_loss_terms(outputs, labels, norm_ratio=float(options["norm_ratio"]),
                           kl_ratio=float(options.get("kl_ratio", 0.0)), frame_exit=not tsm)
    loss = metrics_lib.masked_mean(terms["total"], mask)
    return loss, (updates["batch_stats"], outputs["logits"][:labels.shape[0]])
