"""GFLOPs per video counted from the model match the paper (adafocus_v1.md §9)."""

import subprocess
import sys

import pytest

from adafocus_jax import flops, models

PAPER_GFLOPS = {("sthv2", 144): 23.5, ("sthv2", 160): 27.5, ("sthv2", 176): 33.7,
                ("sthv1", 144): 23.5,
                ("actnet", 96): 17.2, ("actnet", 128): 26.6, ("actnet", 160): 38.6,
                ("actnet", 192): 53.3}


@pytest.mark.parametrize("dataset,patch", sorted(PAPER_GFLOPS))
def test_gflops_match_paper(dataset, patch):
    model = models.create_model(models.default_model_config(dataset, patch))
    total, per_module = flops.count_gflops(model)
    assert abs(total - PAPER_GFLOPS[(dataset, patch)]) <= 0.1, (total, per_module)
    assert abs(sum(per_module.values()) - total) < 1e-9
    # The local network dominates and scales with the patch area.
    assert per_module["focuser"] > per_module["glancer"]


def test_flops_cli():
    out = subprocess.run(
        [sys.executable, "-m", "adafocus_jax.tools.flops", "--config=configs/sthv2.py:patch=176",
         "--per_module"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "33.7" in out and "focuser" in out
