"""`aunet-infer --detector`: a detector ONNX or a name, by default the detector the model's spec records; its
warnings (another detector than the training crops', a YuNet file of no known release) are one line each. And
`aunet-bench pipeline`'s detector options (--yunet, --detectors/--no-detectors)."""
import json

import pytest
from typer.testing import CliRunner

from aunet.faces import DependencyError, FacePolicy

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("dlib")
# the stand-in classifier and YuNet graphs the face-detector tests build
from test_face_detectors import _stand_in_classifier, _yunet_graph  # noqa: E402


@pytest.fixture(scope="module")
def blazeface_name():
    pytest.importorskip("tflite", reason="the TFLite -> ONNX converter needs the tflite package")
    from aunet.faces.blazeface import BlazeFaceOnnx

    try:
        return BlazeFaceOnnx(None, device="cpu", threads=1).name
    except DependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture()
def image(tmp_path, astronaut):
    from aunet.demo.sample_data import write_image

    return write_image(tmp_path / "astronaut.png", astronaut)


def run_cli(*args):
    from aunet.runtime.cli import app

    return CliRunner().invoke(app, [str(a) for a in args] + ["--quiet"])


def stderr_lines(res):
    return res.stderr.strip().splitlines()


def test_detector_names_and_the_spec_default(tmp_path, image, blazeface_name):
    trained_on_dlib = _stand_in_classifier(tmp_path / "dlib.onnx", {"detector": "dlib"})
    for option, expected in ((["--detector", "dlib"], "dlib"), (["--detector", "blazeface"], blazeface_name),
                             ([], "dlib")):  # no --detector: the spec's, not "auto"
        res = run_cli(image, "--engine", trained_on_dlib, *option)
        assert res.exit_code == 0, res.output
        record = json.loads(res.stdout)
        assert record["face_detector"] == expected and record["faces"] == 1
    trained_on_blazeface = _stand_in_classifier(
        tmp_path / "bf.onnx", {"detector": blazeface_name, "policy": FacePolicy(max_faces=1).to_dict()})
    for option in ([], ["--detector", "auto"]):
        res = run_cli(image, "--engine", trained_on_blazeface, *option)
        assert res.exit_code == 0 and res.stderr == "", res.output  # the training crops' detector: no warning
        record = json.loads(res.stdout)
        assert record["face_detector"] == blazeface_name and record["face_policy"]["max_faces"] == 1


def test_bad_detector_options_are_one_line_before_the_model_loads(tmp_path, image):
    garbage = tmp_path / "model.onnx"  # had it been loaded first, its error would be the one reported
    garbage.write_bytes(b"garbage")
    for value, text in ((tmp_path / "missing.onnx", f"face detector model not found: {tmp_path / 'missing.onnx'}"),
                        ("yunet", "--detector yunet: expected a face detector .onnx (BlazeFace, YuNet or RetinaFace) "
                                  "or one of auto, blazeface, dlib"),
                        (image, "expected a face detector .onnx")):
        res = run_cli(image, "--engine", garbage, "--detector", value)
        assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.output
        (line,) = stderr_lines(res)
        assert line.startswith("aunet-infer: error: ") and text in line


def test_another_detector_than_the_training_crops_warns_in_one_line(tmp_path, image, blazeface_name):
    model = _stand_in_classifier(tmp_path / "dlib.onnx", {"detector": "dlib"})
    res = run_cli(image, "--engine", model, "--detector", "blazeface", "--format", "jsonl")
    assert res.exit_code == 0, res.output
    (line,) = stderr_lines(res)
    assert line.startswith("aunet-infer: warning: the model's training crops were cut by the face detector dlib, "
                           f"this run detects with {blazeface_name}")
    records = {r["type"]: r for r in map(json.loads, res.stdout.splitlines())}
    start, summary = records["start"], records["summary"]
    assert start["face_detector"] == blazeface_name and start["face_policy"] == FacePolicy().to_dict()
    assert "face_policy" not in summary and "face_detector" not in summary  # the start record has them


def test_a_yunet_file_of_no_known_release_warns_in_one_line(tmp_path, image, blazeface_name):
    model = _stand_in_classifier(tmp_path / "bf.onnx", {"detector": blazeface_name})
    res = run_cli(image, "--engine", model, "--detector", _yunet_graph(tmp_path / "yunet.onnx"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verdict"] == "no_face"  # the stand-in's outputs hold no face
    lines = stderr_lines(res)
    assert len(lines) == 2 and all(line.startswith("aunet-infer: warning: ") for line in lines)
    assert sum("yunet.onnx (sha256" in line for line in lines) == 1
    assert sum(f"cut by the face detector {blazeface_name}" in line for line in lines) == 1


def run_bench(*args):
    from aunet.bench.cli import app

    return CliRunner().invoke(app, ["pipeline", *(str(a) for a in args)])


def test_bench_pipeline_times_the_detectors_unless_told_not_to(tmp_path, blazeface_name):
    pytest.importorskip("skimage")  # the sample video's face
    model = _stand_in_classifier(tmp_path / "m.onnx", {"detector": blazeface_name})
    short = ["--engine", model, "--seconds", "0.2", "--fps", "5", "--size", "320x240"]
    res = run_bench(*short, "--no-detectors", "--json", tmp_path / "none.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "none.json").read_text())
    assert doc["face_detector"] == blazeface_name and "face_detectors" not in doc
    res = run_bench(*short, "--yunet", _yunet_graph(tmp_path / "yunet.onnx"), "--json", tmp_path / "all.json")
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "all.json").read_text())["face_detectors"]
    assert {r["detector"] for r in rows} == {"dlib HOG", "BlazeFace", "YuNet"}
    assert {r["threads"] for r in rows if r["detector"] == "YuNet"} == {1, 2}
    (line,) = stderr_lines(res)  # one YuNet per thread count, one warning
    assert line.startswith("aunet-bench: warning: yunet.onnx (sha256")


def test_bench_pipeline_refuses_bad_yunet_options_in_one_line(tmp_path):
    model = _stand_in_classifier(tmp_path / "m.onnx")
    stand_in = _yunet_graph(tmp_path / "yunet.onnx")
    for args, text in ((["--yunet", tmp_path / "none.onnx"], f"--yunet: YuNet .onnx not found: {tmp_path}"),
                       (["--yunet", stand_in, "--no-detectors"], "--yunet and --no-detectors are mutually exclusive")):
        res = run_bench("--engine", model, *args)
        assert res.exit_code == 2 and "Traceback" not in res.output
        (line,) = stderr_lines(res)
        assert line.startswith("aunet-bench: error: ") and text in line


def test_calib_build_refuses_yunet_on_raw_media_in_one_line(tmp_path, image):
    """aunet-calib build takes no detector model file: --detector yunet on raw media is refused before any work."""
    from aunet.calibration.cli import app

    model = _stand_in_classifier(tmp_path / "m.onnx")
    res = CliRunner().invoke(app, ["build", str(image.parent), "--model", str(model), "--detector", "yunet",
                                   "--out", str(tmp_path / "calib.npz")])
    assert res.exit_code == 2 and "Traceback" not in res.output and not (tmp_path / "calib.npz").exists()
    (line,) = stderr_lines(res)
    assert line.startswith("aunet-calib: error: --detector yunet needs YuNet's model file")
