"""Trains and evaluates AdaFocus: every stage of the config's recipe, in order.

    python main.py --config=configs/sthv2.py --workdir=/ckpt/sthv2 --config.data.root=/data/ssv2
    python main.py --config=configs/tiny.py --workdir=/tmp/tiny --config.train.num_steps=2
    python main.py --config=configs/actnet.py --workdir=DIR --config.run_stages=stage2,stage3
    python main.py --config=configs/sthv2.py --workdir=DIR --mode=eval [--checkpoint=144x144.pth.tar]

`--mode=eval` scores a split (`--split`, default config.eval.split) with the variables of the
workdir's last stage or of `--checkpoint` (run / stage / converted directory, official .pth.tar)
and writes DIR/eval_<split>.json; multi-view with --config.data.eval_num_clips / eval_num_crops.
`--mode=train_and_eval` trains, then does the same with the trained variables.

Rerunning the same command resumes: finished stages are skipped, an unfinished one continues from
its latest checkpoint with the same data order and random draws.

Exit status: 0 when every stage finished; 75 (`train.EXIT_INTERRUPTED`) when SIGTERM/SIGINT stopped
the run after saving a checkpoint (rerun the same command to resume), so `main.py ... && next`
never runs `next` on an unfinished run; 1 on an error. With several processes a signal to any of
them stops all of them at the same step.

Multi-host: run the same command on every host with `--jax_distributed` (Cloud TPU, Slurm,
Kubernetes: auto-detected) or with `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` (or the env variable ADAFOCUS_JAX_DISTRIBUTED=1).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("jax_distributed", False,
                  "Call jax.distributed.initialize() (multi-host); implied by --coordinator_address "
                  "or ADAFOCUS_JAX_DISTRIBUTED=1.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_integer("distributed_timeout", 300,
                     "Seconds to wait for every process to join (multi-host).")
flags.DEFINE_string(
    "compilation_cache_dir",
    os.environ.get("ADAFOCUS_JAX_CACHE",
                   os.path.join(os.path.expanduser("~"), ".cache", "adafocus_jax", "xla")),
    "Persistent XLA compilation cache ('' disables it); reruns and resumed runs skip compiling.")
flags.DEFINE_bool("quiet_orbax", True, "Hide orbax's per-save INFO log lines.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "train_and_eval"],
                  "train: every stage of the recipe; eval: score a split (DIR/eval_<split>.json); "
                  "train_and_eval: both.")
flags.DEFINE_string("checkpoint", "", "--mode=eval: what to evaluate (default: the workdir's "
                    "last stage): a run, stage or converted directory, or an official .pth.tar.")
flags.DEFINE_string("split", "", "--mode=eval: the split (default config.eval.split).")
flags.DEFINE_string("patch_mode", "policy", "--mode=eval: policy | random | center | oracle | "
                    "glancer | focuser (see adafocus_jax/evaluate.py).")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize` before anything touches a device, when asked to."""
    import jax
    wanted = (FLAGS.jax_distributed or FLAGS.coordinator_address is not None
              or os.environ.get("ADAFOCUS_JAX_DISTRIBUTED", "") == "1")
    if not wanted:
        return
    kwargs = {"initialization_timeout": FLAGS.distributed_timeout}
    if FLAGS.coordinator_address is not None:
        if FLAGS.num_processes is None or FLAGS.process_id is None:
            raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
        kwargs.update(coordinator_address=FLAGS.coordinator_address,
                      num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    jax.distributed.initialize(**kwargs)


class _DropOrbaxInfo(logging.logging.Filter):
    """Drops orbax's INFO records (a dozen lines per checkpoint); warnings and errors pass."""

    def filter(self, record):
        return record.levelno > logging.logging.INFO or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # TensorFlow (pulled in by clu's writers / TFDS) must not grab accelerators JAX needs.
    try:
        import tensorflow as tf
        tf.config.set_visible_devices([], "GPU")
    except ImportError:
        pass
    _maybe_initialize_distributed()
    import jax

    if FLAGS.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    if FLAGS.quiet_orbax:
        logging.get_absl_handler().addFilter(_DropOrbaxInfo())

    from adafocus_jax import train

    logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
                 jax.local_devices())
    if FLAGS.mode == "eval" and FLAGS.checkpoint and not os.path.exists(FLAGS.checkpoint):
        raise app.UsageError(f"--checkpoint={FLAGS.checkpoint}: no such file or directory")
    if FLAGS.mode != "eval":
        try:
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except train.TrainingInterrupted as e:
            logging.warning("%s", e)
            sys.exit(train.EXIT_INTERRUPTED)
    if FLAGS.mode != "train":
        from adafocus_jax import evaluate
        evaluate.evaluate_split(FLAGS.config, FLAGS.workdir, checkpoint=FLAGS.checkpoint,
                                split=FLAGS.split, patch_mode=FLAGS.patch_mode)


if __name__ == "__main__":
    app.run(main)
