"""`aunet-bench backends`: latency percentiles and faces/s of deployed models (ONNX Runtime, TensorRT) beside
PyTorch eager, on real face crops, with the comparisons between them and the thresholds they must clear.

Each runner (an ONNX / TensorRT model, or PyTorch eager) is timed in its own child process: peak memory is then
the runner's own, and a reduced-precision graph that crashes ONNX Runtime (see aunet.backends) is reported as a
crashed row instead of taking the benchmark down.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from rich.table import Table
from rich.text import Text

from aunet.bench.measure import batch_of, latency_stats, peak_rss_mb, time_calls
from aunet.calibration.report import MIN_DECISION_AGREEMENT
from aunet.config import ModelConfig
from aunet.spec import CropSpec

# The bars `aunet-bench backends --check` holds deployed models to on a CPU, each named for what it protects.
# A CPU-only box must still keep up with video: ten faces a second from the FP32 ONNX model at batch 8.
MIN_FP32_FACES_PER_S = 10.0
# The exact rewrite of Eq. 2 plus the ONNX export must clearly beat the paper's naive form run in PyTorch eager,
# or the deployment path is not worth its extra steps.
MIN_SPEEDUP_VS_NAIVE = 8.0
# INT8 trades some agreement for speed: it is only worth shipping when it is clearly faster than FP32 ...
MIN_INT8_SPEEDUP = 1.5
# ... and makes (almost) the same real / fake decisions: the bar aunet-calib report and export verification apply.
MIN_INT8_AGREEMENT = MIN_DECISION_AGREEMENT
THRESHOLD_BATCH = "8"  # batch size the throughput bars are stated at


@dataclass(frozen=True)
class ThresholdCheck:
    name: str
    measured: str
    required: str
    met: bool


def face_crops(n: int, size: int, crop: CropSpec, seed: int = 0) -> np.ndarray:
    """``n`` real face crops uint8 [n, S, S, 3]: variants of skimage's astronaut, cut as the runtime cuts them.
    Raises RuntimeError without scikit-image (the sample faces) or dlib (DependencyError)."""
    from aunet.demo.sample_data import sample_frame
    from aunet.faces import DlibHogDetector
    from aunet.faces.crop import crop_face

    rng, detector, crops = np.random.default_rng(seed), DlibHogDetector(), []
    while len(crops) < n:
        frame = sample_frame(rng)
        faces = detector.detect(frame)
        if faces:
            crops.append(crop_face(frame, faces[0].box, size, crop)[0])
    return np.stack(crops)


def _error_row(runner: str, exc: BaseException) -> dict:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return {"runner": runner, "error": f"{type(exc).__name__}: {first}"}


def _backend_worker(conn, path: str, device: str, batches: list[int], repeats: int, warmup: int,
                    crops_npy: str) -> None:
    try:
        from aunet.backends import open_backend
        from aunet.runtime.pipeline import preprocess

        crops = np.load(crops_npy)
        t0 = time.perf_counter()
        backend = open_backend(path, device=device)
        load_s = time.perf_counter() - t0
        x = preprocess(crops, backend.spec)
        latency = {str(b): latency_stats(time_calls(backend.infer, batch_of(x, b), repeats, warmup)) for b in batches}
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

        from aunet.model import build_model

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
                latency[str(b)] = latency_stats(time_calls(model, x, repeats, warmup, sync))
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


@dataclass(frozen=True)
class TorchRuns:
    """The PyTorch eager rows: which AU-embedding forms, where, and how long (naive Eq. 2 is slow)."""
    forms: tuple[str, ...] = ("naive",)
    device: str = "cpu"
    fp16: bool = False
    repeats: int = 3
    max_batch: int = 8


def time_runners(models: list[Path], cfg: ModelConfig, crops: np.ndarray, batches: list[int], *, device: str,
                 repeats: int, warmup: int, torch_runs: TorchRuns, say: Callable[[str], None] = print) -> list[dict]:
    """One row per model (the first is the reference) and per PyTorch eager run, with add_comparisons' columns."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        crops_npy = str(Path(tmp) / "crops.npy")
        np.save(crops_npy, crops)
        for m in models:
            say(f"timing {m} ...")
            rows.append(run_isolated(_backend_worker, str(m), device, batches, repeats, warmup, crops_npy))
            rows[-1].setdefault("runner", m.name)
        torch_batches = [b for b in batches if b <= torch_runs.max_batch] or batches[:1]
        for form in torch_runs.forms:
            for fp16 in ([False, True] if torch_runs.fp16 else [False]):
                say(f"timing PyTorch eager ({form}{', fp16' if fp16 else ''}) ...")
                rows.append(run_isolated(_torch_worker, cfg.to_dict(), form, torch_runs.device, fp16, torch_batches,
                                         torch_runs.repeats, 1, crops_npy))
    add_comparisons(rows)
    return rows


def decision_agreement(a: dict, b: dict) -> Optional[float]:
    """Share of faces both rows call the same (real / fake, each at its own model's threshold)."""
    if "scores" not in a or "scores" not in b:
        return None
    return float(((np.asarray(a["scores"]) >= a["threshold"]) == (np.asarray(b["scores"]) >= b["threshold"])).mean())


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
            r["agreement_vs_first"] = decision_agreement(reference, r)
            diff = np.abs(np.asarray(reference["scores"]) - np.asarray(r["scores"]))
            r["max_abs_score_diff_vs_first"] = float(diff.max())


def threshold_checks(rows: list[dict]) -> list[ThresholdCheck]:
    """The CPU thresholds these rows can answer (the others need a run they lack, e.g. batch 8 or an INT8 model)."""
    ok = [r for r in rows if "error" not in r]
    onnx = {r["precision"]: r for r in ok if r["backend"].startswith("ort:")}
    naive = next((r for r in ok if "naive" in r["runner"]), None)
    checks = []
    fp32, int8 = onnx.get("fp32"), onnx.get("int8")
    b8 = THRESHOLD_BATCH
    if fp32 and b8 in fp32["faces_per_s"]:
        v = fp32["faces_per_s"][b8]
        checks.append(ThresholdCheck(f"ONNX FP32 throughput on CPU (batch {b8})", f"{v:.2f} faces/s",
                                     f">= {MIN_FP32_FACES_PER_S:g} faces/s", v >= MIN_FP32_FACES_PER_S))
        if naive is not None and b8 in naive["faces_per_s"]:
            x = v / naive["faces_per_s"][b8]
            checks.append(ThresholdCheck(f"ONNX FP32 speed-up over naive PyTorch eager (batch {b8})", f"{x:.2f}x",
                                         f">= {MIN_SPEEDUP_VS_NAIVE:g}x", x >= MIN_SPEEDUP_VS_NAIVE))
    if fp32 and int8:
        common = [k for k in (b8, *int8["faces_per_s"]) if k in int8["faces_per_s"] and k in fp32["faces_per_s"]]
        if common:
            b = common[0]
            x = int8["faces_per_s"][b] / fp32["faces_per_s"][b]
            checks.append(ThresholdCheck(f"INT8 faster than FP32 (batch {b})", f"{x:.2f}x",
                                         f">= {MIN_INT8_SPEEDUP:g}x", x >= MIN_INT8_SPEEDUP))
        agree = decision_agreement(fp32, int8)
        if agree is not None:
            checks.append(ThresholdCheck("INT8 decision agreement with FP32", f"{100 * agree:.1f}%",
                                         f">= {100 * MIN_INT8_AGREEMENT:g}%", agree >= MIN_INT8_AGREEMENT))
    return checks


def backends_table(rows: list[dict], cfg: ModelConfig, size: int, machine: dict) -> Table:
    table = Table(title=f"AUNet {cfg.name} ({size}x{size}), real face crops; {machine['cpus']} CPUs, "
                        f"load {machine['load_avg_1m']:.1f}")
    for col in ("runner", "backend", "prec", "batch", "p50 ms", "p95 ms", "p99 ms", "faces/s", "x naive",
                "agree", "peak MB"):
        table.add_column(col, justify="left" if col in ("runner", "backend", "prec") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["runner"], Text(r["error"], style="red"), *[""] * 9)
            continue
        for b, lat in r["latency_ms"].items():
            speedup = r.get("speedup_vs_naive", {}).get(b)
            table.add_row(
                r["runner"], r["backend"], r["precision"], b, f"{lat['p50']:.1f}", f"{lat['p95']:.1f}",
                f"{lat['p99']:.1f}", f"{r['faces_per_s'][b]:.2f}", "-" if speedup is None else f"{speedup:.2f}",
                f"{100 * r['agreement_vs_first']:.1f}%" if "agreement_vs_first" in r else "-",
                f"{r['peak_rss_mb']:.0f}",
            )
    return table


def thresholds_table(checks: list[ThresholdCheck]) -> Table:
    table = Table(title="thresholds")
    for col in ("threshold", "measured", "required", "met"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, c.measured, c.required, Text("yes", style="green") if c.met else Text("no", style="red"))
    return table


def report(cfg: ModelConfig, machine: dict, batches: list[int], rows: list[dict],
           checks: list[ThresholdCheck]) -> dict:
    """The JSON document of a run."""
    return {"config": cfg.to_dict(), "machine": machine, "batches": batches, "rows": rows,
            "thresholds": [asdict(c) for c in checks]}
