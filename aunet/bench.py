"""`aunet-bench`: cost and speed tables.

`aunet-bench model`: the PyTorch model's size, GFLOPs and latency. `aunet-bench backends`: throughput and
latency percentiles of deployed models (ONNX Runtime, TensorRT) beside PyTorch eager with the paper's naive
AU embeddings. `aunet-bench pipeline`: `aunet-infer`'s whole pipeline on a video, frames/s and memory.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .config import AU_EMBEDDINGS, ModelConfig
from .io import atomic_write_text

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=110)


@app.callback()
def _group() -> None:
    """Cost and speed tables: model (PyTorch), backends (deployed models), pipeline (video end to end)."""


def count_gflops(model, img_size: int) -> float:
    """GFLOPs of one face (torch's flop counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, img_size, img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def measure_latency_ms(model, img_size: int, batch: int, repeats: int, warmup: int = 1) -> list[float]:
    import torch

    x = torch.rand(batch, 3, img_size, img_size)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return times


def model_report(cfg: ModelConfig, batches: tuple[int, ...], repeats: int, formulations: tuple[str, ...]) -> list[dict]:
    import torch

    from .model import build_model

    rows = []
    for form in formulations:
        model = build_model(cfg.replace(au_embedding=form)).eval()
        row = {
            "config": cfg.name,
            "au_embedding": form,
            "img_size": cfg.img_size,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": count_gflops(model, cfg.img_size),
            "threads": torch.get_num_threads(),
            "latency_ms": {},
        }
        for b in batches:
            t = measure_latency_ms(model, cfg.img_size, b, repeats)
            row["latency_ms"][str(b)] = {"median": statistics.median(t), "min": min(t)}
        rows.append(row)
    return rows


@app.command()
def model(
    config: str = typer.Option("paper", help="Named model config: paper or small."),
    batch: list[int] = typer.Option([1, 8], help="Batch sizes to time (repeatable)."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per batch size (after one warm-up)."),
    naive: bool = typer.Option(True, help="Also measure the paper's naive AU embeddings (K full convolutions)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON here."),
) -> None:
    """Parameters, GFLOPs per face and PyTorch eager CPU latency of the AUNet model."""
    try:
        cfg = ModelConfig.named(config)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    forms = AU_EMBEDDINGS if naive else ("fast",)
    rows = model_report(cfg, tuple(batch), repeats, forms)
    table = Table(title=f"AUNet ({cfg.name}, {cfg.img_size}x{cfg.img_size}, {cfg.grid}x{cfg.grid} patch grid)")
    table.add_column("Eq. 2")
    table.add_column("params M", justify="right")
    table.add_column("GFLOPs", justify="right")
    for b in batch:
        table.add_column(f"b{b} ms", justify="right")
        table.add_column(f"b{b} faces/s", justify="right")
    for r in rows:
        cells = [r["au_embedding"], f"{r['params_m']:.2f}", f"{r['gflops']:.2f}"]
        for b in batch:
            ms = r["latency_ms"][str(b)]["median"]
            cells += [f"{ms:.1f}", f"{1e3 * b / ms:.2f}"]
        table.add_row(*cells)
    console.print(table)
    if len(rows) == 2:
        fast, slow = rows
        b = str(batch[-1])
        console.print(
            f"exact rewrite of Eq. 2: {slow['gflops'] / fast['gflops']:.1f}x fewer FLOPs, "
            f"{slow['latency_ms'][b]['median'] / fast['latency_ms'][b]['median']:.1f}x faster at batch {b} "
            f"({rows[0]['threads']} threads)"
        )
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rows, indent=2))
        console.print(f"wrote {json_out}")


# --- deployed models: `aunet-bench backends` -----------------------------------------------------------------
#
# Each runner (an ONNX / TensorRT model, or PyTorch eager) is timed in its own child process: peak memory is
# then the runner's own, and a reduced-precision graph that crashes ONNX Runtime (see aunet.runtime.backends)
# is reported as a crashed row instead of taking the benchmark down.


def latency_stats(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min()), "n": int(ms.size)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def face_crops(n: int, size: int, crop, seed: int = 0) -> np.ndarray:
    """``n`` real face crops uint8 [n, S, S, 3]: variants of skimage's astronaut, cut as the runtime cuts them."""
    from .crop import crop_face
    from .faces import DlibHogDetector
    from .sample_data import sample_frame

    rng, detector, crops = np.random.default_rng(seed), DlibHogDetector(), []
    while len(crops) < n:
        frame = sample_frame(rng)
        faces = detector.detect(frame)
        if faces:
            crops.append(crop_face(frame, faces[0].box, size, crop)[0])
    return np.stack(crops)


def _batch_of(x: np.ndarray, b: int) -> np.ndarray:
    """``b`` inputs from ``x``, cycling when it is smaller."""
    return np.ascontiguousarray(x[np.arange(b) % len(x)])


def _time_calls(fn, x, repeats: int, warmup: int, sync=lambda: None) -> list[float]:
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn(x)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _error_row(runner: str, exc: BaseException) -> dict:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return {"runner": runner, "error": f"{type(exc).__name__}: {first}"}


def _backend_worker(conn, path: str, device: str, batches: list[int], repeats: int, warmup: int,
                    crops_npy: str) -> None:
    try:
        from .runtime.backends import open_backend
        from .runtime.pipeline import preprocess

        crops = np.load(crops_npy)
        t0 = time.perf_counter()
        backend = open_backend(path, device=device)
        load_s = time.perf_counter() - t0
        x = preprocess(crops, backend.spec)
        latency = {str(b): latency_stats(_time_calls(backend.infer, _batch_of(x, b), repeats, warmup)) for b in batches}
        step = backend.max_batch or len(x)
        scores = np.concatenate([backend.infer(x[i:i + step])["score"] for i in range(0, len(x), step)])
        conn.send({"runner": Path(path).name, "backend": backend.name.replace("onnxruntime", "ort"),
                   "precision": backend.spec.precision, "threshold": backend.spec.threshold, "load_s": load_s,
                   "latency_ms": latency,
                   "scores": scores.astype(float).tolist(), "peak_rss_mb": peak_rss_mb()})
        backend.close()
    except Exception as exc:
        conn.send(_error_row(Path(path).name, exc))


def _torch_worker(conn, cfg_dict: dict, form: str, device: str, fp16: bool, batches: list[int], repeats: int,
                  warmup: int, crops_npy: str) -> None:
    name = f"torch {form}{' fp16' if fp16 else ''}"
    try:
        import torch

        from .model import build_model

        torch.manual_seed(0)
        model = build_model(ModelConfig.from_dict(cfg_dict).replace(au_embedding=form)).eval().to(device)
        dtype = torch.float16 if fp16 else torch.float32
        model = model.to(dtype)
        crops = torch.from_numpy(np.load(crops_npy)).permute(0, 3, 1, 2).to(device, dtype) / 255.0
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        with torch.inference_mode():
            latency = {}
            for b in batches:
                x = crops[torch.arange(b) % len(crops)]
                latency[str(b)] = latency_stats(_time_calls(model, x, repeats, warmup, sync))
        conn.send({"runner": name, "backend": f"eager {device} {torch.get_num_threads()}t",
                   "precision": "fp16" if fp16 else "fp32", "latency_ms": latency, "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:
        conn.send(_error_row(name, exc))


def run_isolated(target, *args, timeout: float = 3600.0) -> dict:
    """Run ``target(conn, *args)`` in a fresh process; a crash or a hang becomes an error row."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    child.close()
    result = None
    if parent.poll(timeout):
        try:
            result = parent.recv()
        except EOFError:
            result = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        why = f"killed by signal {-proc.exitcode}" if (proc.exitcode or 0) < 0 else f"exit code {proc.exitcode}"
        result = {"error": f"crashed ({why})" if proc.exitcode is not None else "timed out"}
    return result


def add_comparisons(rows: list[dict]) -> None:
    """faces/s per batch, speed-up over the naive PyTorch baseline, decision agreement with the first model."""
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        r["faces_per_s"] = {b: 1e3 * int(b) / lat["p50"] for b, lat in r["latency_ms"].items()}
    naive = next((r for r in ok if "naive" in r["runner"]), None)
    reference = next((r for r in ok if "scores" in r), None)
    for r in ok:
        if naive is not None:
            r["speedup_vs_naive"] = {b: v / naive["faces_per_s"][b] for b, v in r["faces_per_s"].items()
                                     if b in naive["faces_per_s"]}
        if reference is not None and "scores" in r:
            r["agreement_vs_first"] = _agreement(reference, r)
            diff = np.abs(np.asarray(reference["scores"]) - np.asarray(r["scores"]))
            r["max_abs_score_diff_vs_first"] = float(diff.max())


def target_checks(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The issue's CPU targets that these rows can answer: (target, measured, met)."""
    ok = [r for r in rows if "error" not in r]
    onnx = {r["precision"]: r for r in ok if r["backend"].startswith("ort:")}
    naive = next((r for r in ok if "naive" in r["runner"]), None)
    checks = []
    fp32, int8 = onnx.get("fp32"), onnx.get("int8")
    if fp32 and "8" in fp32["faces_per_s"]:
        v = fp32["faces_per_s"]["8"]
        checks.append(("ONNX FP32 >= 10 faces/s at batch 8", f"{v:.2f} faces/s", v >= 10))
        if naive is not None and "8" in naive["faces_per_s"]:
            x = v / naive["faces_per_s"]["8"]
            checks.append(("ONNX FP32 >= 8x naive PyTorch eager (batch 8)", f"{x:.2f}x", x >= 8))
    if fp32 and int8:
        common = [k for k in ("8", *int8["faces_per_s"]) if k in int8["faces_per_s"] and k in fp32["faces_per_s"]]
        b = common[0] if common else None
        if b is not None:
            x = int8["faces_per_s"][b] / fp32["faces_per_s"][b]
            checks.append((f"INT8 >= 1.5x FP32 (batch {b})", f"{x:.2f}x", x >= 1.5))
        agree = _agreement(fp32, int8)
        if agree is not None:
            checks.append(("INT8 decision agreement >= 98%", f"{100 * agree:.1f}%", agree >= 0.98))
    return checks


def _agreement(a: dict, b: dict) -> Optional[float]:
    if "scores" not in a or "scores" not in b:
        return None
    return float(((np.asarray(a["scores"]) >= a["threshold"]) == (np.asarray(b["scores"]) >= b["threshold"])).mean())


def _print_checks(checks: list[tuple[str, str, bool]]) -> None:
    if not checks:
        return
    table = Table(title="targets (issue 6)")
    for col in ("target", "measured", "met"):
        table.add_column(col)
    for name, value, met in checks:
        table.add_row(name, value, "[green]yes[/green]" if met else "[red]no[/red]")
    console.print(table)


def machine_info() -> dict:
    import os
    import platform

    return {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "machine": platform.machine(),
            "python": platform.python_version()}


@app.command()
def backends(
    models: list[Path] = typer.Argument(None, help="Model files (.onnx, .plan/.engine); the first is the reference."),
    batch: list[int] = typer.Option([1, 8, 32], help="Batch sizes (repeatable)."),
    repeats: int = typer.Option(20, min=1, help="Timed calls per batch size for deployed models."),
    warmup: int = typer.Option(2, min=0, help="Untimed calls first."),
    device: str = typer.Option("cpu", help="Device for the deployed models: auto, cpu, cuda, tensorrt."),
    naive: bool = typer.Option(True, help="PyTorch eager with the paper's naive AU embeddings (K convolutions)."),
    torch_fast: bool = typer.Option(False, help="Also PyTorch eager with the exact fast rewrite."),
    torch_device: str = typer.Option("cpu", help="Device for the PyTorch rows (cuda on a GPU box)."),
    torch_fp16: bool = typer.Option(False, help="Also the PyTorch rows in float16 (GPU)."),
    torch_repeats: int = typer.Option(3, min=1, help="Timed calls per batch size for PyTorch eager (slow)."),
    torch_max_batch: int = typer.Option(
        8, min=1, help="Largest batch for the PyTorch rows (naive Eq. 2 at 224: ~40 s per batch of 8 on 2 CPUs)."
    ),
    config: Optional[str] = typer.Option(None, help="Model config for the PyTorch rows when no model is given."),
    check: bool = typer.Option(False, help="Exit 1 when one of the issue's targets is missed."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON here."),
) -> None:
    """Latency p50/p95/p99 and faces/s of each model at each batch, beside PyTorch eager (naive Eq. 2)."""
    import tempfile

    from .spec import SpecError

    models = list(models or [])
    for m in models:
        if not m.is_file():
            console.print(f"[red]error:[/red] model not found: {m}")
            raise typer.Exit(2)
    try:
        if models:
            from .runtime.backends import read_spec

            spec = read_spec(models[0])
            cfg, crop, size = spec.config, spec.crop, spec.input_size
        else:
            from .spec import CropSpec

            cfg = ModelConfig.named(config or "paper")
            crop, size = CropSpec(), cfg.img_size
    except (ValueError, SpecError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    batches = sorted(set(batch))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        crops_npy = str(Path(tmp) / "crops.npy")
        try:
            np.save(crops_npy, face_crops(max(batches), size, crop))
        except RuntimeError as exc:  # no scikit-image (sample faces) or no dlib (DependencyError)
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(3) from None
        for m in models:
            console.print(f"timing {m} ...")
            rows.append(run_isolated(_backend_worker, str(m), device, batches, repeats, warmup, crops_npy))
            rows[-1].setdefault("runner", m.name)
        forms = (["fast"] if torch_fast else []) + (["naive"] if naive else [])
        for form in forms:
            for fp16 in ([False, True] if torch_fp16 else [False]):
                console.print(f"timing PyTorch eager ({form}{', fp16' if fp16 else ''}) ...")
                rows.append(run_isolated(_torch_worker, cfg.to_dict(), form, torch_device, fp16,
                                         [b for b in batches if b <= torch_max_batch] or batches[:1],
                                         torch_repeats, 1, crops_npy))
    add_comparisons(rows)
    table = Table(title=f"AUNet {cfg.name} ({size}x{size}), real face crops; {machine_info()['cpus']} CPUs, "
                        f"load {machine_info()['load_avg_1m']:.1f}")
    for col in ("runner", "backend", "prec", "batch", "p50 ms", "p95 ms", "p99 ms", "faces/s", "x naive",
                "agree", "peak MB"):
        table.add_column(col, justify="left" if col in ("runner", "backend", "prec") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["runner"], f"[red]{r['error']}[/red]", *[""] * 9)
            continue
        for b, lat in r["latency_ms"].items():
            speedup = r.get("speedup_vs_naive", {}).get(b)
            table.add_row(
                r["runner"], r["backend"], r["precision"], b, f"{lat['p50']:.1f}", f"{lat['p95']:.1f}",
                f"{lat['p99']:.1f}", f"{r['faces_per_s'][b]:.2f}", "-" if speedup is None else f"{speedup:.2f}",
                f"{100 * r['agreement_vs_first']:.1f}%" if "agreement_vs_first" in r else "-",
                f"{r['peak_rss_mb']:.0f}",
            )
    console.print(table)
    checks = target_checks(rows)
    _print_checks(checks)
    if json_out is not None:
        doc = {"config": cfg.to_dict(), "machine": machine_info(), "batches": batches, "rows": rows,
               "targets": [{"target": n, "measured": v, "met": ok} for n, v, ok in checks]}
        atomic_write_text(json_out, json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}")
    if check and not all(ok for _, _, ok in checks):
        raise typer.Exit(1)


# --- the whole pipeline: `aunet-bench pipeline` ---------------------------------------------------------------


def current_rss_mb() -> float:
    """Resident memory now (Linux /proc; 0 elsewhere)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class RssSampler:
    """Samples resident memory every ``interval`` s beside the video position reached (for the growth slope)."""

    def __init__(self, interval: float):
        import threading

        self.interval, self.samples, self.position_s = interval, [], 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - t0, self.position_s, current_rss_mb()))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mb_per_min(self, skip: float = 0.25) -> Optional[float]:
        """Least-squares slope of RSS over video minutes, after the first ``skip`` of the run (warm-up)."""
        pts = np.asarray(self.samples[int(len(self.samples) * skip):], dtype=np.float64)
        if len(pts) < 3 or np.ptp(pts[:, 1]) <= 0:
            return None
        return float(np.polyfit(pts[:, 1] / 60.0, pts[:, 2], 1)[0])


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 64 or h < 64:
        raise typer.BadParameter("the video must be at least 64x64")
    return w, h


@app.command()
def pipeline(
    engine: Path = typer.Option(..., "--engine", "-e", help="Model for the runtime (.onnx, .plan/.engine)."),
    video: Optional[Path] = typer.Option(None, help="A video; default: a sample video of a real face made now."),
    seconds: float = typer.Option(5.0, min=0.1, help="Length of the sample video."),
    fps: float = typer.Option(25.0, min=1.0, help="Frame rate of the sample video."),
    size: str = typer.Option("640x480", help="Size of the sample video, WIDTHxHEIGHT (1280x720 for 720p)."),
    every: Optional[int] = typer.Option(None, min=1, help="Analyse every K-th frame (default: all frames)."),
    batch: int = typer.Option(8, min=1, help="Faces per inference batch."),
    device: str = typer.Option("cpu", help="auto, cpu or cuda."),
    detect_max_side: Optional[int] = typer.Option(None, min=64, help="As aunet-infer --detect-max-side."),
    rss_interval: float = typer.Option(0.25, min=0.01, help="Seconds between memory samples."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
) -> None:
    """`aunet-infer`'s pipeline on one video: end-to-end frames/s, stage times, peak and growth of memory."""
    import tempfile

    from .runtime.cli import engine_exit_code
    from .runtime.errors import InferenceError, InputError, describe
    from .runtime.pipeline import Detector
    from .runtime.sources import Sampling, VideoSource
    from .sample_data import make_sample_video

    if engine is None or not engine.is_file():
        console.print(f"[red]error:[/red] engine not found: {engine}")
        raise typer.Exit(2)
    if video is not None and not video.is_file():
        console.print(f"[red]error:[/red] video not found: {video}")
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            w, h = parse_size(size)
            n = max(1, round(seconds * fps))
            console.print(f"making a {w}x{h} sample video of {n} frames ...")
            try:
                video = make_sample_video(Path(tmp) / "sample.mp4", frames=n, fps=fps, size=(w, h))
            except RuntimeError as exc:  # no scikit-image for the sample face
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(3) from None
        rss_start = current_rss_mb()
        t0 = time.perf_counter()
        try:
            detector = Detector(engine, device=device, batch_size=batch, detect_max_side=detect_max_side)
            detector.face_detector  # noqa: B018 - load it before timing
        except Exception as exc:
            console.print(f"[red]error:[/red] cannot load {engine}: {describe(exc)}")
            raise typer.Exit(engine_exit_code(exc)) from None
        load_s = time.perf_counter() - t0
        with detector, RssSampler(rss_interval) as sampler:

            def on_frame(frame, _rgb) -> None:
                sampler.position_s = frame.time_s

            try:
                src = VideoSource(video, Sampling(every=every))
                result = detector.predict_video(src, on_frame=on_frame)
            except (InputError, InferenceError) as exc:
                console.print(f"[red]error:[/red] {describe(exc)}")
                raise typer.Exit(2 if isinstance(exc, InputError) else 4) from None
    t = result.timings
    n_frames = len(result.frames)
    duration_s = (src.frame_count or 0) / src.fps if src.fps else None
    growth = sampler.growth_mb_per_min()
    peak_sampled = max((r for _, _, r in sampler.samples), default=current_rss_mb())
    doc = {
        "engine": str(engine), "backend": detector.backend.name, "face_detector": result.info["face_detector"],
        "video": result.info["video"], "video_duration_s": duration_s, "sampling": result.info["sampling"],
        "batch_size": detector.batch_size, "frames_analysed": n_frames, "frames_with_face": result.frames_with_face,
        "load_s": load_s, "timings": t, "frames_per_s": t["frames_per_s"],
        "faces_per_s": sum(len(f.faces) for f in result.frames) / t["total_s"],
        "rss_start_mb": rss_start, "rss_peak_sampled_mb": peak_sampled, "peak_rss_mb": peak_rss_mb(),
        "rss_growth_mb_per_video_min": growth,
        "rss_projected_10min_mb": None if growth is None else peak_sampled + max(0.0, growth) * max(
            0.0, 10.0 - (duration_s or 0.0) / 60.0),
        "rss_samples": [[round(a, 2), round(b, 2), round(c, 1)] for a, b, c in sampler.samples],
        "machine": machine_info(),
    }
    table = Table(title=f"aunet-infer pipeline: {Path(str(video)).name} ({doc['video']['width']}x"
                        f"{doc['video']['height']}, {doc['sampling']}), {doc['backend']}, {doc['face_detector']}")
    for col in ("frames", "frames/s", "faces/s", "decode s", "detect s", "infer s", "total s", "peak RSS MB",
                "RSS growth MB/min"):
        table.add_column(col, justify="right")
    table.add_row(str(n_frames), f"{t['frames_per_s']:.2f}", f"{doc['faces_per_s']:.2f}", f"{t['decode_s']:.1f}",
                  f"{t['detect_s']:.1f}", f"{t['infer_s']:.1f}", f"{t['total_s']:.1f}", f"{doc['peak_rss_mb']:.0f}",
                  "-" if growth is None else f"{growth:+.1f}")
    console.print(table)
    console.print("(stage times overlap: decode and detection run on threads while the model infers)")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
