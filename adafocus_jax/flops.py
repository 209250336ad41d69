"""FLOPs of a model, counted from the model itself (adafocus_v1.md §9.1).

The paper's "GFLOPs" are multiply-accumulates of the conv and linear layers (BatchNorm, activations
and pooling are not counted). We trace the real forward pass abstractly (`jax.eval_shape`, nothing is
computed) and intercept every `nn.Conv` / `nn.Dense` call and every GRU recurrence, adding
`outputs × kernel size × input channels / groups` for each.

    count_gflops(model)                            # AdaFocus inference (deterministic policy;
                                                   # V1, V2 and Uni-AdaFocus alike)
    count_gflops(model, patch_mode="random")       # the same networks on random patches
    count_method_gflops(model, "focuser_logits")   # the local network alone on whole frames
    variant_gflops(model, "full_frame")            # by benchmark variant name (see VARIANTS)
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adafocus_jax.models import dummy_inputs, focus_input_frames, input_frames
from adafocus_jax.models.recurrent import GRU


@contextlib.contextmanager
def count_macs():
    """Context manager yielding a dict whose 'macs' entry accumulates the MACs of traced layers."""
    totals = {"macs": 0, "by_module": {}}

    def add(path, macs):
        totals["macs"] += macs
        top = path[0] if path else "<root>"
        totals["by_module"][top] = totals["by_module"].get(top, 0) + macs

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name not in ("__call__", "step"):
            return out
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            kernel_elems = int(np.prod(module.kernel_size))
            in_per_group = x.shape[-1] // module.feature_group_count
            add(module.path, int(np.prod(out.shape)) * kernel_elems * in_per_group)
        elif isinstance(module, nn.Dense) and context.method_name == "__call__":
            x = args[0]
            add(module.path, int(np.prod(out.shape)) * x.shape[-1])
        elif isinstance(module, GRU):
            # The hidden-to-hidden matmul runs inside lax.scan on raw arrays; count it here.
            h = module.hidden_dim
            if context.method_name == "__call__":
                steps = int(np.prod(args[0].shape[:-1]))
            else:
                steps = int(np.prod(args[0].shape[:-1]))
            add(module.path, steps * h * 3 * h)
        return out

    with nn.intercept_methods(interceptor):
        yield totals


def count_gflops(model, glance_shape=None, focus_shape=None, **apply_kwargs):
    """GMACs per video of one inference forward pass (deterministic policy, eval mode).

    Args:
      model: an `AdaFocus` module (or `AdaFocusV2`, `UniAdaFocus`).
      glance_shape, focus_shape: input shapes `[1, T, S, S, 3]`; default: the configured ones
        (`models.input_frames`, `models.focus_input_frames`; Uni-AdaFocus, ActivityNet family:
        the N candidate frames and no focus frames; Uni-AdaFocus-TSM: G glance and N candidate
        frames).
      **apply_kwargs: forwarded to `model.apply` (e.g. `patch_mode="center"`).

    Returns:
      (gflops per video, {top-level module: gflops}).
    """
    cfg = model.config
    s = cfg.input_size
    glance_shape = glance_shape or (1, input_frames(cfg), s, s, 3)
    focus_frames = focus_input_frames(cfg)
    focus_shape = focus_shape or (1, focus_frames, s, s, 3)
    batch = glance_shape[0]
    glance = jax.ShapeDtypeStruct(glance_shape, jnp.float32)
    focus = None if focus_frames is None else jax.ShapeDtypeStruct(focus_shape, jnp.float32)
    variables = _abstract_variables(model, glance, focus)
    apply_kwargs.setdefault("rngs", {"patches": jax.random.key(1), "actions": jax.random.key(2)})
    with count_macs() as totals:
        jax.eval_shape(lambda v, g, f: model.apply(v, g, f, train=False, **apply_kwargs),
                       variables, glance, focus)
    per_module = {k: v / batch / 1e9 for k, v in totals["by_module"].items()}
    return totals["macs"] / batch / 1e9, per_module


# Benchmark variant → how it runs: ("apply", patch_mode) for the full AdaFocus forward pass with
# patches from the policy / random / centre, ("method", name) for one network on whole frames.
VARIANTS = {
    "learned": ("apply", "policy"),
    "random": ("apply", "random"),
    "center": ("apply", "center"),
    # A given patch, like the centre one: no policy network runs (where it comes from is free).
    "oracle": ("apply", "center"),
    # Uni-AdaFocus with uniformly spaced frames and the learned boxes: counted on the model of
    # `config.model.policy.frame_choice = "uniform"`, which still runs the (tiny) temporal policy.
    "uniform_frames": ("apply", "policy"),
    "full_frame": ("method", "focuser_logits"),
    "glance_only": ("method", "glancer_logits"),
}


def _abstract_variables(model, glance, focus):
    return jax.eval_shape(
        lambda g, f: model.init({"params": jax.random.key(0), "patches": jax.random.key(1),
                                 "actions": jax.random.key(2)}, g, f), glance, focus)


def count_method_gflops(model, method: str, frames_shape=None):
    """GMACs per video of one stage-0 head on whole frames, e.g. the local network on full frames.

    Args:
      model: an `AdaFocus` module.
      method: "focuser_logits" (local network + its fc on every focus frame at full resolution)
        or "glancer_logits" (glance network + its head on every glance frame).
      frames_shape: `[1, T, S, S, 3]`; default: the configured focus (or glance) frames
        (`models.focus_input_frames`, `models.input_frames`; Uni-AdaFocus, ActivityNet family:
        the N candidate frames for both).

    Returns:
      (gflops per video, {top-level module: gflops}).
    """
    if method not in ("focuser_logits", "glancer_logits"):
        raise ValueError(f"method must be focuser_logits or glancer_logits, got {method!r}")
    cfg = model.config
    s = cfg.input_size
    glance, focus = (jax.ShapeDtypeStruct(x.shape, jnp.float32) if x is not None else None
                     for x in dummy_inputs(cfg))
    # The frames the evaluation feeds each head: the model's focus input (the glance input when
    # it has none: Uni-AdaFocus, ActivityNet family) or its glance input.
    frames = focus_input_frames(cfg) if method == "focuser_logits" else None
    frames = input_frames(cfg) if frames is None else frames
    frames_shape = tuple(frames_shape or (1, frames, s, s, 3))
    variables = _abstract_variables(model, glance, focus)
    x = jax.ShapeDtypeStruct(frames_shape, jnp.float32)
    with count_macs() as totals:
        jax.eval_shape(lambda v, f: model.apply(v, f, False, method=method), variables, x)
    batch = frames_shape[0]
    per_module = {k: v / batch / 1e9 for k, v in totals["by_module"].items()}
    return totals["macs"] / batch / 1e9, per_module


def variant_gflops(model, variant: str):
    """GMACs per video of a benchmark variant (a key of `VARIANTS`): (total, per module)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    kind, what = VARIANTS[variant]
    if kind == "apply":
        return count_gflops(model, patch_mode=what)
    return count_method_gflops(model, what)
