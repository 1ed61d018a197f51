"""Engines built elsewhere (trtexec, Polygraphy) and the build/timing report, on the TensorRT and CUDA fakes
(tests/trt_fakes.py): `aunet-export sidecar`, `aunet-infer --spec` / `Detector(..., spec=)`, the refusal that
names both ways out, engines whose I/O do not match the spec, the precision of `aunet-export trt` taken from the
ONNX, and GPU timing numbers from CUDA events with known elapsed times."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import trt_fakes
from aunet.config import ModelConfig
from aunet.spec import ModelSpec, SpecError

pytest.importorskip("onnx")


def spec_onnx(folder: Path, precision: str = "fp16", config: str = "small", name: str | None = None,
              **provenance) -> Path:
    """A tiny ONNX carrying a config's spec: all an engine build or a sidecar reads of it (the fake parser parses
    nothing, and an engine built elsewhere only needs the spec)."""
    import onnx
    from onnx import TensorProto, helper

    from aunet.artifacts import write_onnx_spec

    s = ModelConfig.named(config).img_size
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "spec-only",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, s, s])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, s, s])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_onnx_spec(model, ModelSpec.from_config(ModelConfig.named(config),
                                                 provenance={"precision": precision, **provenance}))
    path = folder / (name or ("model.onnx" if precision == "fp32" else f"model.{precision}.onnx"))
    onnx.save(model, str(path))
    return path


def trtexec_engine(folder: Path, name: str = "model.plan") -> Path:
    """An engine file as trtexec writes one: no sidecar beside it (the fake runtime deserializes any ENGINE...)."""
    path = folder / name
    path.write_bytes(b"ENGINE|trtexec")
    return path


def export_cli(*args):
    from aunet.export.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def infer_cli(*args):
    from aunet.runtime.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def printed(result) -> str:
    """stdout with rich's line wrapping undone."""
    return " ".join(result.stdout.split())


def one_error_line(result, prog: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def unverified(records) -> list[str]:
    from aunet.backends import UnverifiedEngineWarning

    return [str(w.message) for w in records if issubclass(w.category, UnverifiedEngineWarning)]


def assert_released(driver) -> None:
    assert trt_fakes.DEVICE_MEMORY == {} and driver.stack == [] and all(v == 0 for v in driver.primary_refs.values())


class StubFaces:
    """One face box in the middle of every frame."""

    name = "stub"

    def detect(self, rgb):
        from aunet.faces import Face

        h, w = rgb.shape[:2]
        return [Face(box=np.array([w * 0.3, h * 0.3, w * 0.7, h * 0.7], np.float32), score=1.0)]


# --- aunet-export sidecar ---


def test_sidecar_command_writes_a_sidecar_the_runtime_accepts_and_marks_unverified(tmp_path, monkeypatch):
    from aunet.artifacts import file_sha256
    from aunet.backends import open_backend, read_spec

    _, _, driver = trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path)
    plan = trtexec_engine(tmp_path)
    r = export_cli("sidecar", "--engine", plan, "--onnx", onnx_path)
    assert r.exit_code == 0, r.output
    assert "checked model.plan" in printed(r) and "batch 1..4 (opt 2)" in printed(r)

    side = json.loads((tmp_path / "model.plan.json").read_text())
    assert side["format"] == "aunet-plan" and side["built_by"] == "external"
    assert side["tensorrt"] is None and side["gpu"] is None  # what the build was for is not known
    assert side["spec"] == json.loads(json.dumps(read_spec(onnx_path).to_dict()))
    assert side["precision"] == "fp16" and side["onnx"] == onnx_path.name
    assert side["onnx_sha256"] == file_sha256(onnx_path)
    assert side["profile"] == {"input": "image", "min": 1, "opt": 2, "max": 4}  # read from the engine
    assert side["checked_on"]["tensorrt"] == "10.3.0"
    assert side["checked_on"]["gpu"] == {k: trt_fakes.GPU[k] for k in ("name", "compute_capability")}

    images = np.random.default_rng(0).random((3, 3, 112, 112), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_backend(plan) as backend:
            assert backend.build_verified is False and backend.max_batch == 4 and backend.opt_batch == 2
            out = backend.infer(images)
        with open_backend(plan):  # the same engine again: warned once per process
            pass
    (msg,) = unverified(caught)
    assert str(plan) in msg and "not verified" in msg and "TensorRT 10.3.0" in msg and "\n" not in msg
    np.testing.assert_allclose(out["score"], images.mean((1, 2, 3)), rtol=1e-6)
    assert_released(driver)


def test_sidecar_command_without_tensorrt_writes_it_unchecked(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    onnx_path = spec_onnx(tmp_path, precision="int8")
    plan = trtexec_engine(tmp_path, "model.int8.engine")
    r = export_cli("sidecar", "--engine", plan, "--onnx", onnx_path)
    assert r.exit_code == 0, r.output
    assert "not checked here" in printed(r) and "TensorRT is not installed" in printed(r)
    side = json.loads((tmp_path / "model.int8.engine.json").read_text())
    assert side["built_by"] == "external" and side["precision"] == "int8"
    assert "profile" not in side and "checked_on" not in side  # nothing was read from the engine


def test_sidecar_of_an_engine_that_does_not_run_the_spec_is_refused_and_not_left(tmp_path, monkeypatch):
    world, trt, driver = trt_fakes.install(monkeypatch)
    world.engine_outputs["patch_logits"] = (trt.float32, (196, 2))  # built from a 224 px model's ONNX
    plan = trtexec_engine(tmp_path)
    r = export_cli("sidecar", "--engine", plan, "--onnx", spec_onnx(tmp_path))
    assert r.exit_code == 2
    line = one_error_line(r, "aunet-export")
    assert "patch_logits is [-1, 196, 2], the spec's is [batch, 49, 2]" in line
    assert not (tmp_path / "model.plan.json").exists()
    assert_released(driver)


def test_sidecar_command_errors_are_one_line_with_exit_2(tmp_path, monkeypatch):
    trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path)
    plan = trtexec_engine(tmp_path)
    foreign = tmp_path / "foreign.onnx"
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    cases = [
        (("--engine", tmp_path / "missing.plan", "--onnx", onnx_path), "engine not found"),
        (("--engine", onnx_path, "--onnx", onnx_path), "expected a TensorRT engine"),
        (("--engine", plan, "--onnx", tmp_path / "best.pt"), "is a PyTorch checkpoint"),
        (("--engine", plan, "--onnx", plan), "expected the ONNX the engine was built from"),
        (("--engine", plan, "--onnx", foreign), "no 'aunet.spec' metadata"),
    ]
    for args, text in cases:
        r = export_cli("sidecar", *args)
        assert r.exit_code == 2, (args, r.output)
        assert text in one_error_line(r, "aunet-export"), args
    assert not (tmp_path / "model.plan.json").exists()


def test_sidecar_of_an_aunet_build_is_only_replaced_with_force(tmp_path, monkeypatch):
    from aunet.export.tensorrt_build import build_engine

    trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path)
    plan = tmp_path / "model.fp16.plan"
    build_engine(onnx_path, plan, max_batch=4)
    before = (tmp_path / "model.fp16.plan.json").read_text()
    r = export_cli("sidecar", "--engine", plan, "--onnx", onnx_path)
    assert r.exit_code == 2 and "--force replaces it" in one_error_line(r, "aunet-export")
    assert (tmp_path / "model.fp16.plan.json").read_text() == before  # the recorded build is kept
    r = export_cli("sidecar", "--engine", plan, "--onnx", onnx_path, "--force")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "model.fp16.plan.json").read_text())["built_by"] == "external"


# --- an engine without a sidecar ---


def test_an_engine_without_a_sidecar_is_refused_naming_both_ways_out(tmp_path):
    from aunet.backends import BackendError, open_backend

    plan = trtexec_engine(tmp_path)
    with pytest.raises(BackendError) as exc:
        open_backend(plan)
    msg = str(exc.value)
    assert f"aunet-export sidecar --engine {plan} --onnx model.onnx" in msg
    assert "aunet-infer --spec model.onnx" in msg and 'spec="model.onnx"' in msg and "\n" not in msg

    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((64, 64, 3), 128, np.uint8))
    r = infer_cli(frame, "--engine", plan, "--quiet")
    assert r.exit_code == 2
    line = one_error_line(r, "aunet-infer")
    assert "aunet-export sidecar --engine" in line and "--spec model.onnx" in line
    assert r.stdout == ""  # no JSON


def test_spec_runs_an_engine_without_a_sidecar(tmp_path, monkeypatch):
    from aunet.backends import BackendError, open_backend, read_spec
    from aunet.runtime import Detector
    from aunet.runtime.pipeline import preprocess

    _, _, driver = trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path)
    plan = trtexec_engine(tmp_path)
    crops = np.random.default_rng(1).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Detector(plan, spec=onnx_path, face_detector=StubFaces(), batch_size=8) as det:
            assert det.spec == read_spec(onnx_path) and det.batch_size == 4  # capped by the engine's profile
            assert det.backend.build_verified is False
            preds = det.predict_faces(crops)
    assert len(unverified(caught)) == 1
    np.testing.assert_allclose(preds.scores, preprocess(crops, det.spec).mean((1, 2, 3)), rtol=1e-5)
    assert not (tmp_path / "model.plan.json").exists()  # nothing written beside the engine
    assert_released(driver)

    with pytest.raises(BackendError, match="carries its own spec"):
        open_backend(onnx_path, spec=onnx_path)
    with pytest.raises(BackendError, match=r"\(\.onnx\), not a \.plan file"):
        open_backend(plan, spec=plan)


def test_infer_cli_with_spec_warns_once_on_one_line(tmp_path, monkeypatch):
    import aunet.runtime.pipeline as pipeline

    trt_fakes.install(monkeypatch)
    monkeypatch.setattr(pipeline, "make_face_detector", lambda *a, **k: StubFaces())
    onnx_path = spec_onnx(tmp_path)
    plan = trtexec_engine(tmp_path)
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((120, 160, 3), 200, np.uint8))
    r = infer_cli(frame, "--engine", plan, "--spec", onnx_path, "--quiet")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["faces"] == 1 and doc["backend"].startswith("tensorrt:10.3.0:")
    assert doc["score"] == pytest.approx(200 / 255, abs=1e-3)  # the fake engine's score: the mean of the crop
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("aunet-infer: warning: ") and "not verified" in line and str(plan) in line


def test_infer_cli_spec_errors_are_one_line_with_exit_2(tmp_path, monkeypatch):
    world, trt, _ = trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path)
    paper = spec_onnx(tmp_path, config="paper", name="paper.fp16.onnx")
    plan = trtexec_engine(tmp_path)
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((64, 64, 3), 128, np.uint8))
    cases = [
        ((frame, "--engine", onnx_path, "--spec", onnx_path), "--spec is for a TensorRT engine"),
        ((frame, "--engine", plan, "--spec", tmp_path / "missing.onnx"), "ONNX not found"),
        ((frame, "--engine", plan, "--spec", plan), "expected the ONNX the engine was built from"),
        ((frame, "--engine", plan, "--spec", paper), "image is [-1, 3, 112, 112], the spec's is [batch, 3, 224, 224]"),
    ]
    for args, text in cases:
        r = infer_cli(*args, "--quiet")
        assert r.exit_code == 2, (args, r.output)
        assert text in one_error_line(r, "aunet-infer"), args
        assert r.stdout == ""


# --- what the runtime checks of an engine ---


@pytest.mark.parametrize("case, text", [
    ("paper spec", "image is [-1, 3, 112, 112], the spec's is [batch, 3, 224, 224]"),
    ("wrong grid", "patch_logits is [-1, 196, 2], the spec's is [batch, 49, 2]"),
    ("int32 score", "score is int32, the spec's is float32"),
    ("HWC8 input", "image has the vectorized layout HWC8, the runtime reads LINEAR"),
    ("batch from 2", "takes batches 2 to 4 of image"),
])
def test_an_engine_whose_io_do_not_match_the_spec_is_refused(tmp_path, monkeypatch, case, text):
    from aunet.backends import open_backend

    world, trt, driver = trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path, config="paper" if case == "paper spec" else "small")
    if case == "wrong grid":
        world.engine_outputs["patch_logits"] = (trt.float32, (196, 2))
    elif case == "int32 score":
        world.engine_outputs["score"] = (trt.int32, ())
    elif case == "HWC8 input":
        world.engine_formats["image"] = "HWC8"
    elif case == "batch from 2":
        world.engine_profile = ((2, 3, 112, 112), (4, 3, 112, 112), (4, 3, 112, 112))
    plan = trtexec_engine(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SpecError) as exc:
            open_backend(plan, spec=onnx_path)
    msg = str(exc.value)
    assert text in msg and str(plan) in msg and "\n" not in msg
    if case == "batch from 2":
        assert "--minShapes=image:1x3x112x112" in msg
    assert unverified(caught) == []  # a refused engine is not also warned about
    assert_released(driver)


def test_float16_engine_io_is_accepted_and_converted(tmp_path, monkeypatch):
    from aunet.backends import open_backend

    world, trt, driver = trt_fakes.install(monkeypatch)
    world.engine_outputs["score"] = (trt.float16, ())  # trtexec --outputIOFormats=fp16:chw
    plan = trtexec_engine(tmp_path)
    images = np.random.default_rng(2).random((2, 3, 112, 112), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_backend(plan, spec=spec_onnx(tmp_path)) as backend:
            out = backend.infer(images)
    assert out["score"].dtype == np.float32
    np.testing.assert_allclose(out["score"], images.mean((1, 2, 3)), atol=1e-3)
    assert_released(driver)


def test_spec_and_sidecar_must_describe_the_same_model(tmp_path, monkeypatch):
    from aunet.backends import open_backend
    from aunet.export.tensorrt_build import build_engine

    trt_fakes.install(monkeypatch)
    onnx_path = spec_onnx(tmp_path)
    plan = tmp_path / "model.fp16.plan"
    build_engine(onnx_path, plan, max_batch=4)
    with pytest.raises(SpecError, match="does not describe the engine its sidecar model.fp16.plan.json describes"):
        open_backend(plan, spec=spec_onnx(tmp_path, config="paper", name="paper.fp16.onnx"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_backend(plan, spec=onnx_path) as backend:  # the same model: the sidecar's build record holds
            assert backend.build_verified is True
    assert unverified(caught) == []


# --- aunet-export trt: precision from the ONNX, the build and timing report ---


def forbid_precision_conversion(monkeypatch):
    import aunet.export.precision as precision

    def refuse(*args, **kwargs):
        raise AssertionError("a precision ONNX must not be converted again")

    monkeypatch.setattr(precision, "make_fp16_onnx", refuse)
    monkeypatch.setattr(precision, "make_int8_onnx", refuse)


def test_trt_takes_the_precision_from_the_onnx_and_reports_build_and_timing(tmp_path, monkeypatch):
    import aunet.export.tensorrt_build as tensorrt_build

    trt_fakes.install(monkeypatch)
    forbid_precision_conversion(monkeypatch)
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(tensorrt_build, "_clock", lambda: next(clock))
    trt_fakes.GPU_CLOCK.costs = {"htod": [0.5], "execute": [1.0, 2.0, 3.0], "dtoh": [0.1]}
    onnx_path = spec_onnx(tmp_path, precision="fp16")
    r = export_cli("trt", "--onnx", onnx_path, "--max-batch", "4", "--opt-batch", "3",
                   "--timing-runs", "5", "--timing-warmup", "2")
    assert r.exit_code == 0, r.output
    plan = tmp_path / "model.fp16.plan"
    side = json.loads((tmp_path / "model.fp16.plan.json").read_text())
    assert side["precision"] == "fp16" and side["built_by"] == "aunet-export trt"
    assert side["build_seconds"] == 2.5 and side["engine_bytes"] == plan.stat().st_size
    assert f"engine built in 2.5 s, {plan.stat().st_size / 1e6:.1f} MB" in printed(r)

    # 7 batches at the profile's opt batch 3; compute costs cycle 1, 2, 3: the 5 timed ones are 3, 1, 2, 3, 1 ms;
    # every batch copies in for 0.5 ms and copies its 3 outputs out for 0.1 ms each
    timing = side["timing"]
    assert (timing["batch"], timing["iterations"], timing["warmup"]) == (3, 5, 2)
    assert timing["compute_ms"] == pytest.approx({"mean": 2.0, "median": 2.0, "p99": 3.0, "min": 1.0, "max": 3.0})
    assert timing["h2d_ms"] == pytest.approx({"mean": 0.5, "median": 0.5, "p99": 0.5, "min": 0.5, "max": 0.5})
    assert timing["d2h_ms"]["mean"] == pytest.approx(0.3)
    assert timing["latency_ms"]["mean"] == pytest.approx(2.8) and timing["latency_ms"]["max"] == pytest.approx(3.8)
    assert timing["faces_per_s"] == pytest.approx(3000 / 2.8)
    row = next(line for line in r.stdout.splitlines() if "GPU compute" in line)
    assert [cell.strip() for cell in row.split("│")[2:7]] == ["2.000", "2.000", "3.000", "1.000", "3.000"]
    assert "throughput at batch 3: 1071.4 faces/s" in printed(r)
    assert not (tmp_path / "model.fp16.fp16.onnx").exists()


def test_time_gpu_reads_the_events_around_each_stage(tmp_path, monkeypatch):
    from aunet.backends import BackendError, open_backend

    _, _, driver = trt_fakes.install(monkeypatch)
    trt_fakes.GPU_CLOCK.costs = {"htod": [0.25, 0.75], "execute": [4.0], "dtoh": [0.0, 0.0, 0.5]}
    plan = trtexec_engine(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_backend(plan, spec=spec_onnx(tmp_path)) as backend:
            timing = backend.time_gpu(batch=4, iterations=4, warmup=1)
            default = backend.time_gpu(iterations=1, warmup=0)
            with pytest.raises(BackendError, match=r"batch 5 is outside the engine's profile \(1\.\.4\)"):
                backend.time_gpu(batch=5)
    # H2D alternates 0.25 / 0.75 from the warm-up on: timed 0.75, 0.25, 0.75, 0.25; D2H is 0.5 per batch
    assert timing["h2d_ms"] == pytest.approx({"mean": 0.5, "median": 0.5, "p99": 0.75, "min": 0.25, "max": 0.75})
    assert timing["compute_ms"]["mean"] == pytest.approx(4.0) and timing["d2h_ms"]["mean"] == pytest.approx(0.5)
    assert timing["faces_per_s"] == pytest.approx(4000 / 5.0)
    assert default["batch"] == 2  # the profile's opt batch
    assert_released(driver)


def test_trt_precision_flags_and_the_onnx(tmp_path, monkeypatch):
    trt_fakes.install(monkeypatch)
    forbid_precision_conversion(monkeypatch)
    fp16 = spec_onnx(tmp_path, precision="fp16")
    fp32 = spec_onnx(tmp_path, precision="fp32")
    cases = [
        (("--onnx", fp16, "--int8"), "--int8 contradicts model.fp16.onnx, whose spec says fp16"),
        (("--onnx", fp16, "--calib", tmp_path / "calib.npz"), "--calib: model.fp16.onnx is already fp16"),
        (("--onnx", fp32), "give --fp16 or --int8"),
    ]
    for args, text in cases:
        r = export_cli("trt", *args, "--timing-runs", "0")
        assert r.exit_code == 2, (args, r.output)
        assert text in one_error_line(r, "aunet-export"), args
    assert not list(tmp_path.glob("*.plan*"))  # nothing built
    r = export_cli("trt", "--onnx", fp16, "--fp16", "--max-batch", "4", "--timing-runs", "0")  # a flag that agrees
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "model.fp16.plan.json").read_text())["precision"] == "fp16"
    assert "GPU compute" not in r.stdout  # --timing-runs 0: no timing


def test_trt_builds_int8_only_from_a_q_dq_onnx_that_met_its_target_on_held_out_faces(tmp_path, monkeypatch):
    """The judgement `aunet-calib quantize` records in the INT8 ONNX gates the engine: never judged or failed ->
    one line, exit 1, no engine; --force builds with a warning; passed -> built."""
    trt_fakes.install(monkeypatch)
    forbid_precision_conversion(monkeypatch)
    failed = {"passed": False, "failures": ["decision agreement 0.875 < 0.98"], "target": "agreement=0.98,auc_drop=0.5",
              "num_faces": 64, "decision_agreement": 0.875}
    cases = {
        "never": ({}, "carries no held-out accuracy judgement"),
        "failed": ({"judgement": failed}, "failed its held-out accuracy judgement (decision agreement 0.875 < 0.98"),
    }
    for name, (calibration, text) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        onnx_path = spec_onnx(folder, precision="int8", calibration=calibration)
        r = export_cli("trt", "--onnx", onnx_path, "--timing-runs", "0")
        assert r.exit_code == 1, r.output
        line = one_error_line(r, "aunet-export")
        assert text in line and "--force builds it anyway" in line
        assert not list(folder.glob("*.plan*"))
        r = export_cli("trt", "--onnx", onnx_path, "--timing-runs", "0", "--force")
        assert r.exit_code == 0, r.output
        assert "used anyway (--force)" in printed(r) and (folder / "model.int8.plan").is_file()
    passed = {**failed, "passed": True, "failures": [], "decision_agreement": 0.99}
    onnx_path = spec_onnx(tmp_path, precision="int8", calibration={"judgement": passed})
    r = export_cli("trt", "--onnx", onnx_path, "--timing-runs", "0")
    assert r.exit_code == 0, r.output
    assert "met agreement=0.98,auc_drop=0.5 on 64 held-out faces (agreement 99.0 %)" in printed(r)
    assert json.loads((tmp_path / "model.int8.plan.json").read_text())["precision"] == "int8"
