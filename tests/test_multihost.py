"""Two JAX processes × 2 fake CPU devices on 127.0.0.1: each loads half of every global batch; the
steps and the padded evaluation must equal a single-process run on 4 devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import multihost_worker

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    out = tmp_path / "multi.json"
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(
        ["timeout", "-s", "KILL", "60", sys.executable, os.path.join(HERE, "multihost_worker.py"),
         str(out), str(port), "2", str(i)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=90)[0] for p in procs]
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{log[-3000:]}"
    multi = json.loads(out.read_text())
    assert multi["process_count"] == 2 and multi["devices"] == 4

    single = multihost_worker.run(str(tmp_path / "single.json"), jax.devices()[:4])
    np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-5)
    assert multi["checksum"] == pytest.approx(single["checksum"], rel=1e-6)
    assert multi["eval"]["num_videos"] == single["eval"]["num_videos"] == 12
    assert multi["eval"]["top1"] == pytest.approx(single["eval"]["top1"])
    assert multi["eval"]["loss"] == pytest.approx(single["eval"]["loss"], rel=1e-5)
