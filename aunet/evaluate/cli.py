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

from pathlib import Path
from typing import Literal, Optional, Sequence

import typer
from rich.console import Console

from aunet.backends import DEVICES
from aunet.cli import EXIT_BAD_INPUT, EXIT_MISSING, fail, run
from aunet.evaluate.datasets import EvalError, find_labeled, labeled_cache
from aunet.evaluate.report import summary_table, write_outputs
from aunet.evaluate.scoring import evaluate_cache, load_scorer, model_kind
from aunet.prep import FFPP_COMPRESSIONS

PROG = "aunet-eval"

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


@app.command()
def cli(
    ckpt: Path = typer.Option(..., "--ckpt", help="a checkpoint (RUN/best.pt) or an exported .onnx / .plan / .engine"),
    data: Path = typer.Option(..., "--data", help="a labeled set: face cache, CSV path,label, Celeb-DF/FF++/DFDCP folder"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder [next to the checkpoint: eval/NAME]"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="where raw videos are preprocessed [OUT/cache]"),
    name: Optional[str] = typer.Option(None, "--name", help="the set's name in the table [from --data]"),
    device: Literal[DEVICES] = typer.Option(
        "auto", "--device", help="auto (a GPU when there is one), cpu, cuda (pick the GPU with CUDA_VISIBLE_DEVICES), "
                                 "tensorrt (exported models only: ONNX Runtime's TensorRT provider)"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="face crops scored per forward pass"),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0,
                                    help="accuracy's verdict threshold (fake if score >= it)"),
    no_face_score: float = typer.Option(0.5, "--no-face-score", min=0.0, max=1.0,
                                        help="video score when no face was found"),
    frames: int = typer.Option(32, "--frames", min=1, help="frames sampled evenly per raw video (every face is kept)"),
    compression: Literal[FFPP_COMPRESSIONS] = typer.Option("c23", "--compression", help="FF++ quality folder"),
) -> None:
    """Evaluate a model on a labeled set: frame- and video-level AUC, AP, EER, accuracy; the paper's Table 3
    layout in DIR/metrics.md, plus metrics.json, roc.png, scores.csv. Exit codes: 0 done, 2 bad input,
    3 missing dependency or hardware."""
    console = Console(stderr=True)
    if out is not None and out.exists() and not out.is_dir():
        raise fail(PROG, f"--out {out} is a file: give the report's folder")
    try:
        model_kind(ckpt, device)  # both inputs are checked before the model loads or any face is cut
        labeled = find_labeled(data, compression)
    except EvalError as exc:
        raise fail(PROG, str(exc), exc.code) from None
    dataset = name or (data.stem if data.is_file() else data.resolve().name)
    out = out or ckpt.resolve().parent / "eval" / dataset
    try:
        scorer, cfg, crop, info = load_scorer(ckpt, device, batch_size)
        from rich.progress import Progress

        faces = labeled_cache(labeled, cache or out / "cache", cfg.img_size, frames, console, crop)
        with Progress(console=console, transient=True) as progress:  # after prep's own progress bar
            report = evaluate_cache(faces, scorer, cfg.img_size, threshold, no_face_score, progress)
        report["model"] = info
        report["dataset"] = {"name": dataset, "source": str(data)}
        model_name = f"AUNet ({cfg.name}{', ' + info['backend'] + ' ' + info['precision'] if 'precision' in info else ''})"
        write_outputs(out, report, dataset, model_name, info["protocol"])
    except EvalError as exc:
        raise fail(PROG, str(exc), exc.code) from None
    except ImportError as exc:
        raise fail(PROG, f"missing dependency: {exc}", EXIT_MISSING) from None
    except OSError as exc:
        raise fail(PROG, f"cannot write {out}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    Console().print(summary_table(report, f"{model_name} on {dataset}"))
    c = report["counts"]
    console.print(f"{c['videos_without_faces']} video(s) without any face, {c['frames_without_face']} frame(s) "
                  f"without a face; report in {out}", markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (exits with the code)."""
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
