"""Preemption: `main.py` killed with SIGKILL mid-stage, resumed, stopped with SIGTERM, resumed again,
ends with parameters, BN statistics and optimizer state BIT-IDENTICAL to an uninterrupted run.

Two stages run (stage 1 then the PPO stage 2), so the test also covers skipping a finished stage on
rerun and handing its final state (restored from its checkpoint) to the next stage.
"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from adafocus_jax import checkpoint as ckpt_lib
from adafocus_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


def _command(workdir):
    return [sys.executable, os.path.join(ROOT, "main.py"), "--config",
            os.path.join(ROOT, "configs", "tiny.py"), f"--workdir={workdir}",
            "--config.run_stages=stage1,stage2", f"--config.train.num_steps={STEPS}",
            "--config.ckpt.every_steps=2", "--config.ckpt.max_to_keep=3",
            "--config.stages.stage1.eval_every_epochs=0",
            "--config.stages.stage2.eval_every_epochs=0", "--config.train.final_eval=False",
            "--config.train.log_every_steps=1"]


def _env():
    return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                JAX_PLATFORMS="cpu")


def _steps(workdir, stage):
    path = os.path.join(workdir, stage, "checkpoints")
    if not os.path.isdir(path):
        return []
    return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _wait_for(predicate, proc, what, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"main.py exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _final(workdir, stage):
    variables = ckpt_lib.load_variables_from_dir(os.path.join(workdir, stage))
    import orbax.checkpoint as ocp
    root = ckpt_lib.checkpoint_dir(os.path.join(workdir, stage))
    with ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(read_only=True)) as m:
        assert m.latest_step() == STEPS
        items = m.restore(STEPS, args=ocp.args.StandardRestore())
    variables["opt_state"] = items["opt_state"]
    return variables


def test_sigkill_and_sigterm_resume_is_bit_identical(tmp_path):
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    done = subprocess.run(_command(ref), env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    # 1) SIGKILL once stage 2 has a checkpoint (stage 1 finished). SIGSTOP first freezes it at once.
    log1 = open(tmp_path / "log1", "w")
    proc = subprocess.Popen(_command(run), env=_env(), stdout=log1, stderr=subprocess.STDOUT)
    _wait_for(lambda: _steps(run, "stage2"), proc, "a stage-2 checkpoint")
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _steps(run, "stage2")[-1]
    assert STEPS not in _steps(run, "stage2"), "the run finished before it could be killed"
    assert _steps(run, "stage1")[-1] == STEPS

    # 2) Resume; SIGTERM as soon as stage 2 starts: it must save within two steps and exit with
    #    the documented "interrupted, checkpoint saved" status (never 0, so `main && next` stops).
    log_path = tmp_path / "log2"
    with open(log_path, "w") as log2:
        proc = subprocess.Popen(_command(run), env=_env(), stdout=log2, stderr=subprocess.STDOUT)
        _wait_for(lambda: "stage stage2: adam" in log_path.read_text(), proc, "stage 2 to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=240) == train.EXIT_INTERRUPTED == 75, \
            log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert "stage1 already finished" in text
    assert f"starting at step {killed_at}" in text
    assert "stopped by signal 15" in text
    stopped_at = _steps(run, "stage2")[-1]
    assert killed_at < stopped_at < STEPS

    # 3) Resume to the end.
    done = subprocess.run(_command(run), env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"starting at step {stopped_at}" in done.stderr

    for stage in ("stage1", "stage2"):
        a, b = _final(ref, stage), _final(run, stage)
        leaves_a = jax.tree_util.tree_leaves_with_path(a)
        leaves_b = jax.tree.leaves(b)
        assert len(leaves_a) == len(leaves_b) > 0
        for (path, x), y in zip(leaves_a, leaves_b):
            assert np.array_equal(np.asarray(x), np.asarray(y)), \
                f"{stage}{jax.tree_util.keystr(path)} differs after resumption"
