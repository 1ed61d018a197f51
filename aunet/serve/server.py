"""A Detector behind NVIDIA Triton (PyTriton): three models, dynamic batching, health, metrics, clean stops.

PyTriton runs ``tritonserver`` (HTTP, gRPC, Prometheus metrics) as a child process with its Python backend; the
backend hands each batch of requests to the callables here, in this process, where the runtime's Detector
scores them (ONNX Runtime or TensorRT through ``aunet.backends``: PyTriton bundles no other Triton backend).
The wire protocol (model and tensor names, padding of faces) is ``aunet.runtime.client``'s.

Triton checks every request against the model config before it reaches this process (tensor names, dtypes,
shapes, the batch limit) and answers a bad one with an error; what it cannot check (a frame's size) is checked
here and refused with a ``RequestError``. Dynamic batching groups requests of one shape only, so a refused
frame never takes another client's frame down with it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sysconfig
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from aunet.runtime.client import (
    AFFINES,
    BOXES,
    CROPS,
    DETECTOR_SCORES,
    FACE_COUNT,
    FACES_MODEL,
    FRAME,
    FRAMES_MODEL,
    INFO,
    INFO_MODEL,
    REGION_GRID,
    REGION_GRIDS,
    SCORE,
    SCORES,
    frame_outputs,
)
from aunet.runtime.errors import describe
from aunet.runtime.sources import Sampling

MIN_FRAME_SIDE, MAX_FRAME_SIDE = 16, 8192  # px; a 1x10000 "frame" is a client bug, not a picture
DEFAULT_MAX_BATCH = 32  # face crops per batch (capped by a TensorRT engine's profile)
DEFAULT_FRAMES_MAX_BATCH = 8  # frames of one size per batch
DEFAULT_QUEUE_DELAY_US = 2000  # how long a request waits for others to fill a batch
DEFAULT_EXIT_TIMEOUT_S = 30  # on SIGTERM, how long in-flight requests get to finish


class _MessageOnly:
    """PyTriton sends a client ``traceback.format_exception(None, e, e.__traceback__)`` of what an inference
    callable raised. Reading ``__traceback__`` as None keeps that to the message line: the server's code
    paths are no business of its clients (the interpreter keeps the real traceback in the exception itself)."""

    __traceback__ = property(lambda self: None, lambda self, value: None)


class RequestError(_MessageOnly, ValueError):
    """A request this server refuses (its client's fault); the server goes on serving."""


class ServeFailure(_MessageOnly, RuntimeError):
    """The model failed on a batch (out of memory, a driver error); its clients get this message."""


class OneLineErrors(logging.Filter):
    """PyTriton logs every failed batch as a warning with the callable's traceback: keep its last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Exception while performing inference") and len(record.args or ()) == 2:
            lines = [line for line in str(record.args[1]).splitlines() if line.strip()]
            last = lines[-1] if lines else "unknown error"
            refused = "RequestError" in last.split(":", 1)[0]
            record.msg, record.args = ("refused a request: %s" if refused else "a batch failed: %s"), (
                last.split(": ", 1)[-1],)
        return True


@dataclass(frozen=True)
class ServeConfig:
    """Where the server listens and how it batches. Ports 0 are not allowed: Triton needs them named."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = DEFAULT_MAX_BATCH
    frames_max_batch: int = DEFAULT_FRAMES_MAX_BATCH
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S

    def urls(self) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {"http": f"http://{host}:{self.http_port}", "grpc": f"grpc://{host}:{self.grpc_port}",
                "metrics": f"http://{host}:{self.metrics_port}/metrics"}


def ports_in_use(config: ServeConfig) -> list[int]:
    """The configured ports something already listens on (Triton would fail later, less clearly)."""
    taken = []
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    for port in (config.http_port, config.grpc_port, config.metrics_port):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((config.host, port))
            except OSError:
                taken.append(port)
    return taken


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for tests and benchmarks; another process may take it before Triton)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _NoSource:
    """The source entries of ``Detector.source_info`` before there is a source."""

    fps, width, height, frame_count, live, sampling = 0.0, 0, 0, None, False, Sampling()


class ServedDetector:
    """The inference callables of the three models over one Detector (whose locks make them safe to call from
    the models' threads at once)."""

    def __init__(self, detector):
        self.detector = detector
        self.spec = detector.spec
        self.grid = tuple(detector.spec.patch_grid)
        self.info = {
            "model_spec": detector.spec.to_dict(),
            "threshold": detector.threshold,
            "backend": detector.backend.name,
            "face_detector": detector.face_detector.name,
            "batch_size": detector.batch_size,
            # what a local result records of this detector; the client fills in the source's own entries
            "source_info": detector.source_info(_NoSource()),
        }

    def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RequestError:
            raise
        except Exception as exc:
            raise ServeFailure(f"inference failed: {describe(exc)}") from None

    def faces(self, requests: list) -> list[dict[str, np.ndarray]]:
        """``aunet_faces``: Triton has checked each request's ``crops`` (uint8 [n, S, S, 3], n <= max batch)."""
        crops = [np.asarray(r[CROPS]) for r in requests]
        preds = self._run(lambda: self.detector.predict_faces(np.concatenate(crops)))
        out, start = [], 0
        for c in crops:
            end = start + len(c)
            out.append({SCORE: preds.scores[start:end].reshape(-1, 1).astype(np.float32),
                        REGION_GRID: preds.region_maps[start:end].astype(np.float32)})
            start = end
        return out

    def frames(self, requests: list) -> list[dict[str, np.ndarray]]:
        """``aunet_frames``: each frame detected and cropped as the local Detector does, the faces of the whole
        batch scored together."""
        batches = [np.asarray(r[FRAME]) for r in requests]
        for frames in batches:
            h, w = frames.shape[1:3]
            if not (MIN_FRAME_SIDE <= h <= MAX_FRAME_SIDE and MIN_FRAME_SIDE <= w <= MAX_FRAME_SIDE):
                raise RequestError(f"frame of {w}x{h} px: each side must be {MIN_FRAME_SIDE} to {MAX_FRAME_SIDE} px")
        d = self.detector

        def score():
            # the Detector's own detect -> crop -> score steps, so a served frame is scored as a local one is
            items = [d._detect(d.face_detector, np.ascontiguousarray(rgb), 0, 0.0, False)
                     for frames in batches for rgb in frames]
            return d._score(items)

        results = self._run(score)
        out, start = [], 0
        for frames in batches:
            out.append(frame_outputs(results[start:start + len(frames)], self.grid))
            start += len(frames)
        return out

    def describe(self, requests: list) -> list[dict[str, np.ndarray]]:
        """``aunet_info``: what a client needs to read the answers as a local Detector's."""
        text = json.dumps(self.info).encode("utf-8")  # key order kept: the client writes the same JSON
        return [{INFO: np.array([text], dtype=np.object_)} for _ in requests]


def bind_models(triton, served: ServedDetector, config: ServeConfig) -> None:
    """Bind ``aunet_faces``, ``aunet_frames`` and ``aunet_info`` to a started ``pytriton.triton.Triton``."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    s, (h, w) = served.spec.input_size, served.grid
    delay = DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us)
    triton.bind(
        model_name=FACES_MODEL, infer_func=served.faces,
        inputs=[Tensor(name=CROPS, dtype=np.uint8, shape=(s, s, 3))],
        outputs=[Tensor(name=SCORE, dtype=np.float32, shape=(1,)),
                 Tensor(name=REGION_GRID, dtype=np.float32, shape=(h, w))],
        config=ModelConfig(max_batch_size=config.max_batch, batcher=delay), strict=True,
    )
    triton.bind(
        model_name=FRAMES_MODEL, infer_func=served.frames,
        inputs=[Tensor(name=FRAME, dtype=np.uint8, shape=(-1, -1, 3))],
        outputs=[Tensor(name=FACE_COUNT, dtype=np.int32, shape=(1,)),
                 Tensor(name=BOXES, dtype=np.float32, shape=(-1, 4)),
                 Tensor(name=DETECTOR_SCORES, dtype=np.float64, shape=(-1,)),
                 Tensor(name=SCORES, dtype=np.float32, shape=(-1,)),
                 Tensor(name=REGION_GRIDS, dtype=np.float16, shape=(-1, h, w)),
                 Tensor(name=AFFINES, dtype=np.float64, shape=(-1, 2, 3))],
        config=ModelConfig(max_batch_size=config.frames_max_batch, batcher=delay), strict=True,
    )
    triton.bind(
        model_name=INFO_MODEL, infer_func=served.describe, inputs=[],
        outputs=[Tensor(name=INFO, dtype=np.bytes_, shape=(1,))],
        config=ModelConfig(batching=False), strict=True,
    )


def stub_library_path() -> None:
    """The Python backend's stub links libpython3.X.so: without its folder on LD_LIBRARY_PATH (a pyenv or
    venv Python keeps it outside the loader's paths) the model load hangs for a minute and fails."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def serve(detector, config: ServeConfig, stop: threading.Event,
          on_ready: Optional[Callable[[ServeConfig], None]] = None) -> None:
    """Serve ``detector`` until ``stop`` is set (or Triton dies), then stop Triton: it answers the requests in
    flight (up to ``config.exit_timeout_s``) before it exits. Raises RuntimeError when Triton stopped by itself."""
    stub_library_path()
    # PyTriton's shared memory is unlinked at exit by multiprocessing's resource tracker, which warns for each block
    # it frees: noise, not a leak. The tracker is a child process that takes its warning filters from here.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    logging.getLogger("pytriton.proxy.inference").addFilter(OneLineErrors())
    from pytriton.triton import Triton, TritonConfig

    triton_config = TritonConfig(
        http_address=config.host, http_port=config.http_port,
        grpc_address=config.host, grpc_port=config.grpc_port,
        metrics_address=config.host, metrics_port=config.metrics_port, allow_metrics=True,
        exit_timeout_secs=config.exit_timeout_s,
    )
    served = ServedDetector(detector)
    with Triton(config=triton_config) as triton:
        bind_models(triton, served, config)
        if on_ready is not None:
            on_ready(config)
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise RuntimeError("the Triton server stopped by itself")
