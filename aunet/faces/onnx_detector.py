"""What learned face detectors as ONNX share: the detector spec in the ONNX metadata, the ONNX Runtime session,
the letterbox, and telling an ONNX's family (torch-free).

The detector spec is a small JSON under the ONNX ``metadata_props`` key ``aunet.detector`` (the key RetinaFace
exports already use): family, input size and stride, score threshold, NMS, and the sha256 of the weights it
was made from. Prep records it in the face cache and the runtime reports it, so a training crop and a
deployment crop can be traced to the same detector.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from aunet.faces.base import DependencyError, DetectorModelError
from aunet.faces.retinaface import DETECTOR_METADATA_KEY

DETECTOR_SPEC_VERSION = 1
FAMILIES = ("blazeface-full-range", "yunet", "retinaface")
YUNET_OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32))
RETINAFACE_OUTPUTS = ("loc", "conf", "landms")


@dataclass(frozen=True)
class DetectorSpec:
    """How to run and decode a learned face detector."""

    family: str  # one of FAMILIES
    input_size: Optional[tuple[int, int]]  # (height, width) of the network input; None: any multiple of stride
    stride: int  # the input's sides must be multiples of it (the coarsest feature map's stride)
    score_threshold: float
    nms: str = "greedy"  # "greedy" (keep the best box) or "weighted" (MediaPipe: score-weighted mean box)
    nms_iou: float = 0.3
    sha256: str = ""  # of the weights the ONNX was made from (the .tflite for BlazeFace, the file for YuNet)
    source: str = ""  # where those weights come from
    spec_version: int = DETECTOR_SPEC_VERSION

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise DetectorModelError(f"unknown face-detector family {self.family!r}; "
                                     f"this build runs {', '.join(FAMILIES)}")
        if self.stride < 1 or (self.input_size is not None and any(int(v) % self.stride or int(v) <= 0
                                                                   for v in self.input_size)):
            raise DetectorModelError(f"{self.family}: input size {self.input_size} is not a positive multiple of "
                                     f"the network's stride {self.stride}")
        if self.nms not in ("greedy", "weighted"):
            raise DetectorModelError(f"unknown NMS {self.nms!r} (greedy or weighted)")

    @property
    def name(self) -> str:
        """The detector's name as a face cache and a result record it: family and the first 12 hex of its hash."""
        return f"{self.family}@{self.sha256[:12]}" if self.sha256 else self.family

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DetectorSpec":
        try:
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            if known.get("input_size") is not None:
                known["input_size"] = tuple(int(v) for v in known["input_size"])
            return cls(**known)
        except DetectorModelError:
            raise
        except (TypeError, ValueError) as exc:
            raise DetectorModelError(f"malformed face-detector spec: {exc}") from None


def write_detector_spec(model: Any, spec: DetectorSpec) -> None:
    """Set (or replace) the detector spec in an onnx.ModelProto's metadata."""
    for i in reversed(range(len(model.metadata_props))):
        if model.metadata_props[i].key == DETECTOR_METADATA_KEY:
            del model.metadata_props[i]
    entry = model.metadata_props.add()
    entry.key, entry.value = DETECTOR_METADATA_KEY, spec.to_json()


def detector_family(metadata: Mapping[str, str], output_names: list[str]) -> str:
    """The family of a detector ONNX: its spec's ``family``; without one, told by its output names (YuNet files
    from OpenCV Zoo, RetinaFace from ``aunet-export detector`` before it wrote a family). Raises
    DetectorModelError when neither tells."""
    text = metadata.get(DETECTOR_METADATA_KEY)
    if text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DetectorModelError(f"face-detector metadata is not valid JSON: {exc}") from None
        family = data.get("family") if isinstance(data, dict) else None
        network = str(data.get("network", "retinaface")) if isinstance(data, dict) else ""
        if family is None and network.startswith("retinaface"):  # written before detector specs had a family
            return "retinaface"
        if family not in FAMILIES:
            raise DetectorModelError(f"unknown face-detector family {family!r}; this build runs {', '.join(FAMILIES)}")
        return family
    if set(YUNET_OUTPUTS) <= set(output_names):
        return "yunet"
    if set(RETINAFACE_OUTPUTS) <= set(output_names):
        return "retinaface"
    raise DetectorModelError(
        f"not a face detector this build knows: no {DETECTOR_METADATA_KEY!r} metadata, and outputs {output_names} are "
        f"neither YuNet's ({', '.join(YUNET_OUTPUTS[:4])}, ...) nor RetinaFace's ({', '.join(RETINAFACE_OUTPUTS)})")


def open_session(model: str | Path | bytes, device: str = "auto", threads: Optional[int] = None):
    """An ONNX Runtime session on ``model`` (a path or the serialized bytes), on ``device``'s providers;
    ``threads`` caps its intra-op threads (None: ONNX Runtime's default, one per core)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DependencyError("learned face detectors need onnxruntime (pip install 'aunet[trt-system]' or "
                              "onnxruntime)") from None
    from aunet.backends import ort_providers

    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise FileNotFoundError(f"detector model not found: {model}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    try:
        return ort.InferenceSession(source, opts, providers=ort_providers(device))
    except (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf) as exc:
        raise DetectorModelError(f"ONNX Runtime cannot load the detector: {str(exc).splitlines()[0]}") from None


def letterbox(rgb: np.ndarray, size: tuple[int, int],
              centre: bool = False) -> tuple[np.ndarray, float, tuple[int, int]]:
    """``rgb`` resized to fit ``size`` (height, width), aspect ratio kept, on a black canvas ->
    (canvas uint8, scale frame -> canvas, (pad_x, pad_y) where the frame starts). The padding is at the right and
    bottom, or split around the frame with ``centre`` (how MediaPipe letterboxes)."""
    ih, iw = size
    h, w = rgb.shape[:2]
    scale = min(iw / w, ih / h)
    nw, nh = max(1, min(iw, round(w * scale))), max(1, min(ih, round(h * scale)))
    px, py = ((iw - nw) // 2, (ih - nh) // 2) if centre else (0, 0)
    canvas = np.zeros((ih, iw, 3), np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[py:py + nh, px:px + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp)
    return canvas, scale, (px, py)
