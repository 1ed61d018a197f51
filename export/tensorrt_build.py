"""TensorRT engine build from a precision ONNX (TensorRT 10 and 11), with its sidecar ``<engine>.json``.

The network is strongly typed (TensorRT 11 knows nothing else; TensorRT 10 supports it): every tensor keeps
the type the ONNX gives it, so ``model.fp16.onnx`` builds an FP16 engine and ``model.int8.onnx`` (Q/DQ) an INT8
one, with no builder precision flags. One optimization profile covers batch 1..max_batch; the timing cache is
read before and written after the build, so rebuilding on the same GPU is fast. A cache TensorRT will not take
(corrupt, or from another GPU or TensorRT) is replaced by a fresh one, with one warning; a cache that cannot be
written costs a warning, never the engine.

The sidecar carries the spec and what the engine is tied to: the TensorRT version and the GPU (name,
compute capability), and the build's time and size; ``time_engine`` adds the engine's GPU timing. aunet.backends
refuses an engine whose sidecar does not match the box.

Engines built elsewhere (trtexec, Polygraphy) get their sidecar from ``write_external_sidecar``: the spec of the
ONNX they were built from, the TensorRT version and GPU unknown (``built_by: external``).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from aunet.io import atomic_write_bytes, atomic_write_text
from aunet.backends import (BUILT_BY_AUNET, INSTALL_HINT, PLAN_FORMAT, BackendUnavailable, TensorRTBackend,
                            cuda_devices, external_sidecar, read_plan_sidecar, read_spec, sidecar_path,
                            tensorrt_logger, tensorrt_major)

from aunet.artifacts import ExportError, file_sha256

log = logging.getLogger(__name__)
_clock = time.perf_counter  # the build's wall clock (a test sets it)


def tensorrt_status() -> tuple[Any, dict[str, Any]]:
    """(the tensorrt module, the GPU to build for), or BackendUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"TensorRT is not installed ({INSTALL_HINT}); the engine was not built") from None
    if tensorrt_major(trt) < 10:  # no strongly typed networks: the precision in the ONNX would not be kept
        raise BackendUnavailable(f"TensorRT {trt.__version__} is installed; aunet builds engines with TensorRT 10 or "
                                 "11; the engine was not built")
    gpus = cuda_devices()
    if not gpus:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible; "
                                 "the engine was not built")
    return trt, gpus[0]


def _network_flags(trt: Any) -> int:
    """STRONGLY_TYPED on TensorRT 10 (it opts in there); TensorRT 11 networks are always strongly typed and the
    flag is deprecated and ignored."""
    if tensorrt_major(trt) == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _attach_timing_cache(trt: Any, config: Any, path: Path) -> Any:
    """Give ``config`` the cache in ``path`` or, when TensorRT will not take it, a fresh one (one warning).
    Returns the attached cache (kept referenced until the build is done), or None if none could be made."""
    problem, data = None, b""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            problem = f"could not be read ({exc.strerror or exc})"
    cache = config.create_timing_cache(data) if data else None
    if data and cache is None:
        problem = f"is not a TensorRT {trt.__version__} timing cache (corrupt, or from another TensorRT version)"
    elif cache is not None and not config.set_timing_cache(cache, False):  # False: never use another GPU's timings
        problem, cache = "was made on another GPU or by another TensorRT", None
    if cache is None:
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            why = f" {problem}, and" if problem else ":"
            log.warning(f"timing cache {path}{why} TensorRT could not create a new one: building without one")
            return None
    if problem:
        log.warning(f"timing cache {path} {problem}: starting from an empty one, which replaces it after the build")
    return cache


def _save_timing_cache(config: Any, path: Path) -> None:
    try:
        atomic_write_bytes(path, bytes(config.get_timing_cache().serialize()))
    except Exception as exc:  # the engine is built: a cache that cannot be written costs the next build time, no more
        log.warning(f"the engine was built but its timing cache could not be saved to {path}: "
                    f"{type(exc).__name__}: {exc}")


def build_serialized(onnx_path: Path, input_name: str, shapes: tuple[tuple[int, ...], ...], *, workspace_gb: float,
                     timing_cache: str | os.PathLike | None) -> tuple[bytes, dict[str, Any]]:
    """(engine bytes, {tensorrt, gpu, strongly_typed}) for one optimization profile ``shapes`` = (min, opt, max)."""
    trt, gpu = tensorrt_status()
    logger = tensorrt_logger(trt)
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
    cache = _attach_timing_cache(trt, config, Path(timing_cache)) if timing_cache else None
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    if cache is not None:
        _save_timing_cache(config, Path(timing_cache))
    tied_to = {"tensorrt": trt.__version__,
               "gpu": {"name": gpu["name"], "compute_capability": gpu["compute_capability"]},
               "strongly_typed": True}  # tensorrt_status() admits 10 (the flag is set) and later (always)
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
    started = _clock()
    engine, tied_to = build_serialized(
        onnx_path, spec.input_name, ((1, 3, s, s), (opt_batch, 3, s, s), (max_batch, 3, s, s)),
        workspace_gb=workspace_gb, timing_cache=timing_cache)
    build_seconds = _clock() - started
    sidecar = {
        "format": PLAN_FORMAT,
        "spec": spec.to_dict(),
        "precision": spec.precision,
        "built_by": BUILT_BY_AUNET,
        **tied_to,
        "profile": {"input": spec.input_name, "min": 1, "opt": opt_batch, "max": max_batch},
        "workspace_gb": workspace_gb,
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "built_at": _now(),
        "build_seconds": round(build_seconds, 3),
        "engine_bytes": len(engine),
    }
    write_plan(plan_path, engine, sidecar)
    return sidecar


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def update_sidecar(plan_path: str | os.PathLike, **entries: Any) -> dict[str, Any]:
    """Add ``entries`` to the engine's sidecar (rewritten atomically); returns the new sidecar."""
    sidecar = {**read_plan_sidecar(plan_path), **entries}
    atomic_write_text(sidecar_path(plan_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


def time_engine(plan_path: str | os.PathLike, *, iterations: int = 100, warmup: int = 10,
                batch: int | None = None) -> dict[str, Any]:
    """GPU timing of the engine (``TensorRTBackend.time_gpu``: CUDA events, the profile's opt batch by default),
    recorded in its sidecar as ``timing``."""
    with TensorRTBackend(plan_path) as backend:
        timing = backend.time_gpu(batch, iterations=iterations, warmup=warmup)
    update_sidecar(plan_path, timing=timing)
    return timing


def write_external_sidecar(engine_path: str | os.PathLike, onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an engine built outside aunet-export (trtexec, Polygraphy) from ``onnx_path``: its spec,
    the TensorRT version and GPU unknown. Returns it."""
    sidecar = {**external_sidecar(onnx_path), "onnx_sha256": file_sha256(onnx_path), "written_at": _now()}
    atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


def check_external_engine(engine_path: str | os.PathLike) -> dict[str, Any]:
    """Open an engine built elsewhere with its sidecar (it deserializes here; its I/O match the spec, else
    SpecError) and record in the sidecar its optimization profile and where it was checked. BackendUnavailable
    where TensorRT, pycuda or a GPU is missing."""
    with TensorRTBackend(engine_path, warn_unverified=False) as backend:  # "unverified" is what the sidecar says
        profile = {"input": backend.spec.input_name, "min": backend.min_batch, "opt": backend.opt_batch,
                   "max": backend.max_batch}
        checked_on = {"tensorrt": backend.tensorrt_version, "at": _now(),
                      "gpu": {k: backend.gpu[k] for k in ("name", "compute_capability")}}
    return update_sidecar(engine_path, profile=profile, checked_on=checked_on)


__all__ = ["build_engine", "build_serialized", "check_external_engine", "tensorrt_status", "time_engine",
           "update_sidecar", "write_external_sidecar", "write_plan"]
