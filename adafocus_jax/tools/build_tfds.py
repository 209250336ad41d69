"""Build the TFDS (array_record) version of a dataset from its frame folders or SSv2 webm files.

    python -m adafocus_jax.tools.build_tfds --config=configs/sthv2.py \\
        --config.data.root=/data/sthv2/frames --data_dir=/data/tfds [--workers=8]
    # SSv2 from the official release instead of extracted frames:
    python -m adafocus_jax.tools.build_tfds --config=configs/sthv2.py \\
        --config.data.root=/data/ssv2 --config.data.webm.video_dir=20bn-something-something-v2 \\
        --config.data.tfds.source_format=webm --data_dir=/data/tfds

Then train with `--config.data.format=tfds --config.data.tfds.data_dir=/data/tfds`. What a record
holds and how it is read is described in `adafocus_jax.data.tfds_builders`. Options that shape the
records: `--config.data.tfds.short_side` (shrink larger frames), `.frame_stride`, `.jpeg_quality`;
`--config.data.on_error=skip` leaves unreadable videos out (logged) instead of stopping.
"""
from __future__ import annotations

import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config (configs/*.py)",
                                          lock_config=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write (default: "
                                "config.data.tfds.data_dir, else ~/tensorflow_datasets)")
_WORKERS = flags.DEFINE_integer("workers", None, "threads reading/encoding videos "
                                "(default: CPU count)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from adafocus_jax.data import tfds_builders  # after flag parsing: imports TFDS
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required")
    t0 = time.time()
    builder = tfds_builders.build(config.data, data_dir=_DATA_DIR.value,
                                  num_workers=_WORKERS.value)
    for name, split in builder.info.splits.items():
        logging.info("%s/%s: %d videos", builder.name, name, split.num_examples)
    logging.info("built %s in %.0f s at %s", builder.name, time.time() - t0, builder.data_dir)
    print(f"{builder.name}: " + ", ".join(f"{name} {split.num_examples}" for name, split in
                                          builder.info.splits.items()) + f" -> {builder.data_dir}")


if __name__ == "__main__":
    app.run(main)
