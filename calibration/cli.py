"""`aunet-calib`: INT8 calibration set, explicit Q/DQ quantization, sensitivity scan, accuracy report.

Exit codes: 0 ok; 1 an accuracy target missed (quantize: on held-out faces; report; check) or an INT8 model
crashed its child process; 2 bad input (missing/corrupt file, wrong spec, empty or tiny set); 3 a missing
optional dependency (onnxruntime, nvidia-modelopt).
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
from .isolation import ChildCrashed
from .quantize import METHODS, TARGETS, QuantizeError
from .report import ACCURACY_METAVAR, DEFAULT_ACCURACY
from .target import CHOOSING_MARGIN, JUDGE_SHARE, MAX_FP32_NODES, MAX_FP32_SHARE

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
    detector: Literal[DETECTORS] = typer.Option(
        "auto", help="Face detector for raw media (auto: RetinaFace when its weights are found, else BlazeFace when "
                     "installed, else dlib; yunet needs a model file this command does not take)."),
) -> None:
    """Make the calibration set: face crops exactly as training and the runtime cut them."""
    from aunet.faces import DependencyError
    from aunet.faces.cache import is_face_cache

    if detector == "yunet" and not is_face_cache(source):
        raise fail(PROG, "--detector yunet needs YuNet's model file, which this command does not take: cut the faces "
                         "with aunet-prep --detector yunet --detector-model FILE and build from that cache",
                   EXIT_BAD_INPUT)
    spec = _spec(model)
    with reported_warnings():
        try:
            calib = build(source, spec, num, seed, split, frames=frames, detector=detector)
        except CalibrationError as exc:
            raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
        except DependencyError as exc:  # the detector's package or weights
            raise fail(PROG, str(exc), EXIT_MISSING) from None
    path = calib.save(out_path)
    videos = calib.provenance.get("num_videos", "?")
    out.print(f"calibration set: {len(calib)} crops of {calib.size}px from {videos} videos -> {path}")


def _accuracy_option(value: str):
    """--accuracy at parse time: an AccuracyTarget, or None for ``none`` (quantize by recipe, no judgement)."""
    from .report import parse_accuracy

    if value.strip().lower() == "none":
        return None
    try:
        return parse_accuracy(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _log(line: str) -> None:
    if line.startswith("warning: "):
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)
    else:
        console.print(line, style="dim", highlight=False, markup=False, soft_wrap=True)


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Option(..., "--model", help="FP32 ONNX from aunet-export onnx."),
    target: Literal[TARGETS] = typer.Option("tensorrt", help="Q/DQ placement: for TensorRT engines or ONNX Runtime "
                                                             "on the CPU."),
    accuracy: str = typer.Option(DEFAULT_ACCURACY, metavar=ACCURACY_METAVAR, callback=_accuracy_option,
                                 help="The target the INT8 model must meet against FP32 on held-out faces: decision "
                                      "agreement (share or %) and AUC drop (points); 'none' quantizes by recipe "
                                      "(one --method, no judgement)."),
    data: Optional[Path] = typer.Option(None, "--data", help="aunet-prep face cache, split by video into crops that "
                                                             "calibrate and choose and held-out crops that judge "
                                                             "(default: --calib when it is a cache, else the cache "
                                                             "the calibration set came from)."),
    calib_path: Optional[Path] = typer.Option(None, "--calib", help="Calibration set from aunet-calib build (its "
                                                                    "videos then never judge), or a face cache."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Default: model.int8.onnx (tensorrt) / model.int8-cpu.onnx (cpu)."),
    method: Literal[("auto", *METHODS)] = typer.Option("auto", help="Activation range calibration; auto compares "
                                                                     "every method on the choosing crops."),
    max_fp32_nodes: int = typer.Option(MAX_FP32_NODES, min=0, help="Budget: most sensitive nodes the loop may keep "
                                                                    "in higher precision ..."),
    max_fp32_share: float = typer.Option(MAX_FP32_SHARE, min=0.0, max=1.0, help="... and at most this share of the "
                                                                                 "quantizable nodes."),
    judge_share: float = typer.Option(JUDGE_SHARE, min=0.05, max=0.95, help="Share of the videos held out to judge."),
    margin: float = typer.Option(CHOOSING_MARGIN, min=0.05, max=1.0, help="Share of the allowed flips and AUC drop a "
                                                                          "candidate may use on the choosing faces "
                                                                          "(1: the target itself)."),
    num: int = typer.Option(DEFAULT_SIZE, "--num", min=8, help="Calibration crops drawn from the fit videos (without "
                                                                "--calib)."),
    seed: int = typer.Option(0, help="Seed of the held-out split, the crops and their TAP fakes."),
    speed: bool = typer.Option(True, help="Measure FP32 vs INT8 faces/s on ONNX Runtime's CPU provider."),
    exclude: List[str] = typer.Option([], help="Node name or regex always kept in FP32 (repeatable)."),
    exclude_from: Optional[Path] = typer.Option(None, help="A sensitivity scan JSON: keep its --top nodes in FP32."),
    top: int = typer.Option(5, min=0, help="With --exclude-from: how many of the most sensitive nodes to keep in FP32."),
    report_path: Optional[Path] = typer.Option(None, "--report", help="JSON of the run (default: OUT.report.json)."),
) -> None:
    """Write the explicit Q/DQ INT8 ONNX that meets an accuracy target on held-out faces.

    Compares the calibration methods, keeps the most sensitive nodes in higher precision while the target is
    missed (within the budget), judges the result on held-out videos and measures its speed. Exit 1 when the
    held-out judgement misses the target (the model and its report are written all the same)."""
    from .sensitivity import exclusions_from_scan

    spec = _spec(model)
    names = list(exclude)
    if exclude_from is not None:  # a bad scan file is refused before the calibration set loads
        try:
            names += exclusions_from_scan(exclude_from, top)
        except ValueError as exc:
            raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    if out_path is None:
        out_path = model.with_name(model.stem + (".int8.onnx" if target == "tensorrt" else ".int8-cpu.onnx"))
    if accuracy is None:
        _quantize_by_recipe(model, spec, calib_path, out_path, target, method, names)
        return
    from .target import judged_source

    try:
        data = judged_source(calib_path, data)
    except CalibrationError as exc:
        raise fail(PROG, f"{exc} (--data CACHE), or --accuracy none to quantize by recipe without a judgement",
                   EXIT_BAD_INPUT) from None
    given = calib_path if calib_path is not None and calib_path.resolve() != data.resolve() else None
    from .target import Budget, quantize_to_target

    try:
        result = quantize_to_target(
            model, out_path, data=data, target=target, accuracy=accuracy,
            methods=METHODS if method == "auto" else (method,), budget=Budget(max_fp32_nodes, max_fp32_share),
            calib=given, exclude=names, judge_share=judge_share, num_calib=num, seed=seed, speed=speed, log=_log,
            margin=margin)
    except (CalibrationError, SpecError) as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except QuantizeError as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except ChildCrashed as exc:
        raise fail(PROG, str(exc), EXIT_CHECK_FAILED) from None
    except ImportError as exc:
        raise fail(PROG, f"missing dependency: {exc.name} (pip install 'aunet[export]')", EXIT_MISSING) from None
    report_path = report_path or out_path.with_name(out_path.name + ".report.json")
    from .report import save_report

    save_report(report_path, result.to_dict())
    out.print(target_tables(result))
    out.print(f"INT8 ({target}, {result.method}, {len(result.excluded)} of {result.quantizable_nodes} quantizable nodes "
              f"kept in higher precision) -> {out_path}; report -> {report_path}")
    if not result.passed:
        why = "the budget ran out before the target was met on the choosing faces; " if result.budget_exhausted else ""
        raise fail(PROG, f"INT8 misses the target on held-out faces: {why}{result.bar_state()}", EXIT_CHECK_FAILED)


def target_tables(result):
    """The methods compared, the exclusion steps, the held-out judgement and the speed, as one rich group."""
    from rich.console import Group
    from rich.table import Table

    trials = Table(title=f"{result.target} INT8 on the choosing faces (their bar, with margin: {result.choosing_bar})",
                   show_edge=False)
    for col in ("method", "FP32 nodes", "agreement", "AUC drop", "mean |Δscore|", "target"):
        trials.add_column(col, justify="left" if col == "method" else "right")
    for row in result.methods + result.steps:
        trials.add_row(row["method"], str(row["fp32_nodes"]), f"{100 * row['decision_agreement']:.1f} %",
                       f"{row['auc_drop_points']:.2f}" if "auc_drop_points" in row else "n/a",
                       f"{row['score_mean_abs']:.4f}",
                       "met" if row["meets"] else "target only" if row.get("meets_target") else "missed")
    j = result.judgement
    interval = j.get("interval", {})
    judged = Table(title=f"held-out judgement: {j['num_faces']} faces of {j.get('held_out_videos', '?')} videos never "
                         "used to calibrate or choose", show_edge=False)
    for col in ("", "measured", f"{100 * interval.get('level', 0.95):g} % interval", "bar", ""):
        judged.add_column(col, justify="right")
    ag = interval.get("decision_agreement")
    judged.add_row("decision agreement", f"{100 * j['decision_agreement']:.1f} %",
                   f"[{100 * ag[0]:.1f}, {100 * ag[1]:.1f}] %" if ag else "", f">= {100 * result.accuracy.min_agreement:g} %",
                   "met" if j["decision_agreement"] >= result.accuracy.min_agreement else "[red]missed[/]")
    if "auc_drop_points" in j:
        drop = interval.get("auc_drop_points")
        judged.add_row("AUC drop (points)", f"{j['auc_drop_points']:.2f} ({j['auc_reference']:.3f} -> {j['auc_candidate']:.3f})",
                       f"[{drop[0]:.2f}, {drop[1]:.2f}]" if drop else "", f"<= {result.accuracy.max_auc_drop_points:g}",
                       "met" if j["auc_drop_points"] <= result.accuracy.max_auc_drop_points else "[red]missed[/]")
    parts = [trials, judged]
    if result.speed:
        sp = result.speed
        speed = Table(title=f"ONNX Runtime CPU, batch {sp['batch']}, {sp['repeats']} interleaved repeats "
                            f"({sp['cpu']['model']}, {sp['cpu']['cores']} cores, flags: {' '.join(sp['cpu']['flags']) or 'none'})",
                      show_edge=False)
        for col in ("FP32 faces/s", "INT8 faces/s", "INT8 / FP32"):
            speed.add_column(col, justify="right")
        speed.add_row("{:.1f} ± {:.1f}".format(*sp["fp32_faces_per_s"]), "{:.1f} ± {:.1f}".format(*sp["int8_faces_per_s"]),
                      "{:.2f} ± {:.2f}×".format(*sp["speedup"]))
        parts.append(speed)
    if result.excluded:
        parts.append(f"kept in higher precision ({len(result.excluded)} of {result.quantizable_nodes}, budget "
                     f"{result.budget_limit}): " + ", ".join(result.excluded))
    return Group(*parts)


def _quantize_by_recipe(model: Path, spec, calib_path: Optional[Path], out_path: Path, target: str, method: str,
                        names: list[str]) -> None:
    """--accuracy none: one method, the given exclusions, no held-out judgement (the spec says so)."""
    from aunet.faces.cache import is_face_cache

    from .dataset import from_cache
    from .quantize import quantize

    if method == "auto":
        raise fail(PROG, "--accuracy none quantizes by recipe: give one --method", EXIT_BAD_INPUT)
    if calib_path is None:
        raise fail(PROG, "--accuracy none needs --calib (a calibration set or a face cache)", EXIT_BAD_INPUT)
    if is_face_cache(calib_path):
        with reported_warnings():
            try:
                calib = from_cache(calib_path, spec)
            except CalibrationError as exc:
                raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    else:
        calib = _load_calib(calib_path, spec)
    try:
        path = quantize(model, calib, out_path, target=target, method=method, exclude=names)
    except QuantizeError as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except ImportError as exc:
        raise fail(PROG, f"missing dependency: {exc.name} (pip install 'aunet[export]')", EXIT_MISSING) from None
    out.print(f"INT8 ({target}, {method}, {len(calib)} crops, {len(names)} extra FP32 nodes, not judged) -> {path}")


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
    accuracy: str = typer.Option(DEFAULT_ACCURACY, metavar=ACCURACY_METAVAR, callback=_accuracy_option,
                                 help="The bar: decision agreement (share or %) and AUC drop (points)."),
    seed: int = typer.Option(0, help="Seed of the face sample and its TAP fakes."),
) -> None:
    """FP32 vs INT8: AUC, decision agreement, per-head errors, 95 % bootstrap intervals (over videos). The INT8
    model runs in a child process. Videos that calibrated it (listed in INT8.report.json by aunet-calib
    quantize) are held out. Exit 1 when below the bar."""
    import json

    from .report import AccuracyTarget, check_target, compare, evaluation_faces, report_table, save_report, small_set_warning

    target = accuracy or AccuracyTarget()
    spec = _spec(fp32, "--fp32")
    _spec(int8, "--int8", "the INT8 ONNX from aunet-calib quantize or an engine from aunet-export trt --int8")
    held: list[str] = []
    # aunet-calib quantize's report of this model, or of the Q/DQ ONNX an engine was built from
    quantize_report = next((p for p in (int8.with_name(int8.name + ".report.json"),
                                        int8.with_name(int8.stem + ".onnx.report.json")) if p.is_file()),
                           int8.with_name(int8.name + ".report.json"))
    if quantize_report.is_file():
        try:
            held = list(json.loads(quantize_report.read_text()).get("split", {}).get("fit_videos", []))
        except (OSError, ValueError, AttributeError):
            held = []
    try:
        faces = evaluation_faces(data, spec, num, seed=seed, exclude_video_ids=held)
        with reported_warnings():
            warning = small_set_warning(faces.num_crops, faces.num_crops, target.min_agreement)
            if warning:
                warnings.warn(warning, stacklevel=1)
        report = compare(fp32, int8, faces.images, faces.labels, device=device, groups=faces.groups,
                         weights=faces.weights)
    except (CalibrationError, SpecError) as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except ChildCrashed as exc:
        raise fail(PROG, str(exc), EXIT_CHECK_FAILED) from None
    report.update(data=str(data), data_kind=faces.kind, calibration_videos_held_out=len(held), accuracy=str(target))
    failed = check_target(report, target)
    report["passed"], report["failures"] = not failed, failed
    out.print(report_table(report))
    if held:
        out.print(f"{len(held)} videos that calibrated or chose {int8.name} were held out ({quantize_report.name})")
    if out_path is not None:
        save_report(out_path, report)
        out.print(f"report -> {out_path}")
    if failed:
        raise fail(PROG, "; ".join(failed), EXIT_CHECK_FAILED)


@app.command("check")
def check_cmd(
    int8: Path = typer.Option(..., "--int8", help="An INT8 Q/DQ ONNX from aunet-calib quantize."),
) -> None:
    """Whether an INT8 Q/DQ ONNX passed its held-out judgement (recorded in its spec): exit 0 passed, 1 failed
    or never judged. The check aunet-export trt --int8 applies before building an engine."""
    from .report import Int8NotAccepted, int8_judgement, require_int8_accepted

    _spec(int8, "--int8", "an INT8 ONNX from aunet-calib quantize")
    try:
        require_int8_accepted(int8)
    except Int8NotAccepted as exc:
        raise fail(PROG, str(exc), EXIT_CHECK_FAILED) from None
    j = int8_judgement(int8) or {}
    auc = f", AUC drop {j['auc_drop_points']:.2f} points" if "auc_drop_points" in j else ""
    out.print(f"{int8}: passed {j.get('target')} on {j.get('num_faces')} held-out faces "
              f"(agreement {100 * j.get('decision_agreement', 0):.1f} %{auc})")


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
