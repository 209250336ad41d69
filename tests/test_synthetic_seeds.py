"""benchmarks/synthetic_seeds.py on finished runs (no training): summary, table, pass rule."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location(
        "synthetic_seeds", os.path.join(ROOT, "benchmarks", "synthetic_seeds.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(workdir, path, seed, learned, random, center):
    run = os.path.join(workdir, path, f"seed{seed}")
    os.makedirs(os.path.join(run, "stage2"))
    bench = {name: {"accuracy": acc, "gflops": 0.02} for name, acc in
             (("learned", learned), ("random", random), ("center", center),
              ("full_frame", 30.0), ("glance_only", 20.0))}
    bench["learned"]["target_hit"], bench["random"]["target_hit"] = 45.0, 4.0
    bench["meta"] = {"margin_vs_random": learned - random, "margin_vs_center": learned - center,
                     "required_margin": 15.0}
    with open(os.path.join(run, "synthetic_benchmark.json"), "w") as f:
        json.dump(bench, f)
    with open(os.path.join(run, "stage2", "results.json"), "w") as f:
        json.dump({"final_eval": {"top1": learned + 1}}, f)
    with open(os.path.join(run, "timing.json"), "w") as f:
        json.dump({"wall_seconds": 600.0, "cpu_seconds": 900.0}, f)


def test_report_over_finished_runs(tmp_path, capsys):
    seeds = _module()
    _write_run(str(tmp_path), "default", 0, 60.0, 30.0, 20.0)
    _write_run(str(tmp_path), "default", 1, 70.0, 40.0, 56.0)     # margin vs centre only 14
    code = seeds.main(["--workdir", str(tmp_path), "--seeds", "0,1,2", "--report_only"])
    assert code == 2                                          # one run misses the margin
    summary = json.loads((tmp_path / "seeds_summary.json").read_text())
    learned = summary["per_variant"]["learned"]
    assert learned["mean"] == pytest.approx(65.0) and learned["min"] == 60.0
    assert learned["std"] == pytest.approx(7.0710678, rel=1e-6) and learned["n"] == 2
    assert summary["min_margin"] == pytest.approx(14.0) and summary["all_passed"] is False
    assert [r["stage_val_top1"]["stage2"] for r in summary["rows"]] == [61.0, 71.0]
    out = capsys.readouterr().out
    assert "| default | 0 | 60.0 | 30.0 | 20.0 |" in out and "10.0 / 15.0" in out
    assert "FAIL" in out.splitlines()[-2]


def test_unknown_float_path_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        _module().main(["--workdir", str(tmp_path), "--paths", "default,quantum"])
