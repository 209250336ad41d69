"""The speed benchmarks run end to end on tiny networks: inference side by side with PyTorch, and the
GPU benchmark's --cpu-smoke path (JSON layout, MFU, largest-batch search, time budget)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu  # noqa: E402


def test_peak_table_and_override():
    assert gpu.device_peak_tflops("NVIDIA H200", "bfloat16", None) == 989.0
    assert gpu.device_peak_tflops("NVIDIA A100-SXM4-80GB", "float32", None) == 156.0
    assert gpu.device_peak_tflops("cpu", "bfloat16", None) is None
    assert gpu.device_peak_tflops("cpu", "bfloat16", 2.5) == 2.5


def test_gpu_benchmark_cpu_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    result = gpu.main(["--cpu-smoke", f"--out={out}", "--dtypes=bfloat16", "--peak-tflops=1",
                       "--train-batches=2", "--inference-batches=2", "--budget-s=1e9"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert {(r["config"], r["batch"]) for r in result["inference"]} == {
        ("sthv2-tiny", 2), ("actnet-tiny", 2)}
    assert {r["stage"] for r in result["train"]} == {"stage1", "stage2"}
    for r in result["inference"] + result["train"]:
        assert r["dtype"] == "bfloat16" and r["compile_s"] > 0 and r["videos_per_s"] > 0
        assert r["flops_per_call"] > 0 and 0 < r["mfu"] < 1
    assert result["skipped"] == []


def test_gpu_benchmark_budget_skips_cases(tmp_path):
    result = gpu.main(["--cpu-smoke", f"--out={tmp_path / 'g.json'}", "--budget-s=0"])
    assert result["inference"] == [] and result["train"] == []
    assert {s["why"] for s in result["skipped"]} == {"budget"}
    assert len(result["skipped"]) == 2 * 2 * 2 + 2 * 2  # configs x dtypes x batches; stages x dtypes


def test_inference_benchmark_side_by_side_with_torch(tmp_path):
    pytest.importorskip("torch")
    import inference
    out = tmp_path / "inf.json"
    payload = inference.main(["--configs=sthv2:tiny,actnet:tiny", "--batches=2",
                              "--dtypes=float32", "--repeats=1", "--drift=3", f"--out={out}"])
    rows = {(r["config"], r["row"]) for r in payload["results"]}
    assert rows == {(c, row) for c in ("sthv2:tiny", "actnet:tiny") for row in inference.ROWS}
    for r in payload["results"]:
        assert r["jax_s"] > 0 and r["torch_s"] > 0
        assert r["speedup"] == pytest.approx(r["torch_s"] / r["jax_s"])
    assert len(payload["compile"]) == 2
    assert [d["config"] for d in payload["drift"]] == ["sthv2:tiny", "actnet:tiny"]
    for d in payload["drift"]:
        # On the same patches bf16 rounding moves the logits a little, never by their whole
        # scale; with its own patches (random weights: the policy's choice is chaotic) only a
        # finite, nonzero difference is required.
        assert 0 < d["max_abs_logit_diff_same_patches"] < 0.2 * max(d["logit_scale"], 1.0), d
        assert 0 < d["max_abs_logit_diff"] < float("inf"), d
        assert 0 <= d["patch_agreement"] <= 1 and 0 <= d["top1_agreement"] <= 1
    with pytest.raises(SystemExit, match="--rows"):
        inference.main(["--rows=nope"])
