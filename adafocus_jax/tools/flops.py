"""Prints the GFLOPs per video of a config's model, counted from the model (multiply-accumulates
of conv and dense layers, the paper's convention).

    python -m adafocus_jax.tools.flops --config=configs/sthv2.py
    python -m adafocus_jax.tools.flops --config=configs/actnet.py:patch=96 --per_module
"""

from absl import app, flags
from ml_collections import config_flags

from adafocus_jax import flops, models

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_PER_MODULE = flags.DEFINE_bool("per_module", False, "Also print the split per network.")


def main(argv):
    del argv
    config = _CONFIG.value
    model = models.create_model(config)
    total, per_module = flops.count_gflops(model)
    m = config.model
    print(f"{config.dataset}: patch {m.patch_size}, {m.num_glance_frames} glance + "
          f"{m.num_focus_frames} local frames: {total:.2f} GFLOPs per video")
    if _PER_MODULE.value:
        for name, value in per_module.items():
            print(f"  {name:<12s} {value:8.3f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
