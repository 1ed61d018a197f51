"""`aunet-bench`: cost and speed tables.

`aunet-bench model`: the PyTorch model's size, GFLOPs and latency. `aunet-bench backends`: throughput and
latency percentiles of deployed models (ONNX Runtime, TensorRT) beside PyTorch eager with the paper's naive
AU embeddings. `aunet-bench pipeline`: `aunet-infer`'s whole pipeline on a video, frames/s and memory.
`aunet-bench int8`: INT8 per calibration method and target, quantized to the accuracy target, judged on held-out
faces, FP32 vs INT8 speed.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import List, Literal, Optional, Sequence

import typer
from rich.console import Console

from aunet.backends import DEVICES, BackendUnavailable, read_spec
from aunet.bench import backends as backends_bench
from aunet.bench import model_cost
from aunet.bench import pipeline as pipeline_bench
from aunet.bench import serve as serve_bench
from aunet.bench.measure import machine_info
from aunet.calibration.quantize import METHODS, TARGETS
from aunet.calibration.target import MAX_FP32_NODES
from aunet.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_MISSING, fail, run
from aunet.config import AU_EMBEDDINGS, NAMED_CONFIGS, ModelConfig
from aunet.io import atomic_write_text
from aunet.spec import CropSpec, ModelSpec

PROG = "aunet-bench"

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
console = Console(width=110)


@app.callback()
def _group() -> None:
    """Cost and speed tables: model (PyTorch), backends (deployed models), pipeline (video end to end), int8."""


def _model_spec(path: Path) -> ModelSpec:
    """The spec of a deployed model; refuses anything else (missing, a training checkpoint, not an aunet export)
    before anything slow loads."""
    try:
        return read_spec(path)
    except BackendUnavailable as exc:  # neither onnx nor onnxruntime to read it with
        raise fail(PROG, str(exc), EXIT_MISSING) from None
    except (ValueError, OSError) as exc:  # SpecError, BackendError: not an aunet export, or an unreadable one
        raise fail(PROG, str(exc)) from None


def _json_file(path: Optional[Path]) -> Optional[Path]:
    """--json must name a file: refused at parse time, not after a long benchmark."""
    if path is not None and path.is_dir():
        raise typer.BadParameter(f"{path} is a folder, expected a file path")
    return path


def _write_json(path: Optional[Path], doc) -> None:
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps(doc, indent=2))
    except OSError as exc:
        raise fail(PROG, f"cannot write {path}: {exc.strerror or exc}") from None
    console.print(f"wrote {path}")


@app.command(epilog="Exit codes: 0 done; 2 bad usage; 3 PyTorch is not installed.")
def model(
    config: Literal[tuple(NAMED_CONFIGS)] = typer.Option("paper", help="Named model config."),
    batch: list[int] = typer.Option([1, 8], min=1, help="Batch sizes to time (repeatable)."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per batch size (after one warm-up)."),
    naive: bool = typer.Option(True, help="Also measure the paper's naive AU embeddings (K full convolutions)."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", callback=_json_file, help="Also write the rows as JSON here."
    ),
) -> None:
    """Parameters, GFLOPs per face and PyTorch eager CPU latency of the AUNet model."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise fail(PROG, "aunet-bench model needs PyTorch: pip install 'aunet[train]'", EXIT_MISSING) from None
    cfg = ModelConfig.named(config)
    rows = model_cost.model_report(cfg, tuple(batch), repeats, AU_EMBEDDINGS if naive else ("fast",))
    console.print(model_cost.model_table(cfg, rows, batch))
    gain = model_cost.rewrite_gain(rows, batch[-1])
    if gain:
        console.print(gain)
    _write_json(json_out, rows)


@app.command(epilog="Exit codes: 0 done; 1 --check and a threshold missed, none applies, or a runner crashed; "
                    "2 bad input; 3 a missing dependency (scikit-image, dlib) for the sample faces.")
def backends(
    models: list[Path] = typer.Argument(None, help="Model files (.onnx, .plan/.engine); the first is the reference."),
    batch: list[int] = typer.Option([1, 8, 32], min=1, help="Batch sizes (repeatable)."),
    repeats: int = typer.Option(20, min=1, help="Timed calls per batch size for deployed models."),
    warmup: int = typer.Option(2, min=0, help="Untimed calls first."),
    device: Literal[DEVICES] = typer.Option("cpu", help="Where the deployed models run (tensorrt: ONNX Runtime's "
                                                         "TensorRT EP; a .plan needs a GPU)."),
    naive: bool = typer.Option(True, help="PyTorch eager with the paper's naive AU embeddings (K convolutions)."),
    torch_fast: bool = typer.Option(False, help="Also PyTorch eager with the exact fast rewrite."),
    torch_device: Literal["cpu", "cuda"] = typer.Option("cpu", help="Device for the PyTorch rows (cuda on a GPU box)."),
    torch_fp16: bool = typer.Option(False, help="Also the PyTorch rows in float16 (GPU)."),
    torch_repeats: int = typer.Option(3, min=1, help="Timed calls per batch size for PyTorch eager (slow)."),
    torch_max_batch: int = typer.Option(
        8, min=1, help="Largest batch for the PyTorch rows (naive Eq. 2 at 224: ~40 s per batch of 8 on 2 CPUs)."
    ),
    config: Optional[Literal[tuple(NAMED_CONFIGS)]] = typer.Option(
        None, help="Model config for the PyTorch rows when no model is given (default: paper)."
    ),
    check: bool = typer.Option(False, help="Exit 1 unless every threshold these runs can answer is met."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", callback=_json_file, help="Also write the rows as JSON here."
    ),
) -> None:
    """Latency p50/p95/p99 and faces/s of each model at each batch, beside PyTorch eager (naive Eq. 2)."""
    models = list(models or [])
    forms = tuple((["fast"] if torch_fast else []) + (["naive"] if naive else []))
    if not models and not forms:
        raise fail(PROG, "nothing to time: give a model file, or drop --no-naive, or add --torch-fast")
    if models and config is not None:
        raise fail(PROG, "--config is for runs without a model file: the PyTorch rows follow the first model's spec")
    specs = [_model_spec(m) for m in models]
    if specs:
        cfg, crop, size = specs[0].config, specs[0].crop, specs[0].input_size
    else:
        cfg = ModelConfig.named(config or "paper")
        crop, size = CropSpec(), cfg.img_size
    batches = sorted(set(batch))
    try:
        crops = backends_bench.face_crops(max(batches), size, crop)
    except RuntimeError as exc:  # no scikit-image (sample faces) or no dlib (DependencyError)
        raise fail(PROG, str(exc), EXIT_MISSING) from None
    torch_runs = backends_bench.TorchRuns(forms, torch_device, torch_fp16, torch_repeats, torch_max_batch)
    rows = backends_bench.time_runners(models, cfg, crops, batches, device=device, repeats=repeats, warmup=warmup,
                                       torch_runs=torch_runs, say=console.print)
    machine = machine_info()
    console.print(backends_bench.backends_table(rows, cfg, size, machine))
    checks = backends_bench.threshold_checks(rows)
    if checks:
        console.print(backends_bench.thresholds_table(checks))
    _write_json(json_out, backends_bench.report(cfg, machine, batches, rows, checks))
    if check:
        crashed = [r["runner"] for r in rows if "error" in r]
        missed = [f"{c.name} {c.measured} (needs {c.required})" for c in checks if not c.met]
        if crashed:
            raise fail(PROG, f"--check: crashed: {', '.join(crashed)}", EXIT_CHECK_FAILED)
        if not checks:
            raise fail(PROG, "--check: no threshold applies to these runs (they need an FP32 ONNX model at batch "
                             f"{backends_bench.THRESHOLD_BATCH}, or an FP32 and an INT8 model)", EXIT_CHECK_FAILED)
        if missed:
            raise fail(PROG, f"--check: missed: {'; '.join(missed)}", EXIT_CHECK_FAILED)


def _check_size(text: str) -> str:
    try:
        pipeline_bench.parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text


@app.command(epilog="Exit codes: 0 done; 2 bad input; 3 a missing dependency, GPU or an engine built elsewhere; "
                    "4 inference failed.")
def pipeline(
    engine: Path = typer.Option(..., "--engine", "-e", help="Model for the runtime (.onnx, .plan/.engine)."),
    video: Optional[Path] = typer.Option(None, help="A video; default: a sample video of a real face made now."),
    seconds: float = typer.Option(5.0, min=0.1, help="Length of the sample video."),
    fps: float = typer.Option(25.0, min=1.0, help="Frame rate of the sample video."),
    size: str = typer.Option("640x480", callback=_check_size,
                             help="Size of the sample video, WIDTHxHEIGHT (1280x720 for 720p)."),
    every: Optional[int] = typer.Option(None, min=1, help="Analyse every K-th frame (default: all frames)."),
    batch: int = typer.Option(8, min=1, help="Faces per inference batch."),
    device: Literal[DEVICES] = typer.Option("cpu", help="Where the model runs, as aunet-infer --device."),
    detect_max_side: Optional[int] = typer.Option(None, min=64, help="As aunet-infer --detect-max-side."),
    rss_interval: float = typer.Option(0.25, min=0.01, help="Seconds between memory samples."),
    detectors: bool = typer.Option(True, "--detectors/--no-detectors",
                                   help="After the video, time each face detector alone (dlib HOG, BlazeFace; "
                                        "YuNet with --yunet) at 640x480 and 1280x720."),
    yunet: Optional[Path] = typer.Option(None, "--yunet", help="A YuNet .onnx (OpenCV Zoo) to time beside dlib HOG "
                                                               "and BlazeFace."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", callback=_json_file, help="Also write the results as JSON here."
    ),
) -> None:
    """`aunet-infer`'s pipeline on one video: end-to-end frames/s, stage times, peak and growth of memory."""
    from aunet.cli import exclusive
    from aunet.faces.detectors import FaceDetectorMismatchWarning
    from aunet.faces.yunet import UnknownYuNetWarning
    from aunet.runtime.cli import engine_exit_code, warnings_as_lines
    from aunet.runtime.errors import EXIT_INFERENCE_FAILED, InferenceError, InputError, describe

    exclusive(PROG, yunet=yunet, no_detectors=not detectors)
    _model_spec(engine)
    if video is not None and not video.is_file():
        raise fail(PROG, f"video not found: {video}")
    if yunet is not None and (yunet.suffix.lower() != ".onnx" or not yunet.is_file()):
        raise fail(PROG, f"--yunet: YuNet .onnx not found: {yunet}")
    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            from aunet.demo.sample_data import make_sample_video

            w, h = pipeline_bench.parse_size(size)
            n = max(1, round(seconds * fps))
            console.print(f"making a {w}x{h} sample video of {n} frames ...")
            try:
                video = make_sample_video(Path(tmp) / "sample.mp4", frames=n, fps=fps, size=(w, h))
            except RuntimeError as exc:  # no scikit-image for the sample face
                raise fail(PROG, str(exc), EXIT_MISSING) from None
        try:
            with warnings_as_lines(FaceDetectorMismatchWarning, prog=PROG):  # not the training crops' detector
                detector, load_s = pipeline_bench.open_detector(engine, device, batch, detect_max_side)
        except Exception as exc:
            raise fail(PROG, f"cannot load {engine}: {describe(exc)}", engine_exit_code(exc)) from None
        try:
            with warnings_as_lines(UnknownYuNetWarning, prog=PROG):  # once, not per thread count
                doc = pipeline_bench.time_video(detector, engine, video, every, rss_interval, load_s,
                                                face_detectors=detectors, yunet=yunet)
        except InputError as exc:
            raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None
        except InferenceError as exc:
            raise fail(PROG, describe(exc), EXIT_INFERENCE_FAILED) from None
    console.print(pipeline_bench.pipeline_table(doc, video))
    console.print("(stage times overlap: decode and detection run on threads while the model infers)")
    _write_json(json_out, doc)


def _choices(allowed: Sequence[str]):
    """A callback refusing, at parse time, a repeatable option's value outside ``allowed``."""
    def check(values: list[str]) -> list[str]:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise typer.BadParameter(f"{bad[0]!r} is not one of {', '.join(allowed)}")
        return values
    return check


@app.command(epilog="Exit codes: 0 done; 1 an INT8 model crashed its child process; 2 bad input; 3 a missing "
                    "dependency (ONNX Runtime, ModelOpt).")
def int8(
    model: Path = typer.Option(..., "--model", help="FP32 ONNX from aunet-export onnx."),
    data: Path = typer.Option(..., "--data", help="aunet-prep face cache cut with the model's spec, split by video "
                                                  "into crops that calibrate and choose and crops that judge."),
    target: List[str] = typer.Option(list(TARGETS), callback=_choices(TARGETS),
                                     help=f"Q/DQ placement(s) to measure, of {', '.join(TARGETS)} (repeatable)."),
    method: List[str] = typer.Option(list(METHODS), callback=_choices(METHODS),
                                     help=f"Calibration method(s), of {', '.join(METHODS)} (repeatable)."),
    max_fp32_nodes: int = typer.Option(MAX_FP32_NODES, min=0, help="Budget of nodes kept in higher precision, as "
                                                                    "aunet-calib quantize (0: none)."),
    fakes_per_crop: Optional[int] = typer.Option(None, min=1, help="TAP fakes of each real crop (unlabeled caches; "
                                                                   "default: aunet-calib quantize's)."),
    seed: int = typer.Option(0, help="Seed of the held-out split, the crops and their TAP fakes."),
    keep: Optional[Path] = typer.Option(None, help="Folder to keep the INT8 models in (default: none kept)."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", callback=_json_file, help="Also write the rows as JSON here."
    ),
) -> None:
    """INT8 per calibration method and target, each quantized to the accuracy target on the same held-out split:
    nodes kept in higher precision, held-out agreement and AUC drop, FP32 vs INT8 faces/s (CPU)."""
    from aunet.bench import int8 as int8_bench
    from aunet.calibration.dataset import CalibrationError
    from aunet.calibration.isolation import ChildCrashed
    from aunet.calibration.quantize import QuantizeError
    from aunet.calibration.target import Budget

    _model_spec(model)
    machine = machine_info()
    try:
        rows = int8_bench.run(model, data, targets=tuple(dict.fromkeys(target)), methods=tuple(dict.fromkeys(method)),
                              budget=Budget(max_nodes=max_fp32_nodes), fakes_per_crop=fakes_per_crop, seed=seed,
                              keep=keep, log=lambda line: console.print(line, style="dim", markup=False))
    except (CalibrationError, QuantizeError, ValueError) as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except ChildCrashed as exc:
        raise fail(PROG, str(exc), EXIT_CHECK_FAILED) from None
    except ImportError as exc:
        raise fail(PROG, f"missing dependency: {exc.name} (pip install 'aunet[export]')", EXIT_MISSING) from None
    title = (f"INT8 per calibration method: {model.name}, {machine['cpus']} CPUs {machine['cpu_model']}, "
             f"flags {' '.join(machine['cpu_flags'])}")
    console.print(int8_bench.table(rows, title))
    _write_json(json_out, {"model": str(model), "data": str(data), "machine": machine, "rows": rows})


app.command("serve", epilog=serve_bench.EPILOG)(serve_bench.serve)  # aunet-serve vs in-process


def main(argv: Sequence[str] | None = None) -> None:
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
