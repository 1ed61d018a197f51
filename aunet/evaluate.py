"""`aunet-eval`: AUC, AP, EER and accuracy of a trained model on a labeled set, as the paper's Table 3.

    aunet-eval --ckpt RUN/best.pt --data LABELED [--out DIR] [--cache DIR]

LABELED is one of: a face cache with labels (aunet-prep); a CSV of ``path,label`` (label 1 = fake; a header
may name the columns path/filename/file/video and label, an optional method column groups fakes); a Celeb-DF
v2 folder (its List_of_testing_videos.txt, where 1 means real); an FF++ folder with splits/test.json (each
method's test videos, c23 unless --compression); a DFDC-Preview folder (dataset.json, set "test"). DFDC's
labels.csv is a CSV as above. Raw videos and images are preprocessed once with aunet-prep's pipeline into
--cache (default DIR/cache) and reused.

Frame score = max over the frame's faces; video score = mean over frames (the SBI protocol). A video where no
face was found gets --no-face-score (0.5, undecided) in the video metrics and is counted; frames without a
face are counted and reported, never silently dropped.

Scoring goes through a ``Scorer``: a callable from face crops (uint8 [N, S, S, 3] RGB at the model's size) to
fake probabilities [N]. --ckpt takes a PyTorch checkpoint, or an exported .onnx / .plan / .engine that runs
through aunet.runtime's backends, so FP16 / INT8 accuracy is measured on the same data and protocol.

Outputs in DIR: metrics.json, metrics.md (Table 3 layout plus all metrics), roc.png, scores.csv (per video).
Exit codes: 0 done, 2 bad input (checkpoint, data, split file, unwritable DIR), 3 missing dependency or
hardware (dlib, PyTorch, ONNX Runtime, TensorRT / GPU).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .config import ModelConfig
from .io import atomic_path, atomic_write_text
from .metrics import binary_metrics, roc_curve, video_score

Scorer = Callable[[np.ndarray], np.ndarray]
EXIT_BAD_INPUT, EXIT_MISSING = 2, 3
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


class EvalError(Exception):
    """Bad evaluation input (``code`` is the CLI's exit code)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LabeledFile:
    """A raw video or image of a labeled set (label 1 = fake); method names the forgery (FF++), "" for reals."""

    path: Path
    label: int
    method: str = ""


# ----------------------------------------------------------------------------------------------------------
# labeled-set readers


def read_csv_list(path: Path) -> list[LabeledFile]:
    """``path,label[,method]`` rows; a header row is optional; relative paths are relative to the CSV."""
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text())) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise EvalError(f"{path} lists no files")
    cols = {"path": 0, "label": 1, "method": 2}
    header = [c.strip().lower() for c in rows[0]]
    if "label" in header:
        name_col = next((header.index(n) for n in ("path", "filename", "file", "video") if n in header), None)
        if name_col is None:
            raise EvalError(f"{path}: the header needs a path (or filename/file/video) column")
        cols = {"path": name_col, "label": header.index("label"), "method": header.index("method") if "method" in header else -1}
        rows = rows[1:]
    items = []
    for line, row in enumerate(rows, start=2 if "label" in header else 1):
        try:
            raw = row[cols["label"]].strip().lower()
            label = {"fake": 1, "real": 0}.get(raw, None)
            label = int(raw) if label is None else label
            if label not in (0, 1):
                raise ValueError
            file = Path(row[cols["path"]].strip())
        except (IndexError, ValueError):
            raise EvalError(f"{path} line {line}: expected path,label with label 0 (real) or 1 (fake)") from None
        method = row[cols["method"]].strip() if 0 <= cols["method"] < len(row) else ""
        items.append(LabeledFile(file if file.is_absolute() else path.parent / file, label, method))
    return items


def read_celebdf(root: Path) -> list[LabeledFile]:
    """Celeb-DF v2's List_of_testing_videos.txt: ``<1 real | 0 fake> <relative path>``."""
    listing = root / "List_of_testing_videos.txt" if root.is_dir() else root
    if not listing.is_file():
        raise EvalError(f"missing split file {listing}")
    items = []
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise EvalError(f"{listing} line {n}: expected '<1|0> <path>'")
        rel = Path(parts[1])
        items.append(LabeledFile(listing.parent / rel, 1 - int(parts[0]), rel.parts[0] if parts[0] == "0" else ""))
    return items


def read_ffpp(root: Path, compression: str = "c23", methods: Sequence[str] = FFPP_METHODS) -> list[LabeledFile]:
    """FF++'s official test split (splits/test.json: pairs of target/source ids): the 140 real videos and,
    per method, the 2 x 70 fakes made from each pair."""
    split = next((p for p in (root / "splits" / "test.json", root / "test.json") if p.is_file()), None)
    if split is None:
        raise EvalError(f"missing split file {root / 'splits' / 'test.json'} (FaceForensics' dataset/splits/test.json)")
    try:
        pairs = json.loads(split.read_text())
        ids = [(str(a), str(b)) for a, b in pairs]
    except (ValueError, TypeError) as exc:
        raise EvalError(f"{split} is not a list of id pairs: {exc}") from None
    real_dir = root / "original_sequences" / "youtube" / compression / "videos"
    items = [LabeledFile(real_dir / f"{v}.mp4", 0) for pair in ids for v in pair]
    for method in methods:
        fake_dir = root / "manipulated_sequences" / method / compression / "videos"
        items += [LabeledFile(fake_dir / f"{x}_{y}.mp4", 1, method) for a, b in ids for x, y in ((a, b), (b, a))]
    return items


def read_dfdcp(root: Path) -> list[LabeledFile]:
    """DFDC-Preview's dataset.json: {relative path: {"label": "real"|"fake", "set": "train"|"test"}}."""
    try:
        meta = json.loads((root / "dataset.json").read_text())
        return [
            LabeledFile(root / rel, 1 if v["label"] == "fake" else 0)
            for rel, v in sorted(meta.items())
            if v.get("set") == "test"
        ]
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise EvalError(f"{root / 'dataset.json'} is not DFDC-Preview's metadata: {exc}") from None


def labeled_files(source: Path, compression: str = "c23") -> list[LabeledFile]:
    """The files and labels a labeled-set path names (see the module doc)."""
    if source.is_file():
        return read_celebdf(source) if source.name == "List_of_testing_videos.txt" else read_csv_list(source)
    if not source.is_dir():
        raise EvalError(f"--data {source} does not exist")
    if (source / "List_of_testing_videos.txt").is_file():
        return read_celebdf(source)
    if (source / "original_sequences").is_dir():
        return read_ffpp(source, compression)
    if (source / "dataset.json").is_file():
        return read_dfdcp(source)
    raise EvalError(
        f"--data {source}: not a face cache, a CSV, a Celeb-DF/FF++/DFDC-Preview folder; "
        "list other sets (DFD, DFDC, FFIW) in a path,label CSV"
    )


def open_labeled(source: str | os.PathLike, cache_dir: Path, size: int, frames: int = 32, compression: str = "c23",
                 console: Console | None = None, crop=None):
    """A FaceCache holding the labeled set: the source itself when it is a cache, else built (once, resumable)
    in cache_dir with aunet-prep's pipeline at the model's crop size, every face of ``frames`` frames a video."""
    from .cache import CacheError, FaceCache, is_face_cache
    from .faces import DependencyError
    from .prep import PrepError, prepare_labeled

    source = Path(source)
    try:
        if is_face_cache(source):
            return FaceCache(source)
        files = labeled_files(source, compression)
        if not any(f.path.exists() for f in files):
            raise EvalError(f"--data {source}: none of its {len(files)} listed files exists (first: {files[0].path})")
        return prepare_labeled(files, cache_dir, console=console, size=size, frames=frames, crop=crop)
    except (CacheError, PrepError) as exc:
        raise EvalError(str(exc)) from None
    except DependencyError as exc:
        raise EvalError(str(exc), EXIT_MISSING) from None


# ----------------------------------------------------------------------------------------------------------
# scoring


def torch_scorer(model, device=None, amp: bool = False, batch_size: int = 64) -> Scorer:
    """A Scorer from an AUNet module (or a checkpoint path)."""
    import torch

    from .checkpoint import load_model
    from .model import autocast, autocast_dtype

    if not isinstance(model, torch.nn.Module):
        model = load_model(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    amp_dtype = autocast_dtype(device, amp)

    @torch.inference_mode()
    def score(crops: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = []
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[i : i + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            with autocast(device, amp_dtype):
                out.append(model(x).score.float().cpu().numpy())
        model.train(was_training)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    return score


def _fit_crops(crops: np.ndarray, size: int) -> np.ndarray:
    if crops.shape[1] == size:
        return crops
    import cv2

    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


def evaluate_cache(
    cache, scorer: Scorer, img_size: int, threshold: float = 0.5, no_face_score: float = 0.5, progress=None
) -> dict[str, Any]:
    """Score every labeled video of a FaceCache -> the report (metrics, counts, per-video scores).

    A cache that has a "test" split is evaluated on that split only (a whole prepared FF++, say)."""
    videos, frame_labels, frame_values, skipped = [], [], [], []
    counts = {"videos": 0, "videos_scored": 0, "videos_without_faces": 0, "unlabeled_videos": 0,
              "frames_scored": 0, "frames_without_face": 0, "faces": 0}
    records = cache.records()  # failures too: they are counted, never dropped silently
    split = "test" if any(r.split == "test" for r in records) else None
    records = [r for r in records if split is None or r.split == split]
    task = progress.add_task("scoring", total=len(records)) if progress is not None else None
    for rec in records:
        if progress is not None:
            progress.advance(task)
        if rec.label not in (0, 1):
            counts["unlabeled_videos"] += 1
            continue
        counts["videos"] += 1
        frames_seen = int(rec.num_frames)
        row = {"video_id": rec.video_id, "label": int(rec.label), "method": rec.method or "", "status": rec.status,
               "frames": frames_seen, "frames_scored": 0, "faces": 0, "score": no_face_score}
        if rec.ok and rec.num_faces > 0:
            faces = cache.load(rec.video_id)
            scores = np.asarray(scorer(_fit_crops(faces.crops, img_size)), dtype=np.float64)
            per_frame: dict[int, float] = {}
            for frame, s in zip(np.asarray(faces.frame_indices).tolist(), scores.tolist()):
                per_frame[frame] = max(per_frame.get(frame, -math.inf), s)
            row.update(frames_scored=len(per_frame), faces=int(len(scores)), score=video_score(per_frame.values()))
            frame_labels += [rec.label] * len(per_frame)
            frame_values += list(per_frame.values())
            counts["videos_scored"] += 1
            counts["faces"] += int(len(scores))
            counts["frames_scored"] += len(per_frame)
        else:
            counts["videos_without_faces"] += 1
            skipped.append({"video_id": rec.video_id, "status": rec.status, "error": rec.error})
        counts["frames_without_face"] += int(rec.frames_without_face)
        videos.append(row)
    if not videos:
        raise EvalError("the labeled set has no labeled videos")
    labels = np.array([v["label"] for v in videos])
    scores = np.array([v["score"] for v in videos])
    report = {
        "split": split or "all",
        "threshold": threshold,
        "no_face_score": no_face_score,
        "frame": binary_metrics(frame_labels, frame_values, threshold),
        "video": binary_metrics(labels, scores, threshold),
        "counts": counts,
        "skipped": skipped,
        "per_method": _per_method(videos, threshold),
        "videos": videos,
    }
    report["_curves"] = {"frame": (frame_labels, frame_values), "video": (labels.tolist(), scores.tolist())}
    return report


def _per_method(videos: list[dict], threshold: float) -> dict[str, dict]:
    """Video AUC per forgery method against all reals (the paper's Tables 1-2 columns)."""
    methods = sorted({v["method"] for v in videos if v["label"] == 1 and v["method"]})
    reals = [v for v in videos if v["label"] == 0]
    out = {}
    for m in methods:
        subset = reals + [v for v in videos if v["label"] == 1 and v["method"] == m]
        out[m] = binary_metrics([v["label"] for v in subset], [v["score"] for v in subset], threshold)
    return out


def evaluate_source(source, scorer: Scorer, cfg: ModelConfig, cache_dir: Path, threshold: float = 0.5,
                    no_face_score: float = 0.5, frames: int = 32, compression: str = "c23", console=None,
                    progress=None) -> dict:
    """open_labeled + evaluate_cache (the trainer's per-epoch labeled validation uses this too)."""
    cache = open_labeled(source, Path(cache_dir), cfg.img_size, frames, compression, console)
    return evaluate_cache(cache, scorer, cfg.img_size, threshold, no_face_score, progress)


# ----------------------------------------------------------------------------------------------------------
# outputs


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def markdown_report(report: dict, dataset: str, model_name: str, protocol: str) -> str:
    """The paper's Table 3 row for this model and set, then every metric, then per-method AUCs."""
    fake_in_training = "✓" if protocol == "in" else "✗"
    f, v, c = report["frame"], report["video"], report["counts"]
    lines = [
        f"| Method | Input Type | Training Set Real | Training Set Fake | {dataset} AUC (%) |",
        "|---|---|---|---|---|",
        f"| {model_name} | Frame | ✓ | {fake_in_training} | {_pct(v['auc'])} |",
        "",
        "| Level | AUC (%) | AP (%) | EER (%) | Acc@{:.2f} (%) | Real | Fake |".format(report["threshold"]),
        "|---|---|---|---|---|---|---|",
    ]
    for level, m in (("video", v), ("frame", f)):
        lines.append(f"| {level} | {_pct(m['auc'])} | {_pct(m['ap'])} | {_pct(m['eer'])} | {_pct(m['accuracy'])} "
                     f"| {m['n_real']} | {m['n_fake']} |")
    if report["per_method"]:
        names = list(report["per_method"])
        lines += ["", "| Method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                  f"| {model_name} video AUC (%) | " + " | ".join(_pct(report["per_method"][n]["auc"]) for n in names) + " |"]
    lines += [
        "",
        f"Videos: {c['videos']} labeled, {c['videos_scored']} scored, {c['videos_without_faces']} without any face "
        f"(scored {report['no_face_score']}), {c['unlabeled_videos']} unlabeled (ignored). Frames: {c['frames_scored']} "
        f"scored, {c['frames_without_face']} without a face. Faces: {c['faces']}.",
        "Frame score = max over faces; video score = mean over frames.",
    ]
    return "\n".join(lines) + "\n"


def write_roc_png(path: Path, report: dict, title: str) -> None:
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

app = typer.Typer(add_completion=False, help=__doc__)


def _load_scorer(ckpt: Path, device: str, batch_size: int) -> tuple[Scorer, ModelConfig, Any, dict]:
    """(scorer, model config, crop spec, provenance) of a PyTorch checkpoint or an ONNX / TensorRT model."""
    from .spec import CropSpec

    if ckpt.suffix.lower() in (".onnx", ".engine", ".plan"):
        return _runtime_scorer(ckpt, device, batch_size)
    try:
        import torch
    except ImportError:
        raise EvalError("PyTorch is not installed (pip install 'aunet[train]')", EXIT_MISSING) from None
    from .checkpoint import CheckpointError, checkpoint_config, load_checkpoint
    from .model import build_model

    try:
        data = load_checkpoint(ckpt)
        cfg = checkpoint_config(data, ckpt)
        model = build_model(cfg)
        model.load_state_dict(data["model"])
    except CheckpointError as exc:
        raise EvalError(str(exc)) from None
    except (KeyError, RuntimeError) as exc:
        raise EvalError(f"{ckpt}: weights do not fit its config: {str(exc).splitlines()[0]}") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {device}: CUDA is not available", EXIT_MISSING)
    train_cfg = data.get("train_config", {}) or {}
    info = {"checkpoint": str(ckpt), "backend": "pytorch", "config": cfg.name, "step": data.get("step"),
            "protocol": train_cfg.get("protocol", "cross")}
    return torch_scorer(model.eval(), device, amp=device.startswith("cuda"), batch_size=batch_size), cfg, CropSpec(), info


def _runtime_scorer(path: Path, device: str, batch_size: int) -> tuple[Scorer, ModelConfig, Any, dict]:
    """An exported model through the runtime's backends (ONNX Runtime, TensorRT): INT8 / FP16 accuracy is
    measured on the very data, crops and protocol of the PyTorch checkpoint."""
    try:
        from aunet.runtime.backends import BackendError, BackendUnavailable, open_backend
    except ImportError as exc:
        raise EvalError(f"the runtime backends are not available: {exc}", EXIT_MISSING) from None
    from .spec import SpecError

    if not path.is_file():
        raise EvalError(f"model not found: {path}")
    try:
        backend = open_backend(path, device)
    except BackendUnavailable as exc:
        raise EvalError(str(exc), EXIT_MISSING) from None
    except (BackendError, SpecError, OSError) as exc:
        raise EvalError(f"{path}: {exc}") from None
    spec = backend.spec

    def score(crops: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(crops), batch_size):
            x = crops[i : i + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            out.append(np.asarray(backend.infer(x)["score"], dtype=np.float64).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0)

    info = {"checkpoint": str(path), "backend": backend.name, "precision": spec.precision, "config": spec.config.name,
            "step": None, "protocol": "cross"}
    return score, spec.config, spec.crop, info


@app.command()
def cli(
    ckpt: Path = typer.Option(..., "--ckpt", help="a checkpoint (RUN/best.pt) or an exported .onnx / .plan / .engine"),
    data: Path = typer.Option(..., "--data", help="a labeled set: face cache, CSV path,label, Celeb-DF/FF++/DFDCP folder"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder [next to the checkpoint: eval/NAME]"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="where raw videos are preprocessed [OUT/cache]"),
    name: Optional[str] = typer.Option(None, "--name", help="the set's name in the table [from --data]"),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(64, "--batch-size"),
    threshold: float = typer.Option(0.5, "--threshold", help="accuracy's verdict threshold (fake if score >= it)"),
    no_face_score: float = typer.Option(0.5, "--no-face-score", help="video score when no face was found"),
    frames: int = typer.Option(32, "--frames", help="frames sampled evenly per raw video (every face is kept)"),
    compression: str = typer.Option("c23", "--compression", help="FF++ quality folder: raw | c23 | c40"),
) -> None:
    """Evaluate a model on a labeled set: frame- and video-level AUC, AP, EER, accuracy; the paper's Table 3
    layout in DIR/metrics.md, plus metrics.json, roc.png, scores.csv. Exit codes: 0 done, 2 bad input,
    3 missing dependency or hardware."""
    console = Console(stderr=True)
    dataset = name or (data.stem if data.is_file() else data.resolve().name)
    out = out or ckpt.resolve().parent / "eval" / dataset
    try:
        scorer, cfg, crop, info = _load_scorer(ckpt, device, batch_size)
        from rich.progress import Progress

        faces = open_labeled(data, cache or out / "cache", cfg.img_size, frames, compression, console, crop)
        with Progress(console=console, transient=True) as progress:  # after prep's own progress bar
            report = evaluate_cache(faces, scorer, cfg.img_size, threshold, no_face_score, progress)
        report["model"] = info
        report["dataset"] = {"name": dataset, "source": str(data)}
        model_name = f"AUNet ({cfg.name}{', ' + info['backend'] + ' ' + info['precision'] if 'precision' in info else ''})"
        write_outputs(out, report, dataset, model_name, info["protocol"])
    except EvalError as exc:
        print(f"aunet-eval: {exc}", file=sys.stderr)
        raise typer.Exit(exc.code) from None
    except ImportError as exc:
        print(f"aunet-eval: missing dependency: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_MISSING) from None
    except OSError as exc:
        print(f"aunet-eval: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    table = Table(title=f"{model_name} on {dataset}")
    for col in ("level", "AUC %", "AP %", "EER %", f"Acc@{threshold:g} %", "real", "fake"):
        table.add_column(col, justify="right")
    for level in ("video", "frame"):
        m = report[level]
        table.add_row(level, _pct(m["auc"]), _pct(m["ap"]), _pct(m["eer"]), _pct(m["accuracy"]), str(m["n_real"]), str(m["n_fake"]))
    Console().print(table)
    c = report["counts"]
    console.print(f"{c['videos_without_faces']} video(s) without any face, {c['frames_without_face']} frame(s) "
                  f"without a face; report in {out}", markup=False, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
