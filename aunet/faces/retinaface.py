"""RetinaFace as ONNX (torch-free): the network made by `aunet-export detector`, run by ONNX Runtime.

The RetinaFace path is torch-free: ONNX Runtime runs the network made by ``aunet-export detector``; prior
boxes, box decoding and non-maximum suppression are numpy. Its defaults are Pytorch_Retinaface's
mobilenet0.25 configuration (BGR input minus (104, 117, 123), priors of sizes 16/32, 64/128, 256/512 on strides
8/16/32, variances 0.1/0.2, softmax scores); the ONNX's ``aunet.detector`` metadata JSON overrides them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from aunet.faces.base import Face, largest_first

DETECTOR_METADATA_KEY = "aunet.detector"


# --- RetinaFace (ONNX) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetinaFaceConfig:
    input_size: tuple[int, int] = (640, 640)  # (height, width) of the exported network's fixed input
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variance: tuple[float, float] = (0.1, 0.2)
    output_names: tuple[str, str, str] = ("loc", "conf", "landms")
    score_threshold: float = 0.6
    nms_iou: float = 0.4

    @classmethod
    def from_metadata(cls, text: Optional[str]) -> "RetinaFaceConfig":
        if not text:
            return cls()
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("input_size", "mean_bgr", "steps", "variance", "output_names"):
            if key in known:
                known[key] = tuple(known[key])
        if "min_sizes" in known:
            known["min_sizes"] = tuple(tuple(m) for m in known["min_sizes"])
        return cls(**known)


def prior_boxes(cfg: RetinaFaceConfig) -> np.ndarray:
    """Anchor centres and sizes [P, 4] (cx, cy, w, h), normalized to the input, in Pytorch_Retinaface order."""
    h, w = cfg.input_size
    out = []
    for step, sizes in zip(cfg.steps, cfg.min_sizes):
        fh, fw = -(-h // step), -(-w // step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = ((xs + 0.5) * step / w).ravel()
        cy = ((ys + 0.5) * step / h).ravel()
        per_cell = [np.stack([cx, cy, np.full_like(cx, s / w), np.full_like(cy, s / h)], 1) for s in sizes]
        out.append(np.stack(per_cell, 1).reshape(-1, 4))  # anchors of one cell are adjacent
    return np.concatenate(out).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variance: tuple[float, float]) -> np.ndarray:
    """SSD box decoding: offsets [P, 4] relative to the priors -> xyxy normalized to the input."""
    centre = priors[:, :2] + loc[:, :2] * variance[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * variance[1])
    return np.concatenate([centre - size / 2, centre + size / 2], 1)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box [4] with each of ``boxes`` [N, 4]."""
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    own = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    return inter / np.maximum(own + area - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, iou: float, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's weighted suppression: each detection, best first, absorbs the ones overlapping it by more
    than ``iou`` and becomes their score-weighted mean box (and landmarks ``points`` [N, K, 2]), keeping its own
    score. -> (boxes [M, 4], scores [M], points [M, K, 2] or None), best score first."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_scores, out_points = [], [], []
    while order.size:
        overlap = box_iou(boxes[order[0]], boxes[order])  # the best one overlaps itself fully
        group = order[overlap > iou]
        weights = scores[group] / max(float(scores[group].sum()), 1e-12)
        out_boxes.append(weights @ boxes[group])
        out_scores.append(scores[order[0]])
        if points is not None:
            out_points.append(np.tensordot(weights, points[group], axes=1))
        order = order[overlap <= iou]
    if not out_boxes:
        return np.zeros((0, 4), boxes.dtype), np.zeros(0, scores.dtype), None if points is None else points[:0]
    return (np.stack(out_boxes), np.asarray(out_scores), None if points is None else np.stack(out_points))


class RetinaFaceOnnx:
    """RetinaFace exported by ``aunet-export detector``: letterboxed to the fixed input, decoded in numpy."""

    name = "retinaface-onnx"

    def __init__(self, path: str | Path, device: str = "auto", threads: Optional[int] = None,
                 min_score: Optional[float] = None):
        from aunet.faces.onnx_detector import open_session

        self._session = open_session(Path(path), device, threads)
        meta = self._session.get_modelmeta().custom_metadata_map
        self.cfg = RetinaFaceConfig.from_metadata(meta.get(DETECTOR_METADATA_KEY))
        if min_score is not None:
            self.cfg = dataclasses.replace(self.cfg, score_threshold=float(min_score))
        self._input = self._session.get_inputs()[0].name
        self._priors = prior_boxes(self.cfg)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        ih, iw = self.cfg.input_size
        h, w = rgb.shape[:2]
        scale = min(iw / w, ih / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((ih, iw, 3), np.float32)  # letterbox: pad right/bottom, keep the aspect ratio
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)[..., ::-1]
        canvas -= np.asarray(self.cfg.mean_bgr, np.float32)
        outputs = dict(zip(
            [o.name for o in self._session.get_outputs()],
            self._session.run(None, {self._input: canvas.transpose(2, 0, 1)[None]}),
        ))
        loc, conf = (outputs[n][0] for n in self.cfg.output_names[:2])
        return faces_from_outputs(loc, conf, self._priors, self.cfg, scale, (w, h))


def faces_from_outputs(
    loc: np.ndarray,
    conf: np.ndarray,
    priors: np.ndarray,
    cfg: RetinaFaceConfig,
    scale: float,
    frame_wh: tuple[int, int],
) -> list[Face]:
    """RetinaFace outputs of one image (loc [P, 4], conf [P, 2]) -> faces in frame pixels, largest first.

    ``scale`` is the letterbox factor frame -> network input (the padding is at the right and bottom).
    """
    scores = conf[:, 1]
    keep = scores >= cfg.score_threshold
    if not keep.any():
        return []
    ih, iw = cfg.input_size
    boxes = decode_boxes(loc[keep], priors[keep], cfg.variance) * np.asarray([iw, ih, iw, ih]) / scale
    scores = scores[keep]
    kept = nms(boxes, scores, cfg.nms_iou)
    fw, fh = frame_wh
    boxes = np.clip(boxes[kept], 0, [fw, fh, fw, fh])
    return largest_first([Face(b.astype(np.float32), float(s)) for b, s in zip(boxes, scores[kept])])


