"""Checkpoint faults: a process SIGKILLed in the middle of writing a checkpoint resumes from the last
complete one and ends bit-identical to an uninterrupted run; truncated, damaged, foreign or
mismatched checkpoint folders are errors that name the folder."""

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from adafocus_jax import checkpoint as ckpt_lib
from adafocus_jax import parallel, stages, train
from train_helpers import tiny_config, to_host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 6


def _config():
    config = tiny_config("sthv2")
    config.run_stages = "stage1"
    config.train.num_steps = STEPS
    config.ckpt.every_steps = 2
    config.ckpt.max_to_keep = 2
    config.train.final_eval = False
    config.stages.stage1.eval_every_epochs = 0
    return config


# The child trains the same stage and SIGKILLs itself while orbax finalises the step-4 checkpoint
# (every array written, the folder not yet renamed into place): a kill in the middle of a write.
_CHILD = """
import os, signal, sys
sys.path[:0] = [{root!r}, {here!r}]
from orbax.checkpoint._src.path import atomicity
from test_checkpoint_faults import _config
from adafocus_jax import train

original = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self):
    if self._final_path.name == "4":
        os.kill(os.getpid(), signal.SIGKILL)
    return await original(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
train.train_and_evaluate(_config(), {workdir!r})
"""


def _leaves(state):
    host = to_host({"params": state.params, "batch_stats": state.batch_stats,
                    "opt_state": state.opt_state})
    return jax.tree_util.tree_leaves_with_path(host)


def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    workdir = str(tmp_path / "run")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(root=ROOT, here=HERE, workdir=workdir)))
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=1200, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert child.returncode == -9, child.stderr[-3000:]
    root = ckpt_lib.checkpoint_dir(os.path.join(workdir, "stage1"))
    entries = os.listdir(root)
    assert "2" in entries and "4" not in entries, entries
    assert any(e.startswith("4.orbax-checkpoint-tmp") for e in entries), entries   # the partial one
    assert ckpt_lib.latest_step(os.path.join(workdir, "stage1")) == 2

    resumed = train.train_and_evaluate(_config(), workdir)
    entries = sorted(os.listdir(root))
    assert entries == ["4", "6"], entries            # partial folder removed, keep-2 of 4, 6
    reference = train.train_and_evaluate(_config(), str(tmp_path / "ref"))
    a, b = _leaves(reference), _leaves(resumed)
    assert len(a) == len(b) > 0
    for (path, x), (_, y) in zip(a, b):
        assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs after the resume"


def _small_state(mesh, width=3):
    config = tiny_config("sthv2")
    recipe = stages.resolve_recipe(config, "stage1")
    params = {"focuser": {"conv1": {"kernel": np.ones((width,), np.float32)}},
              "classifier": {"fc": {"bias": np.zeros((2,), np.float32)}}}
    state, _ = train.create_train_state(params, {}, recipe, num_steps=4)
    return parallel.replicate(state, mesh)


# Reading the damaged files leaves orbax's other pending reads to be garbage-collected (warnings).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_truncated_foreign_and_mismatched_checkpoints_name_the_folder(tmp_path):
    mesh = parallel.make_mesh()
    stage_dir = str(tmp_path / "stage1")
    manager = ckpt_lib.make_manager(stage_dir, async_save=False)
    state = _small_state(mesh)
    for step in (2, 4):
        ckpt_lib.save(manager, state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)))
    manager.wait_until_finished()
    root = ckpt_lib.checkpoint_dir(stage_dir)
    restored = ckpt_lib.restore(manager, state, mesh)
    assert int(restored.step) == 4

    # A different model: the tree does not match.
    with pytest.raises(ValueError, match=rf"checkpoint {root}/4 does not match the current "
                                         r"model/optimizer"):
        ckpt_lib.restore(manager, _small_state(mesh, width=5), mesh)

    # Damaged array files in the latest step.
    backup = str(tmp_path / "backup4")
    shutil.copytree(os.path.join(root, "4"), backup)
    for folder, _, files in os.walk(os.path.join(root, "4", "default")):
        if os.path.basename(folder) == "d":
            for name in files:
                path = os.path.join(folder, name)
                data = open(path, "rb").read()
                open(path, "wb").write(data[:len(data) // 3])
    with pytest.raises(ValueError, match=rf"checkpoint {root}/4 is unreadable .*move {root}/4 out "
                                         rf"of {root} to resume from the previous checkpoint "
                                         r"\(step 2\)"):
        ckpt_lib.restore(manager, state, mesh)
    manager.close()
    shutil.rmtree(os.path.join(root, "4"))
    shutil.copytree(backup, os.path.join(root, "4"))

    # A truncated copy (metadata missing) and another program's folder named like a step.
    os.remove(os.path.join(root, "4", "default", "_METADATA"))
    with pytest.raises(ValueError, match=rf"{root}/4 is not a complete adafocus_jax checkpoint "
                                         r"\(missing \['default/_METADATA'\]\)"):
        ckpt_lib.load_variables_from_dir(stage_dir)
    shutil.rmtree(os.path.join(root, "4"))
    os.makedirs(os.path.join(root, "9"))
    (tmp_path / "stage1" / "checkpoints" / "9" / "notes.txt").write_text("not a checkpoint")
    manager = ckpt_lib.make_manager(stage_dir, async_save=False)
    with pytest.raises(ValueError, match=rf"{root}/9 is not a complete adafocus_jax checkpoint.*"
                                         r"resume from the previous checkpoint \(step 2\)"):
        ckpt_lib.restore(manager, state, mesh)
    manager.close()

    # The checkpoints path is a file.
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoints").write_text("")
    with pytest.raises(ValueError, match=r"other/checkpoints is not a directory"):
        ckpt_lib.make_manager(str(other))
