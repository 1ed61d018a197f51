"""`aunet-prep`: videos and images -> a face cache (aunet.faces.cache) for training and evaluation (torch-free unless
RetinaFace is used).

    aunet-prep INPUT --out DIR [--frames 32] [--size 224] [--detector auto|retinaface|dlib|blazeface|yunet]
               [--detector-model FILE] [--min-face-size PX] [--min-relative-face-size F] [--max-faces N]
               [--workers N] [--split-dir DIR] [--faces largest|all] [--label auto|real|fake]
               [--compression c23|c40|raw|all]
    aunet-prep preview DIR --out grid.png

INPUT: a video, an image, a folder of videos and/or images, or a FaceForensics++ root (original_sequences/,
manipulated_sequences/) with its split JSONs (train.json, val.json, test.json), read as the paper does: the
YouTube reals and Deepfakes, Face2Face, FaceSwap, NeuralTextures at c23, each video in its official split; the
rest of the tree (DeepFakeDetection, FaceShifter, other folders) and videos no split lists are left out and
counted. Per frame: faces detected and kept by the face policy (aunet.faces.policy), 68 landmarks (dlib), the
crop cut as aunet.faces.crop / the CropSpec defines it, landmarks mapped into the crop.
A video that cannot be read, has no frames or shows no face is recorded (records/<id>.json) and skipped; the
run goes on. Rerunning skips the finished videos. Exit codes (docs/preprocessing.md): 0 done (failures are
recorded), 1 no input gave a face, 2 bad input or usage, 3 a missing dependency or model file, 4 writing the
cache failed (e.g. disk full; finished videos are kept), 130 interrupted (rerun to resume).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
import typer
from rich.console import Console

from aunet.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_MISSING, fail, run
from aunet.faces import DETECTORS, DependencyError, DetectorModelError, FacePolicy
from aunet.faces.cache import STATUS_OK, CacheError, FaceCache, is_face_cache
from aunet.io import atomic_write_bytes
from aunet.prep.inputs import FFPP_COMPRESSIONS, FFPP_DEFAULT_COMPRESSION, LABELS, PrepError, discover
from aunet.prep.run import FACE_MODES, PrepSettings, run_prep, summary_table
from aunet.spec import CropSpec
from aunet.tap.preview import preview_grid

PROG = "aunet-prep"
PREVIEW_PROG = f"{PROG} preview"  # a subcommand speaks as "aunet-prep preview: error: ..." (argparse's style)
EXIT_NO_FACE = EXIT_CHECK_FAILED  # no input gave a face: nothing to train on
EXIT_WRITE = 4  # writing the cache failed (disk full); the finished videos are kept

prep_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
preview_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None)


@prep_app.command()
def prep(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="a video, an image, a folder of them, or an FF++ root"),
    out: Path = typer.Option(..., "--out", help="the face cache folder (created, or resumed)"),
    frames: int = typer.Option(32, min=1, help="frames sampled evenly per video"),
    size: int = typer.Option(224, min=16, help="crop side in pixels (the model's input size)"),
    margin: float = typer.Option(CropSpec().margin, min=0.0, help="crop margin, fraction of the face box side, each side"),
    detector: Literal[DETECTORS] = typer.Option(
        "auto", help="face detector: auto (RetinaFace when its weights are there, else BlazeFace when installed, "
                     "else dlib), retinaface, dlib, blazeface, yunet (needs --detector-model)"),
    retinaface_weights: Optional[Path] = typer.Option(None, help="RetinaFace weights (Pytorch_Retinaface .pth)"),
    detector_model: Optional[Path] = typer.Option(
        None, help="the detector's model file: YuNet's .onnx, a detector ONNX, or a BlazeFace .tflite"),
    min_score: Optional[float] = typer.Option(None, help="detector score threshold (default: the detector's)"),
    min_face_size: float = typer.Option(0.0, min=0.0, help="drop faces smaller than this (px, box's longer side)"),
    min_relative_face_size: float = typer.Option(
        0.0, min=0.0, max=1.0, help="drop faces smaller than this fraction of the frame's largest face"),
    max_faces: Optional[int] = typer.Option(None, min=1, help="keep the N largest faces per frame (default: all)"),
    faces: Literal[FACE_MODES] = typer.Option(
        "largest", help="largest: one face per frame (training); all: every face (evaluation)"),
    label: Literal[LABELS] = typer.Option(
        "auto", help="auto: from FF++ / real|fake folder names; real or fake: every input gets it"),
    split_dir: Optional[Path] = typer.Option(None, help="folder with FF++'s train.json, val.json, test.json"),
    compression: Literal[("all",) + FFPP_COMPRESSIONS] = typer.Option(
        FFPP_DEFAULT_COMPRESSION, help="FF++ only: keep one compression (c23, the paper's HQ, by default), or all"),
    workers: int = typer.Option(1, min=0, help="worker processes (0 or 1: in this process)"),
) -> None:
    """Detect, align and crop faces into a resumable cache. Look at it with: aunet-prep preview DIR --out grid.png

    Exit codes: 0 done (failures recorded in DIR/records), 1 no input gave a face, 2 bad input or usage,
    3 missing dependency or model file, 4 cannot write the cache (disk full), 130 interrupted (rerun resumes).
    """
    if is_face_cache(input_path):
        raise fail(PROG, f"{input_path} is already a face cache: train on it with aunet-train --data {input_path}, "
                         f"or look at it with aunet-prep preview {input_path} --out grid.png")
    if out.exists() and not out.is_dir():
        raise fail(PROG, f"--out {out} is a file: give the cache's folder")
    if retinaface_weights is not None and not retinaface_weights.is_file():
        raise fail(PROG, f"RetinaFace weights not found: {retinaface_weights}", EXIT_MISSING)
    if detector_model is not None and not detector_model.is_file():
        raise fail(PROG, f"face detector model not found: {detector_model}", EXIT_MISSING)
    console = Console(stderr=True)
    try:
        jobs = discover(input_path, split_dir, label, compression, console)
        settings = PrepSettings(size=size, crop=CropSpec(margin=margin), frames=frames, faces=faces, detector=detector,
                                retinaface_weights=str(retinaface_weights) if retinaface_weights else None,
                                min_score=min_score, detector_model=str(detector_model) if detector_model else None,
                                policy=FacePolicy(min_size=min_face_size, min_relative_size=min_relative_face_size,
                                                  max_faces=max_faces))
        with warnings.catch_warnings():  # restores showwarning on exit
            warnings.showwarning = _warning_line  # a detector's warning (an unknown YuNet file) in our voice
            result = run_prep(jobs, out, settings, workers=workers, console=console)
    except (PrepError, CacheError, DetectorModelError) as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except DependencyError as exc:
        raise fail(PROG, str(exc), EXIT_MISSING) from None
    except KeyboardInterrupt:
        raise fail(PROG, f"interrupted; the finished videos are in {out}, rerun to resume", EXIT_INTERRUPTED) from None
    except OSError as exc:
        raise fail(PROG, f"cannot write the cache {out}: {exc.strerror or exc}; rerun to resume", EXIT_WRITE) from None
    console.print(summary_table(result))
    failures = [r for r in result.records if r.status != STATUS_OK]
    for r in failures[:10]:
        console.print(f"  skipped {r.video_id}: {r.status} ({r.error})", markup=False, highlight=False)
    if len(failures) > 10:
        console.print(f"  ... {len(failures) - 10} more in {out}/records")
    cache = FaceCache(out)
    total_ok = len(cache.videos())
    console.print(f"{out}: {total_ok} inputs with faces, {len(cache.failures())} recorded failures")
    if total_ok == 0:
        raise fail(PROG, "no input gave a face", EXIT_NO_FACE)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


@preview_app.command()
def preview(
    cache_dir: Path = typer.Argument(..., metavar="DIR", help="a face cache made by aunet-prep"),
    out: Path = typer.Option(..., "--out", help="the PNG to write"),
    rows: int = typer.Option(6, min=1, max=64, help="faces shown, one per row"),
    seed: int = typer.Option(0, help="seed of the TAP fakes"),
) -> None:
    """A picture of real crops, their TAP fakes, M_p and the AU maps. Exit codes: 0 written, 2 bad input
    (DIR is not a face cache, or holds no face), 4 cannot write the PNG."""
    if not cache_dir.exists():
        raise fail(PREVIEW_PROG, f"{cache_dir} does not exist")
    if not is_face_cache(cache_dir):
        raise fail(PREVIEW_PROG, f"{cache_dir} is not a face cache: make one with aunet-prep INPUT --out {cache_dir}")
    try:
        grid = preview_grid(FaceCache(cache_dir), rows, seed)
    except CacheError as exc:
        raise fail(PREVIEW_PROG, str(exc), EXIT_BAD_INPUT) from None
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(grid[..., ::-1]))
    if not ok:
        raise fail(PREVIEW_PROG, "OpenCV could not encode the preview as PNG", EXIT_WRITE)
    try:
        atomic_write_bytes(out, buf.tobytes())
    except OSError as exc:
        raise fail(PREVIEW_PROG, f"cannot write {out}: {exc.strerror or exc}", EXIT_WRITE) from None
    Console(stderr=True).print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]})", markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: `aunet-prep INPUT ...` or `aunet-prep preview DIR ...` (exits with the code)."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our one line per failure, not OpenCV's
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["preview"]:
        run(preview_app, PREVIEW_PROG, args[1:])
    run(prep_app, PROG, args)


if __name__ == "__main__":
    main()
