"""CPU stand-ins for ``tensorrt`` and ``pycuda.driver`` whose names, signatures and return conventions follow the
real bindings (TensorRT 10/11 Python API, pycuda's src/cpp/cuda.hpp), so the builder and the engine backend run
their real call sequences on a box without a GPU.

What is modelled, because the code under test depends on it:

* timing caches: ``IBuilderConfig.create_timing_cache(bytes)`` returns None for bytes that are not a cache;
  ``set_timing_cache(cache, ignore_mismatch)`` returns False (and attaches nothing) for a cache made on another
  device unless ``ignore_mismatch``; ``get_timing_cache()`` returns None when none is attached; passing None where
  pybind11 wants an ``ITimingCache`` raises TypeError;
* ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: required for a strongly typed network on 10.x, deprecated and
  ignored on 11.x (the fake records a deprecation when it is passed there);
* one logger per process: TensorRT keeps a single logger pointer and warns when a Builder or Runtime gets another;
* ``nptype`` raises TypeError for types numpy lacks (BF16, FP8);
* ``execute_async_v3`` returns False when any I/O tensor has no address;
* pycuda's context stack beside the driver's: ``Context.push``/``Context.pop`` keep both, ``detach()`` of a
  retained primary context pushes it on the driver stack and releases it without popping (cuDevicePrimaryCtxRelease
  never pops), and ``Context.pop()`` raises when pycuda's own stack is empty. ``FakeLibcuda`` is the ctypes side
  (``cuCtxGetCurrent``, ``cuCtxPopCurrent_v2``) of the same driver stack;
* what an engine built elsewhere can look like: ``TrtWorld.engine_input`` (dtype, shape), ``engine_profile``
  (min, opt, max shapes) and ``engine_formats`` (tensor -> ``TensorFormat`` member name) feed
  ``ICudaEngine.get_tensor_shape`` / ``get_tensor_profile_shape`` / ``get_tensor_format``;
* time on the GPU: ``GPU_CLOCK`` advances by a known cost for each enqueued ``memcpy_htod_async``,
  ``execute_async_v3`` and ``memcpy_dtoh_async``, and pycuda's ``Event.record(stream)`` stamps it, so
  ``end.time_since(start)`` returns known milliseconds (a CUDA context must be current to create an Event).
"""
from __future__ import annotations

import enum
import itertools
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GPU = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
OUTPUTS = {"cls_logits": (2,), "patch_logits": (49, 2), "score": ()}  # the small config: 112 px, 7x7 grid


@dataclass
class TrtWorld:
    """Everything a fake tensorrt module shares and a test inspects."""

    version: str = "10.3.0"
    device: str = "NVIDIA H100 80GB HBM3 sm_90"
    logs: list[tuple[str, str]] = field(default_factory=list)  # (severity, message) as TensorRT would log them
    loggers_created: int = 0
    engine_outputs: dict[str, tuple[Any, tuple[int, ...]]] = field(default_factory=dict)  # name -> (DataType, shape)
    parse_ok: bool = True
    built_network_flags: list[int] = field(default_factory=list)
    engine_input: tuple[Any, tuple[int, ...]] | None = None  # (DataType, shape); None: float32 [-1, 3, 112, 112]
    engine_profile: tuple[tuple[int, ...], ...] = ((1, 3, 112, 112), (2, 3, 112, 112), (4, 3, 112, 112))
    engine_formats: dict[str, str] = field(default_factory=dict)  # tensor name -> TensorFormat member; else LINEAR


@dataclass
class GpuClock:
    """The GPU's time line in ms: each enqueued operation ("htod", "execute", "dtoh") takes the next of its
    ``costs`` (cycled), so CUDA events recorded between operations are a known time apart."""

    now_ms: float = 0.0
    costs: dict[str, list[float]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def advance(self, op: str) -> None:
        seq = self.costs.get(op) or [0.0]
        i = self.calls.get(op, 0)
        self.calls[op] = i + 1
        self.now_ms += seq[i % len(seq)]

    def reset(self) -> None:
        self.now_ms, self.costs, self.calls = 0.0, {}, {}


GPU_CLOCK = GpuClock()


# --- tensorrt ---


def fake_tensorrt(world: TrtWorld) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = world.version
    major = int(world.version.split(".")[0])
    state: dict[str, Any] = {"logger": None}

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        UINT8 = 5
        FP8 = 6
        BF16 = 7
        INT64 = 8

    def nptype(trt_type):
        mapping = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                   DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
                   DataType.UINT8: np.uint8}
        if trt_type in mapping:
            return mapping[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=2):
            world.loggers_created += 1
            self.min_severity = min_severity

    def adopt_logger(logger, who):
        if state["logger"] is None:
            state["logger"] = logger
        elif state["logger"] is not logger:
            world.logs.append(("W", f"The logger passed into {who} differs from one already provided for an existing "
                                    "builder, runtime, or refitter."))

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    if major >= 11:
        NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    else:
        NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                     {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class TensorFormat(enum.IntEnum):
        LINEAR = 0
        CHW2 = 1
        HWC8 = 2
        CHW4 = 3
        CHW16 = 4
        CHW32 = 5
        DHWC8 = 6
        CDHW32 = 7
        HWC = 8
        DLA_LINEAR = 9
        DLA_HWC4 = 10
        HWC16 = 11
        DHWC = 12

    class IHostMemory(bytes):
        @property
        def nbytes(self):
            return len(self)

    class ITimingCache:
        def __init__(self, device, entries):
            self._device, self._entries = device, list(entries)

        def serialize(self):
            return IHostMemory(f"TRTCACHE|{world.version}|{self._device}|{','.join(self._entries)}".encode())

        def combine(self, input_cache, ignore_mismatch):
            if input_cache._device != self._device and not ignore_mismatch:
                return False
            self._entries += [e for e in input_cache._entries if e not in self._entries]
            return True

        def reset(self):
            self._entries = []
            return True

    class IOptimizationProfile:
        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the binding's keyword names
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags = flags

    class IBuilderConfig:
        def __init__(self):
            self._cache, self._profiles, self._pools = None, [], {}

        def set_memory_pool_limit(self, pool, pool_size):
            self._pools[pool] = pool_size

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            if not data:
                return ITimingCache(world.device, [])
            parts = data.split(b"|")
            if len(parts) != 4 or parts[0] != b"TRTCACHE" or parts[1].decode() != world.version:
                world.logs.append(("E", "Deserializing timing cache failed: invalid header"))
                return None
            entries = [e for e in parts[3].decode().split(",") if e]
            return ITimingCache(parts[2].decode(), entries)

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, ITimingCache):  # pybind11: incompatible function arguments
                raise TypeError("set_timing_cache(): incompatible function arguments. The following argument types "
                                "are supported: (self, cache: tensorrt.ITimingCache, ignore_mismatch: bool) -> bool")
            if cache._device != world.device and not ignore_mismatch:
                world.logs.append(("E", "Timing cache device mismatch"))
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class Builder:
        def __init__(self, logger):
            adopt_logger(logger, "createInferBuilder")

        def create_network(self, flags=0):
            strongly = 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if major >= 11 and flags & strongly:
                world.logs.append(("W", "NetworkDefinitionCreationFlag::kSTRONGLY_TYPED is deprecated and ignored"))
            world.built_network_flags.append(flags)
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            if config._cache is not None:
                config._cache._entries.append(f"tactic{len(config._cache._entries)}")
            # the first profile's (min, opt, max) travel in the engine, as a real engine keeps its profiles
            shapes = next(iter(config._profiles[0]._shapes.values())) if config._profiles else ()
            return IHostMemory(b"ENGINE|" + str(network.flags).encode() + b"|" + json.dumps(shapes).encode())

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if world.parse_ok else 1

        def parse_from_file(self, model):
            return world.parse_ok

        def get_error(self, index):
            return "fake parser error"

    class Runtime:
        def __init__(self, logger):
            adopt_logger(logger, "createInferRuntime")

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not data.startswith(b"ENGINE"):
                return None
            engine = ICudaEngine(dict(world.engine_outputs))
            parts = data.split(b"|")
            if len(parts) == 3 and json.loads(parts[2]):  # built by the fake Builder: its profile
                engine._profile = [tuple(s) for s in json.loads(parts[2])]
            return engine

    class ICudaEngine:
        """image float32 [B,3,112,112] -> the outputs of world.engine_outputs; profile max batch 4."""

        def __init__(self, outputs):
            self._io = {"image": world.engine_input or (DataType.FLOAT, (-1, 3, 112, 112)),
                       **{n: (dt, (-1, *shape)) for n, (dt, shape) in outputs.items()}}
            self.num_io_tensors = len(self._io)
            self._profile = [tuple(s) for s in world.engine_profile]  # an engine built elsewhere: the world's

        def get_tensor_name(self, index):
            return list(self._io)[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "image" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self._io[name][0]

        def get_tensor_shape(self, name):
            return self._io[name][1]

        def get_tensor_profile_shape(self, name, profile_index):
            return list(self._profile)

        def get_tensor_format(self, name):
            return TensorFormat[world.engine_formats.get(name, "LINEAR")]

        def create_execution_context(self):
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine, self._addresses, self._shape = engine, {}, None

        def set_tensor_address(self, name, memory):
            self._addresses[name] = int(memory)
            return True

        def set_input_shape(self, name, shape):
            self._shape = tuple(shape)
            return True

        def execute_async_v3(self, stream_handle):
            missing = [n for n in self.engine._io if n not in self._addresses]
            if missing:
                world.logs.append(("E", f"Neither address or allocator is set for output tensor {missing[0]}"))
                return False
            GPU_CLOCK.advance("execute")
            x = DEVICE_MEMORY[self._addresses["image"]].view(np.float32)[: int(np.prod(self._shape))]
            x = x.reshape(self._shape)
            b = self._shape[0]
            results = {"cls_logits": x.mean((2, 3))[:, :2], "score": x.mean((1, 2, 3))}
            for name, (dt, shape) in self.engine._io.items():
                if name == "image":
                    continue
                value = results.get(name, np.zeros((b, *shape[1:])))
                out = DEVICE_MEMORY[self._addresses[name]].view(nptype(dt))
                out[: value.size] = value.ravel()
            return True

    trt.DataType = DataType
    trt.float32, trt.float16, trt.int8, trt.int32, trt.int64 = (DataType.FLOAT, DataType.HALF, DataType.INT8,
                                                                 DataType.INT32, DataType.INT64)
    trt.bool, trt.uint8, trt.fp8, trt.bfloat16 = DataType.BOOL, DataType.UINT8, DataType.FP8, DataType.BF16
    for name, value in dict(nptype=nptype, Logger=Logger, TensorIOMode=TensorIOMode, TensorFormat=TensorFormat,
                            NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, MemoryPoolType=MemoryPoolType,
                            IHostMemory=IHostMemory, ITimingCache=ITimingCache, Builder=Builder, OnnxParser=OnnxParser,
                            Runtime=Runtime, ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext,
                            IBuilderConfig=IBuilderConfig).items():
        setattr(trt, name, value)
    return trt


def small_engine_outputs(trt) -> dict[str, tuple[Any, tuple[int, ...]]]:
    return {name: (trt.float32, shape) for name, shape in OUTPUTS.items()}


# --- the CUDA driver (pycuda.driver and libcuda through ctypes) ---

DEVICE_MEMORY: dict[int, np.ndarray] = {}  # device address -> bytes


class LogicError(RuntimeError):
    """pycuda._driver.LogicError"""


@dataclass
class Driver:
    stack: list[int] = field(default_factory=list)  # this thread's CUDA context stack (cuCtxPush/PopCurrent)
    primary_refs: dict[int, int] = field(default_factory=dict)  # device ordinal -> primary context retain count


class FakeLibcuda:
    """The ctypes view of the same driver: ``ctypes.CDLL("libcuda.so.1")`` stand-in (pointers arrive as byref)."""

    CUDA_SUCCESS, CUDA_ERROR_INVALID_CONTEXT = 0, 201

    def __init__(self, driver: Driver):
        self.driver = driver

    def cuCtxGetCurrent(self, pctx):  # noqa: N802 - the driver API's name
        pctx._obj.value = self.driver.stack[-1] if self.driver.stack else None
        return self.CUDA_SUCCESS

    def cuCtxPopCurrent_v2(self, pctx):  # noqa: N802
        if not self.driver.stack:
            return self.CUDA_ERROR_INVALID_CONTEXT
        pctx._obj.value = self.driver.stack.pop()
        return self.CUDA_SUCCESS


def fake_pycuda_driver(driver: Driver) -> types.ModuleType:
    cuda = types.ModuleType("pycuda.driver")
    pystack: list["Context"] = []  # pycuda's own context stack
    addresses = itertools.count(0x10000, 0x10000)

    def current_context(except_=None):
        while pystack:
            top = pystack[-1]
            if top is not except_ and top._valid:
                return top
            pystack.pop()
        return None

    def require_context(what):
        if current_context() is None:
            raise LogicError(f"explicit_context_dependent failed: invalid device context - no currently active "
                             f"context? ({what})")

    class Context:
        def __init__(self, handle, device):
            self._handle, self._device, self._valid = handle, device, True

        @property
        def handle(self):
            return self._handle

        def push(self):
            if pystack:
                driver.stack.pop()
            driver.stack.append(self._handle)
            pystack.append(self)

        @staticmethod
        def pop():
            if pystack:
                driver.stack.pop()
            if not pystack:
                raise LogicError("context::pop failed: invalid device context - cannot pop non-current context")
            pystack.pop()
            if pystack:
                driver.stack.append(pystack[-1]._handle)

        def detach(self):
            if not self._valid:
                raise LogicError("context::detach failed: invalid device context - cannot detach from invalid context")
            active = current_context() is self
            if not active:
                driver.stack.append(self._handle)  # cuCtxPushCurrent, then the release, which never pops
            driver.primary_refs[self._device] -= 1  # cuDevicePrimaryCtxRelease
            self._valid = False
            if active:
                new = current_context(self)
                if new is not None:
                    driver.stack.append(new._handle)

    class Device:
        def __init__(self, number):
            self._number = number

        @staticmethod
        def count():
            return 1

        def retain_primary_context(self):
            driver.primary_refs[self._number] = driver.primary_refs.get(self._number, 0) + 1
            return Context(0xC0DE0 + self._number, self._number)

    class DeviceAllocation:
        def __init__(self, nbytes):
            self._addr = next(addresses)
            DEVICE_MEMORY[self._addr] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self._addr

        def free(self):
            DEVICE_MEMORY.pop(self._addr)

    class Stream:
        def __init__(self, flags=0):
            require_context("Stream")
            self.handle = 0x5

        def synchronize(self):
            pass

    def mem_alloc(bytesize):
        require_context("mem_alloc")
        return DeviceAllocation(bytesize)

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        return np.empty(shape, dtype, order=order)

    def as_bytes(buf):
        return DEVICE_MEMORY[buf._addr] if isinstance(buf, DeviceAllocation) else buf.view(np.uint8)

    def memcpy_htod_async(dest, src, stream=None):
        d, s = as_bytes(dest), as_bytes(src)
        d[: s.nbytes] = s
        GPU_CLOCK.advance("htod")

    def memcpy_dtoh_async(dest, src, stream=None):
        d, s = as_bytes(dest), as_bytes(src)
        d[:] = s[: d.nbytes]
        GPU_CLOCK.advance("dtoh")

    class Event:
        """pycuda.driver.Event: record() stamps the stream's position on GPU_CLOCK; end.time_since(start) is ms."""

        def __init__(self, flags=0):
            require_context("Event")
            self._ms = None

        def record(self, stream=None):
            self._ms = GPU_CLOCK.now_ms
            return self

        def synchronize(self):
            return self

        def query(self):
            return True

        def _stamp(self):
            if self._ms is None:  # cuEventElapsedTime on an event never recorded
                raise LogicError("cuEventElapsedTime failed: device not ready")
            return self._ms

        def time_since(self, event):
            return self._stamp() - event._stamp()

        def time_till(self, event):
            return event._stamp() - self._stamp()

    for name, value in dict(init=lambda flags=0: None, Context=Context, Device=Device, Stream=Stream,
                            DeviceAllocation=DeviceAllocation, mem_alloc=mem_alloc, pagelocked_empty=pagelocked_empty,
                            memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async,
                            Event=Event, LogicError=LogicError).items():
        setattr(cuda, name, value)
    return cuda


def install(monkeypatch, world: TrtWorld | None = None, *, with_pycuda: bool = True):
    """Put fake tensorrt (and pycuda.driver, and libcuda for aunet.backends) in place; returns (world, trt, driver).
    Each call starts a fresh process-wide TensorRT state, as a new process would."""
    import aunet.backends as backends
    import aunet.export.tensorrt_build as tensorrt_build

    world = world or TrtWorld()
    trt = fake_tensorrt(world)
    if not world.engine_outputs:
        world.engine_outputs = small_engine_outputs(trt)
    driver = Driver()
    DEVICE_MEMORY.clear()
    GPU_CLOCK.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if with_pycuda:
        cuda = fake_pycuda_driver(driver)
        monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=cuda))
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(backends, "cuda_devices", lambda: [dict(GPU)])
    monkeypatch.setattr(tensorrt_build, "cuda_devices", lambda: [dict(GPU)])
    monkeypatch.setattr(backends, "_libcuda", lambda: FakeLibcuda(driver), raising=False)
    monkeypatch.setattr(backends, "_TRT_LOGGER", None, raising=False)
    monkeypatch.setattr(backends, "_UNVERIFIED_WARNED", set(), raising=False)
    return world, trt, driver
