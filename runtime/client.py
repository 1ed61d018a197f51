"""A client of `aunet-serve`: the Detector's interface, its model and face detector running in a Triton server.

``RemoteDetector("grpc://127.0.0.1:8001")`` (or ``http://127.0.0.1:8000``) answers ``predict_faces``,
``predict_frame`` and ``predict_video`` with the same results as a local ``Detector`` on the server's model, and
``aunet-infer --server URL`` writes the same JSON with it. Torch-free; needs ``tritonclient`` (aunet[serve] or
aunet[dev]).

The wire protocol (model and tensor names, how a frame's faces travel) is defined here, once: the server
(``aunet.serve``) packs its answers with ``frame_outputs`` and this client unpacks them with ``frame_from_outputs``.

- ``aunet_faces``: ``crops`` uint8 [N, S, S, 3] RGB face crops -> ``score`` float32 [N, 1] (fake probability),
  ``region_grid`` float32 [N, h, w] (per-patch fake probability).
- ``aunet_frames``: ``frame`` uint8 [B, H, W, 3] RGB frames -> ``face_count`` int32 [B, 1] and per face, padded
  to the most faces of any frame of the request: ``boxes`` float32 [B, F, 4] (xyxy), ``detector_scores`` float64
  [B, F], ``scores`` float32 [B, F], ``region_grids`` float16 [B, F, h, w], ``affines`` float64 [B, F, 2, 3]
  (frame -> crop). The dtypes are those of ``FaceResult``, so a remote result equals a local one bit for bit.
- ``aunet_info``: no input -> ``info`` bytes [1]: JSON with the model spec, the threshold, the backend, the face
  detector, the batch size, and the info a local result records of the server's Detector (``source_info``).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import numpy as np

from aunet.spec import ModelSpec

from .errors import InferenceError, InputError
from .pipeline import _finish
from .results import FacePredictions, FaceResult, FrameResult, VideoResult
from .sources import Sampling, Target, VideoSource

FACES_MODEL, FRAMES_MODEL, INFO_MODEL = "aunet_faces", "aunet_frames", "aunet_info"
CROPS, SCORE, REGION_GRID = "crops", "score", "region_grid"
FRAME, FACE_COUNT, BOXES, DETECTOR_SCORES, SCORES, REGION_GRIDS, AFFINES = (
    "frame", "face_count", "boxes", "detector_scores", "scores", "region_grids", "affines")
FRAME_OUTPUTS = (FACE_COUNT, BOXES, DETECTOR_SCORES, SCORES, REGION_GRIDS, AFFINES)
INFO = "info"
PROTOCOLS = {"http": 8000, "grpc": 8001}  # Triton's default ports
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_IN_FLIGHT = 4  # frames of one video on their way at once: the server batches them while the client decodes


class ServerError(InferenceError):
    """The server refused a request or failed on it; the message is the server's, on one line."""


def frame_outputs(frames: list[FrameResult], grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """One request's scored frames -> its ``aunet_frames`` outputs (faces padded to the most in any frame)."""
    # at least one face slot: PyTriton cannot move a zero-size tensor (face_count says which slots are faces)
    b, f, (h, w) = len(frames), max(1, max((len(fr.faces) for fr in frames), default=0)), grid
    out = {
        FACE_COUNT: np.array([[len(fr.faces)] for fr in frames], np.int32).reshape(b, 1),
        BOXES: np.zeros((b, f, 4), np.float32),
        DETECTOR_SCORES: np.zeros((b, f), np.float64),
        SCORES: np.zeros((b, f), np.float32),
        REGION_GRIDS: np.zeros((b, f, h, w), np.float16),
        AFFINES: np.zeros((b, f, 2, 3), np.float64),
    }
    for i, frame in enumerate(frames):
        for k, face in enumerate(frame.faces):
            out[BOXES][i, k] = face.box
            out[DETECTOR_SCORES][i, k] = face.detector_score
            out[SCORES][i, k] = face.score
            out[REGION_GRIDS][i, k] = face.region_map
            out[AFFINES][i, k] = face.affine
    return out


def frame_from_outputs(out: dict[str, np.ndarray], row: int, index: int, time_s: float) -> FrameResult:
    """Row ``row`` of ``aunet_frames`` outputs -> the FrameResult the server scored (padding dropped)."""
    faces = [
        FaceResult(
            box=np.asarray(out[BOXES][row, k], np.float32),
            detector_score=float(out[DETECTOR_SCORES][row, k]),
            score=float(np.float32(out[SCORES][row, k])),
            region_map=np.asarray(out[REGION_GRIDS][row, k], np.float16),
            affine=np.asarray(out[AFFINES][row, k], np.float64),
        )
        for k in range(int(out[FACE_COUNT][row, 0]))
    ]
    return FrameResult(index, time_s, faces)


def parse_server_url(url: str) -> tuple[str, str]:
    """``grpc://host:port``, ``http://host:port`` or ``host:port`` (HTTP) -> (protocol, "host:port")."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in PROTOCOLS:
        raise ValueError(f"server URL {url!r}: use http://HOST:PORT or grpc://HOST:PORT")
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"server URL {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    try:
        port = parts.port or PROTOCOLS[parts.scheme]
    except ValueError:
        raise ValueError(f"server URL {url!r}: bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}"


_ERROR_LINE = re.compile(r"^[\w.]+(Error|Exception): ")


def server_message(text: str) -> str:
    """Triton's error text on one line, cut to what went wrong. PyTriton wraps the error of a Python model in a
    stack trace of its own backend stub; the last ``SomeError: message`` line of it is the error itself."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") or "Traceback (most recent" in line for line in lines):
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        if errors:
            kind, _, message = errors[-1].partition(": ")
            while _ERROR_LINE.match(message):  # TritonModelException: aunet.serve.server.RequestError: ...
                kind, _, message = message.partition(": ")
            kind = kind.rpartition(".")[2]
            return message if kind in ("RequestError", "ServeFailure") else f"{kind}: {message}"
    return " ".join(lines)


def _one_line(exc: BaseException) -> str:
    message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return server_message(message) or type(exc).__name__


class _Named:
    """What the CLI's summary and a result's info read of a backend or face detector: its name."""

    def __init__(self, name: str):
        self.name = name


class RemoteDetector:
    """The Detector's interface over an `aunet-serve` server (see the module docstring).

    ``threshold`` overrides the served spec's; ``in_flight`` is how many frames of a video are sent before the
    first answer is awaited; ``timeout_s`` bounds every request. Thread-safe: each thread gets its own
    connection. Raises InputError for a bad URL or a server that does not answer as aunet-serve,
    ImportError without tritonclient.
    """

    def __init__(self, url: str, *, threshold: Optional[float] = None, in_flight: int = DEFAULT_IN_FLIGHT,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        try:
            self.protocol, self.address = parse_server_url(url)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.url = f"{self.protocol}://{self.address}"
        self.in_flight, self.timeout_s = in_flight, float(timeout_s)
        self._client_module = self._import_client()
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        try:
            info = self._read_info()
            self.spec = ModelSpec.from_dict(info["model_spec"])
            self.info = info
        except ServerError as exc:
            self.close()
            raise InputError(f"no aunet-serve answers at {self.url}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            self.close()
            raise InputError(f"{self.url} does not serve aunet models as this client reads them: {exc}") from None
        self.threshold = float(self.spec.threshold if threshold is None else threshold)
        self.backend = _Named(f"{info['backend']} via {self.url}")
        self.face_detector = _Named(str(info["face_detector"]))
        self.batch_size = int(info["batch_size"])

    # --- transport -----------------------------------------------------------------------------------------

    def _import_client(self) -> Any:
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except (ImportError, RuntimeError):  # tritonclient without this protocol's extra raises RuntimeError
            raise ImportError(f"{self.protocol} needs tritonclient[{self.protocol}]: pip install "
                              f"'tritonclient[{self.protocol}]'") from None
        return module

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._client_module.InferenceServerClient(self.address)
            else:
                client = self._client_module.InferenceServerClient(
                    self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """One request: named numpy inputs -> the named outputs. Raises ServerError with the server's message."""
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        m = self._client_module
        tensors = []
        for name, array in inputs.items():
            t = m.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            if self.protocol == "grpc":
                t.set_data_from_numpy(array)
            else:
                t.set_data_from_numpy(array, binary_data=True)
            tensors.append(t)
        if self.protocol == "grpc":
            wanted = [m.InferRequestedOutput(n) for n in outputs]
            call = {"client_timeout": self.timeout_s}
        else:
            wanted = [m.InferRequestedOutput(n, binary_data=True) for n in outputs]
            call = {}
        try:
            result = self._client().infer(model, tensors, outputs=wanted, **call)
        except InferenceServerException as exc:
            raise ServerError(f"{model}: {_one_line(exc)}") from None
        except Exception as exc:  # connection refused, reset, timed out (socket, gevent, grpc errors)
            raise ServerError(f"{model} at {self.url}: {type(exc).__name__}: {_one_line(exc)}") from None
        return {n: result.as_numpy(n) for n in outputs}

    def _read_info(self) -> dict[str, Any]:
        out = self.infer(INFO_MODEL, {}, (INFO,))[INFO]
        raw = out.reshape(-1)[0]
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))

    # --- the Detector's interface ---------------------------------------------------------------------------

    def predict_faces(self, crops: np.ndarray) -> FacePredictions:
        """Face crops uint8 [N, S, S, 3] RGB, cut as ``aunet.faces.crop.crop_face`` does -> scores and region maps."""
        s = self.spec.input_size
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
            raise ValueError(f"expected face crops uint8 [N, {s}, {s}, 3], got {crops.dtype} {list(crops.shape)}")
        h, w = self.spec.patch_grid
        if not len(crops):
            return FacePredictions(np.zeros(0, np.float32), np.zeros((0, h, w), np.float32))
        scores, maps = [], []
        for start in range(0, len(crops), self.batch_size):
            out = self.infer(FACES_MODEL, {CROPS: np.ascontiguousarray(crops[start:start + self.batch_size])},
                             (SCORE, REGION_GRID))
            scores.append(out[SCORE].reshape(-1).astype(np.float32))
            maps.append(out[REGION_GRID].astype(np.float32))
        return FacePredictions(np.concatenate(scores), np.concatenate(maps))

    def predict_frame(self, frame_rgb: np.ndarray, index: int = 0, time_s: float = 0.0) -> FrameResult:
        """Detect, crop and score the faces of one RGB frame on the server."""
        if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB frame uint8 [H, W, 3], got {frame_rgb.dtype} {list(frame_rgb.shape)}")
        out = self.infer(FRAMES_MODEL, {FRAME: np.ascontiguousarray(frame_rgb[None])}, FRAME_OUTPUTS)
        return frame_from_outputs(out, 0, index, time_s)

    def source_info(self, src) -> dict[str, Any]:
        """A result's info as the server's Detector records it (backend, face detector, spec, ...), with this
        source's entries and the server named in the backend."""
        info = dict(self.info["source_info"])
        info.update({
            "video": {"fps": src.fps, "width": src.width, "height": src.height, "frame_count": src.frame_count},
            "live": bool(getattr(src, "live", False)),
            "sampling": src.sampling.describe(),
            "backend": self.backend.name,
            "model_spec": self.spec.to_dict(),  # the spec's own types (tuples), as a local result holds them
        })
        return info

    def predict_video(
        self,
        source: Target | VideoSource,
        sampling: Sampling = Sampling(),
        *,
        on_frame: Optional[Callable[[FrameResult, Optional[np.ndarray]], None]] = None,
        keep_frames: bool = False,
        stop: Optional[threading.Event] = None,
        keep_results: Optional[bool] = None,
    ) -> VideoResult:
        """``Detector.predict_video`` with the frames scored by the server: decoded here, up to ``in_flight`` of
        them on their way at once, results in frame order. Exceptions carry what was scored as ``exc.partial``."""
        t_start = time.perf_counter()
        src = source if hasattr(source, "frames") else VideoSource(source, sampling)
        live = bool(getattr(src, "live", False))
        if keep_results is None:
            keep_results = not live or src.sampling.frames is not None
        timings = {"decode_s": 0.0, "infer_s": 0.0}
        result = VideoResult(source=src.name, threshold=self.threshold, timings=timings, keep_frames=keep_results,
                             info=self.source_info(src))
        pending: deque[tuple[Optional[np.ndarray], Future]] = deque()

        def emit_first() -> None:
            rgb, future = pending.popleft()
            t0 = time.perf_counter()
            frame = future.result()
            timings["infer_s"] += time.perf_counter() - t0  # waiting on the server, beyond decoding
            result.add(frame)
            if on_frame is not None:
                on_frame(frame, rgb)

        try:
            with ThreadPoolExecutor(self.in_flight, thread_name_prefix="aunet-remote") as pool:
                failure: Optional[Exception] = None
                try:
                    frames = iter(src.frames())
                    while not (stop is not None and stop.is_set()):
                        t0 = time.perf_counter()
                        try:
                            item = next(frames, None)
                        except Exception as exc:  # the source failed: score what came before it, then report it
                            failure = exc
                            break
                        finally:
                            timings["decode_s"] += time.perf_counter() - t0
                        if item is None:
                            break
                        index, t, rgb = item
                        pending.append((rgb if keep_frames else None, pool.submit(self.predict_frame, rgb, index, t)))
                        while pending and (len(pending) >= self.in_flight or pending[0][1].done()):
                            emit_first()
                    if stop is not None and stop.is_set() and failure is None:
                        result.info["stopped"] = True
                    while pending:
                        emit_first()
                    if failure is not None:
                        raise failure
                finally:
                    for _, future in pending:
                        future.cancel()
        except Exception as exc:
            _finish(result, timings, t_start)
            exc.partial = result  # type: ignore[attr-defined]
            raise
        finally:
            src.close()
        _finish(result, timings, t_start)
        return result

    # --- lifetime ------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass

    def __enter__(self) -> "RemoteDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
