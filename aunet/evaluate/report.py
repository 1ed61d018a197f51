"""The files and the table of an evaluation: metrics.json, metrics.md (the paper's Table 3 layout plus every
metric), scores.csv (per video), roc.png, and the summary printed on the terminal."""
from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from aunet.io import atomic_path, atomic_write_text
from aunet.metrics import roc_curve


def percent(x: float | None) -> str:
    """A metric in percent with 2 decimals, "n/a" where it is undefined (NaN)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def markdown_report(report: dict, dataset: str, model_name: str, protocol: str) -> str:
    """The paper's Table 3 row for this model and set, then every metric, then per-method AUCs."""
    fake_in_training = "✓" if protocol == "in" else "✗"
    f, v, c = report["frame"], report["video"], report["counts"]
    lines = [
        f"| Method | Input Type | Training Set Real | Training Set Fake | {dataset} AUC (%) |",
        "|---|---|---|---|---|",
        f"| {model_name} | Frame | ✓ | {fake_in_training} | {percent(v['auc'])} |",
        "",
        "| Level | AUC (%) | AP (%) | EER (%) | Acc@{:.2f} (%) | Real | Fake |".format(report["threshold"]),
        "|---|---|---|---|---|---|---|",
    ]
    for level, m in (("video", v), ("frame", f)):
        lines.append(f"| {level} | {percent(m['auc'])} | {percent(m['ap'])} | {percent(m['eer'])} | {percent(m['accuracy'])} "
                     f"| {m['n_real']} | {m['n_fake']} |")
    if report["per_method"]:
        names = list(report["per_method"])
        lines += ["", "| Method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                  f"| {model_name} video AUC (%) | " + " | ".join(percent(report["per_method"][n]["auc"]) for n in names) + " |"]
    lines += [
        "",
        f"Videos: {c['videos']} labeled, {c['videos_scored']} scored, {c['videos_without_faces']} without any face "
        f"(scored {report['no_face_score']}), {c['unlabeled_videos']} unlabeled (ignored). Frames: {c['frames_scored']} "
        f"scored, {c['frames_without_face']} without a face. Faces: {c['faces']}.",
        "Frame score = max over faces; video score = mean over frames.",
    ]
    return "\n".join(lines) + "\n"


def write_roc_png(path: Path, report: dict, title: str) -> None:
    """Frame and video ROC curves in one plot (a level whose AUC is undefined is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for level, (labels, scores) in report["_curves"].items():
        m = report[level]
        if math.isnan(m["auc"]):
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{level} AUC {100 * m['auc']:.2f}%")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(textwrap.fill(title, 40), fontsize=10)  # long model / set names wrap instead of being cut
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _json_safe(value: Any) -> Any:
    """NaN (an undefined metric) -> null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(out: Path, report: dict, dataset: str, model_name: str, protocol: str) -> None:
    """metrics.json, metrics.md, scores.csv and roc.png in ``out`` (each written atomically)."""
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    atomic_write_text(out / "metrics.json", json.dumps(_json_safe(public), indent=2) + "\n")
    atomic_write_text(out / "metrics.md", markdown_report(report, dataset, model_name, protocol))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["video_id", "label", "method", "score", "frames", "frames_scored", "faces", "status"])
    w.writeheader()
    w.writerows(report["videos"])
    atomic_write_text(out / "scores.csv", buf.getvalue())
    write_roc_png(out / "roc.png", report, f"{model_name} on {dataset}")


# ----------------------------------------------------------------------------------------------------------
# CLI


def summary_table(report: dict, title: str) -> Table:
    """Video- and frame-level metrics, as printed at the end of aunet-eval."""
    table = Table(title=title)
    for col in ("level", "AUC %", "AP %", "EER %", f"Acc@{report['threshold']:g} %", "real", "fake"):
        table.add_column(col, justify="right")
    for level in ("video", "frame"):
        m = report[level]
        table.add_row(level, percent(m["auc"]), percent(m["ap"]), percent(m["eer"]), percent(m["accuracy"]),
                      str(m["n_real"]), str(m["n_fake"]))
    return table
