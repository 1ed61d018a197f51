"""Verification of a deployed model (ONNX or TensorRT engine) against the PyTorch reference bundle (torch-free).

Both heads are compared at batch 1 and at the bundle's full batch: per output max abs, mean abs and the
smallest per-sample cosine; top-1 agreement of the class head and agreement of the fused decision. The
thresholds depend on the artifact's precision (its spec's provenance):

    fp32  logits (cls and patch) max abs diff <= 1e-4
    fp16  fake-probability max abs diff <= 1e-2, patch-probability mean abs diff <= 1e-2, decisions >= 99 %
    int8  decisions >= 98 %; with labels of both classes, AUC drop <= 0.5 points

A reduced-precision graph may crash ONNX Runtime's CPU provider (a segfault, not an exception), so
``verify_isolated`` runs the check in a child process and reports a crash as a failed check.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aunet.calibration.report import MAX_AUC_DROP_POINTS, MIN_DECISION_AGREEMENT
from aunet.io import atomic_write_text
from aunet.spec import SpecError, fake_probability

from .reference import load_reference

THRESHOLDS: dict[str, list[tuple[str, str, str, float]]] = {
    # (metric, output, comparison, limit)
    "fp32": [("max_abs", "cls_logits", "<=", 1e-4), ("max_abs", "patch_logits", "<=", 1e-4)],
    "fp16": [("max_abs", "fake_prob", "<=", 1e-2), ("mean_abs", "patch_prob", "<=", 1e-2),
             ("agreement", "decision", ">=", 0.99)],
    "int8": [("agreement", "decision", ">=", MIN_DECISION_AGREEMENT), ("auc_drop_points", "score", "<=", MAX_AUC_DROP_POINTS)],
}


def derived(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The probabilities a deployment acts on: softmax(cls)[fake] and softmax(patch)[fake] per token."""
    return {"fake_prob": fake_probability(outputs["cls_logits"]), "patch_prob": fake_probability(outputs["patch_logits"])}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(a - b).max(1) == 0, 1.0, 0.0))
    return float(cos.min())


def compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], threshold: float,
            labels: np.ndarray | None = None) -> dict[str, Any]:
    """Difference metrics of one run of the backend over the bundle's inputs."""
    got, ref = {**got, **derived(got)}, {**ref, **derived(ref)}
    metrics: dict[str, Any] = {}
    for name in ("cls_logits", "patch_logits", "score", "fake_prob", "patch_prob"):
        if got[name].shape != ref[name].shape:
            raise SpecError(f"output {name} has shape {list(got[name].shape)}, the reference {list(ref[name].shape)}")
        if not np.isfinite(got[name]).all():
            metrics[name] = {"max_abs": float("inf"), "mean_abs": float("inf"), "cosine": float("nan")}
            continue
        diff = np.abs(got[name].astype(np.float64) - ref[name].astype(np.float64))
        metrics[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                         "cosine": _min_cosine(got[name], ref[name])}
    metrics["top1"] = {"agreement": float((got["cls_logits"].argmax(1) == ref["cls_logits"].argmax(1)).mean())}
    metrics["decision"] = {"agreement": float(((got["score"] >= threshold) == (ref["score"] >= threshold)).mean())}
    if labels is not None and set(np.unique(labels[labels >= 0]).tolist()) == {0, 1}:
        from aunet.metrics import roc_auc

        known = labels >= 0
        auc_ref, auc_got = roc_auc(labels[known], ref["score"][known]), roc_auc(labels[known], got["score"][known])
        metrics["score"].update(auc_ref=auc_ref, auc=auc_got, auc_drop_points=100.0 * (auc_ref - auc_got))
    return metrics


def evaluate_checks(batches: dict[str, dict[str, Any]], precision: str) -> list[dict[str, Any]]:
    checks = []
    for metric, output, op, limit in THRESHOLDS[precision]:
        for batch, metrics in batches.items():
            value = metrics.get(output, {}).get(metric)
            if value is None:  # e.g. the AUC drop without labels of both classes
                checks.append({"batch": batch, "check": f"{output} {metric}", "limit": f"{op} {limit:g}",
                               "value": None, "passed": None, "note": "not measurable (no labels of both classes)"})
                continue
            ok = bool(value <= limit) if op == "<=" else bool(value >= limit)
            checks.append({"batch": batch, "check": f"{output} {metric}", "limit": f"{op} {limit:g}",
                           "value": value, "passed": ok})
    return checks


def verify_backend(backend: Any, ref_path: str | os.PathLike, *, precision: str | None = None,
                   batches: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Run ``backend`` over the bundle at batch 1 and the full batch; the report says what passed."""
    ref = load_reference(ref_path)
    backend.spec.check_compatible(ref["spec"])  # an ONNX/engine of another model: SpecError
    precision = precision or backend.spec.precision
    if precision not in THRESHOLDS:
        raise SpecError(f"unknown precision {precision!r}; expected one of {', '.join(THRESHOLDS)}")
    images, n = ref["image"], len(ref["image"])
    outputs = {k: ref[k] for k in backend.spec.output_names}
    report: dict[str, Any] = {
        "model": str(getattr(backend, "path", "")), "backend": backend.name, "precision": precision,
        "reference": str(ref_path), "reference_source": ref["source"], "samples": n, "batches": {},
        "latency_ms_per_image": {},
    }
    for b in batches or (1, n):
        b = max(1, min(b, n))
        backend.infer(images[:b])  # warm-up (lazy allocations, engine caches)
        t0 = time.perf_counter()
        parts = [backend.infer(images[i:i + b]) for i in range(0, n, b)]
        elapsed = time.perf_counter() - t0
        got = {k: np.concatenate([p[k] for p in parts]) for k in outputs}
        report["batches"][str(b)] = compare(got, outputs, ref["spec"].threshold, ref["label"])
        report["latency_ms_per_image"][str(b)] = 1e3 * elapsed / n
    report["checks"] = evaluate_checks(report["batches"], precision)
    report["passed"] = all(c["passed"] is not False for c in report["checks"])
    return report


def verify_model(model_path: str | os.PathLike, ref_path: str | os.PathLike, *, device: str = "auto",
                 precision: str | None = None, optimization: str | None = None) -> dict[str, Any]:
    """Open ``model_path`` (aunet.backends) and verify it in this process."""
    from aunet.backends import open_backend

    options = {"optimization": optimization} if optimization else {}
    with open_backend(model_path, device=device, **options) as backend:
        report = verify_backend(backend, ref_path, precision=precision)
        report["model"] = str(model_path)
        if hasattr(backend, "optimization"):
            report["ort_graph_optimization"] = backend.optimization
        return report


def verify_isolated(model_path: str | os.PathLike, ref_path: str | os.PathLike, *, device: str = "auto",
                    precision: str | None = None, optimization: str | None = None,
                    timeout: float = 1800) -> dict[str, Any]:
    """``verify_model`` in a child process: a segfault or a hang becomes a failed report, never the caller's end.

    Usage errors (spec mismatch, unreadable files) come back as {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="aunet-verify-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "aunet.export.verify", str(model_path), str(ref_path), str(out), device,
               precision or "", optimization or ""]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"model": str(model_path), "passed": False, "checks": [],
                    "crash": f"verification did not finish within {timeout:g} s"}
        if out.is_file():
            return json.loads(out.read_text())
        if proc.returncode < 0:
            try:
                sig = signal.Signals(-proc.returncode).name
            except ValueError:
                sig = f"signal {-proc.returncode}"
            why = f"the backend crashed the verification process ({sig})"
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            why = f"the verification process exited with {proc.returncode}: {tail}"
        return {"model": str(model_path), "passed": False, "checks": [], "crash": why}


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def _child_main(argv: list[str]) -> int:
    """Entry of verify_isolated's child: MODEL REF OUT DEVICE [PRECISION] [OPTIMIZATION]."""
    from aunet.backends import BackendError, BackendUnavailable

    from .reference import ReferenceError

    model, ref, out, device, precision, optimization = (argv + ["", ""])[:6]
    try:
        report = verify_model(model, ref, device=device, precision=precision or None,
                              optimization=optimization or None)
    except (SpecError, ReferenceError, BackendError, BackendUnavailable) as exc:
        report = {"model": model, "passed": False, "checks": [], "error": str(exc),
                  "error_kind": "unavailable" if isinstance(exc, BackendUnavailable) else "usage"}
    write_report(report, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))


__all__ = ["THRESHOLDS", "compare", "derived", "evaluate_checks", "verify_backend", "verify_isolated", "verify_model",
           "write_report"]
