"""`aunet-bench backends` and `aunet-bench pipeline` on the small model (tiny runs: the numbers are not checked,
their consistency is)."""
from __future__ import annotations

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from aunet.bench import app, latency_stats, run_isolated

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def small_onnx(torch, tmp_path_factory):
    from aunet.export.onnx_export import export_onnx

    import aunet

    path = tmp_path_factory.getbasetemp() / "runtime-small.onnx"  # shared with test_runtime_pipeline
    if not path.exists():
        torch.manual_seed(0)
        export_onnx(aunet.build_model("small").eval(), path)
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_latency_stats_percentiles():
    s = latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["min"] == pytest.approx(1.0) and s["n"] == 100


def _segfault(conn):
    os.kill(os.getpid(), signal.SIGSEGV)


def _answer(conn, value):
    conn.send({"value": value})


def test_run_isolated_reports_a_crash_as_a_row():
    assert run_isolated(_answer, 7) == {"value": 7}
    row = run_isolated(_segfault)
    assert row["error"] == f"crashed (killed by signal {int(signal.SIGSEGV)})"


def test_backends_table_and_json(small_onnx, tmp_path):
    out = tmp_path / "b.json"
    res = invoke("backends", small_onnx, "--batch", "1", "--batch", "2", "--repeats", "2", "--warmup", "1",
                 "--torch-repeats", "1", "--json", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    onnx_row, naive_row = doc["rows"]
    assert onnx_row["backend"].startswith("ort:") and onnx_row["precision"] == "fp32"
    assert naive_row["runner"] == "torch naive" and "error" not in naive_row
    for row in (onnx_row, naive_row):
        for b in ("1", "2"):
            lat = row["latency_ms"][b]
            assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"]
            assert row["faces_per_s"][b] == pytest.approx(1e3 * int(b) / lat["p50"])
        assert row["peak_rss_mb"] > 50
    assert naive_row["speedup_vs_naive"]["2"] == pytest.approx(1.0)
    ratio = onnx_row["faces_per_s"]["2"] / naive_row["faces_per_s"]["2"]
    assert onnx_row["speedup_vs_naive"]["2"] == pytest.approx(ratio)
    assert onnx_row["agreement_vs_first"] == 1.0 and len(onnx_row["scores"]) == 2
    assert doc["targets"] == []  # the paper's targets are stated at batch 8, not measured here
    assert invoke("backends", tmp_path / "none.onnx").exit_code == 2


def test_pipeline_frames_per_second_and_memory(small_onnx, tmp_path):
    out = tmp_path / "p.json"
    res = invoke("pipeline", "--engine", small_onnx, "--seconds", "0.5", "--fps", "8", "--size", "480x360",
                 "--rss-interval", "0.05", "--json", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["frames_analysed"] == 4 and doc["frames_with_face"] == 4
    assert doc["frames_per_s"] == pytest.approx(4 / doc["timings"]["total_s"])
    assert doc["peak_rss_mb"] >= doc["rss_peak_sampled_mb"] * 0.99 > 0
    assert doc["rss_samples"] and doc["backend"].startswith("onnxruntime")
    assert invoke("pipeline", "--engine", tmp_path / "none.onnx").exit_code == 2
