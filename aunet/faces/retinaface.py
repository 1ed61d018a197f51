"""RetinaFace as ONNX (torch-free): the network made by `aunet-export detector`, run by ONNX Runtime.

The RetinaFace path is torch-free: ONNX Runtime runs the network made by ``aunet-export detector``; prior
boxes, box decoding and non-maximum suppression are numpy. Its defaults are Pytorch_Retinaface's
mobilenet0.25 configuration (BGR input minus (104, 117, 123), priors of sizes 16/32, 64/128, 256/512 on strides
8/16/32, variances 0.1/0.2, softmax scores); the ONNX's ``aunet.detector`` metadata JSON overrides them.
"""
from __future__ import annotations

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


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first."""
    x1, y1, x2, y2 = boxes.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


class RetinaFaceOnnx:
    """RetinaFace exported by ``aunet-export detector``: letterboxed to the fixed input, decoded in numpy."""

    name = "retinaface-onnx"

    def __init__(self, path: str | Path, device: str = "auto"):
        import onnxruntime as ort

        from aunet.backends import ort_providers

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"detector model not found: {path}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), opts, providers=ort_providers(device))
        meta = self._session.get_modelmeta().custom_metadata_map
        self.cfg = RetinaFaceConfig.from_metadata(meta.get(DETECTOR_METADATA_KEY))
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


