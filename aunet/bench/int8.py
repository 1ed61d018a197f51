"""`aunet-bench int8`: the calibration methods side by side, each quantized to the accuracy target.

For every target (ONNX Runtime CPU, TensorRT Q/DQ) and every calibration method, ``quantize_to_target`` runs
with that method alone on the same held-out split: the nodes it had to keep in higher precision, the held-out
agreement and AUC drop with their 95 % intervals, and (CPU target) FP32 vs INT8 faces/s on ONNX Runtime's CPU
provider, interleaved in one process. One table, the CPU's flags in its title.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from rich.table import Table

from aunet.calibration.quantize import METHODS, TARGETS
from aunet.calibration.target import Budget, quantize_to_target


def run(model: Path, data: Path, *, targets: Sequence[str] = TARGETS, methods: Sequence[str] = METHODS,
        budget: Budget = Budget(), fakes_per_crop: int | None = None, seed: int = 0, keep: Path | None = None,
        log=lambda line: None) -> list[dict[str, Any]]:
    """One row per (target, method). ``keep``: a folder for the INT8 models (default: a temporary one)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="aunet-bench-int8-") as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for target in targets:
            for method in methods:
                log(f"{target} / {method}")
                options = {} if fakes_per_crop is None else {"fakes_per_crop": fakes_per_crop}
                result = quantize_to_target(
                    model, folder / f"{Path(model).stem}.{target}.{method}.onnx", data=data, target=target,
                    methods=(method,), budget=budget, seed=seed, speed=target == "cpu", log=log, **options)
                rows.append(row_of(result))
    return rows


def row_of(result) -> dict[str, Any]:
    j, speed = result.judgement, result.speed or {}
    interval = j.get("interval", {})
    return {
        "target": result.target, "method": result.method, "passed": result.passed,
        "fp32_nodes": len(result.excluded), "quantizable_nodes": result.quantizable_nodes,
        "met_on_choosing": result.met_on_choosing, "held_out_faces": j.get("num_faces"),
        "held_out_videos": j.get("held_out_videos"), "agreement": j.get("decision_agreement"),
        "agreement_ci": interval.get("decision_agreement"), "auc_fp32": j.get("auc_reference"),
        "auc_int8": j.get("auc_candidate"), "auc_drop_points": j.get("auc_drop_points"),
        "auc_drop_ci": interval.get("auc_drop_points"), "fp32_faces_per_s": speed.get("fp32_faces_per_s"),
        "int8_faces_per_s": speed.get("int8_faces_per_s"), "speedup": speed.get("speedup"),
        "speed_batch": speed.get("batch"), "seconds": round(result.seconds, 1), "accuracy": str(result.accuracy),
    }


def table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, show_edge=False)
    for col in ("target", "method", "FP32 nodes", "agreement [95 %]", "AUC drop [95 %]", "FP32 faces/s",
                "INT8 faces/s", "INT8/FP32", "target met"):
        t.add_column(col, justify="left" if col in ("target", "method") else "right")

    def pm(v, fmt="{:.2f}"):
        return f"{fmt.format(v[0])} ± {fmt.format(v[1])}" if v else "-"

    for r in rows:
        ag, drop = r["agreement_ci"], r["auc_drop_ci"]
        t.add_row(
            r["target"], r["method"], f"{r['fp32_nodes']} of {r['quantizable_nodes']}",
            f"{100 * r['agreement']:.1f} %" + (f" [{100 * ag[0]:.1f}, {100 * ag[1]:.1f}]" if ag else ""),
            (f"{r['auc_drop_points']:.2f}" + (f" [{drop[0]:.2f}, {drop[1]:.2f}]" if drop else ""))
            if r["auc_drop_points"] is not None else "n/a",
            pm(r["fp32_faces_per_s"], "{:.1f}"), pm(r["int8_faces_per_s"], "{:.1f}"),
            pm(r["speedup"]) + "×" if r["speedup"] else "engine's",
            "yes" if r["passed"] else "[red]no[/]")
    t.caption = ("held-out faces only judge; speed: ONNX Runtime CPU provider, batch "
                 f"{next((r['speed_batch'] for r in rows if r['speed_batch']), '-')}, mean ± std over interleaved "
                 "repeats; the TensorRT Q/DQ model's speed is its engine's")
    return t


__all__ = ["row_of", "run", "table"]
