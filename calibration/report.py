"""FP32 vs INT8 accuracy report: AUC on labeled faces (or real crops vs their TAP fakes when unlabeled),
decision agreement and per-head errors, run through the torch-free runtime backends."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from aunet.spec import ModelSpec, fake_probability

from .dataset import open_cache, spread_sample

BATCH = 16
# INT8 acceptance, the same limits `aunet-export` verifies an INT8 ONNX or engine with (docs/export.md).
# Deployed decisions: at most 2 faces in 100 may flip their real/fake verdict against FP32.
MIN_DECISION_AGREEMENT = 0.98
# Ranking quality, when the faces carry labels of both classes: INT8 may cost at most half an AUC point.
MAX_AUC_DROP_POINTS = 0.5


def evaluation_faces(cache_dir: str | os.PathLike, spec: ModelSpec, n: int = 256, seed: int = 0,
                     split: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(crops uint8 [N, S, S, 3], labels [N], kind): the cache's labeled real and fake faces when it has both,
    otherwise its real crops plus a TAP fake of each (aunet.tap.sbi), label 1."""
    from aunet.tap.sbi import make_tap_fake

    cache, videos = open_cache(cache_dir, spec, split)
    labeled = {v.label for v in videos} >= {0, 1}
    rng = np.random.default_rng(seed)
    picks = spread_sample([v.num_faces for v in videos], n if labeled else max(1, n // 2), rng)
    crops, labels = [], []
    for video, rows in zip(videos, picks, strict=True):
        if not rows:
            continue
        faces = cache.load(video.video_id)
        for r in rows:
            if labeled:
                crops.append(faces.crops[r])
                labels.append(video.label)
            else:
                fake, _ = make_tap_fake(faces.crops[r], faces.landmarks[r], rng)
                crops += [faces.crops[r], fake]
                labels += [0, 1]
    return np.stack(crops), np.asarray(labels, dtype=np.int64), "labeled" if labeled else "real_vs_tap"


def run_model(path: str | os.PathLike, images: np.ndarray, device: str = "cpu") -> tuple[dict[str, np.ndarray], ModelSpec]:
    from aunet.backends import open_backend

    with open_backend(path, device=device) as backend:
        lo, hi = backend.spec.value_range
        outs = []
        for i in range(0, len(images), BATCH):
            x = images[i:i + BATCH].astype(np.float32).transpose(0, 3, 1, 2) / 255.0 * (hi - lo) + lo
            outs.append(backend.infer(x))
        spec = backend.spec
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, spec


def compare(reference: str | os.PathLike, candidate: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None,
            device: str = "cpu", threshold: float | None = None) -> dict[str, Any]:
    """Run both models on the same crops; the errors of ``candidate`` (e.g. INT8) against ``reference`` (FP32)."""
    from aunet.metrics import roc_auc

    ref, ref_spec = run_model(reference, images, device)
    cand, cand_spec = run_model(candidate, images, device)
    ref_spec.check_compatible(cand_spec)
    t = ref_spec.threshold if threshold is None else threshold
    report: dict[str, Any] = {
        "reference": str(reference), "candidate": str(candidate), "candidate_precision": cand_spec.precision,
        "num_faces": int(len(images)), "threshold": t,
        "decision_agreement": float(np.mean((ref["score"] >= t) == (cand["score"] >= t))),
        "score_max_abs": float(np.abs(cand["score"] - ref["score"]).max()),
        "score_mean_abs": float(np.abs(cand["score"] - ref["score"]).mean()),
        "cls_logits_max_abs": float(np.abs(cand["cls_logits"] - ref["cls_logits"]).max()),
        "patch_prob_mean_abs": float(np.abs(fake_probability(cand["patch_logits"]) - fake_probability(ref["patch_logits"])).mean()),
    }
    if labels is not None and len(set(labels.tolist())) == 2:
        report["auc_reference"] = roc_auc(labels, ref["score"])
        report["auc_candidate"] = roc_auc(labels, cand["score"])
        report["auc_drop_points"] = 100.0 * (report["auc_reference"] - report["auc_candidate"])
    return report


def check_int8(report: dict[str, Any], min_agreement: float = MIN_DECISION_AGREEMENT,
               max_auc_drop_points: float = MAX_AUC_DROP_POINTS) -> list[str]:
    """Check a ``compare`` report against the INT8 acceptance thresholds; returns what failed (empty = pass)."""
    failed = []
    if report["decision_agreement"] < min_agreement:
        failed.append(f"decision agreement {report['decision_agreement']:.3f} < {min_agreement}")
    if "auc_drop_points" in report and report["auc_drop_points"] > max_auc_drop_points:
        failed.append(f"AUC drop {report['auc_drop_points']:.2f} points > {max_auc_drop_points}")
    return failed


def save_report(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    from aunet.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True))
    return Path(path)


def report_table(report: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"FP32 vs {report['candidate_precision'].upper()} on {report['num_faces']} faces", show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("auc_reference", "auc_candidate", "auc_drop_points", "decision_agreement", "score_max_abs",
                "score_mean_abs", "cls_logits_max_abs", "patch_prob_mean_abs"):
        if key in report:
            table.add_row(key, f"{report[key]:.4f}")
    return table
