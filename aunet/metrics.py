"""Detection metrics (torch-free, numpy only): AUC, AP, EER, accuracy, ROC points, video-level aggregation.

Labels: 1 = fake (the positive class), 0 = real. Scores: the fake probability, higher = more likely fake.
Ties are handled as scikit-learn does (one ROC point per distinct score), so the numbers match it exactly.
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Sequence

import numpy as np


def _check(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of true and false positives at each distinct score, thresholds descending."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    return tps, fps, s[last_of_run]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf. Needs both classes."""
    y, s = _check(labels, scores)
    if not _both_classes(y):
        raise ValueError("a ROC curve needs both real and fake samples")
    tps, fps, thr = _cumulative_counts(y, s)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve; NaN when only one class is present (AUC is undefined there)."""
    y, s = _check(labels, scores)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed trapz
    return float(trapezoid(tpr, fpr))


def average_precision(labels, scores) -> float:
    """AP = Σ (R_n - R_{n-1}) P_n over distinct thresholds (scikit-learn's definition, no interpolation)."""
    y, s = _check(labels, scores)
    if not y.size or y.sum() == 0:
        return math.nan
    tps, fps, _ = _cumulative_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(labels, scores) -> float:
    """The rate where the false-positive rate equals the false-negative rate, linearly interpolated on the ROC."""
    y, s = _check(labels, scores)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.flatnonzero(diff >= 0)[0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    # the crossing lies between points i-1 and i
    t = -diff[i - 1] / (diff[i] - diff[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    """Fraction right when "fake" means score >= threshold (the runtime's verdict rule)."""
    y, s = _check(labels, scores)
    if not y.size:
        return math.nan
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def binary_metrics(labels, scores, threshold: float = 0.5) -> dict[str, Any]:
    """AUC, AP, EER and accuracy at ``threshold`` plus the class counts (NaN where a metric is undefined)."""
    y, s = _check(labels, scores)
    return {
        "auc": roc_auc(y, s),
        "ap": average_precision(y, s),
        "eer": equal_error_rate(y, s),
        "accuracy": accuracy(y, s, threshold),
        "threshold": float(threshold),
        "n": int(y.size),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
    }


def frame_scores(frame_keys: Iterable[Hashable], face_scores: Iterable[float]) -> dict[Hashable, float]:
    """Frame score = max over the frame's faces (the SBI protocol: one forged face makes a forged frame)."""
    out: dict[Hashable, float] = {}
    for key, score in zip(frame_keys, face_scores):
        score = float(score)
        out[key] = max(out.get(key, -math.inf), score)
    return out


def video_score(frame_score_values: Iterable[float]) -> float:
    """Video score = mean over its frames' scores; NaN for a video without any scored frame."""
    values = np.asarray(list(frame_score_values), dtype=np.float64)
    return float(values.mean()) if values.size else math.nan


def video_scores(video_ids: Sequence[Hashable], frame_ids: Sequence[Hashable], face_scores: Sequence[float]) -> dict[Hashable, float]:
    """Per video: max over faces in each frame, then the mean over frames. Inputs are one entry per face."""
    if not len(video_ids) == len(frame_ids) == len(face_scores):
        raise ValueError("video_ids, frame_ids and face_scores must have one entry per face")
    per_frame = frame_scores(zip(video_ids, frame_ids), face_scores)
    grouped: dict[Hashable, list[float]] = {}
    for (video, _frame), score in per_frame.items():
        grouped.setdefault(video, []).append(score)
    return {video: video_score(scores) for video, scores in grouped.items()}
