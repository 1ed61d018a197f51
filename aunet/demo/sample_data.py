"""Real faces without a download, for tests and the demo (torch-free).

The only real human face an installed package ships at a usable size is scikit-image's ``astronaut`` (Eileen
Collins, public domain; its ``lfw_subset`` faces are 25x25 px, too small for a face detector). Variants of it
(flips, small rotations, scales, colour, different windows of the photo) stand in for different frames; they are
not different identities, so they exercise the pipeline, not a detector's accuracy.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from aunet.io import atomic_path, atomic_write_bytes

ASTRONAUT_FACE = (179, 83, 267, 171)  # dlib's box on skimage.data.astronaut(), xyxy


def astronaut() -> np.ndarray:
    """skimage's astronaut: RGB uint8 [512, 512, 3]."""
    try:
        from skimage import data
    except ImportError:
        raise RuntimeError("sample faces need scikit-image (pip install 'aunet[dev]')") from None
    return data.astronaut()


def no_face_image() -> np.ndarray:
    """A real photograph without a face (skimage's coffee cup), RGB uint8."""
    from skimage import data

    return data.coffee()


def _encode(path: Path, rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"OpenCV cannot encode {path.suffix!r} images")
    return buf.tobytes()


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image atomically; the format follows the suffix (.png is lossless)."""
    path = Path(path)
    atomic_write_bytes(path, _encode(path, rgb))
    return path


def sample_frame(rng: np.random.Generator, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """One variant of the astronaut: flip, rotation (+-8 deg), scale (0.8-1.25), colour, and a window of
    the picture around the face at a random place (the face stays whole and at least ~80 px, so dlib's HOG
    detector finds it)."""
    img = astronaut()
    h, w = img.shape[:2]
    x0, y0, x1, y1 = ASTRONAUT_FACE
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if rng.random() < 0.5:
        img, cx = img[:, ::-1], w - 1 - cx
    angle, scale = rng.uniform(-8, 8), rng.uniform(0.8, 1.25)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    # colour: per-channel gain and a brightness offset
    img = np.clip(img.astype(np.float32) * rng.uniform(0.85, 1.15, 3) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    ow, oh = out_size if out_size is not None else (int(rng.integers(320, 449)), int(rng.integers(300, 449)))
    ow, oh = min(ow, w), min(oh, h)
    # a window containing the face (half side ~ 45 px * scale around (cx, cy)), at a random offset
    half = 60 * scale
    lo_x, hi_x = max(0, int(cx + half) - ow), min(w - ow, int(cx - half))
    lo_y, hi_y = max(0, int(cy + half) - oh), min(h - oh, int(cy - half))
    left = int(rng.integers(lo_x, hi_x + 1)) if hi_x >= lo_x else max(0, min(w - ow, int(cx - ow / 2)))
    top = int(rng.integers(lo_y, hi_y + 1)) if hi_y >= lo_y else max(0, min(h - oh, int(cy - oh / 2)))
    return np.ascontiguousarray(img[top : top + oh, left : left + ow])


def make_sample_images(out_dir: str | Path, n: int, rng: np.random.Generator, suffix: str = ".png") -> list[Path]:
    """n different real-face images (PNG by default) in out_dir: sample_00.png, sample_01.png, ..."""
    out = Path(out_dir)
    return [write_image(out / f"sample_{i:02d}{suffix}", sample_frame(rng)) for i in range(n)]


def make_sample_video(path: str | Path, frames: int = 16, fps: float = 25.0, size: tuple[int, int] = (640, 480),
                      rng: np.random.Generator | None = None) -> Path:
    """A short video of the astronaut's face (~30 % of the frame height) drifting and zooming slightly.

    The codec follows the suffix: .avi -> MJPG, otherwise mp4v (both ship with opencv-python)."""
    path = Path(path)
    rng = rng if rng is not None else np.random.default_rng(0)
    w, h = size
    face = astronaut()
    x0, y0, x1, y1 = ASTRONAUT_FACE
    fcx, fcy = (x0 + x1) / 2, (y0 + y1) / 2
    base_scale = 0.3 * h / (y1 - y0)  # the face box is ~30 % of the frame height
    phase = rng.uniform(0, 2 * np.pi)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), fourcc, float(fps), (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {path.suffix!r} videos here")
        try:
            for t in range(frames):
                s = base_scale * (1.0 + 0.05 * np.sin(phase + 0.3 * t))
                tx = w / 2 - s * fcx + 0.08 * w * np.sin(phase + 0.2 * t)
                ty = h / 2 - s * fcy + 0.04 * h * np.cos(phase + 0.25 * t)
                m = np.array([[s, 0, tx], [0, s, ty]], dtype=np.float64)
                frame = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
        finally:
            writer.release()
    return path


def make_sample_set(out_dir: str | Path, images: int = 8, videos: int = 2, frames: int = 16, seed: int = 0) -> list[Path]:
    """A small folder for the demo: ``real/`` with sample images and videos (all real faces)."""
    rng = np.random.default_rng(seed)
    real = Path(out_dir) / "real"
    paths = make_sample_images(real, images, rng)
    paths += [make_sample_video(real / f"clip_{i:02d}.mp4", frames, 25.0, rng=rng) for i in range(videos)]
    return paths


if __name__ == "__main__":  # python -m aunet.demo.sample_data OUT_DIR [--images 8] [--videos 2]
    import typer

    from aunet.cli import EXIT_BAD_INPUT, EXIT_MISSING, fail, run

    PROG = "python -m aunet.demo.sample_data"
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command(epilog="Exit codes: 0 written; 2 bad usage or an unwritable folder; 3 scikit-image is missing.")
    def _cli(out_dir: Path = typer.Argument(..., help="Folder to write real/ under."),
             images: int = typer.Option(8, min=0, help="Sample face images."),
             videos: int = typer.Option(2, min=0, help="Sample face videos."),
             frames: int = typer.Option(16, min=1, help="Frames per video."),
             seed: int = typer.Option(0, help="Seed of the variations.")) -> None:
        """Write real sample faces (skimage's astronaut, varied) for aunet-prep."""
        try:
            paths = make_sample_set(out_dir, images, videos, frames, seed)
        except OSError as exc:
            raise fail(PROG, f"cannot write under {out_dir}: {exc}", EXIT_BAD_INPUT) from None
        except RuntimeError as exc:  # no scikit-image, or no video writer
            raise fail(PROG, str(exc), EXIT_MISSING) from None
        print(f"wrote {len(paths)} files under {Path(out_dir) / 'real'}")

    run(app, PROG)
