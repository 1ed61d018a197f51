"""INT8 sensitivity scan: rank the quantizable nodes by the output error that quantizing each one alone causes.

For each Conv/MatMul/Gemm node of the FP32 graph, a variant quantizes only that node the way TensorRT runs it
in INT8 — symmetric per-tensor activations (scale = calibrated amax / 127, as Q/DQ nodes) and symmetric
per-output-channel weights (rounded in place) — and is run on a few calibration crops with ONNX Runtime's CPU
provider. The ranking (JSON) feeds ``--exclude`` of the quantizer: the top nodes stay in FP32. Xception's
depthwise convolutions are the usual suspects; the scan measures rather than assumes.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from aunet.spec import fake_probability

from .dataset import CalibrationSet
from .quantize import (
    QUANTIZED_OPS,
    activation_ranges,
    excluded_node_names,
    load_onnx_with_spec,
)


@dataclass
class NodeSensitivity:
    name: str
    op_type: str
    depthwise: bool
    quantized_inputs: int  # 0: nothing of this node could be quantized (no calibrated range, no weight)
    score_max_abs: float  # fake-probability error
    cls_max_abs: float
    patch_prob_mean_abs: float
    score_mean_abs: float = 0.0  # mean change of the fused score


RANK_KEYS = ("score_max_abs", "score_mean_abs")


def _weight_axis(node, weight: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else weight.ndim - 1
    return weight.ndim - 1  # MatMul: x @ W, W [in, out]


def fake_quant_weight(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric int8 per-channel quantize-dequantize."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)


def quantize_single_node(proto, node_name: str, ranges: dict[str, float]):
    """(a copy of ``proto`` in which only ``node_name`` runs in simulated INT8, number of inputs quantized)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    new_nodes, count = [], 0
    for idx, name in enumerate(list(node.input[:2])):
        if not name:
            continue
        if name in inits:  # weight: bake the per-channel rounding in
            w = numpy_helper.to_array(inits[name])
            if w.ndim >= 2:
                inits[name].CopyFrom(numpy_helper.from_array(fake_quant_weight(w, _weight_axis(node, w)), name))
                count += 1
        elif name in ranges:  # activation: Q/DQ with the calibrated scale
            tag = f"{node_name}/sens_{idx}"
            model.graph.initializer.extend([
                numpy_helper.from_array(np.asarray(max(ranges[name], 1e-12) / 127.0, np.float32), f"{tag}/scale"),
                numpy_helper.from_array(np.asarray(0, np.int8), f"{tag}/zp"),
            ])
            new_nodes += [
                helper.make_node("QuantizeLinear", [name, f"{tag}/scale", f"{tag}/zp"], [f"{tag}/q"], name=f"{tag}/Q"),
                helper.make_node("DequantizeLinear", [f"{tag}/q", f"{tag}/scale", f"{tag}/zp"], [f"{tag}/dq"], name=f"{tag}/DQ"),
            ]
            node.input[idx] = f"{tag}/dq"
            count += 1
    position = list(model.graph.node).index(node)
    for offset, extra in enumerate(new_nodes):
        model.graph.node.insert(position + offset, extra)
    return model, count


def _is_depthwise(node) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return node.op_type == "Conv" and group > 1


def scan(
    onnx_path: str | os.PathLike,
    calib: CalibrationSet,
    *,
    num_images: int = 16,
    method: str = "max",
    max_nodes: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    exclude: Sequence[str] = (),
    rank_by: str = "score_max_abs",
    ranges_from: Optional[CalibrationSet] = None,
) -> list[NodeSensitivity]:
    """Rank the quantizable nodes of ``onnx_path`` (FP32) by output error, most sensitive first.

    Each variant runs on the first ``num_images`` crops of ``calib``; activation ranges come from
    ``ranges_from`` (default: those crops). ``exclude``: names or regexes already kept in FP32 (not scanned).
    ``rank_by``: the largest change of the fused score (``score_max_abs``) or its mean (``score_mean_abs``)."""
    import onnxruntime as ort

    if rank_by not in RANK_KEYS:
        raise ValueError(f"rank_by must be one of {RANK_KEYS}, got {rank_by!r}")
    proto, spec = load_onnx_with_spec(onnx_path)
    calib.check_spec(spec)
    kept_fp32 = set(excluded_node_names(proto, exclude))
    candidates = [n for n in proto.graph.node if n.op_type in QUANTIZED_OPS and n.name not in kept_fp32]
    if max_nodes is not None:
        candidates = candidates[:max_nodes]
    with warnings.catch_warnings():  # a small subset on purpose: the size warning is for calibration sets
        warnings.simplefilter("ignore")
        subset = CalibrationSet(images=calib.images[: max(num_images, 8)], crop=calib.crop, color=calib.color,
                                value_range=calib.value_range, provenance=calib.provenance)
    ranges = activation_ranges(onnx_path, ranges_from if ranges_from is not None else subset, spec.input_name, method)
    x = subset.model_inputs()
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def run(model_bytes: bytes) -> dict[str, np.ndarray]:
        sess = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return dict(zip(spec.output_names, sess.run(list(spec.output_names), {spec.input_name: x}), strict=True))

    ref = run(proto.SerializeToString())
    p_ref = fake_probability(ref["patch_logits"])
    results = []
    for i, node in enumerate(candidates):
        variant, count = quantize_single_node(proto, node.name, ranges)
        out = run(variant.SerializeToString())
        results.append(NodeSensitivity(
            name=node.name, op_type=node.op_type, depthwise=_is_depthwise(node), quantized_inputs=count,
            score_max_abs=float(np.abs(out["score"] - ref["score"]).max()),
            score_mean_abs=float(np.abs(out["score"] - ref["score"]).mean()),
            cls_max_abs=float(np.abs(out["cls_logits"] - ref["cls_logits"]).max()),
            patch_prob_mean_abs=float(np.abs(fake_probability(out["patch_logits"]) - p_ref).mean()),
        ))
        if progress:
            progress(i + 1, len(candidates))
    return sorted(results, key=lambda r: (getattr(r, rank_by), r.patch_prob_mean_abs), reverse=True)


def save_scan(path: str | os.PathLike, results: list[NodeSensitivity], **meta) -> Path:
    import json

    from aunet.io import atomic_write_text

    atomic_write_text(path, json.dumps({"meta": meta, "nodes": [asdict(r) for r in results]}, indent=2))
    return Path(path)


def exclusions_from_scan(path: str | os.PathLike, top: int) -> list[str]:
    """The ``top`` most sensitive node names of a saved scan (for the quantizer's ``exclude``)."""
    import json

    try:
        nodes = json.loads(Path(path).read_text())["nodes"]
        return [str(n["name"]) for n in nodes[:top]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable sensitivity scan {path}: {exc}") from None
