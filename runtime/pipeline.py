"""The embeddable detector: ``Detector("model.onnx").predict_video("clip.mp4")`` or ``.predict_faces(crops)``.

Video pipeline: decode (thread) -> detect + crop (thread) -> batched inference (caller's thread), joined by
bounded queues, so decoding and detection run while the backend infers and memory stays flat however long
the video is. Everything about preprocessing and outputs comes from the model's spec (``backend.spec``).

Thread-safety: one ``Detector`` may be shared by threads. Backend calls serialize on one lock (a TensorRT
engine has one set of I/O buffers and one stream), face detection on another, so concurrent videos are safe
but do not infer in parallel; for parallel inference give each thread its own Detector.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from aunet.faces.crop import crop_face
from aunet.faces import Face
from aunet.spec import ModelSpec, SpecError, fake_probability

from aunet.faces import FaceDetector, FacePolicy, make_face_detector
from .errors import InferenceError, describe
from .results import FacePredictions, FaceResult, FrameResult, VideoResult
from .sources import Sampling, Target, VideoSource
from .threads import BackgroundIterator

SCORE_OUTPUT, PATCH_OUTPUT = "score", "patch_logits"  # the spec's output names the runtime reads
DEFAULT_BATCH = 8
DECODE_QUEUE_FRAMES = 4  # decoded frames waiting for detection
MAX_PENDING_FRAMES = 16  # frames waiting for a batch to fill: faceless stretches flush early, kept frames stay few


@dataclass
class _FrameFaces:
    """A frame after detection and cropping, waiting for inference."""

    index: int
    time_s: float
    frame: Optional[np.ndarray]  # kept only when the frames are annotated
    faces: list[Face]
    crops: np.ndarray  # [F, S, S, 3] uint8
    affines: np.ndarray  # [F, 2, 3] frame -> crop


def check_spec(spec: ModelSpec) -> None:
    """Refuse a spec this runtime cannot serve (unknown layout or colour, missing outputs)."""
    missing = [n for n in (SCORE_OUTPUT, PATCH_OUTPUT) if n not in spec.output_names]
    if missing:
        raise SpecError(f"model spec lacks the outputs {missing} (has {list(spec.output_names)})")
    if spec.input_layout not in ("NCHW", "NHWC"):
        raise SpecError(f"unsupported input layout {spec.input_layout!r}")
    if spec.color not in ("RGB", "BGR"):
        raise SpecError(f"unsupported input colour order {spec.color!r}")
    if len(spec.value_range) != 2 or not spec.value_range[0] < spec.value_range[1]:
        raise SpecError(f"bad input value range {spec.value_range!r}")


def preprocess(crops: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Face crops uint8 [N, S, S, 3] RGB -> the model input (layout, colour order, value range of the spec)."""
    s = spec.input_size
    if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
        raise ValueError(f"expected face crops uint8 [N, {s}, {s}, 3], got {crops.dtype} {list(crops.shape)}")
    x = crops[..., ::-1] if spec.color == "BGR" else crops
    lo, hi = spec.value_range
    x = x.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    if spec.input_layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def region_maps(patch_logits: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Patch logits [N, n, 2] -> per-patch fake probability [N, h, w] on the spec's grid (row-major patches)."""
    h, w = spec.patch_grid
    if patch_logits.ndim != 3 or patch_logits.shape[1:] != (h * w, 2):
        raise SpecError(f"patch_logits {list(patch_logits.shape)} do not fit the spec's {h}x{w} patch grid")
    return fake_probability(patch_logits).astype(np.float32).reshape(-1, h, w)


class Detector:
    """A face-forgery detector over one model file (.onnx, or a TensorRT .plan/.engine with its sidecar).

    ``spec``: for an engine built elsewhere (trtexec, Polygraphy) without a sidecar, the ONNX it was built from,
    whose spec it runs with (its I/O are checked against it; its TensorRT/GPU match is unverified, one warning).
    ``threshold`` overrides the spec's; ``batch_size`` is how many faces go to the backend at once (capped by
    the engine's max batch); ``face_detector`` is a FaceDetector, by default ``detector_model`` (a detector ONNX
    or a name, aunet.faces.make_face_detector), else the one the spec records (the training crops'), else
    "auto"; ``face_policy`` (which faces are scored) defaults to the spec's.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        spec: Optional[str | Path] = None,
        device: str = "auto",
        providers: Optional[list[str]] = None,
        threshold: Optional[float] = None,
        batch_size: int = DEFAULT_BATCH,
        face_detector: Optional[FaceDetector] = None,
        detector_model: Optional[str | Path] = None,
        detect_max_side: Optional[int] = None,
        face_policy: Optional[FacePolicy] = None,
    ):
        from aunet.backends import open_backend

        self.backend = open_backend(model, device=device, providers=providers, spec=spec)
        try:
            self.spec: ModelSpec = self.backend.spec
            check_spec(self.spec)
            self.threshold = float(self.spec.threshold if threshold is None else threshold)
            if not 0.0 <= self.threshold <= 1.0:
                raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
            if batch_size < 1:
                raise ValueError(f"batch size must be >= 1, got {batch_size}")
            self.batch_size = min(batch_size, self.backend.max_batch or batch_size)
            self._face_detector = face_detector
            self.face_policy = face_policy or FacePolicy.from_dict(self.spec.faces.get("policy"))
            self._detector_model, self._detect_max_side, self._device = detector_model, detect_max_side, device
            self._lock = threading.Lock()
            self._detect_lock = threading.Lock()
            self._check_engine_runs_spec(model)
        except BaseException:
            self.backend.close()
            raise

    def _check_engine_runs_spec(self, model) -> None:
        """One blank face through the backend: a graph whose input shape disagrees with its spec fails here, at
        load time, as a spec error rather than later as an inference failure. It also warms the backend up."""
        s = self.spec.input_size
        try:
            self.predict_faces(np.zeros((1, s, s, 3), np.uint8))
        except InferenceError as exc:
            cause = " ".join(str(exc.__cause__ or exc).split())
            if any(k in cause.lower() for k in ("dimension", "shape", "invalid_argument")):
                raise SpecError(f"{model} does not run the input its spec describes: {cause}") from None
            raise

    # --- faces ---------------------------------------------------------------------------------------------

    def predict_faces(self, crops: np.ndarray) -> FacePredictions:
        """Face crops uint8 [N, S, S, 3] RGB, cut as ``aunet.faces.crop.crop_face`` does -> scores and region maps."""
        x = preprocess(crops, self.spec)
        scores, maps = [], []
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size]
            with self._lock:
                try:
                    out = self.backend.infer(batch)
                except (SpecError, ValueError):
                    raise
                except Exception as exc:  # out of memory, driver or runtime failure
                    raise InferenceError(f"inference failed on {len(batch)} faces: {describe(exc)}") from exc
            scores.append(np.asarray(out[SCORE_OUTPUT], np.float32).reshape(len(batch)))
            maps.append(region_maps(np.asarray(out[PATCH_OUTPUT]), self.spec))
        if not scores:
            h, w = self.spec.patch_grid
            return FacePredictions(np.zeros(0, np.float32), np.zeros((0, h, w), np.float32))
        return FacePredictions(np.concatenate(scores), np.concatenate(maps))

    def crop_faces(self, frame_rgb: np.ndarray, faces: list[Face]) -> tuple[np.ndarray, np.ndarray]:
        """The training crop of each face -> (crops uint8 [F, S, S, 3], affines [F, 2, 3] frame -> crop)."""
        s = self.spec.input_size
        if not faces:
            return np.zeros((0, s, s, 3), np.uint8), np.zeros((0, 2, 3), np.float64)
        pairs = [crop_face(frame_rgb, f.box, s, self.spec.crop) for f in faces]
        return np.stack([c for c, _ in pairs]), np.stack([a for _, a in pairs])

    def predict_frame(self, frame_rgb: np.ndarray) -> FrameResult:
        """Detect, crop and score the faces of one RGB frame."""
        item = self._detect(self.face_detector, frame_rgb, 0, 0.0, keep_frame=False)
        return self._score([item])[0]

    # --- video ---------------------------------------------------------------------------------------------

    @property
    def face_detector(self) -> FaceDetector:
        if self._face_detector is None:
            self._face_detector = make_face_detector(
                self._detector_model, self._detect_max_side, self._device, min_score=self.face_policy.min_score,
                recorded=self.spec.faces.get("detector"))
        return self._face_detector

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
        """Analyse a video file, image, URL or webcam index (or an opened VideoSource, or any object with its
        ``name``, ``live``, ``sampling``, ``fps``, ``width``, ``height``, ``frame_count``, ``frames()`` and
        ``close()``, which brings its own sampling).

        ``on_frame(result, frame_rgb)`` is called in frame order as results arrive (streamed output, progress
        bars, annotated video); ``frame_rgb`` is None unless ``keep_frames``. ``keep_results`` (default: unless
        the source is live and unbounded) keeps every FrameResult in ``result.frames``; a live source keeps only
        the running aggregates, so memory stays flat for days — its frames reach ``on_frame`` only. Setting
        ``stop`` ends the analysis early with the frames so far (``info["stopped"]``): how a webcam or stream
        run ends. Raises InputError for a missing, unreadable or empty input, SourceLost when a live source stops
        delivering frames, InferenceError when the backend fails; the frames decoded before a source or face
        detector failure are still scored and passed to ``on_frame`` first, and every exception raised here
        carries what was scored as ``exc.partial`` (a VideoResult).
        """
        t_start = time.perf_counter()
        detector = self.face_detector
        src = source if hasattr(source, "frames") else VideoSource(source, sampling)
        live = bool(getattr(src, "live", False))
        if keep_results is None:
            keep_results = not live or src.sampling.frames is not None
        timings = {"decode_s": 0.0, "detect_s": 0.0, "infer_s": 0.0}
        result = VideoResult(source=src.name, threshold=self.threshold, timings=timings, keep_frames=keep_results,
                             info=self.source_info(src))

        def detected(frames: Iterable[tuple[int, float, np.ndarray]]) -> Iterator[_FrameFaces]:
            for index, t, rgb in frames:
                t0 = time.perf_counter()
                item = self._detect(detector, rgb, index, t, keep_frames)
                timings["detect_s"] += time.perf_counter() - t0
                yield item

        try:
            with contextlib.ExitStack() as stack:
                stack.callback(src.close)
                decoded = stack.enter_context(
                    BackgroundIterator(_timed(src.frames(), timings, "decode_s"), DECODE_QUEUE_FRAMES, "aunet-decode")
                )
                ready = stack.enter_context(
                    BackgroundIterator(detected(decoded), self.batch_size, "aunet-detect", cancel=stop)
                )
                pending: list[_FrameFaces] = []
                failure: Optional[Exception] = None
                while True:
                    try:
                        item = next(ready)
                    except StopIteration:
                        break
                    except Exception as exc:  # the source or the face detector: score what came before it
                        failure = exc
                        break
                    if stop is not None and stop.is_set():
                        break
                    pending.append(item)
                    if sum(len(p.faces) for p in pending) >= self.batch_size or len(pending) >= MAX_PENDING_FRAMES:
                        self._emit(pending, result, timings, on_frame)
                        pending = []
                if stop is not None and stop.is_set() and failure is None:
                    result.info["stopped"] = True
                if failure is not None:
                    try:
                        self._emit(pending, result, timings, on_frame)
                    except Exception:
                        pass  # the source's failure is the one to report
                    raise failure
                self._emit(pending, result, timings, on_frame)
        except Exception as exc:
            _finish(result, timings, t_start)
            try:
                exc.partial = result  # type: ignore[attr-defined]
            except AttributeError:
                pass
            raise
        _finish(result, timings, t_start)
        return result

    def source_info(self, src) -> dict:
        """What a result records about its input and this detector: the video's fps, size and frame count,
        whether it is live, the sampling, the backend, the face detector, the batch size and the model spec."""
        return {
            "video": {"fps": src.fps, "width": src.width, "height": src.height, "frame_count": src.frame_count},
            "live": bool(getattr(src, "live", False)),
            "sampling": src.sampling.describe(),
            "backend": self.backend.name,
            "face_detector": self.face_detector.name,
            "face_policy": self.face_policy.to_dict(),
            "batch_size": self.batch_size,
            "model_spec": self.spec.to_dict(),
        }

    def _detect(self, detector: FaceDetector, rgb: np.ndarray, index: int, t: float, keep_frame: bool) -> _FrameFaces:
        with self._detect_lock:  # detectors (dlib, an ORT session) are not promised to be reentrant
            faces = self.face_policy.apply(detector.detect(rgb))
        crops, affines = self.crop_faces(rgb, faces)
        return _FrameFaces(index, t, rgb if keep_frame else None, faces, crops, affines)

    def _score(self, items: list[_FrameFaces]) -> list[FrameResult]:
        crops = [i.crops for i in items if len(i.crops)]
        preds = self.predict_faces(np.concatenate(crops)) if crops else None
        out, k = [], 0
        for item in items:
            faces = []
            for face, affine in zip(item.faces, item.affines):
                faces.append(FaceResult(
                    box=np.asarray(face.box, np.float32),
                    detector_score=float(face.score),
                    score=float(preds.scores[k]),
                    region_map=preds.region_maps[k].astype(np.float16),
                    affine=affine,
                ))
                k += 1
            out.append(FrameResult(item.index, item.time_s, faces))
        return out

    def _emit(self, items, result: VideoResult, timings: dict, on_frame) -> None:
        if not items:
            return
        t0 = time.perf_counter()
        frames = self._score(items)
        timings["infer_s"] += time.perf_counter() - t0
        for item, frame in zip(items, frames):
            result.add(frame)
            if on_frame is not None:
                on_frame(frame, item.frame)

    # --- lifetime ------------------------------------------------------------------------------------------

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _finish(result: VideoResult, timings: dict, t_start: float) -> None:
    timings["total_s"] = time.perf_counter() - t_start
    timings["frames_per_s"] = result.frames_analysed / max(timings["total_s"], 1e-9)


def _timed(it: Iterable, timings: dict, key: str) -> Iterator:
    """Re-yield ``it``, adding the time spent producing each item to ``timings[key]``."""
    it = iter(it)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            timings[key] += time.perf_counter() - t0
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
