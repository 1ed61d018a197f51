#!/usr/bin/env python
"""GPU / TensorRT check: what the CPU test suite cannot cover, in one short run on a GPU box.

    python scripts/gpu_check.py [--ckpt RUN/best.pt] [--config paper] [--out DIR] [--max-batch 8]

1. PyTorch CUDA FP32 (TF32 off) vs CPU FP32: logits max abs diff <= 1e-3.
2. PyTorch CUDA FP16 / BF16 autocast and pure .half() vs CUDA FP32: fake-probability max abs diff <= 1e-2.
3. Where tensorrt (and pycuda) are installed: export ONNX, AutoCast FP16 ONNX, build the engine, verify it
   against the PyTorch reference bundle (FP16 thresholds), and time it.
Prints a table; exit 0 all passed, 1 a check failed, 3 no CUDA GPU (nothing checked).
Without --ckpt the model is untrained: its scores all sit at ~0.5, so decision agreement is reported, not gated.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def limit_row(check: str, value: float, limit: float) -> tuple[str, str, str, bool]:
    return check, f"{value:.3g}", f"<= {limit:g}", bool(value <= limit)


def torch_checks(model, images, device: str = "cuda") -> list[tuple[str, str, str, bool]]:
    """Checks 1 and 2 on ``device``: FP32 there vs FP32 on the CPU, then autocast FP16 / BF16 and pure .half()
    vs FP32 there. ``model`` stays as it was (FP32, on the CPU): the runs use copies, because ``.half()`` rounds
    the weights in place and ``.float()`` cannot undo it, and the export after these checks needs the FP32 weights."""
    import copy

    import numpy as np
    import torch

    from aunet.export.verify import derived

    rows = []
    with torch.inference_mode():
        cpu = model(images)
        dev_model = copy.deepcopy(model).to(device)
        x = images.to(device)
        fp32 = dev_model(x)
        with torch.autocast(device, dtype=torch.float16):
            amp = dev_model(x)
        with torch.autocast(device, dtype=torch.bfloat16):  # what aunet-train's AMP uses on Ampere and later
            bf16 = dev_model(x)
        half = dev_model.half()(x.half())  # the copy: nothing reads it in FP32 again
        del dev_model
    for name in ("cls_logits", "patch_logits"):
        diff = (getattr(fp32, name).cpu() - getattr(cpu, name)).abs().max().item()
        rows.append(limit_row(f"torch {device.upper()} fp32 vs CPU: {name} max abs", diff, 1e-3))
    want = derived({k: getattr(fp32, k).float().cpu().numpy() for k in ("cls_logits", "patch_logits")})
    for label, out in (("autocast fp16", amp), ("autocast bf16", bf16), ("half()", half)):
        got = derived({k: getattr(out, k).float().cpu().numpy() for k in ("cls_logits", "patch_logits")})
        rows.append(limit_row(f"torch {device.upper()} {label}: fake_prob max abs",
                              float(np.abs(got["fake_prob"] - want["fake_prob"]).max()), 1e-2))
        rows.append(limit_row(f"torch {device.upper()} {label}: patch_prob mean abs",
                              float(np.abs(got["patch_prob"] - want["patch_prob"]).mean()), 1e-2))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="trained checkpoint (default: an untrained model of --config)")
    parser.add_argument("--config", default="paper", help="named config when no --ckpt (paper or small)")
    parser.add_argument("--out", type=Path, help="folder for the artifacts (default: a temporary one)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    import aunet
    from aunet.export.reference import synthetic_faces

    console = Console(width=120)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to PyTorch; nothing checked", file=sys.stderr)
        return 3
    rows: list[tuple[str, str, str, bool | None]] = []  # check, value, limit, passed (None = reported only)
    if args.ckpt:
        from aunet.model.checkpoint import load_model

        model = load_model(args.ckpt)
    else:
        torch.manual_seed(0)
        model = aunet.build_model(args.config).eval()
    cfg = model.cfg
    gpu = torch.cuda.get_device_name(0)
    images = torch.from_numpy(synthetic_faces(args.samples, cfg.img_size, seed=0))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows.extend(torch_checks(model, images, device="cuda"))

    trt_note = ""
    try:
        import tensorrt  # noqa: F401
        have_trt = True
    except ImportError:
        have_trt, trt_note = False, "tensorrt is not installed: engine build and verification not checked"
    if have_trt:
        from aunet.export.onnx_export import export_onnx, spec_for_model
        from aunet.export.precision import make_fp16_onnx
        from aunet.export.reference import make_reference
        from aunet.export.tensorrt_build import build_engine
        from aunet.export.verify import verify_isolated

        tmp = tempfile.TemporaryDirectory(prefix="aunet-gpu-check-") if args.out is None else None
        out = args.out or Path(tmp.name)
        spec = spec_for_model(model, checkpoint=args.ckpt) if args.ckpt else spec_for_model(model)
        export_onnx(model, out / "model.onnx", spec=spec)
        make_reference(model, spec, out / "model.ref.npz", samples=args.samples)
        fp16 = make_fp16_onnx(out / "model.onnx")
        t0 = time.perf_counter()
        side = build_engine(fp16, out / "model.fp16.plan", max_batch=args.max_batch, timing_cache=out / "timing.cache")
        rows.append(("TensorRT build", f"{time.perf_counter() - t0:.1f} s, TRT {side['tensorrt']}", "", True))
        report = verify_isolated(out / "model.fp16.plan", out / "model.ref.npz")
        if "crash" in report or "error" in report:
            rows.append(("TensorRT verify", report.get("crash") or report.get("error"), "", False))
        for c in report.get("checks", []):
            gated = args.ckpt is not None or c["check"] != "decision agreement"
            rows.append((f"TensorRT fp16 batch {c['batch']}: {c['check']}", f"{c['value']:.4g}", c["limit"],
                         c["passed"] if gated else None))
        for b, ms in report.get("latency_ms_per_image", {}).items():
            rows.append((f"TensorRT fp16 latency per image, batch {b}", f"{ms:.2f} ms", "", None))
        if tmp is not None:
            tmp.cleanup()

    table = Table(title=f"gpu_check: {cfg.name} ({cfg.img_size}px) on {gpu}, torch {torch.__version__}")
    for col in ("check", "value", "limit", "result"):
        table.add_column(col)
    for check, value, limit, passed in rows:
        table.add_row(check, value, limit, {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "reported"}[passed])
    console.print(table)
    if trt_note:
        console.print(f"[yellow]{trt_note}[/]")
    failed = [r for r in rows if r[3] is False]
    console.print(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
