"""Reduced-precision ONNX variants, made on any machine (no GPU): ``model.fp16.onnx`` and ``model.int8.onnx``.

TensorRT 11 dropped the builder precision flags and implicit INT8 calibration: networks are strongly typed,
so the precision is written into the ONNX itself and the engine build just follows it (TensorRT 10 builds the
same files strongly typed too).

FP16: NVIDIA ModelOpt AutoCast converts the graph to mixed precision, keeping the float32 input and outputs
and, in float32, the numerically sensitive parts:
  * LayerNormalization (the variance of 256-wide tokens),
  * Softmax (attention; exp of float16 logits),
  * the AU-importance normalization of Eqs. 3-4 (nodes under ``/importance/``, aunet.model.art.AUImportance): a sum of
    dot products over 728 channels normalised by a squared norm, tiny differences of large numbers,
  * the score fusion and the heads' sigmoids (the output probability) stay float32 by AutoCast's I/O rule.
INT8: explicit Q/DQ from calibration is the calibration module's job (aunet.calibration.quantize, ModelOpt PTQ
with the same FP32-kept parts); this module only calls it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from aunet.faces.cache import is_face_cache
from aunet.spec import SpecError

from aunet.artifacts import ExportError, check_and_save_onnx, read_onnx_spec, write_onnx_spec

FP16_KEEP_OP_TYPES = ("LayerNormalization", "Softmax")
FP16_KEEP_NODES = (r".*/importance/.*",)  # regexes over node names (aunet.model.art.AUImportance's scope)


class PrecisionUnavailable(RuntimeError):
    """The tool a precision needs is not installed (ModelOpt for FP16, the calibration module for INT8)."""


class CalibrationInputError(ValueError):
    """Missing, unreadable or mismatched calibration data."""


def precision_path(onnx_path: str | os.PathLike, precision: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` / ``model.int8.onnx`` beside it."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{precision}{p.suffix}")


def make_fp16_onnx(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Convert an FP32 AUNet ONNX to mixed FP16 with AutoCast; FP32 I/O; write ``dst`` atomically."""
    import onnx

    src = Path(src)
    dst = Path(dst) if dst is not None else precision_path(src, "fp16")
    spec = read_onnx_spec(onnx.load(str(src), load_external_data=False))
    if spec.precision != "fp32":
        raise SpecError(f"{src} is already {spec.precision}: convert the FP32 export")
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError:
        raise PrecisionUnavailable("FP16 conversion needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]'") from None
    # AutoCast logs every decision at INFO and prints progress; keep the CLI's output to our own table.
    loggers = [logging.getLogger(n) for n in ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            model = convert_to_mixed_precision(
                onnx_path=str(src), low_precision_type="fp16", keep_io_types=True,
                op_types_to_exclude=list(FP16_KEEP_OP_TYPES), nodes_to_exclude=list(FP16_KEEP_NODES),
            )
    except Exception as exc:  # ModelOpt raises assertion and value errors alike
        raise ExportError(f"AutoCast FP16 conversion failed: {type(exc).__name__}: {exc}") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    kept = [n.name for n in model.graph.node
            if n.op_type != "Cast" and (n.op_type in FP16_KEEP_OP_TYPES or "/importance/" in n.name)]
    write_onnx_spec(model, spec.with_provenance(
        precision="fp16", converted_with="modelopt.onnx.autocast (keep_io_types)",
        fp32_kept={"op_types": list(FP16_KEEP_OP_TYPES), "node_patterns": list(FP16_KEEP_NODES),
                   "nodes": len(kept)},
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
    ))
    return check_and_save_onnx(model, dst)


def make_int8_onnx(src: str | os.PathLike, calib: str | os.PathLike | None, dst: str | os.PathLike | None = None,
                   log=lambda line: None) -> Path:
    """Explicit Q/DQ INT8 ONNX for TensorRT, quantized to the default accuracy target by the calibration module
    (aunet.calibration.target: methods compared, sensitive nodes kept in higher precision, judged on held-out
    videos). The judgement goes into the ONNX's spec, where the engine build reads it.

    ``calib``: an aunet-prep face cache folder (split by video), or a calibration set (``calib.npz`` +
    ``calib.json``) drawn from one (its videos calibrate, the cache's others judge)."""
    import onnx

    src = Path(src)
    dst = Path(dst) if dst is not None else precision_path(src, "int8")
    try:
        from aunet.calibration.dataset import CalibrationError
        from aunet.calibration.isolation import ChildCrashed
        from aunet.calibration.quantize import QuantizeError
        from aunet.calibration.target import judged_source, quantize_to_target
    except ImportError:
        raise PrecisionUnavailable("INT8 needs the calibration module (aunet.calibration.quantize), "
                                   "which this build does not have") from None
    if calib is None:
        raise CalibrationInputError("INT8 needs calibration data: pass --calib with a face cache folder "
                                    "(or a calib.npz drawn from one)")
    spec = read_onnx_spec(onnx.load(str(src), load_external_data=False))
    if spec.precision != "fp32":
        raise SpecError(f"{src} is already {spec.precision}: quantize the FP32 export")
    calib = Path(calib)
    try:
        data = judged_source(calib, None)
        given = None if is_face_cache(calib) else calib
        quantize_to_target(src, dst, data=data, target="tensorrt", calib=given, speed=False, log=log)
        return dst
    except CalibrationError as exc:
        raise CalibrationInputError(str(exc)) from None
    except (QuantizeError, ChildCrashed) as exc:
        raise ExportError(str(exc)) from None


__all__ = ["FP16_KEEP_NODES", "FP16_KEEP_OP_TYPES", "CalibrationInputError", "PrecisionUnavailable", "make_fp16_onnx",
           "make_int8_onnx", "precision_path"]
