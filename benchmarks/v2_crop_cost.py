"""Cost of the differentiable AdaFocusV2 crop next to the local network it feeds, on this machine.

    python benchmarks/v2_crop_cost.py                 # ActivityNet shapes: 16 frames, 224 -> 128
    python benchmarks/v2_crop_cost.py --frames=12 --patch=144 --videos=1

Both are timed forward + backward (the training hot path: the policy's gradient flows back
through the crop, the local network's through ResNet-50), interleaved A B A B in the same process,
and the ratio of the medians is reported, so a shared, noisy machine still gives a fair ratio.
Weights are random (the cost does not depend on them).
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from adafocus_jax import crop
    from adafocus_jax.models.resnet import ResNet

    b, t, s, p = args.videos, args.frames, args.size, args.patch
    frames = jnp.asarray(np.random.default_rng(0).normal(size=(b, t, s, s, 3)), jnp.float32)
    actions = jnp.full((b, t, 2), 0.3, jnp.float32)
    net = ResNet(num_classes=None)
    variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, p, p, 3)))
    variables = jax.tree.map(lambda a: jnp.asarray(
        np.random.default_rng(1).normal(size=a.shape) * 0.01, a.dtype), variables)
    patches = jnp.zeros((b * t, p, p, 3), jnp.float32)

    @jax.jit
    def crop_fwd_bwd(actions):
        return jax.grad(lambda a: jnp.sum(crop.bilinear_crop(
            frames, crop.v2_top_left(a, s, p), p) ** 2))(actions)

    @jax.jit
    def local_fwd_bwd(params, patches):
        def loss(params, patches):
            out = net.apply({**variables, "params": params}, patches, False, with_logits=False)
            return jnp.sum(out["pooled"] ** 2)
        return jax.grad(loss, argnums=(0, 1))(params, patches)

    def timed(fn, *xs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*xs))
        return time.perf_counter() - start

    timed(crop_fwd_bwd, actions), timed(local_fwd_bwd, variables["params"], patches)  # compile
    crop_s, local_s = [], []
    for _ in range(args.repeats):
        crop_s.append(timed(crop_fwd_bwd, actions))
        local_s.append(timed(local_fwd_bwd, variables["params"], patches))
    result = {"videos": b, "frames": t, "frame_size": s, "patch": p,
              "crop_fwd_bwd_s": statistics.median(crop_s),
              "local_resnet50_fwd_bwd_s": statistics.median(local_s),
              "crop_over_local": statistics.median(crop_s) / statistics.median(local_s),
              "cpu_count": os.cpu_count(), "repeats": args.repeats}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
