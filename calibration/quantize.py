"""Explicit INT8 quantization of an AUNet ONNX from a calibration set (no torch).

Two targets, one calibration set:
- ``tensorrt``: NVIDIA ModelOpt's ONNX PTQ — Q/DQ placed where TensorRT fuses them (inputs of Conv/MatMul,
  per-channel weights), high-precision parts kept in FP32. TensorRT 11 builds it strongly typed; TensorRT 10
  reads the same explicit Q/DQ.
- ``cpu``: ONNX Runtime's static QDQ quantization (u8 activations, s8 per-channel weights, Q/DQ on outputs too),
  which the CPU provider fuses into integer kernels; ModelOpt's TensorRT placement leaves ORT-CPU running
  DequantizeLinear + FP32 kernels, which is slower than FP32.
Both keep the numerically sensitive parts in FP32: the AU-importance normalization (the ``/importance/`` scope
of every ART encoder), LayerNormalization and Softmax, plus any node the caller excludes (e.g. from the
sensitivity scan).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from aunet.spec import ModelSpec

from .dataset import CalibrationSet
from .isolation import run_isolated

TARGETS = ("tensorrt", "cpu")
METHODS = ("entropy", "max", "percentile")
SENSITIVE_SCOPES = (r".*/importance/.*",)  # the AU-importance normalization, Eqs. 3-4
SENSITIVE_OPS = ("LayerNormalization", "Softmax")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
CALIB_BATCH = 8


class QuantizeError(RuntimeError):
    """Quantization could not produce an INT8 model."""


def load_onnx_with_spec(path: str | os.PathLike):
    import onnx

    from aunet.artifacts import read_onnx_spec

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors have many types
        raise QuantizeError(f"cannot read {path}: {type(exc).__name__}") from None
    return proto, read_onnx_spec(proto)


def excluded_node_names(proto, extra: Iterable[str] = ()) -> list[str]:
    """Names of the nodes kept in FP32: sensitive scopes and op types, plus ``extra`` (names or regexes)."""
    patterns = [re.compile(p) for p in (*SENSITIVE_SCOPES, *extra)]
    return [n.name for n in proto.graph.node
            if n.op_type in SENSITIVE_OPS or any(p.fullmatch(n.name) for p in patterns)]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a CalibrationSet, CALIB_BATCH crops at a time."""

    def __init__(self, calib: CalibrationSet, input_name: str):
        self.calib, self.input_name = calib, input_name
        # equal batches: ORT's histogram calibrators, as ModelOpt patches them, stack per-batch arrays
        n = len(calib)
        self.batch = max(b for b in range(1, CALIB_BATCH + 1) if n % b == 0)
        self.rewind()

    def get_next(self):
        if self.start >= len(self.calib):
            return None
        batch = {self.input_name: self.calib.model_inputs(self.start, self.start + self.batch)}
        self.start += self.batch
        return batch

    def rewind(self) -> None:
        self.start = 0


@contextlib.contextmanager
def _quiet(level: int = logging.WARNING) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("modelopt", "onnxruntime", "root")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


def write_trt_calibration_cache(path: str | os.PathLike, ranges: dict[str, float], header: str = "TRT-8501-EntropyCalibration2") -> None:
    """A TensorRT calibration cache (``tensor: big-endian float32 scale in hex``), scale = amax / 127.

    ModelOpt reads it (``calibration_cache_path``) and so does TensorRT <= 10's implicit INT8 calibrator."""
    import struct

    from aunet.io import atomic_write_text

    lines = [header] + [f"{name}: {struct.pack('!f', max(amax, 1e-12) / 127.0).hex()}" for name, amax in sorted(ranges.items())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def activation_ranges(onnx_path: str | os.PathLike, calib: CalibrationSet, input_name: str, method: str,
                      percentile: float = 99.99) -> dict[str, float]:
    """Per-tensor |activation| bound of the activation inputs of every Conv/MatMul/Gemm, by ORT's calibrators on
    the CPU provider. Runs in a fresh (spawned) process: importing ModelOpt patches ORT's calibrators for the
    rest of a process, and the patched histogram calibrators fail outside ModelOpt's own flow."""
    return run_isolated(_activation_ranges, str(onnx_path), calib, input_name, method, percentile,
                        what=f"{method} calibration of the activation ranges")


def _activation_ranges(onnx_path: str, calib: CalibrationSet, input_name: str, method: str,
                       percentile: float) -> dict[str, float]:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    kinds = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    options = {"symmetric": True, "percentile": percentile} if method == "percentile" else {"symmetric": True}
    if method == "entropy":  # with the default 128 bins the KL search has one candidate: the full range
        options.update(num_bins=ENTROPY_BINS, num_quantized_bins=128)
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(str(onnx_path), list(QUANTIZED_OPS), augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=kinds[method], extra_options=options)
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print their progress
            calibrator.collect_data(_Batches(calib, input_name))
            data = calibrator.compute_data()
    import onnx

    proto = onnx.load(str(onnx_path))
    weights = {t.name for t in proto.graph.initializer}
    # Only the activation inputs of the quantized ops: ModelOpt quantizes exactly the nodes whose inputs are cached.
    wanted = {i for n in proto.graph.node if n.op_type in QUANTIZED_OPS for i in n.input[:2] if i and i not in weights}
    return {name: float(max(abs(float(np.min(r.range_value[0]))), abs(float(np.max(r.range_value[1])))))
            for name, r in data.data.items() if name in wanted}


def quantize(
    onnx_path: str | os.PathLike,
    calib: CalibrationSet,
    out_path: str | os.PathLike,
    *,
    target: str = "tensorrt",
    method: str = "entropy",
    exclude: Sequence[str] = (),
    percentile: float = 99.99,
) -> Path:
    """Write the INT8 Q/DQ ONNX of ``onnx_path`` to ``out_path`` (atomically), with the spec re-embedded.

    ``exclude``: node names or regexes kept in FP32 (on top of the sensitive parts). The calibration set must
    match the model's spec (size, crop, colour, value range).
    """
    import onnx

    from aunet.artifacts import check_and_save_onnx, write_onnx_spec

    if target not in TARGETS:
        raise QuantizeError(f"target must be one of {TARGETS}, got {target!r}")
    if method not in METHODS:
        raise QuantizeError(f"calibration method must be one of {METHODS}, got {method!r}")
    proto, spec = load_onnx_with_spec(onnx_path)
    calib.check_spec(spec)
    excluded = excluded_node_names(proto, exclude)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "int8.onnx"
        # In a fresh child process: importing ModelOpt patches ONNX Runtime's calibrators for the rest of a
        # process, so a CPU quantization after a TensorRT one in the same process would fail.
        run_isolated(_run_quantizer, target, Path(onnx_path), calib, spec, tmp_out, method, excluded, percentile,
                     Path(tmp), what=f"{target} INT8 quantization ({method})")
        qproto = onnx.load(str(tmp_out))
    num_q = sum(n.op_type == "QuantizeLinear" for n in qproto.graph.node)
    if num_q == 0:
        raise QuantizeError("quantization inserted no Q/DQ nodes")
    qspec = spec.with_provenance(
        precision="int8", int8_target=target, calibration={
            "method": method, "num_images": len(calib), "percentile": percentile if method == "percentile" else None,
            "source": calib.provenance.get("source"), "excluded_nodes": len(excluded), "quantize_linear_nodes": num_q,
        })
    write_onnx_spec(qproto, qspec)
    return check_and_save_onnx(qproto, out_path)


def _run_quantizer(target: str, src: Path, calib: CalibrationSet, spec: ModelSpec, out: Path, method: str,
                   excluded: list[str], percentile: float, tmp: Path) -> None:
    """The quantizer of ``target``, quiet; its many exception types become one QuantizeError."""
    with _quiet(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            if target == "tensorrt":
                _quantize_modelopt(src, calib, spec, out, method, excluded, percentile, tmp)
            else:
                _quantize_ort_cpu(src, calib, spec, out, method, excluded, percentile, tmp)
        except QuantizeError:
            raise
        except Exception as exc:  # quantizers raise many types; no artifact is written
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise QuantizeError(f"{target} INT8 quantization failed: {type(exc).__name__}: {first}") from None


def _quantize_modelopt(src: Path, calib: CalibrationSet, spec: ModelSpec, out: Path, method: str,
                       excluded: list[str], percentile: float, tmp: Path) -> None:
    import modelopt.onnx.quantization as mq

    # ModelOpt calibrates with entropy or max; for percentile it places Q/DQ with max ranges and the activation
    # scales are then replaced by percentile ranges from ORT's calibrator.
    ranges = activation_ranges(src, calib, spec.input_name, "percentile", percentile) if method == "percentile" else None
    mq.quantize(
        str(src), quantize_mode="int8", calibration_data={spec.input_name: calib.model_inputs()},
        calibration_method="max" if method == "percentile" else method, calibration_eps=["cpu"],
        nodes_to_exclude=[f"^{re.escape(n)}$" for n in excluded], op_types_to_exclude=list(SENSITIVE_OPS),
        high_precision_dtype="fp32", output_path=str(out), log_level="WARNING",
    )
    if ranges:
        import onnx

        proto = onnx.load(str(out))
        replaced = set_activation_scales(proto, ranges)
        if not replaced:
            raise QuantizeError("no activation Q/DQ matched the percentile ranges")
        onnx.save(proto, str(out))


def set_activation_scales(proto, ranges: dict[str, float]) -> int:
    """Set the scale of each activation QuantizeLinear (and its DequantizeLinear) to amax / 127 (symmetric
    int8, zero point 0) for the tensors in ``ranges``. Returns how many tensors were re-scaled."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    replaced = 0
    for q in [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in ranges]:
        scale = np.float32(max(ranges[q.input[0]], 1e-12) / 127.0)
        names = {q.input[1]} | {d.input[1] for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"}
        for name in names:
            if name in inits and numpy_helper.to_array(inits[name]).size == 1:
                old = numpy_helper.to_array(inits[name])
                inits[name].CopyFrom(numpy_helper.from_array(np.asarray(scale, dtype=old.dtype).reshape(old.shape), name))
        replaced += 1
    return replaced


def _producers_of(path: Path, names: set[str]) -> list[str]:
    import onnx

    nodes = onnx.load(str(path)).graph.node
    wanted = {i for n in nodes if n.name in names for i in n.input}
    return [n.name for n in nodes if n.op_type in QUANTIZED_OPS and n.name not in names and set(n.output) & wanted]


def _quantize_ort_cpu(src: Path, calib: CalibrationSet, spec: ModelSpec, out: Path, method: str,
                      excluded: list[str], percentile: float, tmp: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    # ORT's QDQ format also quantizes the outputs of the quantized ops; a sensitive node must not read one, so
    # the ops feeding it (e.g. the q·k MatMul before Softmax) stay FP32 too.
    excluded = excluded + _producers_of(pre, set(excluded))
    kinds = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    options = {"ActivationSymmetric": False, "CalibPercentile": percentile}
    if method == "entropy":
        # quantize_static builds its entropy calibrator with 128 histogram bins and 128 quantized bins, for which
        # the KL search has exactly one candidate, the full range: "entropy" would be "max". So the entropy ranges
        # come from a calibrator with ENTROPY_BINS bins, given to the quantizer as per-tensor overrides.
        ranges = _entropy_ranges(pre, calib, spec.input_name, tmp)
        options["TensorQuantOverrides"] = {name: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
                                           for name, (lo, hi) in ranges.items()}
        calibrate = CalibrationMethod.MinMax  # cheap; every calibrated tensor is overridden
    else:
        calibrate = kinds[method]
    quantize_static(
        str(pre), str(out), _Batches(calib, spec.input_name), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_exclude=excluded, calibrate_method=calibrate, extra_options=options,
    )


ENTROPY_BINS = 2048  # TensorRT's entropy calibrator uses 2048 bins too


def _entropy_ranges(model: Path, calib: CalibrationSet, input_name: str, tmp: Path) -> dict[str, tuple[float, float]]:
    """(min, max) per tensor that quantize_static calibrates (inputs and outputs of the quantized op types), by
    ONNX Runtime's KL-divergence (entropy) calibrator with ENTROPY_BINS bins."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(str(model), list(QUANTIZED_OPS), augmented_model_path=str(tmp / "entropy_aug.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": 128})
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
        calibrator.collect_data(_Batches(calib, input_name))
        data = calibrator.compute_data()
    return {name: (float(np.asarray(r.range_value[0])), float(np.asarray(r.range_value[1]))) for name, r in data.data.items()}


