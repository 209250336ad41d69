"""Exports a trained model's inference function as StableHLO + weights (`adafocus_jax.export`).

    python -m adafocus_jax.tools.export --config=configs/actnet.py --checkpoint=/ckpt/anet \\
        --output=anet.adafocus [--platforms=cpu,cuda] [--fixed_batch=8] [--class_names=FILE]

Serve it from any Python with jax (no model code needed):

    from adafocus_jax import export
    model = export.load("anet.adafocus")
    out = model(uint8_frames)       # [B, T, S, S, 3] as the dataset's evaluation crops them

Exit status 0 on success, 2 on a bad checkpoint / config / class-name file (the message names it).
"""

import argparse
import os
import sys
from typing import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file, e.g. configs/actnet.py[:patch=96]")
    p.add_argument("--checkpoint", required=True,
                   help="run / stage / converted directory or official .pth.tar")
    p.add_argument("--output", required=True, help="the archive to write")
    p.add_argument("--platforms", default="", help="comma-separated lowering platforms "
                   "(default: this machine's backend), e.g. cpu,cuda,tpu")
    p.add_argument("--fixed_batch", type=int, default=0,
                   help="> 0: export for this batch size only (default: symbolic batch)")
    p.add_argument("--class_names", default="", help="class-name file stored in the archive "
                   "(default: the dataset's category file if the config points at one)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from adafocus_jax import export, inference
    from adafocus_jax.data.errors import DataError
    try:
        config = inference.load_config(args.config)
        names = inference.class_names(config, args.class_names)
        variables = inference.load_checkpoint(config, args.checkpoint)
        platforms = [p.strip() for p in args.platforms.split(",") if p.strip()] or None
        exported, meta, variables = export.export_model(
            config, variables, platforms=platforms, batch_polymorphic=args.fixed_batch <= 0,
            batch_size=max(1, args.fixed_batch), class_names=names)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    export.save(args.output, exported, meta, variables)
    batch = "symbolic batch" if meta["batch_polymorphic"] else \
        f"fixed batch {meta['fixed_batch_size']} ({meta['why_fixed_batch']})"
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 2**20:.1f} MiB): {batch}, "
          f"platforms {', '.join(meta['platforms'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
