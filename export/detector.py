"""RetinaFace -> ONNX (and a TensorRT engine) so that an edge box detects faces without torch.

The network is aunet.faces.retinaface_net.RetinaFace (Pytorch_Retinaface layout, its weight files), exported as the
runtime's RetinaFaceOnnx (aunet/runtime/detect.py) expects it, at one fixed input size:

    image   float32 [1, 3, H, W]: BGR minus the mean (104, 117, 123), no scaling (Pytorch_Retinaface's input)
    loc     float32 [1, P, 4]  box offsets from the priors
    conf    float32 [1, P, 2]  softmax over (background, face)
    landms  float32 [1, P, 10] five landmark offsets from the priors

Priors, in the heads' order: for each level (stride 8, 16, 32; anchor sizes (16, 32), (64, 128), (256, 512)),
for each row i < ceil(H / stride), column j < ceil(W / stride), for each size s: centre
((j + 0.5) stride / W, (i + 0.5) stride / H), size (s / W, s / H). Decoding (variances 0.1, 0.2):
centre = prior_c + loc[:2] 0.1 prior_s, size = prior_s exp(0.2 loc[2:]), landmark = prior_c + landms 0.1 prior_s,
in [0, 1] of the input. The metadata key ``aunet.detector`` carries these numbers (RetinaFaceConfig fields).
"""
from __future__ import annotations

import inspect
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

DETECTOR_METADATA_KEY = "aunet.detector"
OUTPUTS = ("loc", "conf", "landms")


class DetectorUnavailable(RuntimeError):
    """The RetinaFace network is not part of this build."""


def detector_graph(net: Any) -> Any:
    """RetinaFace with two-class softmax scores (the network's forward returns only the face column)."""
    import torch

    class DetectorGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor):
            loc, face, landms = self.net(image)
            return loc, torch.stack([1.0 - face, face], -1), landms

    return DetectorGraph().eval()


def detector_metadata(network: str, size: int, weights: Path, opset: int) -> dict[str, Any]:
    from aunet.faces.retinaface_net import ANCHORS, RetinaFaceDetector

    from aunet.artifacts import file_sha256
    from .onnx_export import exporter_versions

    defaults = inspect.signature(RetinaFaceDetector.__init__).parameters  # the thresholds aunet-prep uses
    return {
        "network": f"retinaface-{network}", "input_size": [size, size], "mean_bgr": list(ANCHORS.mean_bgr),
        "min_sizes": [list(m) for m in ANCHORS.min_sizes], "steps": list(ANCHORS.steps), "variance": list(ANCHORS.variance),
        "output_names": list(OUTPUTS), "score_threshold": defaults["min_score"].default,
        "nms_iou": defaults["nms_iou"].default, "input": "image", "layout": "NCHW",
        "color": "BGR minus mean_bgr, 0..255 scale",
        "provenance": {"weights": weights.name, "weights_sha256": file_sha256(weights), "opset": opset,
                       "versions": exporter_versions()},
    }


def load_retinaface(weights: str | os.PathLike) -> tuple[Any, str]:
    """(RetinaFace in eval mode, network name) from a Pytorch_Retinaface weight file."""
    try:
        from aunet.faces.retinaface_net import RetinaFace, load_state
    except ImportError:
        raise DetectorUnavailable("the RetinaFace network (aunet/retinaface.py) is not in this build") from None
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"RetinaFace weights not found: {weights}")
    network, state = load_state(weights)  # DependencyError (ValueError-free) for a foreign file
    net = RetinaFace(network)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights}: weights do not fit RetinaFace-{network}: {str(exc).splitlines()[0]}") from None
    return net.eval(), network


def export_detector(weights: str | os.PathLike, out_path: str | os.PathLike, *, size: int = 640,
                    opset: int = 17) -> Path:
    """Export RetinaFace at a fixed ``size`` x ``size`` input (raw heads; decoding documented above)."""
    import onnx
    import torch

    from aunet.artifacts import check_and_save_onnx

    net, network = load_retinaface(weights)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript exporter by choice (docs/export.md)
        torch.onnx.export(detector_graph(net), (torch.zeros(1, 3, size, size),), buf, dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=list(OUTPUTS),
                          do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    entry = model.metadata_props.add()
    entry.key = DETECTOR_METADATA_KEY
    entry.value = json.dumps(detector_metadata(network, size, Path(weights), opset), sort_keys=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return check_and_save_onnx(model, out_path)


def read_detector_meta(onnx_path: str | os.PathLike) -> dict[str, Any]:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    if DETECTOR_METADATA_KEY not in props:
        raise ValueError(f"{onnx_path} is not a detector exported by `aunet-export detector`")
    return json.loads(props[DETECTOR_METADATA_KEY])


def build_detector_engine(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, *, workspace_gb: float = 2.0,
                          timing_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """A TensorRT engine of the detector ONNX (its one fixed shape) and its sidecar ``<engine>.json``."""
    from .tensorrt_build import build_serialized, write_plan

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    meta = read_detector_meta(onnx_path)
    shape = (1, 3, *meta["input_size"])  # fixed: min = opt = max
    engine, tied_to = build_serialized(onnx_path, meta["input"], (shape, shape, shape), workspace_gb=workspace_gb,
                                       timing_cache=timing_cache)
    sidecar = {"format": "aunet-detector-plan", "detector": meta, **tied_to, "onnx": onnx_path.name}
    write_plan(plan_path, engine, sidecar)
    return sidecar


__all__ = ["DETECTOR_METADATA_KEY", "DetectorUnavailable", "build_detector_engine", "detector_graph",
           "export_detector", "load_retinaface", "read_detector_meta"]
