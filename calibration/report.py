"""FP32 vs INT8 accuracy report: AUC on labeled faces (or real crops vs their TAP fakes when unlabeled),
decision agreement and per-head errors, run through the torch-free runtime backends."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import numpy as np

from aunet.backends import read_spec
from aunet.spec import ModelSpec, fake_probability

from .dataset import DEFAULT_SIZE, WARN_BELOW, open_cache, spread_sample
from .isolation import run_isolated

BATCH = 16
# The judgement's error bars: percentile bootstrap over videos.
CI_LEVEL = 0.95
BOOTSTRAP_ROUNDS = 2000
# INT8 acceptance, the same limits `aunet-export` verifies an INT8 ONNX or engine with (docs/export.md).
# Deployed decisions: at most 2 faces in 100 may flip their real/fake verdict against FP32.
MIN_DECISION_AGREEMENT = 0.98
# Ranking quality, when the faces carry labels of both classes: INT8 may cost at most half an AUC point.
MAX_AUC_DROP_POINTS = 0.5


@dataclass(frozen=True)
class AccuracyTarget:
    """The bar an INT8 model must clear against its FP32 model: decision agreement (a share, 0-1) and AUC drop
    (points of AUC, 0-100)."""

    min_agreement: float = MIN_DECISION_AGREEMENT
    max_auc_drop_points: float = MAX_AUC_DROP_POINTS

    def __str__(self) -> str:
        return f"agreement={self.min_agreement:g},auc_drop={self.max_auc_drop_points:g}"

    def to_dict(self) -> dict[str, float]:
        return {"min_agreement": self.min_agreement, "max_auc_drop_points": self.max_auc_drop_points}

    def tightened(self, share: float) -> "AccuracyTarget":
        """The target that allows only ``share`` (0-1] of this one's flips and AUC drop."""
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the share of the allowed loss must lie in (0, 1], got {share}")
        return AccuracyTarget(1.0 - share * (1.0 - self.min_agreement), share * self.max_auc_drop_points)


ACCURACY_KEYS = ("agreement", "auc_drop")
ACCURACY_METAVAR = "agreement=A,auc_drop=P"
DEFAULT_ACCURACY = str(AccuracyTarget())


def parse_accuracy(text: str) -> AccuracyTarget:
    """``agreement=0.98,auc_drop=0.5`` (either key may be left out: it keeps the default bar). Agreement is a
    share in (0, 1] or a percentage (``98%``); the AUC drop is in AUC points, 0-100. ValueError says what is wrong."""
    if isinstance(text, AccuracyTarget):
        return text
    values: dict[str, float] = {}
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError(f"empty accuracy target: expected {ACCURACY_METAVAR}, e.g. {DEFAULT_ACCURACY}")
    for part in parts:
        key, eq, raw = (x.strip() for x in part.partition("="))
        if not eq or not key or not raw:
            raise ValueError(f"{part!r} is not KEY=VALUE: expected {ACCURACY_METAVAR}, e.g. {DEFAULT_ACCURACY}")
        if key not in ACCURACY_KEYS:
            raise ValueError(f"unknown accuracy key {key!r}: expected {' and '.join(ACCURACY_KEYS)}")
        if key in values:
            raise ValueError(f"accuracy key {key!r} given twice")
        percent = raw.endswith("%")
        try:
            value = float(raw[:-1] if percent else raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{key}={raw!r} is not a finite number")
        if key == "agreement":
            value = value / 100.0 if percent else value
            if not 0.0 < value <= 1.0:
                raise ValueError(f"agreement={raw} is outside (0, 1] (a share, e.g. 0.98, or a percentage, e.g. 98%)")
        else:
            if percent:
                raise ValueError(f"auc_drop={raw}: give AUC points (0-100), not a percentage")
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"auc_drop={raw} is outside [0, 100] (AUC points)")
        values[key] = value
    default = AccuracyTarget()
    return AccuracyTarget(values.get("agreement", default.min_agreement),
                          values.get("auc_drop", default.max_auc_drop_points))


@dataclass
class Faces:
    """Crops uint8 [N, S, S, 3], labels [N] (1 = fake), groups [N] (the index of the video each face comes from:
    the unit the bootstrap resamples), where the labels come from ("labeled" or "real_vs_tap") and the weight of
    each face in the decision agreement: a real crop and its k TAP fakes count as one real and one fake face,
    so the agreement keeps the classes' balance however many fakes sharpen the AUC."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    kind: str
    video_ids: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None  # per face; None: all 1 (a crop's k TAP fakes weigh 1/k each)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_crops(self) -> int:
        """Real crops taken from the cache (a TAP fake of a crop is not another crop)."""
        return len(self) if self.kind == "labeled" else int((self.labels == 0).sum())


def evaluation_faces(cache_dir: str | os.PathLike, spec: ModelSpec, n: int = 256, seed: int = 0,
                     split: str | None = None, video_ids: Collection[str] | None = None,
                     exclude_video_ids: Collection[str] = (), fakes_per_crop: int = 1) -> Faces:
    """Faces to compare FP32 and INT8 on: the cache's labeled real and fake faces when it has both, otherwise
    its real crops plus ``fakes_per_crop`` TAP fakes of each (aunet.tap.sbi, each its own random M_p), label 1;
    ``n`` counts the faces. ``video_ids``: only these videos; ``exclude_video_ids``: never these (e.g. the ones
    that calibrated)."""
    from aunet.tap.sbi import make_tap_fake

    from .dataset import CalibrationError

    cache, videos = open_cache(cache_dir, spec, split, video_ids)
    excluded = set(exclude_video_ids)
    videos = [v for v in videos if v.video_id not in excluded]
    if not videos:
        raise CalibrationError(f"{cache_dir}: no videos left to evaluate on once the {len(excluded)} calibration "
                               "videos are held out")
    labeled = {v.label for v in videos} >= {0, 1}
    rng = np.random.default_rng(seed)
    picks = spread_sample([v.num_faces for v in videos], n if labeled else max(1, n // (1 + fakes_per_crop)), rng)
    crops, labels, groups, ids = [], [], [], []
    for video, rows in zip(videos, picks, strict=True):
        if not rows:
            continue
        faces = cache.load(video.video_id)
        ids.append(video.video_id)
        for r in rows:
            if labeled:
                crops.append(faces.crops[r])
                labels.append(video.label)
                groups.append(len(ids) - 1)
            else:
                crops.append(faces.crops[r])
                crops += [make_tap_fake(faces.crops[r], faces.landmarks[r], rng)[0] for _ in range(fakes_per_crop)]
                labels += [0] + [1] * fakes_per_crop
                groups += [len(ids) - 1] * (1 + fakes_per_crop)
    labels_arr = np.asarray(labels, dtype=np.int64)
    weights = None if labeled else np.where(labels_arr == 1, 1.0 / fakes_per_crop, 1.0)
    return Faces(np.stack(crops), labels_arr, np.asarray(groups, dtype=np.int64),
                 "labeled" if labeled else "real_vs_tap", ids, weights)


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


def model_outputs(path: str | os.PathLike, images: np.ndarray, device: str = "cpu",
                  isolate: bool = True) -> tuple[dict[str, np.ndarray], ModelSpec]:
    """``run_model`` in a child process (``isolate``): a reduced-precision graph that crashes ONNX Runtime
    becomes ChildCrashed here."""
    if not isolate:
        return run_model(path, images, device)
    return run_isolated(run_model, path, images, device, what=f"running {Path(path).name}")


def int8_metrics(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], labels: np.ndarray | None,
                 threshold: float, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Decision agreement (weighted by ``weights``), per-head errors and (with labels of both classes) the AUC
    drop of ``cand`` vs ``ref``."""
    from aunet.metrics import roc_auc

    agree = (ref["score"] >= threshold) == (cand["score"] >= threshold)
    metrics: dict[str, Any] = {
        "num_faces": int(len(ref["score"])), "threshold": threshold,
        "decision_agreement": float(np.average(agree, weights=weights)),
        "score_max_abs": float(np.abs(cand["score"] - ref["score"]).max()),
        "score_mean_abs": float(np.abs(cand["score"] - ref["score"]).mean()),
        "cls_logits_max_abs": float(np.abs(cand["cls_logits"] - ref["cls_logits"]).max()),
        "patch_prob_mean_abs": float(np.abs(fake_probability(cand["patch_logits"]) - fake_probability(ref["patch_logits"])).mean()),
    }
    if labels is not None and len(set(np.asarray(labels).tolist())) == 2:
        metrics["auc_reference"] = roc_auc(labels, ref["score"])
        metrics["auc_candidate"] = roc_auc(labels, cand["score"])
        metrics["auc_drop_points"] = 100.0 * (metrics["auc_reference"] - metrics["auc_candidate"])
    return metrics


def bootstrap_intervals(ref_score: np.ndarray, cand_score: np.ndarray, labels: np.ndarray | None,
                        groups: np.ndarray | None, threshold: float, *, level: float = CI_LEVEL,
                        rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Intervals of the decision agreement and the AUC drop: percentile bootstrap, resampling videos
    (``groups``: faces of one video are not independent evidence; without groups, each face is one). The
    agreement's interval is the wider of that and the Wilson score interval on the faces."""
    from aunet.metrics import roc_auc

    ref_score, cand_score = np.asarray(ref_score), np.asarray(cand_score)
    n = len(ref_score)
    unit = "face" if groups is None else "video"
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    agree = ((ref_score >= threshold) == (cand_score >= threshold)).astype(np.float64)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    with_auc = labels is not None and len(set(np.asarray(labels).tolist())) == 2
    agreements, drops = [], []
    for _ in range(rounds):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        agreements.append(np.average(agree[idx], weights=w[idx]))
        if with_auc:
            y = labels[idx]
            if 0 < y.sum() < len(y):
                drops.append(100.0 * (roc_auc(y, ref_score[idx]) - roc_auc(y, cand_score[idx])))
    tail = 100.0 * (1.0 - level) / 2.0
    boot = np.percentile(agreements, [tail, 100 - tail])
    # With no flip (or no agreement) among the faces every resample agrees and the bootstrap interval has no
    # width; the Wilson score interval on the faces does not claim that certainty, so the wider of the two.
    n_eff = float(w.sum())  # a crop's k fakes are one face's worth of evidence
    wilson = wilson_interval(float((w * agree).sum()), n_eff, level)
    out: dict[str, Any] = {"level": level, "rounds": rounds, "unit": unit, "units": len(members),
                           "decision_agreement": [float(min(boot[0], wilson[0])), float(max(boot[1], wilson[1]))]}
    if drops:
        out["auc_drop_points"] = [float(v) for v in np.percentile(drops, [tail, 100 - tail])]
    return out


def _z(level: float) -> float:
    return {0.9: 1.645, 0.95: 1.96, 0.99: 2.576}.get(round(level, 2), 1.96)


def wilson_interval(successes: float, n: float, level: float = CI_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0 and n successes, unlike p ± z·se)."""
    if n <= 0:
        return 0.0, 1.0
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement_half_width(num_faces: int, agreement: float = MIN_DECISION_AGREEMENT, level: float = CI_LEVEL) -> float:
    """Half-width, in percentage points, of the normal-approximation interval of an agreement measured on
    ``num_faces`` independent faces: how well a judgement on that many faces pins the agreement down."""
    z = _z(level)
    p = min(max(agreement, 1e-3), 1 - 1e-3)
    return 100.0 * z * math.sqrt(p * (1 - p) / max(num_faces, 1))


def small_set_warning(num_crops: int, num_judge_crops: int, agreement: float = MIN_DECISION_AGREEMENT) -> str | None:
    """One line when fewer than WARN_BELOW crops feed calibration and judgement (None otherwise), saying how
    wide the judgement's error bars are: the interval of an agreement measured on the held-out crops (the
    independent units: a crop's TAP fakes are not new evidence about other faces), now and at WARN_BELOW."""
    if num_crops >= WARN_BELOW:
        return None
    now = agreement_half_width(num_judge_crops, agreement)
    enough = agreement_half_width(max(1, round(num_judge_crops * WARN_BELOW / max(num_crops, 1))), agreement)
    return (f"only {num_crops} face crops (< {WARN_BELOW}): INT8 ranges may be noisy and the judgement on "
            f"{num_judge_crops} held-out crops pins an agreement of {100 * agreement:g} % down to about "
            f"±{now:.1f} points (95 %), against ±{enough:.1f} with {WARN_BELOW} crops; "
            f"{DEFAULT_SIZE}+ crops from many videos are recommended")


def compare(reference: str | os.PathLike, candidate: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None,
            device: str = "cpu", threshold: float | None = None, groups: np.ndarray | None = None,
            isolate: bool = True, reference_outputs: dict[str, np.ndarray] | None = None,
            weights: np.ndarray | None = None) -> dict[str, Any]:
    """Run both models on the same crops; the errors of ``candidate`` (e.g. INT8) against ``reference`` (FP32),
    with bootstrap intervals of the agreement and the AUC drop. The candidate runs in a child process
    (``isolate``): a crash there is reported, not suffered."""
    ref_spec = read_spec(reference)
    ref = reference_outputs if reference_outputs is not None else model_outputs(reference, images, device, isolate)[0]
    cand, cand_spec = model_outputs(candidate, images, device, isolate)
    ref_spec.check_compatible(cand_spec)
    t = ref_spec.threshold if threshold is None else threshold
    report: dict[str, Any] = {"reference": str(reference), "candidate": str(candidate),
                              "candidate_precision": cand_spec.precision, **int8_metrics(ref, cand, labels, t, weights)}
    report["interval"] = bootstrap_intervals(ref["score"], cand["score"], labels, groups, t, weights=weights)
    return report


def check_int8(report: dict[str, Any], min_agreement: float = MIN_DECISION_AGREEMENT,
               max_auc_drop_points: float = MAX_AUC_DROP_POINTS) -> list[str]:
    """Check a ``compare`` report against the INT8 acceptance thresholds; returns what failed (empty = pass)."""
    failed = []
    if report["decision_agreement"] < min_agreement:
        failed.append(f"decision agreement {report['decision_agreement']:.3f} < {min_agreement:g}")
    if "auc_drop_points" in report and report["auc_drop_points"] > max_auc_drop_points:
        failed.append(f"AUC drop {report['auc_drop_points']:.2f} points > {max_auc_drop_points:g}")
    return failed


def check_target(report: dict[str, Any], target: AccuracyTarget) -> list[str]:
    return check_int8(report, target.min_agreement, target.max_auc_drop_points)


# --- the acceptance check of a Q/DQ model, for engine builds (aunet-export trt --int8) ---------------------------


class Int8NotAccepted(RuntimeError):
    """An INT8 Q/DQ model whose held-out judgement failed, or that was never judged."""


def int8_judgement(path: str | os.PathLike) -> dict[str, Any] | None:
    """The held-out judgement ``aunet-calib quantize`` recorded in an INT8 ONNX's spec (None: never judged)."""
    spec = read_spec(path)
    calibration = spec.provenance.get("calibration") or {}
    judgement = calibration.get("judgement")
    return judgement if isinstance(judgement, dict) else None


def require_int8_accepted(path: str | os.PathLike, *, force: bool = False) -> list[str]:
    """Refuse (Int8NotAccepted) an INT8 Q/DQ ONNX unless the judgement on held-out faces recorded in it by
    ``aunet-calib quantize`` met its accuracy target. ``force``: accept anyway; the returned lines say what
    was overridden (empty when the model passed)."""
    spec = read_spec(path)
    if spec.precision != "int8":
        raise Int8NotAccepted(f"{path} is {spec.precision}, not an INT8 Q/DQ model")
    judgement = int8_judgement(path)
    if judgement is None:
        why = (f"{path} carries no held-out accuracy judgement: make it with `aunet-calib quantize --data CACHE` "
               "(judged on held-out faces against the FP32 model)")
    elif judgement.get("passed"):
        return []
    else:
        failures = "; ".join(judgement.get("failures") or ["below its accuracy target"])
        why = f"{path} failed its held-out accuracy judgement ({failures}; target {judgement.get('target', '?')})"
    if force:
        return [f"{why}: used anyway (--force)"]
    raise Int8NotAccepted(f"{why}; --force builds it anyway")


def judgement_summary(report: dict[str, Any], target: AccuracyTarget, failures: list[str]) -> dict[str, Any]:
    """What goes into the INT8 ONNX's spec (``calibration.judgement``): small, no face lists."""
    keep = ("num_faces", "decision_agreement", "auc_reference", "auc_candidate", "auc_drop_points", "score_max_abs")
    out = {k: report[k] for k in keep if k in report}
    interval = report.get("interval", {})
    out.update(passed=not failures, failures=failures, target=str(target), held_out=True,
               interval={k: interval[k] for k in ("level", "unit", "units", "decision_agreement", "auc_drop_points")
                         if k in interval})
    return out


def save_report(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    from aunet.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True))
    return Path(path)


def report_table(report: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"FP32 vs {report['candidate_precision'].upper()} on {report['num_faces']} faces", show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column(f"{100 * report.get('interval', {}).get('level', CI_LEVEL):g} % interval", justify="right")
    interval = report.get("interval", {})
    for key in ("auc_reference", "auc_candidate", "auc_drop_points", "decision_agreement", "score_max_abs",
                "score_mean_abs", "cls_logits_max_abs", "patch_prob_mean_abs"):
        if key in report:
            lo_hi = interval.get(key)
            table.add_row(key, f"{report[key]:.4f}", f"[{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else "")
    if interval:
        table.caption = f"bootstrap over {interval['units']} {interval['unit']}s, {interval['rounds']} rounds"
    return table
