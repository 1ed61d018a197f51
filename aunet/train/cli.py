"""`aunet-train`: train AUNet on a face cache (built by aunet-prep).

    aunet-train --data CACHE --out RUN [--config small|paper|FILE.yaml] [--max-steps N] [--resume] [overrides]

Paper defaults (section 4.1): SGD lr 1e-3 momentum 0.9, batch 32 = 16 reals + their 16 TAP fakes, 100 epochs,
8 frames per video, λc = 1, λt = 30, λa = 0.5, Feature-level Mixing at a random stage each step with λ's from
a Beta distribution. Multi-GPU / multi-node: launch with torchrun (DistributedDataParallel + DistributedSampler).

The backbone starts from ImageNet weights (--backbone-weights FILE, or timm's hub when online); a new run
that cannot have them stops before writing anything, unless --backbone-weights none asks for random init (the
small config's default). The log, the checkpoints and every export record where they came from.

RUN holds config.json (the resolved config), last.pt and best.pt (aunet.model.checkpoint), history.json (per-epoch
metrics) and tb/ (TensorBoard scalars). Exit codes: 0 done, 1 training diverged (non-finite loss), 2 bad input
(config, data, checkpoint, backbone weights that cannot be had, unwritable RUN), 3 missing hardware (--device
cuda without CUDA), 130 stopped by Ctrl-C / SIGTERM (to the process or its whole group) after writing a
resumable last.pt.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, NoReturn, Optional, Sequence

import typer
from rich.console import Console

from aunet.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, fail, run
from aunet.train.config import load_train_config
from aunet.train.errors import TrainError
from aunet.train.preflight import check_inputs

PROG = "aunet-train"

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def cli(
    data: Path = typer.Option(..., "--data", help="a face cache made by aunet-prep"),
    out: Path = typer.Option(..., "--out", help="the run folder (config.json, last.pt, best.pt, history.json, tb/)"),
    config: Optional[str] = typer.Option(
        None, "--config",
        help="small | paper | a YAML/JSON file such as configs/paper.yaml (default: paper; on --resume: RUN/config.json)"),
    resume: bool = typer.Option(False, "--resume", help="continue RUN/last.pt where it stopped"),
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", help="stop after N optimizer steps in all (0 = no limit)"),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="passes over the training videos (default: paper 100, small 30)"),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="images per step, in cross half reals and half their fakes (default: paper 32, small 16)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate (default: paper 1e-3, small 3e-4)"),
    optimizer: Optional[Literal["sgd", "adamw"]] = typer.Option(
        None, "--optimizer", help="sgd, momentum 0.9, or adamw (default: paper sgd, small adamw)"),
    scheduler: Optional[Literal["constant", "cosine"]] = typer.Option(
        None, "--scheduler",
        help="learning rate over the run: constant, or cosine to 0 at the end (default: paper constant, small cosine)"),
    protocol: Optional[Literal["cross", "in"]] = typer.Option(
        None, "--protocol",
        help="cross: real faces + their TAP fakes; in: the cache's real and fake faces, no TAP (default: cross)"),
    frames_per_video: Optional[int] = typer.Option(
        None, "--frames-per-video", help="faces drawn afresh from each video every epoch (default: 8)"),
    device: Optional[str] = typer.Option(
        None, "--device",
        help="auto | cpu | cuda | cuda:N (default: auto); under torchrun each process takes its LOCAL_RANK GPU"),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="data-loading processes; 0 loads in the training process (default: paper 4, small 2)"),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="seeds the weights, the hold-out, the sampling and TAP (default: 0)"),
    val_data: Optional[str] = typer.Option(
        None, "--val-data", help="a labeled set (anything aunet-eval reads) scored every epoch besides the TAP hold-out"),
    backbone_weights: Optional[str] = typer.Option(
        None, "--backbone-weights",
        help="ImageNet Xception weights: a .pth / .safetensors file, imagenet (timm's hub; paper's default) or none "
             "(random init; small's default). Weights that cannot be had stop a new run (exit 2)"),
    amp: Optional[bool] = typer.Option(
        None, "--amp/--no-amp", help="mixed precision on CUDA: bfloat16, or float16 on pre-Ampere GPUs (default: on)"),
) -> None:
    """Train AUNet on a face cache (aunet-prep). Multi-GPU: torchrun ... -m aunet.train. Exit codes: 0 done,
    1 non-finite loss, 2 bad input, 3 no CUDA for --device cuda, 130 stopped by Ctrl-C (resumable)."""
    overrides = dict(
        max_steps=max_steps, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, scheduler=scheduler,
        protocol=protocol, frames_per_video=frames_per_video, device=device, workers=workers, seed=seed,
        val_data=val_data, amp=amp,
    )
    if config is None and resume and (out / "config.json").is_file():
        config = str(out / "config.json")
    try:
        cfg = load_train_config(config, overrides)
        if backbone_weights is not None:
            cfg = dataclasses.replace(cfg, model={**cfg.model, "backbone_weights": backbone_weights})
        check_inputs(cfg, data, out, resume)
    except ValueError as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    except TrainError as exc:
        raise fail(PROG, str(exc), exc.code) from None

    from aunet.train.loop import train  # PyTorch loads only for input that passed the checks above

    console = Console(stderr=True)
    try:
        summary = train(cfg, data, out, resume=resume, console=console)
    except TrainError as exc:
        raise fail(PROG, str(exc), exc.code) from None
    if summary["stopped"]:
        raise fail(PROG, f"stopped at step {summary['step']}; {summary['last']} is resumable: "
                         f"aunet-train --data {data} --out {out} --resume", EXIT_INTERRUPTED)
    console.print(f"done: step {summary['step']}, best validation AUC {summary['best_metric']:.4f} -> {summary['best']}",
                  markup=False, highlight=False)


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    run(app, PROG, argv)


if __name__ == "__main__":  # torchrun -m aunet.train ...
    main()
