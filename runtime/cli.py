"""`aunet-infer INPUT... --engine MODEL`: are the faces of a video, image or stream forged, and where? (torch-free)

Output: one JSON document (--format json, the default), or records streamed as frames are scored (jsonl, csv),
flushed as they are written, so a crash or Ctrl-C keeps everything scored; --skip-done resumes a batch. Exit
codes: 0 every input analysed; 1 with --fail-on-fake, some verdict is "fake"; 2 bad usage or input (a missing,
unreadable, corrupt or empty video, a bad engine file, a spec mismatch, an unwritable output); 3 a missing
optional dependency or hardware (TensorRT, pycuda, a GPU, an engine built for another GPU or TensorRT); 4
inference failed (e.g. GPU out of memory); 5 a live source (camera, stream) stopped delivering frames; 130
stopped by Ctrl-C (the results so far are still written: how a webcam or stream run ends; a second Ctrl-C
aborts). With several inputs, a bad one is recorded and the others run; the exit code is then the worst one
met. Usage and file-kind errors, unwritable outputs, and inputs none of which exist are refused before the
model loads. With --server URL, an aunet-serve server scores the frames instead (its model and face detector;
docs/serving.md), and the output is the same.
"""
from __future__ import annotations

import contextlib
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
from aunet.spec import SpecError

from .annotate import (
    H264_CONTAINERS,
    IMAGE_OUTPUTS,
    VIDEO_CONTAINERS,
    AnnotatedImageWriter,
    AnnotatedVideoWriter,
    NoH264Warning,
    h264_encoder,
)
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_FAKE_FOUND,
    EXIT_INFERENCE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MISSING_DEPENDENCY,
    EXIT_OK,
    EXIT_SOURCE_LOST,
    InputError,
    OutputError,
    SourceLost,
    describe,
)
from .outputs import (
    DEFAULT_WINDOW_S,
    FORMATS,
    CsvSink,
    JsonlSink,
    JsonSink,
    Resume,
    Sink,
    check_writable,
    check_writable_folder,
    read_done,
    source_key,
)
from .results import VERDICT_FAKE
from .sources import Sampling, VideoSource, is_image, is_live, is_sequence, resolve_inputs, source_name

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


# --detector names that need no file; anything else is a detector ONNX
DETECTOR_NAMES = ("auto", "blazeface", "dlib")


def check_detector_option(detector: Optional[str], prog: str = PROG) -> None:
    """``--detector``: a name, or an existing .onnx; refuse anything else before the model loads."""
    if detector is None or detector in DETECTOR_NAMES:
        return
    path = Path(detector)
    if path.suffix.lower() != ".onnx":
        raise fail(prog, f"--detector {detector}: expected a face detector .onnx (BlazeFace, YuNet or RetinaFace) or "
                         f"one of {', '.join(DETECTOR_NAMES)}", EXIT_BAD_INPUT)
    if not path.is_file():
        raise fail(prog, f"face detector model not found: {detector}", EXIT_BAD_INPUT)


@contextlib.contextmanager
def warnings_as_lines(*categories: type[Warning], prog: str = PROG):
    """Warnings of ``categories`` raised inside become one ``PROG: warning: ...`` line each on stderr (the same
    message once); others are shown as usual."""
    with warnings.catch_warnings(record=True) as caught:
        for category in categories:
            warnings.simplefilter("always", category)
        yield
    said: set[str] = set()
    for w in caught:
        if issubclass(w.category, categories):
            line = " ".join(str(w.message).split())
            if line not in said:
                said.add(line)
                print(f"{prog}: warning: {line}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def load_detector(engine: Path, **options: Any):
    """The Detector; an engine built elsewhere warns that its TensorRT/GPU match is unverified: one line,
    ``aunet-infer: warning: ...``, on stderr."""
    from aunet.backends import UnverifiedEngineWarning

    from .pipeline import Detector

    with warnings_as_lines(UnverifiedEngineWarning):
        return Detector(engine, **options)


def load_face_detector(model) -> None:
    """Load the face detector now (a missing dlib or a bad detector model is a startup error); another detector
    than the training crops' and a YuNet file of no known release are one warning line each."""
    from aunet.faces.detectors import FaceDetectorMismatchWarning
    from aunet.faces.yunet import UnknownYuNetWarning

    with warnings_as_lines(FaceDetectorMismatchWarning, UnknownYuNetWarning):
        model.face_detector  # noqa: B018 - the property loads it


def connect_server(url: str, threshold: Optional[float]):
    """A RemoteDetector on an aunet-serve server: a bad URL or no server there -> 2, no tritonclient -> 3."""
    try:
        from .client import RemoteDetector

        return RemoteDetector(url, threshold=threshold)
    except ImportError as exc:
        raise fail(PROG, f"--server {url}: {exc}", EXIT_MISSING_DEPENDENCY) from None
    except (InputError, ValueError) as exc:
        raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None


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
    """``save_video`` itself for one input; ``<folder>/<stem>.annotated.mp4`` for several (numbered on clashes),
    ``<stem>.annotated.png`` (``.jpg`` for a JPEG) for an image input."""
    if not many:
        return save_video
    stem = Path(source).stem.replace("%", "") or "stream"
    suffix = ".mp4"
    if is_image(source):
        suffix = ".jpg" if Path(source).suffix.lower() in (".jpg", ".jpeg") else ".png"
    path, n = save_video / f"{stem}.annotated{suffix}", 1
    while path in used:
        n += 1
        path = save_video / f"{stem}-{n}.annotated{suffix}"
    used.add(path)
    return path


def exit_code_for(exc: BaseException) -> int:
    """The exit code an input's failure stands for (docs/runtime.md)."""
    if isinstance(exc, SourceLost):
        return EXIT_SOURCE_LOST
    if isinstance(exc, (InputError, SpecError)):
        return EXIT_BAD_INPUT
    return EXIT_INFERENCE_FAILED


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 --fail-on-fake and a fake verdict; 2 bad usage or input, or an unwritable output; 3 "
    "missing dependency, GPU or an engine built elsewhere; 4 inference failed (e.g. out of memory); 5 a live "
    "source stopped delivering frames (what was scored is written); 130 stopped by Ctrl-C (results so far are "
    "written). See docs/runtime.md."
)


@app.command(epilog=EXIT_CODES_HELP)
def infer(
    videos: list[str] = typer.Argument(
        ..., help="Video files, images, folders (their videos and images, each one input), globs, image "
                  "sequences (frames/%05d.png), rtsp:// or http:// URLs, webcam indices."
    ),
    engine: Optional[Path] = typer.Option(
        None, "--engine", "-e", help="Model: .onnx, or a TensorRT .plan/.engine + sidecar (or --server)."
    ),
    server: Optional[str] = typer.Option(
        None, "--server", help="Score on an aunet-serve server instead of --engine: grpc://HOST:PORT or "
                               "http://HOST:PORT (its model and face detector; --device and --batch do not apply)."
    ),
    spec: Optional[Path] = typer.Option(
        None, "--spec", help="For a .plan/.engine built elsewhere (trtexec, Polygraphy) without a sidecar: the ONNX it "
                             "was built from, whose spec it runs with (TensorRT/GPU match unverified)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the results here (default: stdout)."),
    fmt: Literal[FORMATS] = typer.Option(
        "json", "--format", "-f",
        help="json: one document when the run ends; jsonl: one record per line as frames are scored (live "
             "sources: also a verdict per --window); csv: one row per scored face as it goes.",
    ),
    window: float = typer.Option(
        DEFAULT_WINDOW_S, "--window", min=0.1, help="Live sources, jsonl/csv: a verdict record every this many "
                                                     "seconds."
    ),
    skip_done: bool = typer.Option(
        False, "--skip-done", help="Resume: skip the inputs --out already holds a complete result for (it keeps "
                                   "them), redo the others."
    ),
    save_video: Optional[Path] = typer.Option(
        None, "--save-video", help="Annotated video: H.264 with PyAV (aunet[video]), else MPEG-4 Part 2 and a "
                                   "warning; a folder for several inputs; an image input is annotated as an image."
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
    detector: Optional[str] = typer.Option(
        None, "--detector", help="Face detector: a detector .onnx (BlazeFace or RetinaFace from `aunet-export "
                                 "detector`, YuNet), or auto, blazeface, dlib (default: the one the model was "
                                 "trained with, else auto: BlazeFace when installed, else dlib HOG)."
    ),
    detect_max_side: Optional[int] = typer.Option(
        None, "--detect-max-side", min=64, help="Detect faces on frames shrunk to this longer side (speed on HD)."
    ),
    batch: int = typer.Option(8, "--batch", min=1, help="Faces per inference batch (capped by the engine)."),
    grids: bool = typer.Option(True, "--grids/--no-grids", help="Include each face's tampered-region grid."),
    fail_on_fake: bool = typer.Option(False, "--fail-on-fake", help="Exit 1 when any verdict is fake."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Score the faces of each input; write one JSON result per input, or stream records as frames are scored."""
    exclusive(PROG, frames=frames, every=every)
    exclusive(PROG, engine=engine, server=server)
    if server is not None:
        for option, value in (("spec", spec), ("detector", detector), ("detect_max_side", detect_max_side)):
            exclusive(PROG, server=server, **{option: value})  # the server has its own
    elif engine is None:
        raise fail(PROG, "give the model: --engine MODEL, or --server URL of an aunet-serve server", EXIT_BAD_INPUT)
    else:
        check_engine_file(engine)
        check_spec_file(spec, engine)
    try:
        sampling = Sampling(frames=frames, every=every)
        targets = resolve_inputs(videos)
    except (ValueError, InputError) as exc:
        raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None
    # Missing files among others are recorded per input; when nothing would run, say so before loading the model.
    missing = [source_name(t) for t in targets if not is_live(t) and not is_sequence(t) and not Path(str(t)).exists()]
    if len(missing) == len(targets):
        raise fail(PROG, f"no such file: {', '.join(missing)}", EXIT_BAD_INPUT)
    unbounded = [source_name(t) for t in targets if is_live(t)] if frames is None else []
    if fmt == "json" and unbounded:
        raise fail(PROG, f"{unbounded[0]} is a live source: it runs until stopped and a JSON document is written "
                         "only at the end; use --format jsonl or csv (records written as frames are scored, memory "
                         "flat), or --frames N", EXIT_BAD_INPUT)
    if skip_done and out is None:
        raise fail(PROG, "--skip-done needs --out: the output file it resumes", EXIT_BAD_INPUT)
    many = len(targets) > 1
    if save_video is not None:
        check_save_video(save_video, targets, many)
    check_detector_option(detector)
    try:
        if out is not None:
            check_writable(out)
        if save_video is not None and many:
            check_writable_folder(save_video)
        elif save_video is not None:
            check_writable(save_video)
    except OutputError as exc:
        raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None

    resume = Resume({})
    if skip_done:
        try:
            resume = read_done(out, fmt, {source_key(source_name(t)) for t in targets})
        except (InputError, OutputError) as exc:
            raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None
    keys = [source_key(source_name(t)) for t in targets]
    todo = [t for t, k in zip(targets, keys) if k not in resume.done]
    skipped = [resume.done[k] for k in keys if k in resume.done]
    if skipped and not quiet:
        err.print(f"{len(skipped)} of {len(targets)} inputs already done in {out}: skipped")
    if not todo:
        _finish_exit(EXIT_OK, skipped, fail_on_fake)

    if save_video is not None and h264_encoder() is None and not all(is_image(t) for t in todo) and (
            many or save_video.suffix.lower() in H264_CONTAINERS):
        print(f"{PROG}: warning: no H.264 encoder (pip install av): annotated videos are MPEG-4 Part 2, which "
              "browsers do not play", file=sys.stderr, flush=True)
    try:
        model = connect_server(server, threshold) if server is not None else load_detector(
            engine, spec=spec, device=device, threshold=threshold, batch_size=batch,
            detector_model=detector, detect_max_side=detect_max_side,
        )
    except typer.Exit:
        raise
    except Exception as exc:
        msg = describe(exc)
        raise fail(PROG, msg if str(engine) in msg else f"cannot load {engine}: {msg}",
                   engine_exit_code(exc)) from None
    try:
        load_face_detector(model)
    except Exception as exc:
        model.close()
        raise fail(PROG, f"cannot load the face detector: {describe(exc)}", engine_exit_code(exc)) from None

    try:
        sink = open_sink(fmt, out, grids, window, resume, append=skip_done)
    except OutputError as exc:
        model.close()
        raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None
    code = EXIT_OK
    stop = threading.Event()
    used: set[Path] = set()  # annotated video paths of this run
    with model, contextlib.closing(sink), stop_on_ctrl_c(stop), warnings.catch_warnings(), Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=quiet, transient=True,
    ) as progress:
        warnings.simplefilter("ignore", NoH264Warning)  # said once above
        overall = progress.add_task("inputs", total=len(todo)) if len(todo) > 1 else None
        try:
            for target in todo:
                name = source_name(target)
                try:
                    _run_one(model, target, sampling, sink, save_video, many, progress, stop, used)
                except OutputError:
                    raise
                except Exception as exc:  # recorded per input; the others still run
                    code = max(code, exit_code_for(exc))
                    sink.fail(name, describe(exc), getattr(exc, "partial", None))
                    print_error(PROG, describe(exc))
                except KeyboardInterrupt:
                    sink.fail(name, "interrupted", None)
                    stop.set()
                if overall is not None:
                    progress.advance(overall)
                if stop.is_set():
                    code = EXIT_INTERRUPTED
                    break
            if isinstance(sink, JsonSink):
                sink.write(many)
        except OutputError as exc:  # the output itself failed (disk full, ...): stop the run
            print_error(PROG, describe(exc))
            code = EXIT_BAD_INPUT
    if not quiet:
        err.print(summary_table(sink.summaries, model.backend.name))
    _finish_exit(code, skipped + sink.summaries, fail_on_fake)


def _finish_exit(code: int, records: list[dict], fail_on_fake: bool) -> None:
    if fail_on_fake and code == EXIT_OK and any(r.get("verdict") == VERDICT_FAKE for r in records):
        code = EXIT_FAKE_FOUND
    raise typer.Exit(code)


def check_save_video(save_video: Path, targets: list, many: bool) -> None:
    """``--save-video``: a folder for several inputs; for one, a video container (or an image for an image)."""
    if many and save_video.suffix:
        raise fail(PROG, "--save-video must be a folder when there are several inputs", EXIT_BAD_INPUT)
    if many:
        return
    allowed = VIDEO_CONTAINERS + (IMAGE_OUTPUTS if is_image(targets[0]) else ())
    if save_video.suffix.lower() not in allowed:
        raise fail(PROG, f"--save-video: use one of {', '.join(allowed)}, not {save_video.name!r}", EXIT_BAD_INPUT)


def open_sink(fmt: str, out: Optional[Path], grids: bool, window: float, resume: Resume, append: bool) -> Sink:
    if fmt == "json":
        return JsonSink(out, grids, window, previous=resume.previous_json)
    append = append and out is not None and out.exists() and out.stat().st_size > 0
    if fmt == "jsonl":
        return JsonlSink(out, grids, window, append=append)
    return CsvSink(out, grids, window, append=append)


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


def _run_one(model, target, sampling: Sampling, sink: Sink, save_video: Optional[Path], many: bool, progress,
             stop: threading.Event, used: set[Path]) -> dict:
    src = VideoSource(target, sampling)
    task = progress.add_task(Path(src.name).name[:40], total=src.planned_frames())
    writer = None
    ok = False
    try:
        sink.begin(src.name, model.source_info(src), model.threshold)
        if save_video is not None:
            path = annotated_path(save_video, src.name, many, used)
            if path.suffix.lower() in IMAGE_OUTPUTS:
                writer = AnnotatedImageWriter(path, model.threshold, model.spec.input_size)
            else:
                writer = AnnotatedVideoWriter(path, writer_fps(src, sampling), model.threshold,
                                              model.spec.input_size)

        def on_frame(frame, rgb) -> None:
            sink.frame(frame)
            if writer is not None:
                writer.write(rgb, frame)
            progress.advance(task)

        try:
            result = model.predict_video(src, on_frame=on_frame, keep_frames=writer is not None, stop=stop)
        except SourceLost:
            ok = writer is not None and writer.frames_written > 0  # keep the video of what was scored
            raise
        ok = True
    finally:
        src.close()
        if writer is not None:
            writer.close(ok)
        progress.remove_task(task)
    extra = {"annotated_video": str(writer.path)} if writer is not None else {}
    return sink.finish(result, extra)


SUMMARY_ROWS = 40  # the table lists this many inputs at most (a folder of thousands of images)


def summary_table(records: list[dict], backend: str) -> Table:
    table = Table(title=f"aunet-infer ({backend})")
    for col, just in (("input", "left"), ("verdict", "left"), ("score", "right"), ("frames", "right"),
                      ("with face", "right"), ("frames/s", "right")):
        table.add_column(col, justify=just)
    colours = {"fake": "red", "real": "green", "no_face": "yellow", "error": "red"}
    for r in records[:SUMMARY_ROWS]:
        v = r["verdict"]
        if v == "error":
            table.add_row(r["source"], f"[red]error[/red]: {r['error']}", "", "", "", "")
            continue
        stopped = " (stopped)" if r.get("stopped") else ""
        table.add_row(
            r["source"], f"[{colours[v]}]{v}[/{colours[v]}]{stopped}",
            "-" if r["score"] is None else f"{r['score']:.3f}",
            str(r["frames_analysed"]), str(r["frames_with_face"]), f"{r['timings']['frames_per_s']:.1f}",
        )
    if len(records) > SUMMARY_ROWS:
        counts = {v: sum(1 for r in records if r["verdict"] == v) for v in colours}
        table.add_row(f"... {len(records) - SUMMARY_ROWS} more", ", ".join(f"{n} {v}" for v, n in counts.items() if n),
                      "", "", "", "")
    return table


def main(argv: Optional[Sequence[str]] = None) -> None:
    import os

    import cv2

    # One error line per bad input, not OpenCV's warnings or FFmpeg's log (read when FFmpeg first opens a file).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    levels = getattr(cv2.utils, "logging", None)  # OpenCV 5; OpenCV 4 (aunet[serve]'s) has cv2.setLogLevel only
    if levels is not None:
        levels.setLogLevel(levels.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)  # LOG_LEVEL_ERROR
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
