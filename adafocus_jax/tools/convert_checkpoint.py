"""Converts an official AdaFocus (V1, V2, Uni-AdaFocus) / TSM / torchvision PyTorch checkpoint into
an Orbax checkpoint of Flax variables `{'params', 'batch_stats'}` for a config's model.

    python -m adafocus_jax.tools.convert_checkpoint --config=configs/sthv2.py \\
        --torch_checkpoint=144x144.pth.tar --output_dir=/ckpt/sthv2_144
    python -m adafocus_jax.tools.convert_checkpoint --config=configs/sthv2.py \\
        --torch_checkpoint=mobilenetv2_segment8.pth.tar --output_dir=/ckpt/tsm_glancer
    python -m adafocus_jax.tools.convert_checkpoint --config=configs/actnet.py:patch=128 \\
        --torch_checkpoint=128s3_checkpoint.pth.tar --output_dir=/ckpt/actnet_128
    python -m adafocus_jax.tools.convert_checkpoint --config=configs/actnet.py:mode=uni \\
        --torch_checkpoint=actnet_p128.pth.tar --output_dir=/ckpt/uni_actnet_128   # Uni-AdaFocus
    python -m adafocus_jax.tools.convert_checkpoint --config=configs/sthv2.py:mode=uni \
        --torch_checkpoint=sthv2_p128_8and16.pth.tar --output_dir=/ckpt/uni_sthv2_128   # Uni-TSM
    python -m adafocus_jax.tools.convert_checkpoint --config=configs/sthv2.py \\
        --torch_checkpoint=144x144.pth.tar --inspect        # only report what the file holds

By default the output holds the modules the file has (a backbone-only file gives only that
module); `--parts` selects some of them and `--init_missing` writes a full tree whose other modules are
freshly initialised (`--seed`). Read the result with `adafocus_jax.convert.load_variables(output_dir)`
and point `config.init_from` at the directory to start training from it.
"""

import time

from absl import app, flags
from absl import logging
import jax
from ml_collections import config_flags

from adafocus_jax import convert, models

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None,
                                        "The PyTorch file (.pth / .pth.tar).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where to write the Orbax checkpoint (output_dir/variables).")
_PARTS = flags.DEFINE_list("parts", [], "Modules to take from the file (default: all it holds): "
                           f"some of {', '.join(convert.MODULES)}.")
_INIT_MISSING = flags.DEFINE_bool("init_missing", False,
                                  "Write a full variable tree; modules the file does not give are "
                                  "freshly initialised with --seed.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of fresh modules / an ImageNet file's new head.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output_dir/variables.")
_INSPECT = flags.DEFINE_bool("inspect", False, "Only print what the file holds.")


def _print_summary(variables, info: convert.CheckpointInfo, converted: tuple[str, ...]) -> None:
    counts = convert.count_parameters(variables)
    print(f"{'module':<12s} {'source':<10s} {'params':>13s} {'batch_stats':>13s}")
    total = [0, 0]
    for module in convert.MODULES:
        if module not in counts:
            continue
        n = counts[module]
        total[0] += n["params"]
        total[1] += n["batch_stats"]
        source = "file" if module in converted else "fresh init"
        print(f"{module:<12s} {source:<10s} {n['params']:>13,d} {n['batch_stats']:>13,d}")
    print(f"{'total':<12s} {'':<10s} {total[0]:>13,d} {total[1]:>13,d}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if logging.get_verbosity() == logging.INFO and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every step of a save at INFO
    config = _CONFIG.value
    path = _TORCH_CHECKPOINT.value
    start = time.time()
    print(f"Reading {path} ...", flush=True)
    info = convert.inspect_torch_checkpoint(path)
    meta = ", ".join(f"{k}={v}" for k, v in sorted(info.metadata.items()))
    print(f"  kind {info.kind} ({info.stage}), family {info.family}; modules "
          f"{', '.join(info.modules)}" + (f"; {meta}" if meta else ""), flush=True)
    if _INSPECT.value:
        return
    if not _OUTPUT_DIR.value:
        raise app.UsageError("--output_dir is required (or pass --inspect)")
    parts = tuple(_PARTS.value) or info.modules
    m = config.model
    print(f"Converting {', '.join(parts)} for {config.get('dataset', '?')} (patch {m.patch_size}, "
          f"{m.num_classes} classes) ...", flush=True)
    init = None
    if _INIT_MISSING.value and set(parts) != set(convert.MODULES):
        print(f"  initialising the other modules with seed {_SEED.value} ...", flush=True)
        init = models.init_variables(models.create_model(config), jax.random.key(_SEED.value))
    variables = convert.load_torch_checkpoint(path, config, parts=parts, init_variables=init,
                                              allow_partial=True, head_seed=_SEED.value)
    print(f"Writing Orbax checkpoint to {_OUTPUT_DIR.value} ...", flush=True)
    target = convert.save_variables(
        variables, _OUTPUT_DIR.value,
        metadata=dict(source=path, kind=info.kind, family=info.family, stage=info.stage,
                      converted_modules=list(parts), dataset=config.get("dataset", None),
                      patch_size=m.patch_size, num_classes=m.num_classes,
                      torch_metadata=dict(info.metadata)),
        overwrite=_OVERWRITE.value)
    _print_summary(variables, info, parts)
    print(f"Done in {time.time() - start:.1f}s: {target}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "torch_checkpoint"])
    app.run(main)
