"""`aunet-calib`: INT8 calibration set, explicit Q/DQ quantization, sensitivity scan, accuracy report.

Exit codes: 0 ok; 1 an accuracy threshold failed (report); 2 bad input (missing/corrupt file, wrong spec,
empty or tiny set); 3 a missing optional dependency (onnxruntime, nvidia-modelopt).
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Sequence

import typer
from rich.console import Console

from aunet.backends import DEVICES
from aunet.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_MISSING, fail, run
from aunet.faces.cache import SPLITS
from aunet.faces.detectors import DETECTORS
from aunet.spec import SpecError

from .dataset import DEFAULT_SIZE, CalibrationError, CalibrationSet, build
from .quantize import METHODS, TARGETS, QuantizeError

PROG = "aunet-calib"
CACHE_SPLITS = tuple(s for s in SPLITS if s)  # "" marks a video of no split: not one to choose

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
out = Console()


FP32_ONNX = "the FP32 ONNX from aunet-export onnx"


def _spec(model: Path, option: str = "--model", role: str = FP32_ONNX):
    """The model's spec, or one error line saying what ``option`` takes (``role``)."""
    from aunet.backends import read_spec

    try:
        return read_spec(model)
    except (SpecError, OSError, ValueError) as exc:
        msg = str(exc) if str(model) in str(exc) else f"{model}: {exc}"
        raise fail(PROG, f"{msg} ({option} takes {role})", EXIT_BAD_INPUT) from None


@contextlib.contextmanager
def reported_warnings() -> Iterator[None]:
    """Warnings (a small calibration set, ...) as ``aunet-calib: warning:`` lines on stderr, after the step."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=sys.stderr, flush=True)


def _load_calib(path: Path, spec) -> CalibrationSet:
    with reported_warnings():
        try:
            return CalibrationSet.load(path, spec)
        except CalibrationError as exc:
            raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None


@app.command("build")
def build_cmd(
    source: Path = typer.Argument(..., help="An aunet-prep cache, or images/videos (file or folder) to preprocess."),
    model: Path = typer.Option(..., "--model", help="The FP32 ONNX whose spec (size, crop, value range) the crops follow."),
    out_path: Path = typer.Option(Path("calib.npz"), "--out", help="Writes OUT (.npz) and its .json provenance."),
    num: int = typer.Option(DEFAULT_SIZE, "--num", min=1, help="Crops to keep, spread over as many videos as possible."),
    seed: int = typer.Option(0, help="Sampling seed."),
    split: Optional[Literal[CACHE_SPLITS]] = typer.Option(None, help="Only this split of the cache (default: all)."),
    frames: int = typer.Option(8, min=1, help="Frames per video when preprocessing raw media."),
    detector: Literal[DETECTORS] = typer.Option("auto", help="Face detector for raw media (auto: RetinaFace when "
                                                             "its weights are found, dlib otherwise)."),
) -> None:
    """Make the calibration set: face crops exactly as training and the runtime cut them."""
    spec = _spec(model)
    with reported_warnings():
        try:
            calib = build(source, spec, num, seed, split, frames=frames, detector=detector)
        except CalibrationError as exc:
            raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    path = calib.save(out_path)
    videos = calib.provenance.get("num_videos", "?")
    out.print(f"calibration set: {len(calib)} crops of {calib.size}px from {videos} videos -> {path}")


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Option(..., "--model", help="FP32 ONNX from aunet-export onnx."),
    calib_path: Path = typer.Option(..., "--calib", help="Calibration set from aunet-calib build."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Default: model.int8.onnx (tensorrt) / model.int8-cpu.onnx (cpu)."),
    target: Literal[TARGETS] = typer.Option("tensorrt", help="Q/DQ placement: for TensorRT engines or ONNX Runtime "
                                                             "on the CPU."),
    method: Literal[METHODS] = typer.Option("entropy", help="How activation ranges are calibrated."),
    exclude: List[str] = typer.Option([], help="Node name or regex kept in FP32 (repeatable)."),
    exclude_from: Optional[Path] = typer.Option(None, help="A sensitivity scan JSON: keep its --top nodes in FP32."),
    top: int = typer.Option(5, min=0, help="With --exclude-from: how many of the most sensitive nodes to keep in FP32."),
) -> None:
    """Write the explicit Q/DQ INT8 ONNX (sensitive parts kept in FP32)."""
    from .quantize import quantize
    from .sensitivity import exclusions_from_scan

    spec = _spec(model)
    names = list(exclude)
    if exclude_from is not None:  # a bad scan file is refused before the calibration set loads
        try:
            names += exclusions_from_scan(exclude_from, top)
        except ValueError as exc:
            raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    calib = _load_calib(calib_path, spec)
    if out_path is None:
        out_path = model.with_name(model.stem + (".int8.onnx" if target == "tensorrt" else ".int8-cpu.onnx"))
    try:
        path = quantize(model, calib, out_path, target=target, method=method, exclude=names)
    except QuantizeError as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except ImportError as exc:
        raise fail(PROG, f"missing dependency: {exc.name} (pip install 'aunet[export]')", EXIT_MISSING) from None
    out.print(f"INT8 ({target}, {method}, {len(calib)} crops, {len(names)} extra FP32 nodes) -> {path}")


@app.command("scan")
def scan_cmd(
    model: Path = typer.Option(..., "--model", help="FP32 ONNX."),
    calib_path: Path = typer.Option(..., "--calib", help="Calibration set."),
    out_path: Path = typer.Option(Path("sensitivity.json"), "--out", help="JSON ranking (for quantize "
                                                                          "--exclude-from)."),
    num_images: int = typer.Option(16, min=8, help="Crops each variant runs on."),
    max_nodes: Optional[int] = typer.Option(None, min=1, help="Scan only the first N quantizable nodes."),
    show: int = typer.Option(15, min=0, help="Rows of the ranking to print."),
) -> None:
    """Rank nodes by the output error their INT8 quantization alone causes."""
    from rich.progress import Progress
    from rich.table import Table

    from .sensitivity import save_scan, scan

    spec = _spec(model)
    calib = _load_calib(calib_path, spec)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sensitivity", total=None)
        results = scan(model, calib, num_images=num_images, max_nodes=max_nodes,
                       progress=lambda done, total: progress.update(task, completed=done, total=total))
    save_scan(out_path, results, model=str(model), num_images=num_images)
    table = Table(title=f"INT8 sensitivity ({len(results)} nodes, {num_images} crops)", show_edge=False)
    for col in ("node", "op", "depthwise", "score max abs", "patch prob mean abs"):
        table.add_column(col, justify="left" if col in ("node", "op") else "right")
    for r in results[:show]:
        table.add_row(r.name, r.op_type, "yes" if r.depthwise else "", f"{r.score_max_abs:.2e}", f"{r.patch_prob_mean_abs:.2e}")
    out.print(table)
    out.print(f"ranking -> {out_path}; use: aunet-calib quantize --exclude-from {out_path} --top K")


@app.command("report")
def report_cmd(
    fp32: Path = typer.Option(..., "--fp32", help="The FP32 ONNX (reference)."),
    int8: Path = typer.Option(..., "--int8", help="The INT8 model (.onnx, or a .plan where TensorRT runs)."),
    data: Path = typer.Option(..., "--data", help="An aunet-prep cache: labeled faces, else real crops + TAP fakes."),
    num: int = typer.Option(256, min=2, help="Faces to evaluate."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="JSON report."),
    device: Literal[DEVICES] = typer.Option("cpu", help="Where both models run (a .plan needs a GPU)."),
) -> None:
    """FP32 vs INT8: AUC, decision agreement, per-head errors. Exit 1 when below the INT8 thresholds."""
    from .report import check_int8, compare, evaluation_faces, report_table, save_report

    spec = _spec(fp32, "--fp32")
    _spec(int8, "--int8", "the INT8 ONNX from aunet-calib quantize or an engine from aunet-export trt --int8")
    try:
        images, labels, kind = evaluation_faces(data, spec, num)
        report = compare(fp32, int8, images, labels, device=device)
    except (CalibrationError, SpecError) as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    report["data"], report["data_kind"] = str(data), kind
    failed = check_int8(report)
    report["passed"], report["failures"] = not failed, failed
    out.print(report_table(report))
    if out_path is not None:
        save_report(out_path, report)
        out.print(f"report -> {out_path}")
    if failed:
        raise fail(PROG, "; ".join(failed), EXIT_CHECK_FAILED)


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
