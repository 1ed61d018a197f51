"""Annotated output: face boxes, fake scores and the tampered-region heatmap drawn over each frame.

Videos go out as H.264 (yuv420p, ``+faststart``), which browsers play, through PyAV's libx264 when PyAV is
installed (``pip install av``: its wheels carry FFmpeg with libx264). Without it the writer falls back to
OpenCV's MPEG-4 Part 2 (``mp4v``), which players like VLC and FFmpeg read but browsers do not, and warns once
(``NoH264Warning``). ``.avi`` is Motion JPEG either way. An image input's annotation is an image.
"""
from __future__ import annotations

import contextlib
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from aunet.io import atomic_path, atomic_write_bytes

from .errors import InputError, OutputError
from .results import FrameResult

HEATMAP_ALPHA = 0.45
_FAKE_BGR, _REAL_BGR = (40, 40, 230), (60, 200, 60)
# Container -> OpenCV FourCC without H.264 (and for .avi always).
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_CONTAINERS = tuple(_FOURCC)
H264_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv")
IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg")
# H.264 settings: quality-targeted (CRF 23, x264's default) at a fast preset an edge CPU keeps up with.
H264_OPTIONS = {"crf": "23", "preset": "veryfast"}
_SOFTWARE_H264 = ("libx264", "libopenh264")


class NoH264Warning(UserWarning):
    """No H.264 encoder here: the annotated video is MPEG-4 Part 2, which browsers do not play."""


def h264_encoder() -> Optional[str]:
    """The software H.264 encoder PyAV offers here (libx264, else OpenH264), or None (no PyAV, or neither)."""
    try:
        import av
    except ImportError:
        return None
    for name in _SOFTWARE_H264:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # not in this FFmpeg build
            continue
    return None


def draw_frame(frame_rgb: np.ndarray, frame: FrameResult, threshold: float, crop_size: int) -> np.ndarray:
    """BGR image: each face's region map warped from its crop (side ``crop_size``) back onto the frame, then
    its box and fake score (red at or above ``threshold``, green below)."""
    h, w = frame_rgb.shape[:2]
    bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the face's affine maps frame -> crop
    ones = np.ones((crop_size, crop_size), np.float32)
    for face in frame.faces:
        heat = cv2.resize(face.region_map.astype(np.float32), (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)
        heat = cv2.warpAffine(heat, face.affine, (w, h), flags=flags, borderValue=0.0)
        inside = cv2.warpAffine(ones, face.affine, (w, h), flags=flags, borderValue=0.0)
        colour = cv2.applyColorMap(np.clip(heat * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        a = (HEATMAP_ALPHA * inside)[..., None]
        bgr = (bgr * (1.0 - a) + colour * a).astype(np.uint8)
    for face in frame.faces:
        x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
        fake = face.score >= threshold
        c = _FAKE_BGR if fake else _REAL_BGR
        cv2.rectangle(bgr, (x0, y0), (x1, y1), c, 2)
        label = f"{'fake' if fake else 'real'} {face.score:.2f}"
        cv2.putText(bgr, label, (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1, cv2.LINE_AA)
    return bgr


class _PyAvH264:
    """H.264 through PyAV: yuv420p (frames padded to even sides, as 4:2:0 needs), moov atom first."""

    def __init__(self, path: Path, fps: float, width: int, height: int, encoder: str):
        import av

        self.width, self.height = width + width % 2, height + height % 2
        options = {"movflags": "+faststart"} if path.suffix.lower() != ".mkv" else {}
        self._container = av.open(str(path), "w", container_options=options)
        try:
            self._stream = self._container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = "yuv420p"
            if encoder == "libx264":
                self._stream.options = dict(H264_OPTIONS)
            self._n = 0
        except BaseException:
            self._container.close()
            raise

    def write(self, bgr: np.ndarray) -> None:
        import av

        h, w = bgr.shape[:2]
        if (w, h) != (self.width, self.height):
            bgr = cv2.copyMakeBorder(bgr, 0, self.height - h, 0, self.width - w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts = self._n
        self._n += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def release(self) -> None:
        try:
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
        finally:
            self._container.close()


class _OpenCvWriter:
    def __init__(self, path: Path, fps: float, width: int, height: int, fourcc: str):
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not self._writer.isOpened():
            raise OSError(f"OpenCV cannot write {fourcc} into {path.suffix}")

    def write(self, bgr: np.ndarray) -> None:
        self._writer.write(bgr)

    def release(self) -> None:
        self._writer.release()


class AnnotatedVideoWriter:
    """Writes annotated frames to ``path`` atomically: the file appears only when the video is complete.

    ``codec``: "auto" (H.264 where PyAV has an encoder, else MPEG-4 Part 2 with a ``NoH264Warning``), "h264"
    (refuse without an encoder), or "opencv" (OpenCV's FourCC for the container). The writer opens on the
    first frame (its size); ``close(ok=False)`` discards a partial video. ``self.codec`` tells what was used.
    """

    def __init__(self, path: str | Path, fps: float, threshold: float, crop_size: int, codec: str = "auto"):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 25.0
        self.threshold, self.crop_size = threshold, crop_size
        self.frames_written = 0
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise InputError(f"--save-video: unsupported container {self.path.suffix!r} (use {', '.join(_FOURCC)})")
        encoder = h264_encoder() if suffix in H264_CONTAINERS and codec != "opencv" else None
        if encoder is None and codec == "h264":
            raise InputError("no H.264 encoder here: install PyAV (pip install av)")
        if encoder is None and suffix in H264_CONTAINERS and codec == "auto":
            warnings.warn("no H.264 encoder (pip install av): the annotated video is MPEG-4 Part 2, which browsers "
                          "do not play", NoH264Warning, stacklevel=2)
        self._encoder = encoder
        self.codec = "h264" if encoder else _FOURCC[suffix].lower()
        self._stack = contextlib.ExitStack()
        self._writer = None

    def _open(self, width: int, height: int) -> None:
        tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            if self._encoder:
                self._writer = _PyAvH264(tmp, self.fps, width, height, self._encoder)
            else:
                self._writer = _OpenCvWriter(tmp, self.fps, width, height, _FOURCC[self.path.suffix.lower()])
        except Exception as exc:
            raise OutputError(f"cannot write video {self.path}: {' '.join(str(exc).split())}") from None

    def write(self, frame_rgb: np.ndarray, frame: FrameResult) -> None:
        try:
            if self._writer is None:
                self._open(frame_rgb.shape[1], frame_rgb.shape[0])
            self._writer.write(draw_frame(frame_rgb, frame, self.threshold, self.crop_size))
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write video {self.path}: {exc.strerror or exc}") from None
        self.frames_written += 1

    def close(self, ok: bool = True) -> None:
        try:
            if self._writer is not None:
                self._writer.release()
                self._writer = None
        except Exception:
            ok = False
            raise
        finally:
            if ok:
                self._stack.close()  # renames the finished file into place
            else:
                self._stack.__exit__(InputError, InputError("aborted"), None)  # removes the partial file


class AnnotatedImageWriter:
    """The annotation of a one-frame input (an image) as an image, written atomically (``.png``, ``.jpg``)."""

    codec = "image"

    def __init__(self, path: str | Path, threshold: float, crop_size: int):
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_OUTPUTS:
            raise InputError(f"--save-video: an image input is annotated as {', '.join(IMAGE_OUTPUTS)}, "
                             f"not {self.path.suffix!r}")
        self.threshold, self.crop_size = threshold, crop_size
        self.frames_written = 0

    def write(self, frame_rgb: np.ndarray, frame: FrameResult) -> None:
        ok, data = cv2.imencode(self.path.suffix.lower(), draw_frame(frame_rgb, frame, self.threshold, self.crop_size))
        if not ok:
            raise OutputError(f"cannot encode {self.path}")
        try:
            atomic_write_bytes(self.path, data.tobytes())
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.frames_written += 1

    def close(self, ok: bool = True) -> None:
        pass
