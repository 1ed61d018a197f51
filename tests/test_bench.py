"""`aunet-bench backends` and `aunet-bench pipeline` on the small model (tiny runs: the numbers are not checked,
their consistency is), the thresholds, and the command's one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from aunet.bench.backends import (MIN_FP32_FACES_PER_S, MIN_INT8_AGREEMENT, MIN_INT8_SPEEDUP, MIN_SPEEDUP_VS_NAIVE,
                                  run_isolated, threshold_checks)
from aunet.bench.cli import app, main
from aunet.bench.measure import cpu_model_and_flags, latency_stats


@pytest.fixture(scope="module")
def small_onnx(torch, tmp_path_factory):
    pytest.importorskip("onnxruntime")
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
    assert doc["thresholds"] == []  # the throughput bars are stated at batch 8, not measured here
    assert invoke("backends", tmp_path / "none.onnx").exit_code == 2


def test_int8_per_method_rows_from_the_target_loop(small_onnx, tmp_path):
    """`aunet-bench int8`: one row per target and method from the real target loop (kept short: one method, no
    node budget, one fake per crop), its held-out judgement and, on the CPU target, FP32 vs INT8 speed."""
    pytest.importorskip("onnxruntime.quantization")
    import numpy as np

    from aunet.backends import read_spec
    from aunet.demo.sample_data import make_sample_images
    from aunet.prep import PrepSettings, discover, run_prep

    spec = read_spec(small_onnx)
    make_sample_images(tmp_path / "raw", 20, np.random.default_rng(0))
    run_prep(discover(tmp_path / "raw"), tmp_path / "cache", PrepSettings(size=spec.input_size, crop=spec.crop,
                                                                         frames=1, detector="dlib"),
             show_progress=False)
    out = tmp_path / "int8.json"
    res = invoke("int8", "--model", small_onnx, "--data", tmp_path / "cache", "--target", "cpu", "--method", "max",
                 "--max-fp32-nodes", "0", "--fakes-per-crop", "1", "--keep", tmp_path / "kept", "--json", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert (row["target"], row["method"], row["fp32_nodes"]) == ("cpu", "max", 0)
    assert 0.0 <= row["agreement"] <= 1.0 and row["agreement_ci"][0] <= row["agreement"] <= row["agreement_ci"][1]
    assert row["held_out_faces"] > 0 and row["held_out_videos"] >= 1
    fp32, int8, speedup = row["fp32_faces_per_s"], row["int8_faces_per_s"], row["speedup"]
    assert fp32[0] > 0 and int8[0] > 0 and speedup[0] > 0
    assert (tmp_path / "kept" / f"{small_onnx.stem}.cpu.max.onnx").is_file()
    assert "INT8 per calibration method" in res.stdout and doc["machine"]["cpu_flags"] == cpu_model_and_flags()[1]

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


def test_check_fails_when_no_threshold_applies(small_onnx):
    """--check never passes vacuously: batch 1 alone answers none of the thresholds."""
    res = invoke("backends", small_onnx, "--batch", "1", "--repeats", "1", "--warmup", "0", "--no-naive", "--check")
    assert res.exit_code == 1
    assert_one_error_line(res.stderr, "--check: no threshold applies")


def _row(runner, backend, precision, faces_per_s_b8, scores=None, threshold=0.5):
    row = {"runner": runner, "backend": backend, "precision": precision, "faces_per_s": {"8": faces_per_s_b8}}
    if scores is not None:
        row.update(scores=scores, threshold=threshold)
    return row


def test_thresholds_are_named_for_what_they_protect():
    naive = _row("torch naive", "eager cpu 2t", "fp32", 1.0)
    fp32 = _row("m.onnx", "ort:cpu", "fp32", 12.0, [0.1, 0.9, 0.6, 0.2])
    int8 = _row("m.int8.onnx", "ort:cpu", "int8", 24.0, [0.1, 0.9, 0.6, 0.2])
    checks = threshold_checks([fp32, int8, naive])
    assert [(c.name, c.met) for c in checks] == [
        ("ONNX FP32 throughput on CPU (batch 8)", True),
        ("ONNX FP32 speed-up over naive PyTorch eager (batch 8)", True),
        ("INT8 faster than FP32 (batch 8)", True),
        ("INT8 decision agreement with FP32", True),
    ]
    assert [c.required for c in checks] == [f">= {MIN_FP32_FACES_PER_S:g} faces/s", f">= {MIN_SPEEDUP_VS_NAIVE:g}x",
                                            f">= {MIN_INT8_SPEEDUP:g}x", f">= {100 * MIN_INT8_AGREEMENT:g}%"]
    # each bar missed: too slow, too little gain over naive, INT8 not faster, INT8 flips a decision
    slow_fp32 = _row("m.onnx", "ort:cpu", "fp32", 6.0, [0.1, 0.9, 0.6, 0.2])
    flipping_int8 = _row("m.int8.onnx", "ort:cpu", "int8", 6.0, [0.1, 0.9, 0.4, 0.2])
    checks = threshold_checks([slow_fp32, flipping_int8, naive])
    assert [c.met for c in checks] == [False, False, False, False]
    assert checks[0].measured == "6.00 faces/s" and checks[3].measured == "75.0%"
    # a crashed row answers nothing
    assert threshold_checks([{"runner": "m.onnx", "error": "crashed (killed by signal 11)"}]) == []


def test_cpu_flags_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2 avx512_vnni fma\n\n"
                       "processor\t: 1\nflags\t\t: fpu amx_int8\n")
    assert cpu_model_and_flags(str(cpuinfo)) == ("Some CPU", ["avx2", "fma", "avx512_vnni"])


def test_importing_the_command_needs_no_torch():
    code = "import sys, aunet.bench.cli; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# --- errors: one line `aunet-bench: error: ...` on stderr, and the command's exit code ---------------------------


def assert_one_error_line(stderr: str, expected: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("aunet-bench: error: ") and expected in lines[0], lines[0]


def main_error(capsys, *args) -> tuple[int, str]:
    """Exit code and stderr of the console entry point (usage errors only come out one-line through run())."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    return exited.value.code, capsys.readouterr().err


def test_bad_inputs_are_one_line_errors_before_any_work(tmp_path):
    ckpt, text, garbage = tmp_path / "best.pt", tmp_path / "notes.txt", tmp_path / "garbage.onnx"
    for f, content in ((ckpt, b"x"), (text, b"x"), (garbage, b"not an onnx")):
        f.write_bytes(content)
    cases = [
        (("backends", tmp_path / "none.onnx"), "model not found"),
        (("backends", ckpt), f"{ckpt} is a PyTorch checkpoint: export it first with aunet-export onnx --ckpt {ckpt}"),
        (("backends", text), "unknown model type '.txt'"),
        (("backends", garbage), "not a readable ONNX model"),
        (("backends", "--no-naive"), "nothing to time"),
        (("pipeline", "--engine", tmp_path / "none.onnx"), "model not found"),
        (("pipeline", "--engine", ckpt), "export it first with aunet-export onnx"),
        (("pipeline", "--engine", garbage), "not a readable ONNX model"),
    ]
    for args, expected in cases:
        res = invoke(*args)
        assert res.exit_code == 2, (args, res.output)
        assert_one_error_line(res.stderr, expected)
        assert "error" not in res.stdout


def test_model_given_with_config_is_refused(small_onnx):
    res = invoke("backends", small_onnx, "--config", "small")
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "--config is for runs without a model file")


def test_missing_video_is_refused(small_onnx, tmp_path):
    res = invoke("pipeline", "--engine", small_onnx, "--video", tmp_path / "none.mp4")
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, f"video not found: {tmp_path / 'none.mp4'}")


def test_model_benchmark_without_torch_exits_3(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    res = invoke("model", "--config", "small")
    assert res.exit_code == 3
    assert_one_error_line(res.stderr, "aunet-bench model needs PyTorch")


@pytest.mark.parametrize("args, expected", [
    (("model", "--config", "huge"), "'--config'"),
    (("backends", "--device", "npu"), "'--device'"),
    (("backends", "--torch-device", "mps"), "'--torch-device'"),
    (("pipeline", "--engine", "m.onnx", "--device", "npu"), "'--device'"),
    (("pipeline", "--engine", "m.onnx", "--size", "10x10"), "the video must be at least 64x64"),
    (("pipeline", "--engine", "m.onnx", "--size", "big"), "expected WIDTHxHEIGHT"),
    (("pipeline", "--engine", "m.onnx", "--json", "."), "is a folder, expected a file path"),
    (("backends", "--bogus"), "--bogus"),
])
def test_usage_errors_are_one_line_exit_2(capsys, args, expected):
    code, stderr = main_error(capsys, *args)
    assert code == 2
    assert_one_error_line(stderr, expected)
