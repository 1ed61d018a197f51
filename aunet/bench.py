"""`aunet-bench`: cost and speed tables. `aunet-bench model`: the PyTorch model's size, GFLOPs and latency."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import AU_EMBEDDINGS, ModelConfig
from .io import atomic_write_text

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=110)


@app.callback()
def _group() -> None:
    """Cost and speed tables (more subcommands arrive with the runtime backends)."""


def count_gflops(model, img_size: int) -> float:
    """GFLOPs of one face (torch's flop counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, img_size, img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def measure_latency_ms(model, img_size: int, batch: int, repeats: int, warmup: int = 1) -> list[float]:
    import torch

    x = torch.rand(batch, 3, img_size, img_size)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return times


def model_report(cfg: ModelConfig, batches: tuple[int, ...], repeats: int, formulations: tuple[str, ...]) -> list[dict]:
    import torch

    from .model import build_model

    rows = []
    for form in formulations:
        model = build_model(cfg.replace(au_embedding=form)).eval()
        row = {
            "config": cfg.name,
            "au_embedding": form,
            "img_size": cfg.img_size,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": count_gflops(model, cfg.img_size),
            "threads": torch.get_num_threads(),
            "latency_ms": {},
        }
        for b in batches:
            t = measure_latency_ms(model, cfg.img_size, b, repeats)
            row["latency_ms"][str(b)] = {"median": statistics.median(t), "min": min(t)}
        rows.append(row)
    return rows


@app.command()
def model(
    config: str = typer.Option("paper", help="Named model config: paper or small."),
    batch: list[int] = typer.Option([1, 8], help="Batch sizes to time (repeatable)."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per batch size (after one warm-up)."),
    naive: bool = typer.Option(True, help="Also measure the paper's naive AU embeddings (K full convolutions)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON here."),
) -> None:
    """Parameters, GFLOPs per face and PyTorch eager CPU latency of the AUNet model."""
    try:
        cfg = ModelConfig.named(config)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    forms = AU_EMBEDDINGS if naive else ("fast",)
    rows = model_report(cfg, tuple(batch), repeats, forms)
    table = Table(title=f"AUNet ({cfg.name}, {cfg.img_size}x{cfg.img_size}, {cfg.grid}x{cfg.grid} patch grid)")
    table.add_column("Eq. 2")
    table.add_column("params M", justify="right")
    table.add_column("GFLOPs", justify="right")
    for b in batch:
        table.add_column(f"b{b} ms", justify="right")
        table.add_column(f"b{b} faces/s", justify="right")
    for r in rows:
        cells = [r["au_embedding"], f"{r['params_m']:.2f}", f"{r['gflops']:.2f}"]
        for b in batch:
            ms = r["latency_ms"][str(b)]["median"]
            cells += [f"{ms:.1f}", f"{1e3 * b / ms:.2f}"]
        table.add_row(*cells)
    console.print(table)
    if len(rows) == 2:
        fast, slow = rows
        b = str(batch[-1])
        console.print(
            f"exact rewrite of Eq. 2: {slow['gflops'] / fast['gflops']:.1f}x fewer FLOPs, "
            f"{slow['latency_ms'][b]['median'] / fast['latency_ms'][b]['median']:.1f}x faster at batch {b} "
            f"({rows[0]['threads']} threads)"
        )
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rows, indent=2))
        console.print(f"wrote {json_out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
