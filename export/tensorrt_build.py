"""TensorRT engine build from a precision ONNX (TensorRT 10 and 11), with its sidecar ``<engine>.json``.

The network is strongly typed (TensorRT 11 knows nothing else; TensorRT 10 supports it): every tensor keeps
the type the ONNX gives it, so ``model.fp16.onnx`` builds an FP16 engine and ``model.int8.onnx`` (Q/DQ) an INT8
one, with no builder precision flags. One optimization profile covers batch 1..max_batch; the timing cache is
read before and written after the build, so rebuilding on the same GPU is fast.

The sidecar carries the spec and what the engine is tied to: the TensorRT version and the GPU (name,
compute capability). aunet.runtime.backends refuses an engine whose sidecar does not match the box.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from aunet.io import atomic_write_bytes, atomic_write_text
from aunet.runtime.backends import PLAN_FORMAT, BackendUnavailable, cuda_devices, read_spec, sidecar_path

from .onnx_export import ExportError, file_sha256


def tensorrt_status() -> tuple[Any, dict[str, Any]]:
    """(the tensorrt module, the GPU to build for), or BackendUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed (pip install 'aunet[trt]'); the engine was not built") from None
    gpus = cuda_devices()
    if not gpus:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible; "
                                 "the engine was not built")
    return trt, gpus[0]


def _network_flags(trt: Any) -> int:
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    return flags


def build_serialized(onnx_path: Path, input_name: str, shapes: tuple[tuple[int, ...], ...], *, workspace_gb: float,
                     timing_cache: str | os.PathLike | None) -> tuple[bytes, dict[str, Any]]:
    """(engine bytes, {tensorrt, gpu, strongly_typed}) for one optimization profile ``shapes`` = (min, opt, max)."""
    trt, gpu = tensorrt_status()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)  # a cache from another GPU is not used
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    tied_to = {"tensorrt": trt.__version__, "gpu": {"name": gpu["name"], "compute_capability": gpu["compute_capability"]},
               "strongly_typed": bool(_network_flags(trt)) or int(trt.__version__.split(".")[0]) >= 11}
    return bytes(serialized), tied_to


def write_plan(plan_path: Path, engine: bytes, sidecar: dict[str, Any]) -> None:
    """The engine and its sidecar, each atomically. A stale sidecar goes first: an engine is never paired with
    another build's sidecar (one without a sidecar is refused by the runtime)."""
    sidecar_path(plan_path).unlink(missing_ok=True)
    atomic_write_bytes(plan_path, engine)
    atomic_write_text(sidecar_path(plan_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def build_engine(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, *, max_batch: int = 32,
                 opt_batch: int | None = None, workspace_gb: float = 4.0,
                 timing_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build ``plan_path`` (and its sidecar) from an AUNet ONNX; returns the sidecar dict."""
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    spec = read_spec(onnx_path)
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    opt_batch = min(opt_batch or 8, max_batch)
    s = spec.input_size
    engine, tied_to = build_serialized(
        onnx_path, spec.input_name, ((1, 3, s, s), (opt_batch, 3, s, s), (max_batch, 3, s, s)),
        workspace_gb=workspace_gb, timing_cache=timing_cache)
    sidecar = {
        "format": PLAN_FORMAT,
        "spec": spec.to_dict(),
        "precision": spec.precision,
        **tied_to,
        "profile": {"input": spec.input_name, "min": 1, "opt": opt_batch, "max": max_batch},
        "workspace_gb": workspace_gb,
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_plan(plan_path, engine, sidecar)
    return sidecar


__all__ = ["build_engine", "build_serialized", "tensorrt_status", "write_plan"]
