"""Inference backends for the edge runtime: ONNX Runtime and TensorRT, behind one small interface (torch-free).

``open_backend(path)`` picks by suffix: ``.onnx`` -> ONNX Runtime (TensorRT EP, CUDA EP or CPU EP, whichever
this box can run), ``.plan`` / ``.engine`` -> a TensorRT engine with its sidecar ``<engine>.json`` or, for an
engine built elsewhere (trtexec, Polygraphy), with ``spec=`` the ONNX it was built from. Every backend reads the
model spec (the deployment contract) from the artifact itself, takes images float32 [B, 3, S, S] RGB in [0, 1]
and returns every output of ``spec.output_names``.

onnxruntime, tensorrt and pycuda are imported inside the classes, and no CUDA context exists before a
TensorRT backend is opened: importing this module is cheap on any box.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from aunet.spec import METADATA_KEY, ModelSpec, SpecError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")  # PyTorch checkpoints (aunet-train): export them first
PLAN_FORMAT = "aunet-plan"
BUILT_BY_AUNET = "aunet-export trt"  # sidecar "built_by": the build recorded the TensorRT version and the GPU
BUILT_BY_EXTERNAL = "external"  # trtexec, Polygraphy, ...: the sidecar comes from the ONNX, TensorRT/GPU unknown
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
# ORT_ENABLE_ALL made ONNX Runtime's CPU provider (1.24, 1.32) segfault on AutoCast FP16 graphs of a similar
# model; ORT_ENABLE_EXTENDED ran them correctly, so FP16 graphs get "extended". INT8 Q/DQ graphs (both targets,
# six demo models and the paper config) ran at "all" with scores within 5e-4 of "extended", and 1.4x faster
# (paper config, batch 8: 27.6 vs 19.9 faces/s), so they get "all", as FP32 does.
SAFE_OPT_LEVEL = {"fp32": "all", "fp16": "extended", "int8": "all"}


class BackendError(ValueError):
    """The artifact or the input cannot be used (bad file, wrong shape): a usage error."""


class BackendUnavailable(RuntimeError):
    """What this backend needs is not on this box (a package, a GPU, a matching TensorRT)."""


class PlanMismatchError(SpecError):
    """A TensorRT engine built for another GPU or another TensorRT version."""


class UnverifiedEngineWarning(UserWarning):
    """An engine built outside aunet-export: which TensorRT and GPU it was built for is not recorded, so the
    runtime cannot check them against this box (it checks the engine's I/O against the spec instead)."""


# --- CUDA device discovery (driver API through ctypes: no context is created, no torch, no pycuda) ---


def _libcuda() -> Any:
    """The CUDA driver library through ctypes, or None on a box without the NVIDIA driver."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def cuda_devices() -> list[dict[str, Any]]:
    """[{index, name, compute_capability "major.minor"}] of the visible CUDA GPUs; [] without a driver."""
    lib = _libcuda()
    if lib is None or lib.cuInit(0) != 0:
        return []
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for i in range(count.value):
        dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(dev), i) != 0 or lib.cuDeviceGetName(name, 256, dev) != 0:
            continue
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
        devices.append({"index": i, "name": name.value.decode(errors="replace"),
                        "compute_capability": f"{major.value}.{minor.value}"})
    return devices


def _pop_context_if_current(handle: int | None) -> None:
    """Pop ``handle`` off this thread's CUDA context stack when it is on top. pycuda's ``detach()`` of a retained
    primary context pushes it to release it (cuDevicePrimaryCtxRelease never pops), and pycuda cannot pop a context
    its own stack no longer holds (``Context.pop()`` raises), so the driver API does it."""
    lib = _libcuda() if handle else None
    if lib is None:
        return
    current = ctypes.c_void_p()
    if lib.cuCtxGetCurrent(ctypes.byref(current)) == 0 and current.value == handle:
        lib.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))


# TensorRT keeps one logger pointer per process and warns when a Builder or Runtime is given another one.
_TRT_LOGGER: tuple[Any, Any] | None = None  # (the tensorrt module, its Logger)
_TRT_LOGGER_LOCK = threading.Lock()


def tensorrt_logger(trt: Any) -> Any:
    """The process's one ``trt.Logger`` (WARNING), created on first use."""
    global _TRT_LOGGER
    with _TRT_LOGGER_LOCK:
        if _TRT_LOGGER is None or _TRT_LOGGER[0] is not trt:
            _TRT_LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
        return _TRT_LOGGER[1]


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _tensorrt_libs_present() -> bool:
    for lib in ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


# --- specs ---


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    return Path(f"{engine_path}.json")


def read_plan_sidecar(engine_path: str | os.PathLike) -> dict[str, Any]:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise BackendError(
            f"{engine_path}: its sidecar {path.name} is missing (aunet-export trt writes one with the engine); for an "
            f"engine built elsewhere (trtexec, Polygraphy), write it from the ONNX the engine was built from with "
            f"`aunet-export sidecar --engine {engine_path} --onnx model.onnx`, or give that ONNX as the engine's spec "
            f"(`aunet-infer --spec model.onnx`, `Detector(..., spec=\"model.onnx\")`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(f"{path}: unreadable sidecar: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT or "spec" not in data:
        raise BackendError(f"{path} is not an aunet engine sidecar")
    return data


def _read_onnx_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:  # edge boxes may carry onnxruntime only
        onnx = None
    try:
        if onnx is not None:
            model = onnx.load(str(path), load_external_data=False)
            return {p.key: p.value for p in model.metadata_props}
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return dict(session.get_modelmeta().custom_metadata_map)
    except ImportError:
        raise BackendUnavailable("reading an ONNX needs onnx or onnxruntime (pip install aunet[export])") from None
    except Exception as exc:  # protobuf DecodeError, ORT InvalidProtobuf, ...
        raise BackendError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


def check_model_path(path: str | os.PathLike) -> Path:
    """Refuse, before anything loads, what cannot be a deployed model: a training checkpoint (with the command
    that exports it), a missing file, an unknown suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        raise BackendError(f"{path} is a PyTorch checkpoint: export it first with "
                           f"aunet-export onnx --ckpt {path} --out model.onnx")
    if suffix not in ONNX_SUFFIXES + ENGINE_SUFFIXES:
        raise BackendError(f"{path}: unknown model type {suffix!r} (expected .onnx, .plan or .engine)")
    if not path.is_file():
        raise BackendError(f"model not found: {path}")
    return path


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """The ModelSpec of an artifact: ONNX ``metadata_props["aunet.spec"]`` or the engine's sidecar."""
    path = check_model_path(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return ModelSpec.from_dict(read_plan_sidecar(path)["spec"])
    meta = _read_onnx_metadata(path)
    if METADATA_KEY not in meta:
        raise SpecError(f"{path} has no {METADATA_KEY!r} metadata: it was not exported by aunet-export")
    return ModelSpec.from_json(meta[METADATA_KEY])


def external_sidecar(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an engine built outside aunet-export from ``onnx_path``: that ONNX's spec, with the TensorRT
    version and the GPU unknown (``built_by`` external). The runtime checks the engine's I/O against the spec and
    warns that its TensorRT/GPU match is unverified."""
    onnx_path = Path(onnx_path)
    if onnx_path.suffix.lower() not in ONNX_SUFFIXES:
        raise BackendError(f"{onnx_path}: an engine's spec comes from the ONNX it was built from (.onnx), "
                           f"not a {onnx_path.suffix or 'suffix-less'} file")
    spec = read_spec(onnx_path)  # missing file, foreign ONNX: refused here
    return {"format": PLAN_FORMAT, "spec": spec.to_dict(), "precision": spec.precision, "built_by": BUILT_BY_EXTERNAL,
            "tensorrt": None, "gpu": None, "onnx": onnx_path.name}


def build_recorded(sidecar: Mapping[str, Any]) -> bool:
    """Whether the sidecar records the TensorRT version and GPU the engine was built for (aunet-export trt)."""
    return sidecar.get("built_by") != BUILT_BY_EXTERNAL


def plan_sidecar(engine_path: str | os.PathLike, spec: str | os.PathLike | None = None) -> dict[str, Any]:
    """The sidecar an engine runs with: its ``<engine>.json``, or with ``spec`` (the ONNX the engine was built from)
    one made from that ONNX. With both, the two specs must describe the same model, and the sidecar's record of
    TensorRT and GPU still holds."""
    if spec is None:
        return read_plan_sidecar(engine_path)
    made = external_sidecar(spec)
    if not sidecar_path(engine_path).is_file():
        return made
    own = read_plan_sidecar(engine_path)
    try:
        ModelSpec.from_dict(own["spec"]).check_compatible(ModelSpec.from_dict(made["spec"]))
    except SpecError as exc:
        raise SpecError(f"{spec} does not describe the engine its sidecar {sidecar_path(engine_path).name} "
                        f"describes: {exc}") from None
    return own


def check_plan_sidecar(sidecar: Mapping[str, Any], *, tensorrt_version: str, gpu: Mapping[str, Any]) -> bool:
    """Refuse an engine built by another TensorRT or for another GPU (engines are not portable). Returns True when
    the sidecar's record matches this box, False for an engine built elsewhere, whose record is unknown."""
    if not build_recorded(sidecar):
        return False
    built_trt = str(sidecar.get("tensorrt", "?"))
    built_gpu = sidecar.get("gpu") or {}
    built = f"TensorRT {built_trt} on {built_gpu.get('name', '?')} (compute {built_gpu.get('compute_capability', '?')})"
    here = f"TensorRT {tensorrt_version} on {gpu.get('name')} (compute {gpu.get('compute_capability')})"
    if (built_trt != tensorrt_version or built_gpu.get("name") != gpu.get("name")
            or str(built_gpu.get("compute_capability")) != str(gpu.get("compute_capability"))):
        raise PlanMismatchError(f"engine built with {built}, this box has {here}: engines are not portable, "
                                "rebuild it here with `aunet-export trt`")
    return True


_UNVERIFIED_WARNED: set[str] = set()  # engines already warned about in this process


def _warn_unverified(path: Path, tensorrt_version: str, gpu: Mapping[str, Any]) -> None:
    key = str(path.resolve())
    if key in _UNVERIFIED_WARNED:
        return
    _UNVERIFIED_WARNED.add(key)
    warnings.warn(UnverifiedEngineWarning(
        f"{path} was built outside aunet-export: that it was built for this box (TensorRT {tensorrt_version} on "
        f"{gpu.get('name')}, compute {gpu.get('compute_capability')}) is not verified; its I/O match the spec"),
        stacklevel=4)


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
            "min": float(a.min()), "max": float(a.max())}


# --- backends ---


class Backend:
    """One loaded model. ``infer(images)`` -> {output name: array}; ``max_batch`` None means unlimited."""

    name: str = "backend"
    spec: ModelSpec
    max_batch: int | None = None

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = self._check_input(images)
        if self.max_batch is None or len(images) <= self.max_batch:
            return self._infer(images)
        parts = [self._infer(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _check_input(self, images: np.ndarray) -> np.ndarray:
        s = self.spec.input_size
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (3, s, s) or len(images) == 0:
            raise BackendError(f"{self.name}: expected images [B>=1, 3, {s}, {s}], got {list(images.shape)}")
        return np.ascontiguousarray(images, dtype=np.float32)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.spec.precision} max_batch={self.max_batch}>"


def ort_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device``, best first, from what this install and this box can run."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    available = set(ort.get_available_providers())
    gpu = bool(cuda_devices())
    want = {"cpu": [], "cuda": ["CUDAExecutionProvider"],
            "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}.get(device)
    if want is None:  # auto: the onnxruntime-gpu wheel lists GPU providers even on boxes without a GPU
        want = []
        if gpu and "TensorrtExecutionProvider" in available and _tensorrt_libs_present():
            want.append("TensorrtExecutionProvider")
        if gpu and "CUDAExecutionProvider" in available:
            want.append("CUDAExecutionProvider")
    elif want:
        missing = [p for p in want if p not in available]
        if missing or not gpu:
            why = f"onnxruntime lacks {', '.join(missing)}" if missing else "no CUDA GPU is visible"
            raise BackendUnavailable(f"device {device!r} is not available: {why}")
        if device == "tensorrt" and not _tensorrt_libs_present():
            raise BackendUnavailable("device 'tensorrt' is not available: TensorRT libraries (libnvinfer) not found")
    return want + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """An ONNX model in ONNX Runtime. FP16 graphs run at ORT_ENABLE_EXTENDED (see SAFE_OPT_LEVEL)."""

    def __init__(self, path: str | os.PathLike, device: str = "auto", providers: Sequence[Any] | None = None,
                 optimization: str | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("ONNX Runtime is not installed (pip install onnxruntime)") from None
        self.path = Path(path)
        self.spec = read_spec(self.path)
        level = optimization or SAFE_OPT_LEVEL.get(self.spec.precision, "extended")
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if level not in levels:
            raise BackendError(f"unknown optimization level {level!r}; expected one of {', '.join(levels)}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[level]
        opts.log_severity_level = 3  # errors only: provider fallbacks are reported through .name
        if threads:
            opts.intra_op_num_threads = threads
        providers = list(providers) if providers else ort_providers(device)
        providers = [self._with_options(p) for p in providers]
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BackendError(f"{self.path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        self.optimization = level
        self.providers = self._session.get_providers()
        self.name = f"onnxruntime:{self.providers[0].replace('ExecutionProvider', '')}"
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [self.spec.input_name] or not set(self.spec.output_names) <= set(outputs):
            raise SpecError(f"{self.path}: graph I/O {inputs} -> {outputs} does not match its spec "
                            f"({self.spec.input_name} -> {list(self.spec.output_names)})")

    def _with_options(self, provider: Any) -> Any:
        if provider != "TensorrtExecutionProvider":
            return provider
        cache = self.path.parent / ".ort_trt_cache"  # ORT's TRT EP rebuilds its engines unless cached
        return (provider, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                           "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)})

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        names = list(self.spec.output_names)
        values = self._session.run(names, {self.spec.input_name: images})
        return dict(zip(names, values))

    def close(self) -> None:
        self._session = None


INSTALL_HINT = ("pip install 'aunet[trt-cu12]' or 'aunet[trt-cu13]' for the box's CUDA driver; on Jetson "
                "TensorRT comes from JetPack: see docs/install.md")


def _import_pycuda_driver() -> Any:
    """pycuda.driver, or BackendUnavailable telling a missing pycuda from a pycuda that cannot load the driver."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "pycuda":
            raise BackendUnavailable(f"pycuda is not installed ({INSTALL_HINT})") from None
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if "libcuda" in first:
            raise BackendUnavailable(f"pycuda is installed but the CUDA driver library could not be loaded ({first}):"
                                     " is the NVIDIA driver installed on this box?") from None
        raise BackendUnavailable(f"pycuda is installed but cannot be imported: {first}") from None
    return cuda


def _numpy_dtype(trt: Any, trt_dtype: Any, name: str, path: Path) -> np.dtype:
    try:
        return np.dtype(trt.nptype(trt_dtype))
    except TypeError:  # BF16, FP8, FP4: numpy has no such type, so no host buffer can hold the tensor
        kind = getattr(trt_dtype, "name", str(trt_dtype))
        raise BackendError(f"{path}: engine tensor {name!r} is {kind}, which has no numpy type: export the model "
                           "with float32 inputs and outputs (aunet-export trt keeps them) and rebuild") from None


class HostDeviceMem:
    """A pinned host buffer and its device twin (NVIDIA samples' common_runtime.py style); ``free`` releases both."""

    def __init__(self, cuda: Any, size: int, dtype: np.dtype):
        self.host = cuda.pagelocked_empty(size, dtype)
        self.device = cuda.mem_alloc(max(1, self.host.nbytes))

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        self.device, self.host = None, None


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (.plan) and its sidecar, or ``spec``: the ONNX an engine built elsewhere
    (trtexec, Polygraphy) was built from. Buffers are sized for the profile's max batch; one CUDA stream; shapes
    set per call (set_input_shape), then execute_async_v3.

    Checked when it opens: the sidecar's TensorRT version and GPU against this box (an engine built elsewhere
    has none: one UnverifiedEngineWarning per engine and process instead), that the engine deserializes, and
    that its I/O tensors are the spec's: names, float32 (or float16) in the linear layout, [B, 3, S, S] in and
    the spec's output shapes out, one optimization profile from batch 1."""

    build_verified: bool = True  # False: an engine built elsewhere, its TensorRT/GPU match unverified
    opt_batch: int = 1  # the profile's opt batch: what the engine was tuned for

    def __init__(self, path: str | os.PathLike, device: str = "auto", spec: str | os.PathLike | None = None, *,
                 warn_unverified: bool = True):
        """``warn_unverified`` False: an engine built elsewhere opens without the warning (the caller says it)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"engine not found: {self.path}")
        if device not in ("auto", "cuda", "tensorrt"):
            raise BackendError(f"a TensorRT engine runs on a CUDA GPU, not on device {device!r}")
        self.sidecar = plan_sidecar(self.path, spec)
        self.spec = ModelSpec.from_dict(self.sidecar["spec"])
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(f"TensorRT is not installed ({INSTALL_HINT})") from None
        cuda = _import_pycuda_driver()
        gpus = cuda_devices()
        if not gpus:
            raise BackendUnavailable("no CUDA GPU is visible: a TensorRT engine needs one")
        self.build_verified = check_plan_sidecar(self.sidecar, tensorrt_version=trt.__version__, gpu=gpus[0])
        self._cuda, self._buffers, self._ctx = cuda, {}, None
        self._engine = self._context = self._stream = None
        cuda.init()
        self._ctx = cuda.Device(gpus[0]["index"]).retain_primary_context()
        try:
            with self._active():
                self._load(trt)
        except BaseException:
            self.close()  # no leaked buffers or context when the engine does not fit
            raise
        self.tensorrt_version, self.gpu = trt.__version__, dict(gpus[0])
        self.name = f"tensorrt:{trt.__version__}:{gpus[0]['name']}"
        if not self.build_verified and warn_unverified:
            _warn_unverified(self.path, trt.__version__, gpus[0])

    def _load(self, trt: Any) -> None:
        self._engine = trt.Runtime(tensorrt_logger(trt)).deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise BackendError(f"{self.path}: TensorRT could not deserialize the engine")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        # Exactly the spec's tensors: execute_async_v3 needs an address for every I/O tensor, and an engine with
        # tensors its spec does not name was not built from the aunet-export ONNX its sidecar describes (that
        # export checks the graph's I/O exactly), so its outputs are not the ones the spec explains.
        if inputs != [self.spec.input_name] or set(outputs) != set(self.spec.output_names):
            extra = sorted(set(names) - {self.spec.input_name, *self.spec.output_names})
            missing = sorted({self.spec.input_name, *self.spec.output_names} - set(names))
            detail = "".join(f"; {label}: {', '.join(items)}"
                             for label, items in (("not in the spec", extra), ("missing", missing)) if items)
            raise SpecError(f"{self.path}: engine I/O {names} does not match its spec "
                            f"({self.spec.input_name} -> {', '.join(self.spec.output_names)}{detail})")
        dtypes = {n: _numpy_dtype(trt, self._engine.get_tensor_dtype(n), n, self.path) for n in names}
        self._check_io(trt, names, dtypes)
        self.min_batch, self.opt_batch, self.max_batch = self._profile_batches()
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.Stream()
        s = self.spec.input_size
        per_item = {**self.spec.output_shapes(1), self.spec.input_name: (1, 3, s, s)}
        for n in names:
            size = self.max_batch * int(np.prod(per_item[n][1:]))
            self._buffers[n] = HostDeviceMem(self._cuda, size, dtypes[n])
            self._context.set_tensor_address(n, int(self._buffers[n].device))

    def _check_io(self, trt: Any, names: list[str], dtypes: Mapping[str, np.dtype]) -> None:
        """Every I/O tensor as the spec has it, all problems in one message (a SpecError): the batch first and
        the spec's dims after it, a float type the host buffers convert (float32, or float16 from
        ``--inputIOFormats=fp16:chw``-style builds), and the linear layout (a vectorized format such as HWC8 would
        be read as garbage)."""
        s = self.spec.input_size
        want = {self.spec.input_name: (3, s, s), **{n: shape[1:] for n, shape in self.spec.output_shapes(1).items()}}
        problems = []
        for n in names:
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(n))
            dims = tuple(want[n])
            if len(shape) != len(dims) + 1 or shape[1:] != dims or shape[0] == 0 or shape[0] < -1:
                problems.append(f"{n} is {list(shape)}, the spec's is [batch{''.join(f', {d}' for d in dims)}]")
            if dtypes[n] not in (np.dtype(np.float32), np.dtype(np.float16)):
                problems.append(f"{n} is {dtypes[n].name}, the spec's is float32")
            fmt = self._engine.get_tensor_format(n)
            if fmt != trt.TensorFormat.LINEAR:
                problems.append(f"{n} has the vectorized layout {getattr(fmt, 'name', fmt)}, the runtime reads LINEAR")
        if problems:
            raise SpecError(f"{self.path}: the engine's I/O do not match the spec ({'; '.join(problems)}): build it "
                            "from that ONNX with float32 linear I/O and a dynamic batch")

    def _profile_batches(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of optimization profile 0. The runtime sends any batch from 1 to the max (the
        last chunk of a video is smaller), so the profile must start at 1."""
        name = self.spec.input_name
        try:
            shapes = [tuple(int(d) for d in s) for s in self._engine.get_tensor_profile_shape(name, 0)]
        except (RuntimeError, TypeError, ValueError):
            shapes = []
        if len(shapes) != 3 or any(len(s) != 4 or min(s) < 1 for s in shapes):  # a static input has no profile
            static = tuple(int(d) for d in self._engine.get_tensor_shape(name))
            shapes = [static] * 3
        lo, opt, hi = (int(s[0]) for s in shapes)
        if lo != 1 or hi < 1:
            s = self.spec.input_size
            raise SpecError(f"{self.path}: the engine takes batches {lo} to {hi} of {name}; the runtime sends any "
                            f"batch from 1 to the maximum: rebuild it with a profile from batch 1 (trtexec "
                            f"--minShapes={name}:1x3x{s}x{s} --optShapes={name}:{max(opt, 1)}x3x{s}x{s} "
                            f"--maxShapes={name}:{max(hi, 1)}x3x{s}x{s})")
        return lo, opt, hi

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _enqueue(self, shape: tuple[int, ...], marks: Sequence[Any] = ()) -> None:
        """One batch on the stream, the input already in its host buffer: copy in, execute, copy out. ``marks``:
        four CUDA events recorded before the copy in, after it, after the execution, after the copies out."""
        cuda, stream = self._cuda, self._stream
        record = (lambda i: marks[i].record(stream)) if marks else (lambda i: None)
        inp, size = self._buffers[self.spec.input_name], int(np.prod(shape))
        record(0)
        cuda.memcpy_htod_async(inp.device, inp.host[:size], stream)
        record(1)
        self._context.set_input_shape(self.spec.input_name, shape)
        if not self._context.execute_async_v3(stream.handle):
            raise RuntimeError(f"{self.name}: execute_async_v3 failed")
        record(2)
        for n, out_shape in self.spec.output_shapes(shape[0]).items():
            out = self._buffers[n]
            cuda.memcpy_dtoh_async(out.host[: int(np.prod(out_shape))], out.device, stream)
        record(3)

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        shapes = self.spec.output_shapes(len(images))
        with self._active():
            self._buffers[self.spec.input_name].host[: images.size] = images.ravel()
            self._enqueue(images.shape)
            self._stream.synchronize()
            return {n: self._buffers[n].host[: int(np.prod(shapes[n]))].reshape(shapes[n]).astype(np.float32)
                    for n in self.spec.output_names}

    def time_gpu(self, batch: int | None = None, iterations: int = 100, warmup: int = 10) -> dict[str, Any]:
        """GPU time of one batch (default: the profile's opt batch) from CUDA events on the engine's stream, as
        trtexec reports it: per iteration the input's host-to-device copy, the engine's compute and the outputs'
        device-to-host copies, after ``warmup`` untimed iterations. Each in ms (mean, median, p99, min, max);
        ``latency_ms`` is their sum per iteration and ``faces_per_s`` the batch over its mean (one stream, no
        overlap between batches: what the runtime gets)."""
        batch = self.opt_batch if batch is None else batch
        if not 1 <= batch <= self.max_batch:
            raise BackendError(f"{self.name}: batch {batch} is outside the engine's profile (1..{self.max_batch})")
        if iterations < 1 or warmup < 0:
            raise BackendError(f"timing needs iterations >= 1 and warmup >= 0, got {iterations} and {warmup}")
        s = self.spec.input_size
        shape = (batch, 3, s, s)
        size = int(np.prod(shape))
        times: dict[str, list[float]] = {"h2d_ms": [], "compute_ms": [], "d2h_ms": []}
        with self._active():
            self._buffers[self.spec.input_name].host[:size] = np.random.default_rng(0).random(size, np.float32)
            marks = [self._cuda.Event() for _ in range(4)]
            for i in range(warmup + iterations):
                self._enqueue(shape, marks)
                marks[3].synchronize()
                if i >= warmup:
                    for key, (start, end) in zip(times, ((0, 1), (1, 2), (2, 3))):
                        times[key].append(float(marks[end].time_since(marks[start])))
            marks.clear()  # the events go while their context is current
        latency = [sum(t) for t in zip(*times.values())]
        report: dict[str, Any] = {"batch": batch, "iterations": iterations, "warmup": warmup,
                                  **{key: _stats(values) for key, values in times.items()},
                                  "latency_ms": _stats(latency)}
        report["faces_per_s"] = 1e3 * batch / report["latency_ms"]["mean"] if report["latency_ms"]["mean"] > 0 else None
        return report

    def close(self) -> None:
        if self._ctx is None:
            return
        with self._active():
            for buf in self._buffers.values():
                buf.free()
            self._buffers = {}
            self._context = self._engine = self._stream = None
        ctx, self._ctx = self._ctx, None
        handle = getattr(ctx, "handle", None)  # read before detach() invalidates the context
        ctx.detach()
        _pop_context_if_current(handle)


def open_backend(path: str | os.PathLike, device: str = "auto", providers: Sequence[Any] | None = None,
                 spec: str | os.PathLike | None = None, **options: Any) -> Backend:
    """The backend for ``path`` by its suffix: .onnx -> ONNX Runtime, .plan / .engine -> TensorRT. ``spec``: for an
    engine without a sidecar (built with trtexec or Polygraphy), the ONNX it was built from."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        if spec is not None:
            raise BackendError(f"{path} is an ONNX and carries its own spec: spec= is for a TensorRT engine")
        return OnnxRuntimeBackend(path, device=device, providers=providers, **options)
    if suffix in ENGINE_SUFFIXES:
        return TensorRTBackend(path, device=device, spec=spec)
    raise BackendError(f"{path}: unknown model type {suffix!r} (expected .onnx, .plan or .engine)")


# CPU features that decide which ONNX Runtime / PyTorch kernels run (INT8 speed hinges on the VNNI / AMX ones).
KERNEL_CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                    "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def cpu_model_and_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The CPU's model name and which of KERNEL_CPU_FLAGS it has (Linux /proc/cpuinfo; empty elsewhere)."""
    model, flags = platform.processor(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
                if key == "" and flags:  # the first processor's block is enough
                    break
    except OSError:
        pass
    return model, [f for f in KERNEL_CPU_FLAGS if f in flags]


__all__ = [
    "BUILT_BY_AUNET", "BUILT_BY_EXTERNAL", "KERNEL_CPU_FLAGS", "Backend", "BackendError", "BackendUnavailable", "HostDeviceMem",
    "OnnxRuntimeBackend", "PlanMismatchError", "TensorRTBackend", "UnverifiedEngineWarning", "CHECKPOINT_SUFFIXES",
    "build_recorded", "check_model_path", "check_plan_sidecar", "cpu_model_and_flags", "cuda_devices", "external_sidecar", "open_backend",
    "ort_providers", "plan_sidecar", "read_plan_sidecar", "read_spec", "sidecar_path", "tensorrt_logger",
    "tensorrt_major",
]
