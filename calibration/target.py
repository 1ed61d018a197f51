"""Quantize to an accuracy target, not a recipe.

``quantize_to_target`` turns an FP32 ONNX into an INT8 Q/DQ ONNX for one target (TensorRT or ONNX Runtime's
CPU provider) that meets an accuracy target against the FP32 model, judged on faces it never saw:

1. **Split by video.** The face cache's videos are split (seeded, stratified by label when the cache has
   both) into *fit* videos, whose crops calibrate and choose, and *held-out* videos, whose crops only judge.
   No video is on both sides. A given calibration set (``calib.npz``) puts its own videos on the fit side.
2. **Compare calibration methods** (max, entropy, percentile: every method this module supports for the
   target) on the same calibration crops, measured on the *choosing* faces (fit-video crops and a TAP fake
   of each, or the labeled faces): the one that meets the target with the smallest mean |score| error wins;
   if none meets it, the one with the smallest error goes on.
3. **Keep the most sensitive nodes in higher precision** while the target is missed on the choosing faces:
   the sensitivity scan (sensitivity.py) ranks every quantizable node by the mean change of the fused score
   that quantizing it alone causes, on choosing faces; the top k stay FP32, k = 1, 2, 4, ... until the target
   is met or the budget (max nodes, max share of the quantizable nodes) is spent; then the smallest k that met
   it is searched for between the last two. If the budget runs out first, the trial with the smallest score
   error wins.
4. **Judge** the chosen model once, on the held-out faces (decision agreement, AUC drop, bootstrap intervals
   over videos), and measure FP32 vs INT8 faces/s on ONNX Runtime's CPU provider in the same run.

Every INT8 model runs in a child process (isolation.py), and so does every quantizer.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Optional, Sequence

import numpy as np

from .dataset import CalibrationError, CalibrationSet, DEFAULT_SIZE, from_cache, open_cache, paths_for
from .isolation import run_isolated
from .quantize import METHODS, QUANTIZED_OPS, TARGETS, QuantizeError, excluded_node_names, load_onnx_with_spec, quantize
from .report import (
    AccuracyTarget,
    Faces,
    check_target,
    compare,
    evaluation_faces,
    int8_metrics,
    judgement_summary,
    model_outputs,
    small_set_warning,
)

JUDGE_SHARE = 0.4  # of the videos: held out to judge
MAX_FP32_NODES = 16  # budget: quantizable nodes the loop may keep in higher precision ...
MAX_FP32_SHARE = 0.25  # ... and at most this share of them
SCAN_FACES = 32  # choosing faces the sensitivity scan runs each variant on
MAX_FACES = 2048  # faces per side (choose, judge) at most
CHOOSING_MARGIN = 0.25  # the choosing faces may use this share of the allowed loss (flips, AUC drop)
FAKES_PER_CROP = 8  # TAP fakes of each real crop (unlabeled caches): more pairs, a less noisy AUC drop
SPEED_BATCH = 8
SPEED_REPEATS = 10


@dataclass(frozen=True)
class Budget:
    """How many quantizable nodes the loop may keep in higher precision: at most ``max_nodes`` and at most
    ``max_share`` of them."""

    max_nodes: int = MAX_FP32_NODES
    max_share: float = MAX_FP32_SHARE

    def limit(self, candidates: int) -> int:
        return max(0, min(self.max_nodes, math.floor(self.max_share * candidates)))


@dataclass(frozen=True)
class HeldOutSplit:
    """Video ids: ``fit`` calibrate and choose, ``judge`` only judge. Disjoint by construction."""

    fit: tuple[str, ...]
    judge: tuple[str, ...]
    seed: int
    judge_share: float

    def __post_init__(self) -> None:
        both = set(self.fit) & set(self.judge)
        if both:
            raise CalibrationError(f"{len(both)} videos on both sides of the held-out split, e.g. {sorted(both)[0]}")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "judge_share": self.judge_share, "num_fit_videos": len(self.fit),
                "num_judge_videos": len(self.judge), "fit_videos_sha256": ids_sha256(self.fit)}


def ids_sha256(ids: Collection[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def split_videos(videos: Sequence[Any], judge_share: float = JUDGE_SHARE, seed: int = 0,
                 fit_required: Collection[str] = ()) -> HeldOutSplit:
    """Split video records (anything with ``video_id`` and ``label``) into fit and held-out videos.

    Seeded and independent of the order given; stratified by label, so a labeled cache keeps both classes on
    both sides; ``fit_required`` (the videos a given calibration set was drawn from) never judge."""
    if not 0.0 < judge_share < 1.0:
        raise CalibrationError(f"the held-out share must lie in (0, 1), got {judge_share}")
    required = set(fit_required)
    fit, judge = [], []
    by_label: dict[int, list[str]] = {}
    for v in sorted(videos, key=lambda v: v.video_id):
        by_label.setdefault(int(v.label), []).append(v.video_id)
    rng = np.random.default_rng([seed, 0x5D1])
    for label in sorted(by_label):
        ids = by_label[label]
        free = [ids[i] for i in rng.permutation(len(ids)) if ids[i] not in required]
        want = round(judge_share * len(ids))
        if len(ids) >= 2:
            want = min(max(want, 1), len(ids) - 1)
        take = min(want, len(free))
        judge += free[:take]
        fit += [i for i in ids if i not in set(free[:take])]
    if not fit or not judge:
        raise CalibrationError(f"cannot hold videos out: {len(videos)} video(s) with faces, "
                               f"{len(required)} of them already calibrate; at least two are needed, "
                               "one to calibrate and one to judge")
    return HeldOutSplit(tuple(sorted(fit)), tuple(sorted(judge)), seed, judge_share)


@dataclass
class Trial:
    """One quantized candidate measured on the choosing faces."""

    method: str
    excluded: list[str]
    metrics: dict[str, Any]
    failures: list[str]  # against the choosing bar (the target with the margin)
    seconds: float
    path: Optional[Path] = None
    target_failures: list[str] = field(default_factory=list)  # against the target itself

    @property
    def meets(self) -> bool:
        return not self.failures

    @property
    def meets_target(self) -> bool:
        return not self.target_failures

    @property
    def error(self) -> float:
        return float(self.metrics["score_mean_abs"])

    def row(self) -> dict[str, Any]:
        keep = ("decision_agreement", "auc_drop_points", "score_mean_abs", "score_max_abs")
        return {"method": self.method, "fp32_nodes": len(self.excluded), "meets": self.meets,
                "meets_target": self.meets_target, "failures": self.failures, "seconds": round(self.seconds, 1),
                **{k: self.metrics[k] for k in keep if k in self.metrics}}


@dataclass
class TargetResult:
    path: Path
    target: str
    accuracy: AccuracyTarget
    method: str
    excluded: list[str]  # nodes kept in higher precision by the loop (on top of the always-FP32 parts)
    quantizable_nodes: int
    budget_limit: int
    met_on_choosing: bool
    budget_exhausted: bool
    judgement: dict[str, Any]  # the held-out compare report, with "passed" and "failures"
    methods: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    speed: Optional[dict[str, Any]] = None
    split: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    choosing_bar: Optional[AccuracyTarget] = None

    @property
    def passed(self) -> bool:
        return bool(self.judgement.get("passed"))

    def bar_state(self) -> str:
        """One line: where the held-out judgement stands against the target."""
        j, a = self.judgement, self.accuracy
        parts = [f"agreement {100 * j['decision_agreement']:.1f} % (bar {100 * a.min_agreement:g} %)"]
        if "auc_drop_points" in j:
            parts.append(f"AUC drop {j['auc_drop_points']:.2f} points (bar {a.max_auc_drop_points:g})")
        return ", ".join(parts) + f" on {j['num_faces']} held-out faces"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.path), "target": self.target, "accuracy": str(self.accuracy),
            "passed": self.passed, "method": self.method, "fp32_nodes": self.excluded,
            "quantizable_nodes": self.quantizable_nodes, "budget_limit": self.budget_limit,
            "met_on_choosing": self.met_on_choosing, "budget_exhausted": self.budget_exhausted,
            "judgement": self.judgement, "methods": self.methods, "steps": self.steps, "speed": self.speed,
            "split": self.split, "warnings": self.warnings, "seconds": round(self.seconds, 1),
            "choosing_bar": str(self.choosing_bar) if self.choosing_bar else None,
        }


def cpu_info() -> dict[str, Any]:
    """The CPU a speed was measured on: model, logical cores, and the SIMD flags its kernels depend on."""
    from aunet.backends import cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    return {"model": model, "cores": os.cpu_count(), "flags": flags}


def _timed_runs(paths: Sequence[str], images: np.ndarray, batch: int, repeats: int, threads: Optional[int]) -> dict:
    """Child process: every model on the same batch, repeats interleaved (A B A B ...) so that load from other
    processes falls on all of them alike. Faces/s per repeat."""
    from aunet.backends import open_backend

    options = {"threads": threads} if threads else {}
    backends = [open_backend(p, device="cpu", **options) for p in paths]
    try:
        x = images[:batch].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        if len(x) < batch:
            x = np.concatenate([x] * math.ceil(batch / len(x)))[:batch]
        for b in backends:
            lo, hi = b.spec.value_range
            b.infer(x * (hi - lo) + lo)  # warm-up
        runs: list[list[float]] = [[] for _ in backends]
        for _ in range(repeats):
            for i, b in enumerate(backends):
                t0 = time.perf_counter()
                b.infer(x)
                runs[i].append(batch / (time.perf_counter() - t0))
        return {"faces_per_s": runs, "optimization": [getattr(b, "optimization", None) for b in backends]}
    finally:
        for b in backends:
            b.close()


def measure_speed(fp32: str | os.PathLike, int8: str | os.PathLike, images: np.ndarray, *, batch: int = SPEED_BATCH,
                  repeats: int = SPEED_REPEATS, threads: Optional[int] = None) -> dict[str, Any]:
    """FP32 vs INT8 faces/s on ONNX Runtime's CPU provider, in one child process, same crops, interleaved.
    Mean ± std over ``repeats`` and the speed-up (mean ± std of the per-repeat ratio), with the CPU's flags."""
    raw = run_isolated(_timed_runs, [str(fp32), str(int8)], images, batch, repeats, threads,
                       what="the FP32 vs INT8 speed measurement")
    a, b = (np.asarray(r) for r in raw["faces_per_s"])
    ratio = b / a
    return {"backend": "onnxruntime:CPU", "batch": batch, "repeats": repeats, "threads": threads or "default",
            "fp32_faces_per_s": [float(a.mean()), float(a.std())], "int8_faces_per_s": [float(b.mean()), float(b.std())],
            "speedup": [float(ratio.mean()), float(ratio.std())], "int8_graph_optimization": raw["optimization"][1],
            "cpu": cpu_info()}


def quantizable_nodes(proto, extra_fp32: Collection[str] = ()) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes the quantizer may quantize (the always-FP32 parts left out)."""
    kept = set(excluded_node_names(proto, extra_fp32))
    return [n.name for n in proto.graph.node if n.op_type in QUANTIZED_OPS and n.name not in kept]


def judged_source(calib: str | os.PathLike | None, data: str | os.PathLike | None) -> Path:
    """The face cache the target loop splits into calibrating and judging videos: ``data``, else ``calib``
    when it is a cache, else the cache a calibration set (calib.npz) was drawn from (its provenance)."""
    import json

    from aunet.faces.cache import is_face_cache

    for path in (data, calib):
        if path is not None and is_face_cache(path):
            return Path(path)
    if data is not None:
        raise CalibrationError(f"{data} is not a face cache (make one with aunet-prep)")
    if calib is not None:
        try:
            source = json.loads(paths_for(calib)[1].read_text()).get("provenance", {}).get("source")
        except (OSError, ValueError, AttributeError):
            source = None
        if source and is_face_cache(source):
            return Path(source)
    raise CalibrationError("INT8 is judged on held-out faces: pass a face cache (aunet-prep) to split into faces "
                           "that calibrate and faces that judge")


def _calibration_videos(calib: CalibrationSet) -> set[str]:
    """The videos a calibration set was drawn from (its provenance): they calibrate, so they never judge."""
    return set(calib.provenance.get("videos") or {})


def _faces(cache_dir: Path, spec, ids: Collection[str], seed: int, fakes_per_crop: int) -> Faces:
    return evaluation_faces(cache_dir, spec, n=MAX_FACES, seed=seed, video_ids=set(ids), fakes_per_crop=fakes_per_crop)


def quantize_to_target(
    model: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    data: str | os.PathLike,
    target: str = "tensorrt",
    accuracy: AccuracyTarget = AccuracyTarget(),
    methods: Sequence[str] = METHODS,
    budget: Budget = Budget(),
    calib: str | os.PathLike | CalibrationSet | None = None,
    exclude: Sequence[str] = (),
    judge_share: float = JUDGE_SHARE,
    num_calib: int = DEFAULT_SIZE,
    seed: int = 0,
    speed: bool = True,
    log: Callable[[str], None] = lambda line: None,
    ranking: Optional[Sequence[str]] = None,
    fakes_per_crop: int = FAKES_PER_CROP,
    margin: float = CHOOSING_MARGIN,
) -> TargetResult:
    """Write the INT8 Q/DQ ONNX of ``model`` for ``target`` to ``out_path`` that meets ``accuracy`` (see the
    module doc). The model is written whether or not it passes; its spec records the held-out judgement
    (``calibration.judgement``), which ``report.require_int8_accepted`` reads. ``ranking``: node names, most
    sensitive first (skips the scan)."""
    t_start = time.perf_counter()
    if target not in TARGETS:
        raise QuantizeError(f"target must be one of {TARGETS}, got {target!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise QuantizeError(f"calibration methods must be among {METHODS}, got {list(methods)}")
    model, out_path, data = Path(model), Path(out_path), Path(data)
    proto, spec = load_onnx_with_spec(model)
    if spec.precision != "fp32":
        raise QuantizeError(f"{model} is {spec.precision}: quantize the FP32 export")
    notes: list[str] = []

    # 1. the split: fit videos calibrate and choose, held-out videos judge
    _, videos = open_cache(data, spec)
    given: Optional[CalibrationSet] = None
    if isinstance(calib, CalibrationSet):
        given = calib
    elif calib is not None:
        from aunet.faces.cache import is_face_cache

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the one size warning comes below, with the judgement's error bars
            if not is_face_cache(calib):
                given = CalibrationSet.load(paths_for(calib)[0], spec)
            elif Path(calib).resolve() != data.resolve():
                given = from_cache(calib, spec, num_calib, seed)
    if given is not None:
        given.check_spec(spec)
    required = _calibration_videos(given) if given is not None else set()
    if required and {v.video_id for v in videos} <= required:
        raise CalibrationError(f"every video of {data} is in the calibration set, so none is left to judge on: pass "
                               "the face cache alone (--data CACHE, no --calib) and quantize splits it by video")
    split = split_videos(videos, judge_share, seed, required)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calib_set = given if given is not None else from_cache(data, spec, num_calib, seed, video_ids=split.fit)
    choose = _faces(data, spec, split.fit, seed, fakes_per_crop)
    judge = _faces(data, spec, split.judge, seed + 1, fakes_per_crop)
    log(f"split by video: {len(split.fit)} videos calibrate and choose ({len(calib_set)} calibration crops, "
        f"{len(choose)} choosing faces), {len(split.judge)} held-out videos judge ({len(judge)} faces, {judge.kind})")
    warning = small_set_warning(len(calib_set) + judge.num_crops, judge.num_crops, accuracy.min_agreement)
    if warning:
        notes.append(warning)
        log(f"warning: {warning}")

    # The held-out faces are few and their measurement noisy: on the choosing faces a candidate must beat a
    # stricter target, using only ``margin`` of the allowed flips and AUC drop.
    choosing_bar = accuracy.tightened(margin)
    ref_choose = model_outputs(model, choose.images)[0]
    threshold = spec.threshold
    candidates = quantizable_nodes(proto, exclude)
    limit = budget.limit(len(candidates))

    with tempfile.TemporaryDirectory(prefix="aunet-int8-", dir=out_path.parent if out_path.parent.is_dir() else None) as tmp:
        tmp_dir = Path(tmp)
        counter = iter(range(10**6))

        def trial(method: str, extra: list[str]) -> Trial:
            path = tmp_dir / f"candidate_{next(counter)}.onnx"
            t0 = time.perf_counter()
            quantize(model, calib_set, path, target=target, method=method, exclude=[*exclude, *extra])
            cand = model_outputs(path, choose.images)[0]
            metrics = int8_metrics(ref_choose, cand, choose.labels, threshold, choose.weights)
            result = Trial(method, list(extra), metrics, check_target(metrics, choosing_bar), time.perf_counter() - t0,
                           path, check_target(metrics, accuracy))
            auc = f", AUC drop {metrics['auc_drop_points']:.2f}" if "auc_drop_points" in metrics else ""
            log(f"  {method:<10} {len(extra):>3} FP32 nodes: agreement {100 * metrics['decision_agreement']:.1f} %{auc}, "
                f"mean |score error| {metrics['score_mean_abs']:.4f}: "
                f"{'meets the bar' if result.meets else 'meets the target only' if result.meets_target else 'misses'} "
                f"({result.seconds:.0f} s)")
            return result

        def ranked() -> list[str]:
            nonlocal ranking
            if ranking is None:
                log(f"sensitivity scan of {len(candidates)} quantizable nodes on {min(SCAN_FACES, len(choose))} "
                    "choosing faces")
                ranking = rank_nodes(model, choose, spec, best_method[0], exclude, calib_set)
            allowed = set(candidates)
            return [n for n in ranking if n in allowed]

        best_method: list[str] = []

        def chosen(method: str) -> None:
            best_method.append(method)
            log(f"chosen: {method}")

        log(f"comparing calibration methods ({', '.join(methods)}) on the choosing faces (their bar, with margin: "
            f"{choosing_bar})")
        tried, steps, best, exhausted = search(trial, methods, ranked, limit, on_choice=chosen)

        # 4. the judgement on held-out faces, the speed, and the artifact
        log(f"judging {best.method} with {len(best.excluded)} FP32 nodes on {len(judge)} held-out faces")
        report = compare(model, best.path, judge.images, judge.labels, groups=judge.groups, weights=judge.weights)
        report.update(data=str(data), data_kind=judge.kind, held_out_videos=len(split.judge))
        failures = check_target(report, accuracy)
        report["passed"], report["failures"] = not failures, failures
        speed_result = None
        if speed:
            log("measuring FP32 vs INT8 faces/s on ONNX Runtime's CPU provider")
            speed_result = measure_speed(model, best.path, judge.images)
        _finish(best.path, out_path, spec, target, best, accuracy, report, failures, split, len(calib_set),
                candidates, limit)
    result = TargetResult(
        path=out_path, target=target, accuracy=accuracy, method=best.method, excluded=best.excluded,
        quantizable_nodes=len(candidates), budget_limit=limit, met_on_choosing=best.meets, budget_exhausted=exhausted,
        judgement=report, methods=[t.row() for t in tried], steps=[t.row() for t in steps], speed=speed_result,
        split={**split.to_dict(), "fit_videos": list(split.fit), "judge_videos": list(split.judge),
               "calibration_crops": len(calib_set), "choosing_faces": len(choose), "judging_faces": len(judge)},
        warnings=notes, seconds=time.perf_counter() - t_start, choosing_bar=choosing_bar)
    return result


def search(trial: Callable[[str, list[str]], Trial], methods: Sequence[str], ranked: Callable[[], list[str]],
           limit: int, on_choice: Callable[[str], Any] = lambda method: None
           ) -> tuple[list[Trial], list[Trial], Trial, bool]:
    """The loop, apart from what a trial costs: (the method trials, the exclusion trials, the chosen trial,
    whether the budget ran out without meeting the target).

    Every method is tried with no extra FP32 node; the best on the choosing faces (meets the target, then the
    smallest mean score error) goes on. While it misses, the top k of ``ranked()`` stay FP32, k = 1, 2, 4, ...
    up to ``limit``; after the first k that meets the target, bisection finds the smallest one that does. When
    none meets it within the budget, ``fallback`` chooses among all the trials."""
    tried = [trial(m, []) for m in methods]
    best = min(tried, key=lambda t: (not t.meets, t.error))
    on_choice(best.method)
    steps: list[Trial] = []
    if best.meets:
        return tried, steps, best, False
    if limit <= 0:
        return tried, steps, fallback(tried), True
    order = ranked()
    top = min(limit, len(order))
    if top == 0:
        return tried, steps, fallback(tried), True
    ks, k = [], 1
    while k < top:
        ks.append(k)
        k *= 2
    ks.append(top)
    prev, met = 0, None
    for k in ks:
        t = trial(best.method, order[:k])
        steps.append(t)
        if t.meets:
            met = t
            break
        prev = k
    if met is None:
        return tried, steps, fallback([*tried, *steps]), True
    lo, hi = prev, len(met.excluded)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = trial(best.method, order[:mid])
        steps.append(t)
        if t.meets:
            hi, met = mid, t
        else:
            lo = mid
    return tried, steps, met, False


def fallback(trials: Sequence[Trial]) -> Trial:
    """When no candidate meets the choosing bar (the target with its margin) within the budget: the one with the
    smallest mean score error. Accuracy first: the fewest nodes among those that meet the target itself without
    the margin was tried and, chosen at the edge of the target on noisy choosing faces, missed it on held-out
    faces (docs/calibration.md)."""
    return min(trials, key=lambda t: t.error)


def _finish(src: Path, dst: Path, spec, target: str, best: Trial, accuracy: AccuracyTarget, report: dict,
            failures: list[str], split: HeldOutSplit, num_calib: int, candidates: list[str], limit: int) -> None:
    """The chosen candidate, with the loop's choices and the held-out judgement in its spec, written to ``dst``."""
    import onnx

    from aunet.artifacts import check_and_save_onnx, read_onnx_spec, write_onnx_spec

    proto = onnx.load(str(src))
    qspec = read_onnx_spec(proto)
    calibration = dict(qspec.provenance.get("calibration") or {})
    calibration.update(
        accuracy_target=str(accuracy), methods_compared=True, fp32_nodes=list(best.excluded),
        quantizable_nodes=len(candidates), budget_limit=limit, split=split.to_dict(), num_images=num_calib,
        judgement=judgement_summary(report, accuracy, failures))
    write_onnx_spec(proto, qspec.with_provenance(calibration=calibration))
    check_and_save_onnx(proto, dst)


def rank_nodes(model: Path, faces: Faces, spec, method: str, exclude: Sequence[str] = (),
               calib: Optional[CalibrationSet] = None) -> list[str]:
    """Quantizable node names, most sensitive first: the sensitivity scan on choosing faces (real crops and
    their fakes: decisions on both matter), activation ranges from ``calib``, ranked by the mean change of the
    fused score."""
    from .sensitivity import scan

    n = min(SCAN_FACES, len(faces))
    # an even spread over the choosing faces, reals and fakes alike
    rows = np.linspace(0, len(faces) - 1, n).round().astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subset = CalibrationSet(images=faces.images[rows], crop=spec.crop, color=spec.color,
                                value_range=tuple(spec.value_range))
    results = run_isolated(scan, model, subset, num_images=n, method=method, exclude=list(exclude),
                           rank_by="score_mean_abs", ranges_from=calib, what="the sensitivity scan")
    return [r.name for r in results]


__all__ = ["Budget", "HeldOutSplit", "JUDGE_SHARE", "MAX_FP32_NODES", "MAX_FP32_SHARE", "TargetResult", "Trial",
           "cpu_info", "fallback", "judged_source", "measure_speed", "quantizable_nodes", "quantize_to_target", "rank_nodes", "split_videos"]
