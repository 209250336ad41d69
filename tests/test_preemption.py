"""Preemption with two JAX processes (2 fake CPU devices each, `main.py` with --coordinator_address):
SIGTERM reaches only process 1, yet both processes save the same step and exit with the
documented status 75 (`train.EXIT_INTERRUPTED`) within a time bound; rerunning both resumes from
that step and finishes with status 0."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from adafocus_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 120          # far more than the run reaches before the signal (it stops within a step or
                     # two of it); the resumed run trains the rest, so keep it short


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(workdir, port, process_id):
    return [sys.executable, os.path.join(ROOT, "main.py"),
            "--config", os.path.join(ROOT, "configs", "tiny.py"), f"--workdir={workdir}",
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={process_id}", "--distributed_timeout=60",
            "--config.run_stages=stage1", f"--config.train.num_steps={STEPS}",
            "--config.ckpt.every_steps=100000", "--config.train.eval_every_steps=0",
            "--config.stages.stage1.eval_every_epochs=0", "--config.train.final_eval=False",
            "--config.train.log_every_steps=1", "--config.ckpt.async_save=False"]


def _env():
    return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                JAX_PLATFORMS="cpu")


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftovers():
    """No process outlives the test, whatever fails."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start(workdir, tmp_path, tag):
    port = _free_port()
    logs = [tmp_path / f"{tag}{i}.log" for i in range(2)]
    procs = [subprocess.Popen(_command(workdir, port, i), env=_env(), stdout=open(log, "w"),
                              stderr=subprocess.STDOUT) for i, log in enumerate(logs)]
    _STARTED.extend(procs)
    return procs, logs


def _wait_all(procs, logs, timeout):
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a process hung:\n" + "\n----\n".join(
                log.read_text()[-2000:] for log in logs))
    return codes


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    workdir = str(tmp_path / "run")
    procs, logs = _start(workdir, tmp_path, "first")
    # Wait until both processes train (step 3 logged by both), then signal process 1 only.
    deadline = time.time() + 480
    while not all("stage stage1 step 3/" in log.read_text() for log in logs):
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            raise AssertionError("the run did not start training:\n" + "\n----\n".join(
                log.read_text()[-2000:] for log in logs))
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)
    codes = _wait_all(procs, logs, timeout=120)
    texts = [log.read_text() for log in logs]
    assert codes == [train.EXIT_INTERRUPTED] * 2, (codes, texts[0][-2000:], texts[1][-2000:])
    assert "stopped by signal 15 at step" in texts[1]
    assert "stopped by a signal to another process at step" in texts[0]
    stopped = [int(re.search(r"stopped by .* at step (\d+)", t).group(1)) for t in texts]
    assert stopped[0] == stopped[1] and 3 <= stopped[0] < STEPS
    saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "stage1", "checkpoints"))
                   if d.isdigit())
    assert saved == [stopped[0]]

    # Both processes resume from the saved step and finish.
    procs, logs = _start(workdir, tmp_path, "resume")
    codes = _wait_all(procs, logs, timeout=480)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], (codes, texts[0][-2000:], texts[1][-2000:])
    assert all(f"starting at step {stopped[0]}" in t for t in texts)
    saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "stage1", "checkpoints"))
                   if d.isdigit())
    assert saved[-1] == STEPS
