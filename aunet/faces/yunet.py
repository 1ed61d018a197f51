"""YuNet (OpenCV Zoo, MIT) as ONNX, run by ONNX Runtime, decoded in numpy (torch-free).

The weights are not on PyPI: download ``face_detection_yunet_2026may.onnx`` from the OpenCV Zoo repository
(models/face_detection_yunet) and pass the file. Known releases are pinned by sha256 below; another file is
run with a warning.

The network, as OpenCV's FaceDetectorYN runs it:

    input   float32 [1, 3, H, W] BGR, 0-255, no normalization; H and W multiples of 32 (the frame padded at the
            right and bottom, or letterboxed into a fixed input size)
    cls_s, obj_s   [1, (H/s)(W/s), 1]   class and objectness probabilities, s = 8, 16, 32
    bbox_s         [1, (H/s)(W/s), 4]   (dx, dy, log w, log h) in units of s, per grid cell (row-major)
    kps_s          [1, (H/s)(W/s), 10]  5 landmarks (dx, dy) in units of s

Decoding, for the cell at (row, col) of stride s: score = sqrt(clip(cls) * clip(obj)); box centre
((col + dx) s, (row + dy) s), size (exp(log w) s, exp(log h) s); landmark ((col + dx) s, (row + dy) s).
Suppression: greedy NMS at IoU 0.3 with score threshold 0.9 (FaceDetectorYN's defaults): YuNet scores are not
averaged the way MediaPipe's anchors are, and its boxes come from a single cell.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from aunet.faces.base import DetectorModelError, Face, _check_rgb, largest_first
from aunet.faces.onnx_detector import YUNET_OUTPUTS, DetectorSpec, letterbox, open_session
from aunet.faces.retinaface import DETECTOR_METADATA_KEY, nms

FAMILY = "yunet"
STRIDES = (8, 16, 32)
# Releases of face_detection_yunet_*.onnx this build was checked against: sha256 -> (file name, bytes).
KNOWN_RELEASES = {
    "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0": ("face_detection_yunet_2026may.onnx", 229_738),
}
WHERE = "OpenCV Zoo, models/face_detection_yunet (face_detection_yunet_2026may.onnx)"
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")
DEFAULT_MAX_SIDE = 640  # a dynamic-size YuNet runs on the frame shrunk to this longer side


class UnknownYuNetWarning(UserWarning):
    """A YuNet file whose hash is not among the releases this build was checked against."""


def default_spec(input_size: Optional[tuple[int, int]], sha256: str = "") -> DetectorSpec:
    return DetectorSpec(family=FAMILY, input_size=input_size, stride=max(STRIDES), score_threshold=0.9,
                        nms="greedy", nms_iou=0.3, sha256=sha256, source=KNOWN_RELEASES.get(sha256, (WHERE,))[0])


def decode(outputs: dict[str, np.ndarray], input_hw: tuple[int, int], spec: DetectorSpec
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's 12 outputs for one input of ``input_hw`` (height, width) -> (boxes xyxy [M, 4], scores [M],
    landmarks [M, 5, 2]) in input pixels, after the threshold and NMS."""
    h, w = input_hw
    boxes, scores, points = [], [], []
    for s in STRIDES:
        rows, cols = h // s, w // s
        cls, obj = (np.asarray(outputs[f"{k}_{s}"], np.float32).reshape(-1) for k in ("cls", "obj"))
        bbox = np.asarray(outputs[f"bbox_{s}"], np.float32).reshape(-1, 4)
        kps = np.asarray(outputs[f"kps_{s}"], np.float32).reshape(-1, 10)
        if not len(cls) == len(obj) == len(bbox) == len(kps) == rows * cols:
            raise DetectorModelError(f"YuNet output at stride {s} has {len(cls)} cells, a {h}x{w} input has "
                                     f"{rows * cols}: is the input a multiple of 32?")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.flatnonzero(score >= spec.score_threshold)
        cells = np.stack([keep % cols, keep // cols], 1).astype(np.float32)  # (col, row)
        centre = (cells + bbox[keep, :2]) * s
        size = np.exp(bbox[keep, 2:]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], 1))
        scores.append(score[keep])
        points.append((kps[keep].reshape(-1, 5, 2) + cells[:, None]) * s)
    boxes_, scores_, points_ = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
    kept = nms(boxes_, scores_, spec.nms_iou)
    return boxes_[kept], scores_[kept], points_[kept]


class YuNetOnnx:
    """YuNet through ONNX Runtime. An input with a fixed size is letterboxed into it; a dynamic one runs on the
    frame shrunk to ``max_side`` and padded at the right and bottom to a multiple of 32, as FaceDetectorYN does.
    ``min_score`` overrides the spec's score threshold (0.9)."""

    landmark_names = LANDMARK_NAMES

    def __init__(self, model: str | Path, device: str = "auto", threads: Optional[int] = None,
                 min_score: Optional[float] = None, max_side: int = DEFAULT_MAX_SIDE):
        from aunet.artifacts import file_sha256

        path = Path(model)
        self._session = open_session(path, device, threads)
        names = [o.name for o in self._session.get_outputs()]
        missing = [n for n in YUNET_OUTPUTS if n not in names]
        if missing:
            raise DetectorModelError(f"{path.name} lacks YuNet's outputs {missing}")
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        if len(inp.shape) != 4:
            raise DetectorModelError(f"{path.name}: YuNet's input is [1, 3, H, W], this one is {inp.shape}")
        fixed = tuple(inp.shape[2:]) if all(isinstance(v, int) and v > 0 for v in inp.shape[2:]) else None
        meta = self._session.get_modelmeta().custom_metadata_map
        sha = file_sha256(path)
        if DETECTOR_METADATA_KEY in meta:
            self.spec = DetectorSpec.from_dict(json.loads(meta[DETECTOR_METADATA_KEY]))
            if self.spec.family != FAMILY:
                raise DetectorModelError(f"{path.name} is a {self.spec.family} detector, not {FAMILY}")
        else:
            self.spec = default_spec(fixed, sha)  # validates a fixed size against the stride
        if sha not in KNOWN_RELEASES and self.spec.sha256 not in KNOWN_RELEASES:
            warnings.warn(f"{path.name} (sha256 {sha[:12]}...) is not a YuNet release this build was checked "
                          f"against ({', '.join(n for n, _ in KNOWN_RELEASES.values())}, from {WHERE}); its "
                          "outputs are decoded as YuNet's", UnknownYuNetWarning, stacklevel=2)
        if fixed is not None and self.spec.input_size not in (None, fixed):
            raise DetectorModelError(f"{path.name}: spec input {self.spec.input_size}, network input {fixed}")
        if min_score is not None:
            self.spec = dataclasses.replace(self.spec, score_threshold=float(min_score))
        self._fixed = fixed
        self.max_side = int(max_side)
        self.name = self.spec.name

    def detect(self, rgb: np.ndarray) -> list[Face]:
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if self._fixed is not None:
            canvas, scale, _ = letterbox(rgb, self._fixed)
        else:
            scale = min(1.0, self.max_side / max(h, w))
            small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                        interpolation=cv2.INTER_AREA)
            ph, pw = (-(-v // 32) * 32 for v in small.shape[:2])
            canvas = np.zeros((ph, pw, 3), np.uint8)
            canvas[:small.shape[0], :small.shape[1]] = small
        x = np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1)[None], np.float32)
        outputs = dict(zip([o.name for o in self._session.get_outputs()], self._session.run(None, {self._input: x})))
        boxes, scores, points = decode(outputs, canvas.shape[:2], self.spec)
        boxes = np.clip(boxes / scale, 0, [w, h, w, h]).astype(np.float32)
        points = (points / scale).astype(np.float32)
        return largest_first([Face(b, float(s), p) for b, s, p in zip(boxes, scores, points)
                              if b[2] > b[0] and b[3] > b[1]])
