"""Runtime building blocks without a model: sources and sampling, background stages, RetinaFace decoding,
spec-driven preprocessing, aggregation and annotation."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from aunet.runtime.annotate import draw_frame
from aunet.faces.retinaface import RetinaFaceConfig, decode_boxes, faces_from_outputs, nms, prior_boxes
from aunet.runtime.errors import InputError
from aunet.runtime.pipeline import check_spec, preprocess, region_maps
from aunet.runtime.results import FaceResult, FrameResult, VideoResult
from aunet.runtime.sources import Sampling, VideoSource, even_indices, resolve_inputs
from aunet.runtime.threads import BackgroundIterator

from aunet.config import ModelConfig
from aunet.faces.crop import crop_face
from aunet.spec import CropSpec, ModelSpec, SpecError


def write_video(path, frames: int, size=(64, 48), fps=10.0):
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        writer.write(np.full((h, w, 3), (i * 20) % 256, np.uint8))
    writer.release()
    return path


# --- sources ---


def test_even_indices_spread_and_include_ends():
    idx = even_indices(100, 5)
    assert idx.tolist() == [0, 25, 50, 74, 99]
    assert even_indices(3, 10).tolist() == [0, 1, 2]


def test_sampling_rejects_both_modes():
    with pytest.raises(ValueError):
        Sampling(frames=3, every=2)
    with pytest.raises(ValueError):
        Sampling(every=0)


def test_video_source_sampling(tmp_path):
    path = write_video(tmp_path / "v.mp4", 20)
    assert [i for i, _, _ in VideoSource(path).frames()] == list(range(20))
    assert [i for i, _, _ in VideoSource(path, Sampling(every=7)).frames()] == [0, 7, 14]
    src = VideoSource(path, Sampling(frames=4))
    assert src.planned_frames() == 4
    got = list(src.frames())
    assert [i for i, _, _ in got] == even_indices(20, 4).tolist()
    index, t, rgb = got[1]
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert t == pytest.approx(index / 10.0)
    # the frame really is the one at that index (brightness encodes it; mp4v is lossy)
    assert abs(float(rgb.mean()) - (index * 20) % 256) < 8


def test_bad_sources_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        VideoSource(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError):
        list(VideoSource(corrupt).frames())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        list(VideoSource(empty).frames())
    zero = write_video(tmp_path / "zero.mp4", 0)
    with pytest.raises(InputError):
        list(VideoSource(zero).frames())


def test_image_input_is_one_frame(tmp_path, astronaut):
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    frames = list(VideoSource(path).frames())
    assert len(frames) == 1 and np.array_equal(frames[0][2], astronaut)


def test_resolve_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    a = write_video(tmp_path / "d" / "a.mp4", 1)
    b = write_video(tmp_path / "d" / "sub" / "b.avi", 1)
    (tmp_path / "d" / "notes.txt").write_text("x")
    assert resolve_inputs([str(tmp_path / "d")]) == [str(a), str(b)]
    assert resolve_inputs([str(tmp_path / "d" / "*.mp4")]) == [str(a)]
    assert resolve_inputs(["0", "rtsp://cam/stream", "nope.mp4"]) == [0, "rtsp://cam/stream", "nope.mp4"]
    with pytest.raises(InputError):
        resolve_inputs([str(tmp_path / "d" / "*.mkv")])


# --- background stages ---


def test_background_iterator_is_bounded_and_ordered():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    with BackgroundIterator(source(), maxsize=3, name="t") as it:
        got = []
        for item in it:
            time.sleep(0.002)
            got.append(item)
            # the producer is never more than the queue size (+ the one it holds) ahead of the consumer
            assert len(produced) - len(got) <= 4
    assert got == list(range(50))


def test_background_iterator_propagates_errors_and_stops():
    def source():
        yield 1
        raise RuntimeError("decoder died")

    it = BackgroundIterator(source(), maxsize=2, name="t")
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="decoder died"):
        next(it)
    it.close()
    assert not it._thread.is_alive()


def test_background_iterator_close_unblocks_a_full_producer():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.set()

    it = BackgroundIterator(endless(), maxsize=1, name="t")
    next(it)
    it.close(timeout=5)
    assert not it._thread.is_alive() and closed.is_set()


# --- RetinaFace decoding ---


def test_prior_boxes_layout():
    cfg = RetinaFaceConfig(input_size=(64, 96))
    priors = prior_boxes(cfg)
    assert len(priors) == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    # first cell of stride 8: centre (4, 4) px, sizes 16 then 32
    np.testing.assert_allclose(priors[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(priors[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64])


def test_decode_and_nms():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4), np.float32), priors, (0.1, 0.2)), [[0.4, 0.4, 0.6, 0.6]])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.8, 0.9, 0.7]), 0.4).tolist() == [1, 2]


def test_faces_from_outputs_maps_back_to_the_frame():
    cfg = RetinaFaceConfig(input_size=(64, 64))
    priors = prior_boxes(cfg)
    target = int(np.argmin(np.abs(priors - [0.5, 0.5, 0.25, 0.25]).sum(1)))  # a 16 px prior near the centre
    loc = np.zeros((len(priors), 4), np.float32)
    conf = np.tile([[0.99, 0.01]], (len(priors), 1)).astype(np.float32)
    conf[target] = [0.05, 0.95]
    frame_wh, scale = (128, 100), 0.5  # the frame was letterboxed at half size
    faces = faces_from_outputs(loc, conf, priors, cfg, scale, frame_wh)
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.95)
    cx, cy, w, h = priors[target] * [64, 64, 64, 64] / scale
    np.testing.assert_allclose(faces[0].box, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-3)


# --- spec-driven preprocessing and outputs ---


def small_spec(**kwargs) -> ModelSpec:
    return ModelSpec.from_config(ModelConfig.named("small"), **kwargs)


def test_preprocess_follows_the_spec():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    x = preprocess(crops, small_spec())
    assert x.shape == (2, 3, 112, 112) and x.dtype == np.float32
    np.testing.assert_allclose(x, crops.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    y = preprocess(crops, small_spec(color="BGR", value_range=(-1.0, 1.0), input_layout="NHWC"))
    np.testing.assert_allclose(y, crops[..., ::-1] / 127.5 - 1.0, atol=1e-6)
    with pytest.raises(ValueError):
        preprocess(crops[:, :100], small_spec())


def test_region_maps_are_patch_fake_probabilities_on_the_grid():
    spec = small_spec()
    h, w = spec.patch_grid
    logits = np.zeros((1, h * w, 2), np.float32)
    logits[0, w + 2] = [0.0, 3.0]  # row 1, column 2
    maps = region_maps(logits, spec)
    assert maps.shape == (1, h, w)
    assert maps[0, 1, 2] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert np.allclose(np.delete(maps.ravel(), w + 2), 0.5)
    with pytest.raises(SpecError):
        region_maps(np.zeros((1, h * w + 1, 2), np.float32), spec)


def test_fake_probability_is_the_softmax_fake_column_without_overflow():
    """The one logits -> probability function that runtime, verification and INT8 reports share."""
    import warnings

    from aunet.spec import fake_probability

    logits = np.random.default_rng(0).normal(scale=4, size=(5, 7, 2)).astype(np.float32)
    e = np.exp(logits.astype(np.float64))
    np.testing.assert_allclose(fake_probability(logits), e[..., 1] / e.sum(-1), rtol=1e-12)
    assert fake_probability(logits).dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp
        extreme = fake_probability(np.array([[0.0, 1e4], [1e4, 0.0], [-3e38, 3e38]], np.float32))
    assert extreme.tolist()[:2] == [1.0, pytest.approx(0.0, abs=1e-25)] and extreme[2] == 1.0


def test_check_spec_rejects_what_the_runtime_cannot_read():
    check_spec(small_spec())
    with pytest.raises(SpecError):
        check_spec(small_spec(output_names=("cls_logits",)))
    with pytest.raises(SpecError):
        check_spec(small_spec(input_layout="CHWN"))


# --- aggregation ---


def face(score: float) -> FaceResult:
    return FaceResult(np.array([0, 0, 10, 10], np.float32), 1.0, score, np.zeros((2, 2), np.float16), np.eye(2, 3))


def test_video_aggregation_and_verdicts():
    frames = [FrameResult(0, 0.0, [face(0.2), face(0.9)]), FrameResult(1, 0.1, []), FrameResult(2, 0.2, [face(0.4)])]
    video = VideoResult("v", threshold=0.6, frames=frames)
    assert frames[0].score == 0.9 and frames[1].score is None
    assert video.score == pytest.approx((0.9 + 0.4) / 2)  # mean over the frames that have a face
    assert video.verdict == "fake" and VideoResult("v", threshold=0.7, frames=frames).verdict == "real"
    d = video.to_dict()
    assert d["frame_scores"] == [0.9, None, 0.4] and d["frames_with_face"] == 2 and d["faces"] == 3
    empty = VideoResult("v", threshold=0.5, frames=[FrameResult(0, 0.0, [])])
    assert empty.verdict == "no_face" and empty.to_dict()["score"] is None


# --- annotation ---


def test_heatmap_is_drawn_inside_the_face_crop_only(astronaut):
    size = 112
    box = np.array([200, 80, 300, 200], np.float32)
    _, affine = crop_face(astronaut, box, size, CropSpec())
    grid = np.zeros((7, 7), np.float16)
    grid[:, 4:] = 1.0  # the right side of the crop is "fake"
    fr = FrameResult(0, 0.0, [FaceResult(box, 1.0, 0.8, grid, affine)])
    out = cv2.cvtColor(draw_frame(astronaut, fr, threshold=0.5, crop_size=size), cv2.COLOR_BGR2RGB)
    changed = np.abs(out.astype(int) - astronaut.astype(int)).sum(2) > 0
    ys, xs = np.nonzero(changed)
    side = 120 * 1.3  # the crop square: 1.3x the box's longer side, centred on it
    assert xs.min() >= 250 - side / 2 - 2 and xs.max() <= 250 + side / 2 + 2
    assert ys.min() >= 140 - side / 2 - 2 and ys.max() <= 140 + side / 2 + 2
    # hot (red) on the right of the crop, cold (blue) on the left
    row = 140
    assert out[row, 285, 0] > out[row, 285, 2] and out[row, 215, 2] > out[row, 215, 0]


def test_retinaface_onnx_detector_reads_its_metadata_and_letterboxes(tmp_path):
    """A stand-in RetinaFace ONNX (constant outputs) exercises session, metadata, letterbox and decoding."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from aunet.faces import DETECTOR_METADATA_KEY, make_face_detector
    from onnx import TensorProto, helper, numpy_helper

    cfg = RetinaFaceConfig(input_size=(64, 64), score_threshold=0.5)
    priors = prior_boxes(cfg)
    target = int(np.argmin(np.abs(priors - [0.5, 0.5, 0.25, 0.25]).sum(1)))
    loc = np.zeros((1, len(priors), 4), np.float32)
    conf = np.tile([[[0.99, 0.01]]], (1, len(priors), 1)).astype(np.float32)
    conf[0, target] = [0.1, 0.9]
    landms = np.zeros((1, len(priors), 10), np.float32)
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_value"))
             for name, arr in (("loc", loc), ("conf", conf), ("landms", landms))]
    graph = helper.make_graph(
        nodes, "stand_in", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("loc", "conf", "landms")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {DETECTOR_METADATA_KEY: '{"input_size": [64, 64], "score_threshold": 0.5}'})
    path = tmp_path / "retinaface.onnx"
    onnx.save(model, str(path))

    detector = make_face_detector(path, device="cpu")
    assert detector.cfg.input_size == (64, 64) and detector.cfg.score_threshold == 0.5
    faces = detector.detect(np.zeros((100, 128, 3), np.uint8))  # letterboxed at scale 0.5
    cx, cy, w, h = priors[target] * 64 / 0.5
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(faces[0].box, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-3)
    with pytest.raises(ValueError):
        make_face_detector(tmp_path / "retinaface.pth")
