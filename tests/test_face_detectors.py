"""Learned face detectors as ONNX (BlazeFace from its TFLite, YuNet), their spec, the registry prep and the runtime
share, and the face policy."""
import json
import warnings

import numpy as np
import pytest

from aunet.faces import (DependencyError, DetectorModelError, Face, FacePolicy, apply_face_policy, make_detector,
                         make_face_detector)
from aunet.faces.detectors import FaceDetectorMismatchWarning
from aunet.faces.onnx_detector import YUNET_OUTPUTS, DetectorSpec, detector_family
from aunet.faces.retinaface import DETECTOR_METADATA_KEY, nms, weighted_nms
from aunet.spec import ModelSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ASTRONAUT_FACE = (179, 83, 267, 171)  # dlib's box (aunet.demo.sample_data), a reference for the face's place


def _iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _face(x0, y0, side, score):
    return Face(np.array([x0, y0, x0 + side, y0 + side], np.float32), score)


# --- BlazeFace: the wheel's TFLite, converted ------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_path():
    from aunet.faces.blazeface import blazeface_tflite_path

    pytest.importorskip("tflite", reason="the TFLite -> ONNX converter needs the tflite package")
    try:
        return blazeface_tflite_path()
    except DependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def blazeface(tflite_path):
    from aunet.faces.blazeface import BlazeFaceOnnx

    return BlazeFaceOnnx(tflite_path, device="cpu", threads=1)


def test_tflite_conversion_matches_the_tflite_interpreter(tflite_path):
    """The converted ONNX answers what LiteRT's own interpreter answers, on the same random input."""
    import onnxruntime as ort

    from aunet.faces.blazeface import OUTPUT_BOXES, OUTPUT_SCORES, blazeface_onnx

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            pytest.skip("no TFLite interpreter (pip install ai-edge-litert) to compare the conversion with")
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 192, 192, 3)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    reference = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    session = ort.InferenceSession(blazeface_onnx(tflite_path).SerializeToString(), providers=["CPUExecutionProvider"])
    ours = dict(zip([OUTPUT_BOXES, OUTPUT_SCORES], session.run([OUTPUT_BOXES, OUTPUT_SCORES], {"input": x})))
    for name in (OUTPUT_BOXES, OUTPUT_SCORES):
        assert ours[name].shape == reference[name].shape
        scale = float(np.abs(reference[name]).max())
        np.testing.assert_allclose(ours[name], reference[name], atol=1e-5 * scale, rtol=0, err_msg=name)


def test_blazeface_finds_the_astronaut_and_her_landmarks_not_the_badge(blazeface, astronaut):
    faces = blazeface.detect(astronaut)
    assert len(faces) == 1  # the name badge on her suit is not a face
    face = faces[0]
    assert face.score > 0.9 and face.box.dtype == np.float32 and _iou(face.box, ASTRONAUT_FACE) > 0.6
    lm = dict(zip(blazeface.landmark_names, face.landmarks))
    assert face.landmarks.shape == (6, 2)
    assert lm["right_eye"][0] < lm["left_eye"][0]  # the subject's right eye is on the image's left
    assert max(lm["right_eye"][1], lm["left_eye"][1]) < lm["nose_tip"][1] < lm["mouth_centre"][1]
    x0, y0, x1, y1 = face.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks[:4])


def test_blazeface_finds_one_face_in_each_sample_frame(blazeface):
    """The demo's sample frames (rotated, scaled, cropped variants of the astronaut): one face each, never the badge
    on her suit, which dlib's HOG takes for a face in frames 7 (0.73) and 33 (0.31) of this seed."""
    from aunet.demo.sample_data import sample_frame

    rng = np.random.default_rng(2)
    counts = [len(blazeface.detect(sample_frame(rng))) for _ in range(40)]
    assert counts == [1] * 40


def test_blazeface_sees_no_face_in_photos_without_one(blazeface):
    from skimage import data

    for image in (data.coffee(), data.chelsea(), data.rocket()):
        assert blazeface.detect(image) == []


def test_blazeface_finds_a_small_face_where_it_is_in_a_wide_frame(blazeface, astronaut):
    """A 64 px face in a 640x480 frame (letterboxed: the network sees it at ~19 px) is found in its place."""
    import cv2

    x0, y0, x1, y1 = ASTRONAUT_FACE
    crop = astronaut[y0 - 30:y1 + 30, x0 - 30:x1 + 30]
    small = cv2.resize(crop, None, fx=64 / (x1 - x0), fy=64 / (y1 - y0), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[300:300 + small.shape[0], 500:500 + small.shape[1]] = small
    faces = blazeface.detect(frame)
    assert len(faces) == 1 and 48 < faces[0].size < 84
    pad = 30 * 64 / (x1 - x0)  # where the face's box lies in the pasted crop
    assert _iou(faces[0].box, (500 + pad, 300 + pad, 500 + pad + 64, 300 + pad + 64)) > 0.5


def test_blazeface_decoding_on_known_outputs():
    """Zero regression at one confident anchor: a box centred on that anchor, sized by the regressors."""
    from aunet.faces.blazeface import anchor_centres, decode, default_spec

    anchors = anchor_centres()
    assert anchors.shape == (2304, 2) and np.allclose(anchors[0], [0.5 / 48, 0.5 / 48])
    assert np.allclose(anchors[48], [0.5 / 48, 1.5 / 48])  # row-major: the next row starts at index 48
    regressors = np.zeros((2304, 16), np.float32)
    logits = np.full((2304, 1), -20.0, np.float32)
    k = 20 * 48 + 10  # row 20, column 10
    regressors[k, :4] = [9.6, -4.8, 38.4, 57.6]  # centre offset and size, input pixels
    regressors[k, 4:] = np.arange(12)
    logits[k] = 3.0
    boxes, scores, points = decode(regressors, logits, default_spec())
    cx, cy = (10.5 + 2.4) / 48, (20.5 - 1.2) / 48
    np.testing.assert_allclose(boxes, [[cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15]], atol=1e-6)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    np.testing.assert_allclose(points[0], np.arange(12).reshape(6, 2) / 192 + anchors[k], atol=1e-6)


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    points = np.array([[[0, 0]], [[4, 4]], [[55, 55]]], np.float32)
    out_boxes, out_scores, out_points = weighted_nms(boxes, scores, 0.3, points)
    np.testing.assert_allclose(out_boxes, [[0.25, 0.25, 10.25, 10.25], [50, 50, 60, 60]], atol=1e-6)
    np.testing.assert_allclose(out_scores, [0.9, 0.8])
    np.testing.assert_allclose(out_points[:, 0], [[1, 1], [55, 55]], atol=1e-6)
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]  # the greedy one keeps the best box as it is
    empty = weighted_nms(boxes[:0], scores[:0], 0.3)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


def test_exported_blazeface_carries_its_spec_and_detects_alike(blazeface, tflite_path, tmp_path, astronaut):
    from aunet.artifacts import file_sha256
    from aunet.faces.blazeface import export_blazeface

    path = export_blazeface(tmp_path / "blazeface.onnx", tflite_path)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    spec = DetectorSpec.from_dict(json.loads(meta[DETECTOR_METADATA_KEY]))
    assert spec.family == "blazeface-full-range" and spec.input_size == (192, 192) and spec.stride == 4
    assert spec.sha256 == file_sha256(tflite_path) and spec.nms == "weighted"
    for detector in (make_face_detector(path, device="cpu"), make_detector("blazeface", path, device="cpu")):
        assert detector.name == blazeface.name == f"blazeface-full-range@{spec.sha256[:12]}"
        (face,) = detector.detect(astronaut)
        np.testing.assert_allclose(face.box, blazeface.detect(astronaut)[0].box, atol=1e-3)
    assert make_face_detector(path, device="cpu", min_score=0.97).detect(astronaut) == []  # threshold override
    short_range = tflite_path.parent / "face_detection_short_range.tflite"  # another network: one clear error
    if short_range.is_file():
        with pytest.raises(DetectorModelError, match="face_detection_short_range.tflite"):
            make_detector("blazeface", short_range)


# --- YuNet: decoding on graphs whose outputs the test sets ---------------------------------------------------


def _yunet_graph(path, size=(64, 96), cells=None, metadata=None, outputs=YUNET_OUTPUTS):
    """A stand-in YuNet ONNX: YuNet's input and output names and shapes, outputs constant (``cells``: stride ->
    {(row, col): (cls, obj, bbox[4], kps[10])})."""
    h, w = size
    nodes, values = [], []
    for s in (8, 16, 32):
        n = (h // s) * (w // s)
        arrays = {"cls": np.zeros((1, n, 1), np.float32), "obj": np.zeros((1, n, 1), np.float32),
                  "bbox": np.zeros((1, n, 4), np.float32), "kps": np.zeros((1, n, 10), np.float32)}
        for (row, col), (cls, obj, bbox, kps) in (cells or {}).get(s, {}).items():
            i = row * (w // s) + col
            arrays["cls"][0, i], arrays["obj"][0, i], arrays["bbox"][0, i], arrays["kps"][0, i] = cls, obj, bbox, kps
        for kind, arr in arrays.items():
            name = f"{kind}_{s}"
            if name in outputs:
                nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_v")))
                values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(nodes, "yunet_stand_in",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])], values)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {DETECTOR_METADATA_KEY: json.dumps(metadata)})
    onnx.save(model, str(path))
    return path


def test_yunet_decodes_boxes_landmarks_and_suppresses_duplicates(tmp_path):
    from aunet.faces.yunet import UnknownYuNetWarning, YuNetOnnx

    kps = np.array([0.2, 0.1, 0.8, 0.1, 0.5, 0.5, 0.3, 0.9, 0.7, 0.9], np.float32)
    cells = {
        16: {(1, 2): (0.95, 0.95, [0.5, 0.5, np.log(2.0), np.log(3.0)], kps)},  # the face
        8: {(3, 5): (0.93, 0.93, [0.0, 0.0, np.log(4.0), np.log(6.0)], kps)},  # a duplicate of it, lower score
        32: {(0, 0): (0.5, 0.5, [0.5, 0.5, 0.0, 0.0], kps)},  # below the 0.9 threshold
    }
    path = _yunet_graph(tmp_path / "yunet.onnx", cells=cells)
    with pytest.warns(UnknownYuNetWarning, match="not a YuNet release"):
        detector = make_face_detector(path, device="cpu")
    assert isinstance(detector, YuNetOnnx) and detector.spec.input_size == (64, 96) and detector.spec.stride == 32
    # a 128x192 frame is letterboxed into the 64x96 input at scale 0.5
    faces = detector.detect(np.zeros((128, 192, 3), np.uint8))
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.95, abs=1e-6)
    cx, cy, bw, bh = (2 + 0.5) * 16, (1 + 0.5) * 16, 2.0 * 16, 3.0 * 16
    np.testing.assert_allclose(faces[0].box, np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) * 2,
                               atol=1e-3)
    expected = (kps.reshape(5, 2) + [2, 1]) * 16 * 2
    np.testing.assert_allclose(faces[0].landmarks, expected, atol=1e-3)
    # a lower threshold lets the stride-32 cell through: score sqrt(0.5 * 0.5)
    with pytest.warns(UnknownYuNetWarning):
        low = make_face_detector(path, device="cpu", min_score=0.4).detect(np.zeros((64, 96, 3), np.uint8))
    assert sorted(round(f.score, 3) for f in low) == [0.5, 0.95]


def test_yunet_decode_at_a_dynamic_input_size():
    """The same cell decodes to the same place whatever the input size (here 96x128, stride 16 grid 6x8)."""
    from aunet.faces.yunet import decode, default_spec

    h, w = 96, 128
    outputs = {}
    for s in (8, 16, 32):
        n = (h // s) * (w // s)
        outputs.update({f"cls_{s}": np.zeros((1, n, 1)), f"obj_{s}": np.zeros((1, n, 1)),
                        f"bbox_{s}": np.zeros((1, n, 4)), f"kps_{s}": np.zeros((1, n, 10))})
    i = 4 * 8 + 7  # row 4, column 7 of the stride-16 grid
    outputs["cls_16"][0, i] = outputs["obj_16"][0, i] = 1.0
    boxes, scores, points = decode(outputs, (h, w), default_spec(None))
    # centre (column + dx, row + dy) * stride, size exp(0) * stride: one cell wide, centred on the cell's corner
    np.testing.assert_allclose(boxes, [[7 * 16 - 8, 4 * 16 - 8, 7 * 16 + 8, 4 * 16 + 8]], atol=1e-4)
    np.testing.assert_allclose(points[0], np.tile([[7 * 16, 4 * 16]], (5, 1)), atol=1e-4)
    with pytest.raises(DetectorModelError, match="multiple of 32"):
        decode(outputs, (h + 8, w), default_spec(None))


def test_yunet_with_known_release_hash_does_not_warn(tmp_path, monkeypatch):
    from aunet.artifacts import file_sha256
    from aunet.faces import yunet

    path = _yunet_graph(tmp_path / "yunet.onnx")
    release = ("face_detection_yunet_test.onnx", path.stat().st_size)
    monkeypatch.setitem(yunet.KNOWN_RELEASES, file_sha256(path), release)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = make_detector("yunet", path, device="cpu")
    assert detector.name.startswith("yunet@") and detector.spec.source == "face_detection_yunet_test.onnx"
    assert "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0" in yunet.KNOWN_RELEASES


def test_bad_detector_models_are_one_clear_error(tmp_path):
    with pytest.raises(DetectorModelError, match="not a positive multiple of the network's stride 32"):
        make_face_detector(_yunet_graph(tmp_path / "odd.onnx", size=(60, 96)), device="cpu")
    with pytest.raises(DetectorModelError, match="unknown face-detector family 'mtcnn'"):
        make_face_detector(_yunet_graph(tmp_path / "m.onnx", metadata={"family": "mtcnn"}), device="cpu")
    with pytest.raises(DetectorModelError, match="not a face detector this build knows"):
        make_face_detector(_yunet_graph(tmp_path / "x.onnx", outputs=("cls_8", "obj_8")), device="cpu")
    with pytest.raises(DetectorModelError, match="not a positive multiple"):
        DetectorSpec("blazeface-full-range", (190, 192), 4, 0.5)
    with pytest.raises(DependencyError, match="YuNet needs its model file"):
        make_detector("yunet")
    with pytest.raises(DependencyError, match="not found"):
        make_detector("yunet", tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx" * 40)
    with pytest.raises(DetectorModelError, match="ONNX Runtime cannot load"):
        make_face_detector(tmp_path / "junk.onnx", device="cpu")
    (tmp_path / "junk.tflite").write_bytes(b"\x1c\x00\x00\x00NOPE" + bytes(64))
    with pytest.raises(DetectorModelError, match="not a TFLite model"):
        make_detector("blazeface", tmp_path / "junk.tflite")
    with pytest.raises(DetectorModelError, match="lacks YuNet's outputs"):  # another family's ONNX as YuNet
        make_detector("yunet", _yunet_graph(tmp_path / "r.onnx", outputs=("cls_8",), metadata={"family": "retinaface"}))
    assert detector_family({}, list(YUNET_OUTPUTS)) == "yunet"
    assert detector_family({DETECTOR_METADATA_KEY: '{"network": "retinaface-mobilenet0.25"}'}, []) == "retinaface"
    assert issubclass(DetectorModelError, ValueError)  # the CLIs' "bad input" (exit 2)


# --- one registry for prep and the runtime --------------------------------------------------------------------


def test_prep_and_runtime_choose_the_same_detectors(blazeface):
    pytest.importorskip("dlib")
    auto_prep, auto_runtime = make_detector("auto", device="cpu"), make_face_detector(None, device="cpu")
    assert auto_prep.name == auto_runtime.name == blazeface.name  # BlazeFace is installed: "auto" takes it
    assert make_detector("blazeface").name == make_face_detector("blazeface").name == blazeface.name
    assert make_detector("dlib").name == make_face_detector("dlib").name == "dlib"
    # the runtime follows the detector a model spec records (the training crops'), when it needs no file
    assert make_face_detector(None, recorded="dlib").name == "dlib"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_face_detector(None, recorded=blazeface.name).name == blazeface.name
    # another detector than the training crops': it runs, and says so
    with pytest.warns(FaceDetectorMismatchWarning, match="training crops were cut by the face detector dlib"):
        make_face_detector("blazeface", recorded="dlib")
    with pytest.warns(FaceDetectorMismatchWarning, match="yunet@0123456789ab"):  # its file was not given
        assert make_face_detector(None, recorded="yunet@0123456789ab").name == blazeface.name
    with pytest.warns(FaceDetectorMismatchWarning):  # other BlazeFace weights
        make_face_detector(None, recorded="blazeface-full-range@0123456789ab")


def test_prep_records_detector_and_policy_in_the_cache(blazeface, tmp_path, astronaut):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from rich.console import Console

    from aunet.demo.sample_data import write_image
    from aunet.faces.cache import FaceCache
    from aunet.prep.inputs import Job
    from aunet.prep.run import PrepSettings, run_prep

    image = write_image(tmp_path / "in" / "a.png", astronaut)
    settings = PrepSettings(size=64, frames=1, faces="all", detector="blazeface", min_score=0.7,
                            policy=FacePolicy(min_size=40, max_faces=3))
    run_prep([Job("a.png", str(image), "image", 0, "test", "")], tmp_path / "cache", settings,
             console=Console(file=open("/dev/null", "w")), show_progress=False)
    cache = FaceCache(tmp_path / "cache")
    assert cache.meta["detector"] == blazeface.name
    assert cache.meta["detector_spec"]["family"] == "blazeface-full-range"
    assert cache.meta["detector_spec"]["score_threshold"] == 0.7  # --min-score is the detector's threshold
    assert FacePolicy.from_dict(cache.meta["face_policy"]) == FacePolicy(min_score=0.7, min_size=40, max_faces=3)
    faces = cache.load("a.png")
    assert len(faces) == 1 and _iou(faces.boxes[0], ASTRONAUT_FACE) > 0.6


# --- the face policy -------------------------------------------------------------------------------------------


def test_face_policy_keeps_what_it_says():
    subject, badge, background, weak = _face(0, 0, 200, 0.95), _face(300, 300, 50, 0.92), _face(500, 0, 90, 0.9), \
        _face(700, 0, 150, 0.5)
    frame = [badge, weak, subject, background]
    assert apply_face_policy(frame, FacePolicy()) == [subject, weak, background, badge]  # largest first, all kept
    assert FacePolicy(min_score=0.6).apply(frame) == [subject, background, badge]
    assert FacePolicy(min_relative_size=0.3).apply(frame) == [subject, weak, background]  # 50 < 0.3 * 200
    assert FacePolicy(min_size=60).apply(frame) == [subject, weak, background]
    assert FacePolicy(max_faces=2).apply(frame) == [subject, weak]
    # relative to the largest face that passed the threshold
    assert FacePolicy(min_score=0.91, min_relative_size=0.3).apply([badge, weak]) == [badge]
    assert FacePolicy(min_score=0.99).apply(frame) == []


def test_face_policy_round_trips_and_refuses_nonsense():
    policy = FacePolicy(min_score=0.5, min_size=24, min_relative_size=0.25, max_faces=4)
    assert FacePolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert FacePolicy.from_dict(None) == FacePolicy.from_dict({}) == FacePolicy()
    assert FacePolicy.from_dict({"min_size": 10, "from_a_newer_build": 1}) == FacePolicy(min_size=10)
    for bad in ({"min_size": -1}, {"min_relative_size": 1.5}, {"max_faces": 0}):
        with pytest.raises(ValueError):
            FacePolicy(**bad)


def test_model_spec_carries_faces_and_old_specs_still_load():
    from aunet.config import ModelConfig

    spec = ModelSpec.from_config(ModelConfig(), faces={"detector": "blazeface-full-range@99bf9494d84f",
                                                       "policy": FacePolicy(min_relative_size=0.3).to_dict()})
    again = ModelSpec.from_json(spec.to_json())
    assert again.faces == spec.faces
    assert FacePolicy.from_dict(again.faces["policy"]).min_relative_size == 0.3
    old = json.loads(spec.to_json())
    del old["faces"]  # a spec written before the field existed
    assert ModelSpec.from_dict(old).faces == {}
    spec.check_compatible(ModelSpec.from_dict(old))  # the faces do not change the graph's inputs or outputs


# --- the policy end to end: prep's CLI and the runtime -----------------------------------------------------------


def _two_faces_frame(astronaut):
    """A 640x480 frame with the astronaut's face twice: ~150 px and ~72 px (both found by BlazeFace)."""
    import cv2

    x0, y0, x1, y1 = ASTRONAUT_FACE
    crop = astronaut[y0 - 30:y1 + 30, x0 - 30:x1 + 30]
    frame = np.full((480, 640, 3), 90, np.uint8)
    for side, (left, top) in ((150, (40, 100)), (72, (420, 200))):
        face = cv2.resize(crop, None, fx=side / (x1 - x0), fy=side / (y1 - y0), interpolation=cv2.INTER_AREA)
        frame[top:top + face.shape[0], left:left + face.shape[1]] = face
    return frame


def _stand_in_classifier(path, faces=None):
    """An ONNX with the classifier's I/O and spec (the small config): score = mean of the input."""
    from aunet.artifacts import write_onnx_spec
    from aunet.config import NAMED_CONFIGS

    spec = ModelSpec.from_config(NAMED_CONFIGS["small"], faces=faces or {})
    s, n = spec.input_size, spec.num_patches
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
        helper.make_node("Identity", ["mean"], ["score"]),
        helper.make_node("Unsqueeze", ["mean", "one"], ["mean_1"]),
        helper.make_node("Concat", ["mean_1", "mean_1"], ["cls_logits"], axis=1),
        helper.make_node("Unsqueeze", ["cls_logits", "one"], ["cls_1"]),
        helper.make_node("Tile", ["cls_1", "repeats"], ["patch_logits"]),
    ]
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([1, n, 1], np.int64), "repeats")]
    graph = helper.make_graph(
        nodes, "stand_in", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, s, s])],
        [helper.make_tensor_value_info("cls_logits", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("patch_logits", TensorProto.FLOAT, ["N", n, 2]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    write_onnx_spec(model, spec)
    onnx.save(model, str(path))
    return path


def test_the_runtime_applies_the_spec_policy_or_the_given_one(blazeface, tmp_path, astronaut):
    from aunet.runtime import Detector

    frame = _two_faces_frame(astronaut)
    assert len(blazeface.detect(frame)) == 2
    keep_all = _stand_in_classifier(tmp_path / "all.onnx")
    with Detector(keep_all, device="cpu", face_detector=blazeface) as det:
        assert det.face_policy == FacePolicy() and len(det.predict_frame(frame).faces) == 2
    recorded = {"detector": blazeface.name, "policy": FacePolicy(min_relative_size=0.6).to_dict()}
    with Detector(_stand_in_classifier(tmp_path / "policy.onnx", recorded), device="cpu") as det:
        assert det.face_detector.name == blazeface.name  # the recorded detector, not dlib
        (face,) = det.predict_frame(frame).faces  # the 72 px face is under 0.6 x 150 px
        assert face.box[0] < 320
    with Detector(keep_all, device="cpu", face_detector=blazeface, face_policy=FacePolicy(max_faces=1)) as det:
        assert len(det.predict_frame(frame).faces) == 1


def test_prep_cli_takes_the_policy_and_the_detector(blazeface, tmp_path, astronaut):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from typer.testing import CliRunner

    from aunet.demo.sample_data import write_image
    from aunet.faces.cache import FaceCache
    from aunet.prep.cli import prep_app

    image = write_image(tmp_path / "in" / "a.png", _two_faces_frame(astronaut))
    runner = CliRunner()
    base = [str(image.parent), "--size", "64", "--frames", "1", "--faces", "all", "--detector", "blazeface"]
    res = runner.invoke(prep_app, base + ["--out", str(tmp_path / "c1"), "--min-relative-face-size", "0.6"])
    assert res.exit_code == 0, res.output
    assert len(FaceCache(tmp_path / "c1").load("a.png")) == 1
    res = runner.invoke(prep_app, base + ["--out", str(tmp_path / "c2"), "--min-face-size", "400"])
    assert res.exit_code == 1  # every face is under 400 px: no input gave a face
    res = runner.invoke(prep_app, [str(image.parent), "--out", str(tmp_path / "c3"), "--detector", "yunet"])
    assert res.exit_code == 3 and "YuNet needs its model file" in res.output
    # a YuNet file: it is used (this stand-in finds no face), and its unknown hash is one warning line
    stand_in = _yunet_graph(tmp_path / "yunet.onnx")
    res = runner.invoke(prep_app, [str(image.parent), "--out", str(tmp_path / "c4"), "--detector", "yunet",
                                   "--detector-model", str(stand_in)])
    assert res.exit_code == 1 and "aunet-prep: warning: yunet.onnx (sha256" in res.output
    assert FaceCache(tmp_path / "c4").meta["detector"].startswith("yunet@")
    # what a model trained on that cache carries in its spec
    from aunet.faces.policy import spec_faces

    meta = FaceCache(tmp_path / "c1").meta
    assert spec_faces(meta) == {"detector": blazeface.name, "policy": FacePolicy(min_relative_size=0.6).to_dict()}
    assert spec_faces({}) == {"policy": FacePolicy().to_dict()}


def test_bench_times_every_detector_on_a_frame_with_one_face(blazeface, tmp_path):
    """The rows of `aunet-bench pipeline`'s detector table (what they hold, not how fast)."""
    from rich.console import Console

    from aunet.bench.measure import machine_info
    from aunet.bench.pipeline import face_detector_rows, face_detector_table

    with pytest.warns(UserWarning):  # the stand-in is no YuNet release
        rows = face_detector_rows(yunet=_yunet_graph(tmp_path / "yunet.onnx", size=(64, 96)), threads=(1,),
                                  sizes=((320, 240),), repeats=1)
    by_name = {r["detector"]: r for r in rows}
    assert set(by_name) == {"dlib HOG", "BlazeFace", "YuNet"}
    assert by_name["BlazeFace"]["faces"] == 1 and by_name["BlazeFace"]["name"] == blazeface.name
    assert by_name["YuNet"]["faces"] == 0 and by_name["YuNet"]["ms_p50"] > 0  # constant outputs: no face
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(face_detector_table(rows + [{"detector": "YuNet", "threads": 2, "error": "no such file"}],
                                      machine_info()))
    text = console.export_text()
    assert "320x240" in text and "no such file" in text and "flags" in text
