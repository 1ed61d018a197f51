"""`aunet-bench model`: the PyTorch model's parameters, GFLOPs per face and eager latency, for each formulation
of the AU embeddings (Eq. 2: the exact fast rewrite and the paper's naive K full convolutions).

torch is imported inside the functions: the aunet-bench command itself must load on a torch-free box.
"""
from __future__ import annotations

import statistics
from typing import Optional

from rich.table import Table

from aunet.bench.measure import time_calls
from aunet.config import ModelConfig


def count_gflops(model, img_size: int) -> float:
    """GFLOPs of one face (torch's flop counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, img_size, img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def measure_latency_ms(model, img_size: int, batch: int, repeats: int, warmup: int = 1) -> list[float]:
    """Milliseconds of each of ``repeats`` forward passes of a random batch, after ``warmup`` untimed ones."""
    import torch

    x = torch.rand(batch, 3, img_size, img_size)
    with torch.inference_mode():
        return [1e3 * t for t in time_calls(model, x, repeats, warmup)]


def model_report(cfg: ModelConfig, batches: tuple[int, ...], repeats: int, formulations: tuple[str, ...]) -> list[dict]:
    """One row per AU-embedding formulation: size, GFLOPs per face, median and min latency per batch size."""
    import torch

    from aunet.model import build_model

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


def model_table(cfg: ModelConfig, rows: list[dict], batches: list[int]) -> Table:
    table = Table(title=f"AUNet ({cfg.name}, {cfg.img_size}x{cfg.img_size}, {cfg.grid}x{cfg.grid} patch grid)")
    table.add_column("Eq. 2")
    table.add_column("params M", justify="right")
    table.add_column("GFLOPs", justify="right")
    for b in batches:
        table.add_column(f"b{b} ms", justify="right")
        table.add_column(f"b{b} faces/s", justify="right")
    for r in rows:
        cells = [r["au_embedding"], f"{r['params_m']:.2f}", f"{r['gflops']:.2f}"]
        for b in batches:
            ms = r["latency_ms"][str(b)]["median"]
            cells += [f"{ms:.1f}", f"{1e3 * b / ms:.2f}"]
        table.add_row(*cells)
    return table


def rewrite_gain(rows: list[dict], batch: int) -> Optional[str]:
    """How much the exact rewrite of Eq. 2 saves over the naive form, when both were measured (fast first)."""
    if len(rows) != 2:
        return None
    fast, slow = rows
    b = str(batch)
    return (f"exact rewrite of Eq. 2: {slow['gflops'] / fast['gflops']:.1f}x fewer FLOPs, "
            f"{slow['latency_ms'][b]['median'] / fast['latency_ms'][b]['median']:.1f}x faster at batch {b} "
            f"({fast['threads']} threads)")
