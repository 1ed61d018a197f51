"""INT8 calibration: the calibration-set artifact, explicit Q/DQ quantization for TensorRT and for the ORT CPU
provider, the sensitivity scan and the FP32-vs-INT8 report, on the small config."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from aunet.spec import CropSpec, ModelSpec


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import aunet
    from aunet.export.onnx_export import export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("calib") / "model.onnx"
    return export_onnx(aunet.build_model("small").eval(), path)


@pytest.fixture(scope="module")
def spec(small_onnx):
    from aunet.backends import read_spec

    return read_spec(small_onnx)


@pytest.fixture(scope="module")
def face_cache(tmp_path_factory, spec):
    """A real prep cache of sample faces (skimage's astronaut, varied), cut with the model's spec."""
    from aunet.prep import PrepSettings, discover, run_prep
    from aunet.demo.sample_data import make_sample_images

    root = tmp_path_factory.mktemp("faces")
    make_sample_images(root / "raw", 12, np.random.default_rng(0))
    settings = PrepSettings(size=spec.input_size, crop=spec.crop, frames=1, detector="dlib")
    run_prep(discover(root / "raw"), root / "cache", settings, show_progress=False)
    return root / "cache"


@pytest.fixture(scope="module")
def calib(face_cache, spec):
    from aunet.calibration.dataset import from_cache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_cache(face_cache, spec, n=500)


def test_calibration_set_round_trip_and_spec_checks(calib, spec, tmp_path):
    from aunet.calibration.dataset import CalibrationError, CalibrationSet

    assert len(calib) >= 8 and calib.size == spec.input_size
    assert calib.provenance["num_videos"] == len(calib)  # one face per image: spread over every input
    path = calib.save(tmp_path / "calib.npz")
    meta = json.loads((tmp_path / "calib.json").read_text())
    assert meta["num_images"] == len(calib) and meta["crop"]["margin"] == spec.crop.margin
    with pytest.warns(UserWarning, match="only"):
        back = CalibrationSet.load(path, spec)
    assert np.array_equal(back.images, calib.images)
    x = back.model_inputs(0, 2)
    assert x.shape == (2, 3, spec.input_size, spec.input_size) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    # another model spec: other crop margin, other size
    other = ModelSpec.from_config(spec.config, crop=CropSpec(margin=0.3))
    with pytest.raises(CalibrationError, match="another model spec"), pytest.warns(UserWarning):
        CalibrationSet.load(path, other)
    bigger = ModelSpec.from_config(spec.config.replace(img_size=224))
    with pytest.raises(CalibrationError, match="crop size"), pytest.warns(UserWarning):
        CalibrationSet.load(path, bigger)
    # a changed npz is caught
    (tmp_path / "calib.npz").write_bytes((tmp_path / "calib.npz").read_bytes()[:-10])
    with pytest.raises(CalibrationError, match="does not match"):
        CalibrationSet.load(path, spec)


def test_bad_calibration_inputs(spec, tmp_path):
    from aunet.calibration.dataset import CalibrationError, CalibrationSet, from_cache

    s = spec.input_size
    with pytest.raises(CalibrationError, match="empty"):
        CalibrationSet.from_array(np.zeros((0, s, s, 3), np.uint8), spec)
    with pytest.raises(CalibrationError, match="at least"):
        CalibrationSet.from_array(np.zeros((3, s, s, 3), np.uint8), spec)
    with pytest.raises(CalibrationError, match="value range"):
        CalibrationSet.from_array(np.full((10, 3, s, s), 255.0, np.float32), spec)
    with pytest.raises(CalibrationError, match="crop size"), pytest.warns(UserWarning):
        CalibrationSet.from_array(np.zeros((10, s + 1, s + 1, 3), np.uint8), spec)
    with pytest.raises(CalibrationError, match="not a face cache"):
        from_cache(tmp_path, spec)
    with pytest.raises(CalibrationError, match="not found"):
        CalibrationSet.load(tmp_path / "missing.npz")


def test_spread_sample_takes_from_every_video_first():
    from aunet.calibration.dataset import spread_sample

    picks = spread_sample([100, 3, 1, 50], 10, np.random.default_rng(0))
    assert sum(map(len, picks)) == 10
    assert all(len(p) >= 1 for p in picks)  # every video contributes before any gives a second face... 
    assert len(picks[2]) == 1 and len(picks[1]) <= 3
    assert spread_sample([2, 2], 100, np.random.default_rng(0)) == [[0, 1], [0, 1]]


def _ops(path):
    import onnx

    return [n for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("target,method", [("cpu", "max"), ("tensorrt", "percentile")])
def test_quantize_keeps_sensitive_parts_fp32_and_stays_close(small_onnx, calib, spec, tmp_path, target, method):
    from aunet.calibration.quantize import quantize
    from aunet.backends import open_backend, read_spec

    out = quantize(small_onnx, calib, tmp_path / f"model.{target}.onnx", target=target, method=method)
    nodes = _ops(out)
    produced = {o: n for n in nodes for o in n.output}
    q_nodes = [n for n in nodes if n.op_type == "QuantizeLinear"]
    assert len(q_nodes) > 20
    # nothing inside the AU-importance normalization, LayerNorm or Softmax reads a quantized activation
    # (a Q -> DQ pair; a dequantized constant can be shared with them when the exporter deduplicated equal
    # initializers, e.g. the zero biases of a fresh model)
    def reads_quantized_activation(n):
        return any(produced.get(i) is not None and produced[i].op_type == "DequantizeLinear"
                   and produced[i].input[0] in produced and produced[produced[i].input[0]].op_type == "QuantizeLinear"
                   for i in n.input)

    sensitive = [n for n in nodes if "/importance/" in n.name or n.op_type in ("LayerNormalization", "Softmax")]
    assert len(sensitive) > 10
    assert not [n.name for n in sensitive if reads_quantized_activation(n)]
    qspec = read_spec(out)
    assert qspec.precision == "int8" and qspec.provenance["int8_target"] == target
    assert qspec.provenance["calibration"]["method"] == method
    spec.check_compatible(qspec)
    x = calib.model_inputs(0, 8)
    with open_backend(small_onnx, device="cpu") as ref, open_backend(out, device="cpu") as q:
        a, b = ref.infer(x), q.infer(x)
    assert np.abs(a["score"] - b["score"]).max() < 0.05
    assert not np.array_equal(a["cls_logits"], b["cls_logits"])  # it really runs quantized


def test_percentile_scales_replace_the_max_ones(small_onnx, calib, spec, tmp_path):
    import onnx
    from onnx import numpy_helper

    from aunet.calibration.quantize import activation_ranges, set_activation_scales

    ranges = activation_ranges(small_onnx, calib, spec.input_name, "max")
    mx = {k: v for k, v in ranges.items()}
    pct = activation_ranges(small_onnx, calib, spec.input_name, "percentile", percentile=90.0)
    assert set(pct) == set(mx) and all(pct[k] <= mx[k] + 1e-6 for k in mx)
    assert any(pct[k] < 0.9 * mx[k] for k in mx)
    # on a tiny Q/DQ graph: the activation scale becomes amax / 127, on Q and DQ
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
         helper.make_node("DequantizeLinear", ["q", "s2", "z"], ["y"], name="DQ")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.float32(1.0), "s"), numpy_helper.from_array(np.float32(1.0), "s2"),
         numpy_helper.from_array(np.int8(0), "z")])
    proto = helper.make_model(g)
    assert set_activation_scales(proto, {"x": 12.7}) == 1
    scales = {t.name: float(numpy_helper.to_array(t)) for t in proto.graph.initializer}
    assert scales["s"] == pytest.approx(0.1) and scales["s2"] == pytest.approx(0.1)
    assert set_activation_scales(proto, {"other": 1.0}) == 0
    onnx.checker.check_model(proto)


def test_sensitivity_scan_ranks_real_errors(small_onnx, calib, tmp_path):
    from aunet.calibration.sensitivity import exclusions_from_scan, fake_quant_weight, save_scan, scan

    results = scan(small_onnx, calib, num_images=8, max_nodes=4)
    assert len(results) == 4
    errs = [r.score_max_abs for r in results]
    assert errs == sorted(errs, reverse=True) and errs[0] > 0
    assert all(r.quantized_inputs >= 1 for r in results)
    path = save_scan(tmp_path / "scan.json", results)
    assert exclusions_from_scan(path, 2) == [results[0].name, results[1].name]
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    wq = fake_quant_weight(w, 0)
    assert np.abs(wq - w).max() <= np.abs(w).max(axis=(1, 2, 3)).max() / 127 / 2 + 1e-7
    assert len(np.unique(wq[0])) <= 255


def test_report_and_cli(small_onnx, calib, face_cache, tmp_path):
    """aunet-calib end to end: build -> quantize (cpu) -> report on real crops vs their TAP fakes."""
    calib_path = tmp_path / "calib.npz"
    run = lambda *a: subprocess.run([sys.executable, "-m", "aunet.calibration.cli", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    r = run("build", face_cache, "--model", small_onnx, "--out", calib_path)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and calib_path.is_file()
    assert all(line.startswith("aunet-calib: warning: ") for line in r.stderr.strip().splitlines()), r.stderr
    int8 = tmp_path / "model.int8-cpu.onnx"
    r = run("quantize", "--model", small_onnx, "--calib", calib_path, "--target", "cpu", "--method", "max", "--out", int8)
    assert r.returncode == 0, r.stderr
    report = tmp_path / "report.json"
    r = run("report", "--fp32", small_onnx, "--int8", int8, "--data", face_cache, "--num", 16, "--out", report)
    data = json.loads(report.read_text())
    assert data["data_kind"] == "real_vs_tap" and data["num_faces"] >= 16
    assert 0 <= data["decision_agreement"] <= 1 and "auc_drop_points" in data
    assert r.returncode == (0 if data["passed"] else 1), r.stderr
    if not data["passed"]:  # the failed thresholds, as the one error line after the table
        lines = r.stderr.strip().splitlines()
        assert lines[-1] == f"aunet-calib: error: {'; '.join(data['failures'])}"
        assert sum("error:" in line for line in lines) == 1, r.stderr
    # bad input: one line, exit 2
    r = run("quantize", "--model", tmp_path / "nope.onnx", "--calib", calib_path)
    assert r.returncode == 2 and r.stderr.count("\n") <= 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("aunet-calib: error: ") and r.stderr.count("\n") == 1
    r = run("build", tmp_path / "empty-dir-that-does-not-exist", "--model", small_onnx, "--out", tmp_path / "x.npz")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    missing_source = tmp_path / "empty-dir-that-does-not-exist"
    assert r.stderr == f"aunet-calib: error: calibration source not found: {missing_source}\n"


def test_int8_thresholds():
    from aunet.calibration.report import MAX_AUC_DROP_POINTS, MIN_DECISION_AGREEMENT, check_int8

    assert check_int8({"decision_agreement": MIN_DECISION_AGREEMENT, "auc_drop_points": MAX_AUC_DROP_POINTS}) == []
    assert check_int8({"decision_agreement": 1.0}) == []  # unlabeled: no AUC to check
    failed = check_int8({"decision_agreement": MIN_DECISION_AGREEMENT - 0.01,
                         "auc_drop_points": MAX_AUC_DROP_POINTS + 0.1})
    assert len(failed) == 2 and failed[0].startswith("decision agreement") and failed[1].startswith("AUC drop")


def test_cli_refuses_bad_choices_and_checkpoints_before_loading(tmp_path, capsys):
    """--target / --method / --detector outside their values: refused at parse time (the calibration set named
    here does not exist: had it been loaded first, its error would have been the one reported). A training
    checkpoint as --model: one line saying what the option takes. All exit 2 with one line on stderr."""
    from aunet.calibration.cli import main

    missing = str(tmp_path / "calib.npz")
    ckpt = str(tmp_path / "best.pt")
    for argv, text in (
        (["quantize", "--model", ckpt, "--calib", missing, "--target", "gpu"],
         "'gpu' is not one of 'tensorrt', 'cpu'"),
        (["quantize", "--model", ckpt, "--calib", missing, "--method", "minmax"], "'minmax' is not one of"),
        (["build", str(tmp_path), "--model", ckpt, "--detector", "hog"], "'hog' is not one of"),
        (["report", "--fp32", ckpt, "--int8", ckpt, "--data", str(tmp_path), "--device", "gpu"],
         "'gpu' is not one of"),
        (["quantize", "--model", ckpt, "--calib", missing], "(--model takes the FP32 ONNX from aunet-export onnx)"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out, err = capsys.readouterr()
        assert exc.value.code == 2 and out == "", (argv, err)
        assert err.count("\n") == 1 and err.startswith("aunet-calib: error: ") and text in err, (argv, err)
