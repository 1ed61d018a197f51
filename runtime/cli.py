"""`aunet-infer VIDEO... --engine MODEL`: are a video's faces forged, and where? (torch-free)

Exit codes: 0 every input analysed; 1 with --fail-on-fake, some verdict is "fake"; 2 bad usage or input (a
missing, unreadable, corrupt or empty video, a bad engine file, a spec mismatch); 3 a missing optional
dependency or hardware (TensorRT, pycuda, a GPU, an engine built for another GPU or TensorRT); 4 inference
failed (e.g. GPU out of memory); 130 stopped by Ctrl-C (the results so far are still written: how a webcam or
stream run ends; a second Ctrl-C aborts). With several inputs, a bad one is recorded in the JSON and the
others run; the exit code is then the worst one met. Usage and file-kind errors, and inputs none of which
exist, are refused before the model loads.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aunet.backends import DEVICES, ENGINE_SUFFIXES, ONNX_SUFFIXES
from aunet.cli import exclusive, fail, print_error, run
from aunet.io import atomic_write_text
from aunet.spec import SpecError

from .annotate import VIDEO_CONTAINERS, AnnotatedVideoWriter
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_FAKE_FOUND,
    EXIT_INFERENCE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MISSING_DEPENDENCY,
    EXIT_OK,
    InputError,
    describe,
)
from .results import VERDICT_FAKE, error_record
from .sources import Sampling, VideoSource, is_live, resolve_inputs, source_name

PROG = "aunet-infer"

app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)
err = Console(stderr=True, width=120)


def check_engine_file(engine: Path) -> None:
    """Refuse a file that cannot be a deployed model before anything loads."""
    from aunet.backends import BackendError, check_model_path

    try:
        check_model_path(engine)
    except BackendError as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None


def check_spec_file(spec: Optional[Path], engine: Path) -> None:
    """``--spec`` names the ONNX a TensorRT engine was built from; refuse anything else before the model loads."""
    if spec is None:
        return
    if engine.suffix.lower() not in ENGINE_SUFFIXES:
        raise fail(PROG, f"--spec is for a TensorRT engine (.plan/.engine); {engine} is an ONNX and carries its own "
                         "spec", EXIT_BAD_INPUT)
    if spec.suffix.lower() not in ONNX_SUFFIXES:
        raise fail(PROG, f"--spec {spec}: expected the ONNX the engine was built from (.onnx)", EXIT_BAD_INPUT)
    if not spec.is_file():
        raise fail(PROG, f"--spec: ONNX not found: {spec}", EXIT_BAD_INPUT)


def load_detector(engine: Path, **options: Any):
    """The Detector; an engine built elsewhere warns that its TensorRT/GPU match is unverified: one line,
    ``aunet-infer: warning: ...``, on stderr."""
    from aunet.backends import UnverifiedEngineWarning

    from .pipeline import Detector

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnverifiedEngineWarning)
        model = Detector(engine, **options)
    for w in caught:
        if issubclass(w.category, UnverifiedEngineWarning):
            print(f"{PROG}: warning: {' '.join(str(w.message).split())}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return model


def engine_exit_code(exc: BaseException) -> int:
    """Opening the model: a missing package or GPU, an engine built elsewhere -> 3; a bad file or spec -> 2."""
    from aunet.faces import DependencyError

    from aunet.backends import BackendUnavailable, PlanMismatchError

    if isinstance(exc, (ImportError, BackendUnavailable, DependencyError, PlanMismatchError)):
        return EXIT_MISSING_DEPENDENCY
    return EXIT_BAD_INPUT


def writer_fps(src: VideoSource, sampling: Sampling) -> float:
    """Frame rate of the annotated video, so it plays at the source's speed whatever the sampling."""
    fps = src.fps or 25.0
    if sampling.every:
        return fps / sampling.every
    if sampling.frames and src.frame_count:
        return max(1.0, fps * min(sampling.frames, src.frame_count) / src.frame_count)
    return fps


def annotated_path(save_video: Path, source: str, many: bool, used: set[Path]) -> Path:
    """``save_video`` itself for one input; ``<folder>/<stem>.annotated.mp4`` for several (numbered on clashes)."""
    if not many:
        return save_video
    stem = Path(source).stem or "stream"
    path, n = save_video / f"{stem}.annotated.mp4", 1
    while path in used:
        n += 1
        path = save_video / f"{stem}-{n}.annotated.mp4"
    used.add(path)
    return path


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 --fail-on-fake and a fake verdict; 2 bad usage or input; 3 missing dependency, GPU or "
    "an engine built elsewhere; 4 inference failed (e.g. out of memory); 130 stopped by Ctrl-C (results so far "
    "are written). See docs/runtime.md."
)


@app.command(epilog=EXIT_CODES_HELP)
def infer(
    videos: list[str] = typer.Argument(..., help="Video files, folders, globs, rtsp:// or http:// URLs, webcams."),
    engine: Path = typer.Option(..., "--engine", "-e", help="Model: .onnx, or a TensorRT .plan/.engine + sidecar."),
    spec: Optional[Path] = typer.Option(
        None, "--spec", help="For a .plan/.engine built elsewhere (trtexec, Polygraphy) without a sidecar: the ONNX it "
                             "was built from, whose spec it runs with (TensorRT/GPU match unverified)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the JSON here (default: stdout)."),
    save_video: Optional[Path] = typer.Option(
        None, "--save-video", help="Annotated video (a folder when there are several inputs)."
    ),
    frames: Optional[int] = typer.Option(
        None, "--frames", min=1, help="Analyse N frames spread evenly (not with --every; default: every frame)."
    ),
    every: Optional[int] = typer.Option(None, "--every", min=1, help="Analyse every K-th frame (not with --frames)."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", min=0.0, max=1.0, help="Fake-score threshold of the verdict (default: the spec's)."
    ),
    device: Literal[DEVICES] = typer.Option(
        "auto", "--device", help="Where the model runs (tensorrt: ONNX Runtime's TensorRT EP; a .plan needs a GPU)."
    ),
    detector: Optional[Path] = typer.Option(
        None, "--detector", help="RetinaFace ONNX from `aunet-export detector` (default: dlib HOG)."
    ),
    detect_max_side: Optional[int] = typer.Option(
        None, "--detect-max-side", min=64, help="Detect faces on frames shrunk to this longer side (speed on HD)."
    ),
    batch: int = typer.Option(8, "--batch", min=1, help="Faces per inference batch (capped by the engine)."),
    grids: bool = typer.Option(True, "--grids/--no-grids", help="Include each face's tampered-region grid."),
    fail_on_fake: bool = typer.Option(False, "--fail-on-fake", help="Exit 1 when any verdict is fake."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Score the faces of each video; print or write one JSON result per video."""
    exclusive(PROG, frames=frames, every=every)
    check_engine_file(engine)
    check_spec_file(spec, engine)
    try:
        sampling = Sampling(frames=frames, every=every)
        targets = resolve_inputs(videos)
    except (ValueError, InputError) as exc:
        raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None
    # Missing files among others are recorded per input; when nothing would run, say so before loading the model.
    missing = [source_name(t) for t in targets if not is_live(t) and not Path(str(t)).exists()]
    if len(missing) == len(targets):
        raise fail(PROG, f"no such file: {', '.join(missing)}", EXIT_BAD_INPUT)
    many = len(targets) > 1
    if save_video is not None and many and save_video.suffix:
        raise fail(PROG, "--save-video must be a folder when there are several inputs", EXIT_BAD_INPUT)
    if save_video is not None and not many and save_video.suffix.lower() not in VIDEO_CONTAINERS:
        raise fail(PROG, f"--save-video: use one of {', '.join(VIDEO_CONTAINERS)}, not {save_video.name!r}",
                   EXIT_BAD_INPUT)
    if detector is not None and not detector.is_file():
        raise fail(PROG, f"face detector model not found: {detector}", EXIT_BAD_INPUT)
    try:
        model = load_detector(
            engine, spec=spec, device=device, threshold=threshold, batch_size=batch,
            detector_model=detector, detect_max_side=detect_max_side,
        )
    except Exception as exc:
        msg = describe(exc)
        raise fail(PROG, msg if str(engine) in msg else f"cannot load {engine}: {msg}",
                   engine_exit_code(exc)) from None
    try:
        model.face_detector  # load it now: a missing dlib or a bad detector model is a startup error
    except Exception as exc:
        model.close()
        raise fail(PROG, f"cannot load the face detector: {describe(exc)}", engine_exit_code(exc)) from None

    records: list[dict[str, Any]] = []
    code = EXIT_OK
    stop = threading.Event()
    used: set[Path] = set()  # annotated video paths of this run
    with model, stop_on_ctrl_c(stop), Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=quiet, transient=True,
    ) as progress:
        overall = progress.add_task("videos", total=len(targets)) if many else None
        for target in targets:
            name = source_name(target)
            try:
                records.append(_run_one(model, target, sampling, save_video, many, progress, grids, stop, used))
            except Exception as exc:  # recorded per input; the others still run
                bad_input = isinstance(exc, (InputError, SpecError))
                code = max(code, EXIT_BAD_INPUT if bad_input else EXIT_INFERENCE_FAILED)
                records.append(error_record(name, describe(exc)))
                print_error(PROG, describe(exc))
            except KeyboardInterrupt:
                records.append(error_record(name, "interrupted"))
                stop.set()
            if overall is not None:
                progress.advance(overall)
            if stop.is_set():
                code = EXIT_INTERRUPTED
                break

    text = json.dumps(records if many else records[0], indent=2)
    if out is None:
        typer.echo(text)
    else:
        try:
            atomic_write_text(out, text + "\n")
        except OSError as exc:
            raise fail(PROG, f"cannot write {out}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    if not quiet:
        err.print(summary_table(records, model.backend.name))
    if fail_on_fake and code == EXIT_OK and any(r["verdict"] == VERDICT_FAKE for r in records):
        code = EXIT_FAKE_FOUND
    raise typer.Exit(code)


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event):
    """First Ctrl-C: finish the current batch and write what was analysed. Second: abort."""

    def handler(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("stopping: finishing the current batch (Ctrl-C again to abort)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_one(model, target, sampling: Sampling, save_video: Optional[Path], many: bool, progress, grids: bool,
             stop: threading.Event, used: set[Path]) -> dict:
    src = VideoSource(target, sampling)
    task = progress.add_task(Path(src.name).name[:40], total=src.planned_frames())
    writer = None
    if save_video is not None:
        path = annotated_path(save_video, src.name, many, used)
        writer = AnnotatedVideoWriter(path, writer_fps(src, sampling), model.threshold, model.spec.input_size)

    def on_frame(frame, rgb) -> None:
        if writer is not None:
            writer.write(rgb, frame)
        progress.advance(task)

    ok = False
    try:
        result = model.predict_video(src, on_frame=on_frame, keep_frames=writer is not None, stop=stop)
        ok = True
    finally:
        src.close()
        if writer is not None:
            writer.close(ok)
        progress.remove_task(task)
    record = result.to_dict(grids)
    if writer is not None:
        record["annotated_video"] = str(writer.path)
    return record


def summary_table(records: list[dict], backend: str) -> Table:
    table = Table(title=f"aunet-infer ({backend})")
    for col, just in (("input", "left"), ("verdict", "left"), ("score", "right"), ("frames", "right"),
                      ("with face", "right"), ("frames/s", "right")):
        table.add_column(col, justify=just)
    colours = {"fake": "red", "real": "green", "no_face": "yellow", "error": "red"}
    for r in records:
        v = r["verdict"]
        if v == "error":
            table.add_row(r["source"], f"[red]error[/red]: {r['error']}", "", "", "", "")
            continue
        table.add_row(
            r["source"], f"[{colours[v]}]{v}[/{colours[v]}]",
            "-" if r["score"] is None else f"{r['score']:.3f}",
            str(r["frames_analysed"]), str(r["frames_with_face"]), f"{r['timings']['frames_per_s']:.1f}",
        )
    return table


def main(argv: Optional[Sequence[str]] = None) -> None:
    import os

    import cv2

    # One error line per bad input, not OpenCV's warnings or FFmpeg's log (read when FFmpeg first opens a file).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
