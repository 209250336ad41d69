"""The notebooks in colabs/ execute top to bottom (2 training steps per stage) and are up to date
with their generator script."""
import json
import os
import subprocess
import sys

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "colabs", "quickstart.ipynb")


def test_notebook_matches_its_generator(tmp_path):
    with open(NOTEBOOK) as f:
        committed = json.load(f)
    copy = tmp_path / "make_quickstart.py"
    copy.write_text(open(os.path.join(ROOT, "colabs", "make_quickstart.py")).read())
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True)
    with open(tmp_path / "quickstart.ipynb") as f:
        regenerated = json.load(f)
    assert [c["source"] for c in committed["cells"]] == [c["source"] for c in regenerated["cells"]], (
        "colabs/quickstart.ipynb is stale: run python colabs/make_quickstart.py")


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAFOCUS_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(ROOT, "colabs")}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "patch 144: 23.5" in outputs
    for name in ("learned", "random", "center", "full_frame"):
        assert f"{name}:" in outputs
