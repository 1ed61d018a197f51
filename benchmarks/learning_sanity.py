"""Learning sanity check (a script, not a test): does the cross-dataset recipe learn at all on CPU?

Train the small config for a few minutes on real faces only (different augmented frames of skimage's
astronaut, preprocessed by aunet-prep's pipeline), then score held-out images (never trained on) against their
TAP fakes. Target: AUC >= 0.9. The identity is a single one, so this checks that TAP + ART learn the blending
cue, not that they generalize across people or datasets.

    python benchmarks/learning_sanity.py [--max-steps 360] [--minutes M] [--optimizer sgd|adamw] [--lr LR]
        [--train-images 96] [--heldout-images 32] [--cache DIR] [--device cpu|cuda] [--out DIR]

Prints and writes DIR/learning_sanity.json (AUC, steps, time, settings). Exit 0 when AUC >= --target, else 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def build_cache(root: Path, n_train: int, n_heldout: int, size: int, seed: int, cache: Path | None = None) -> Path:
    """train/real/*.png and val/real/*.png sample faces -> a face cache (split from the folder names)."""
    from rich.console import Console

    from aunet.prep import PrepSettings, discover, run_prep
    from aunet.demo.sample_data import make_sample_images

    cache = cache or root / "cache"
    if (cache / "cache.json").is_file():
        return cache
    rng = np.random.default_rng(seed)
    make_sample_images(root / "images" / "train" / "real", n_train, rng)
    make_sample_images(root / "images" / "val" / "real", n_heldout, rng)
    console = Console(stderr=True)
    jobs = discover(root / "images", console=console)
    run_prep(jobs, cache, PrepSettings(size=size, frames=1, detector="dlib"), workers=1, console=console)
    return cache


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-steps", type=int, default=360, help="training steps (the cosine schedule ends there)")
    ap.add_argument("--minutes", type=float, default=0.0, help="also stop after this much training time (0 = no limit)")
    ap.add_argument("--train-images", type=int, default=96)
    ap.add_argument("--heldout-images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="8 reals + their 8 TAP fakes")
    ap.add_argument("--optimizer", choices=("sgd", "adamw"), default=None, help="default: the small config's AdamW")
    ap.add_argument("--lr", type=float, default=None, help="default: the small config's 3e-4")
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--fusion-channels", type=int, default=None, help="default: the small config's (0 = 728)")
    ap.add_argument("--lambda-token", type=float, default=None, help="default: the paper's 30")
    ap.add_argument("--no-feature-mixing", action="store_true", help="ablation: TAP without Feature-level Mixing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="data-loading processes")
    ap.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (as on CPU)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (the target is about CPU minutes; cuda for sweeps)")
    ap.add_argument("--cache", type=Path, default=None, help="face cache to use or build (default: OUT/cache)")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/aunet_learning_sanity"))
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console

    from aunet.faces.cache import FaceCache
    from aunet.io import atomic_write_text
    from aunet.metrics import binary_metrics
    from aunet.train import TrainError, load_train_config, train
    from aunet.train.data import FaceDataset, collate_pairs, make_loader
    from aunet.train.validation import predict

    torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    model_override = None if args.fusion_channels is None else {"base": "small", "fusion_channels": args.fusion_channels}
    cfg = load_train_config("small", dict(
        model=model_override, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        warmup_steps=args.warmup_steps, lambda_token=args.lambda_token, epochs=100_000, max_steps=args.max_steps,
        workers=args.workers, device=args.device, amp=not args.no_amp, seed=args.seed, save_every=0, log_every=5,
        feature_mixing=not args.no_feature_mixing,
    ))
    model_cfg = cfg.model_config
    t0 = time.time()
    cache_dir = build_cache(args.out, args.train_images, args.heldout_images, model_cfg.img_size, args.seed, args.cache)
    prep_s = time.time() - t0
    cache = FaceCache(cache_dir)
    heldout = cache.videos(split="val")
    console.print(f"cache: {len(cache.videos(split='train'))} training faces, {len(heldout)} held-out faces ({prep_s:.0f} s)")

    run = args.out / f"run_{int(time.time())}"
    budget = args.minutes * 60 if args.minutes > 0 else float("inf")
    start = time.time()
    try:
        summary = train(cfg, cache_dir, run, console=console, on_step=lambda step, _t: time.time() - start > budget)
    except TrainError as exc:
        print(f"learning_sanity: {exc}", file=sys.stderr)
        return 1
    train_s = time.time() - start

    # held-out real crops (untouched) vs their TAP fakes, with the final weights
    from aunet.model.checkpoint import load_model

    model = load_model(run / "last.pt")
    ds = FaceDataset(cache_dir, heldout, model_cfg, "cross", seed=12345, fixed=True)
    labels, scores = predict(model, make_loader(ds, 32, None, collate_pairs, 0, 0, torch.device("cpu")), torch.device("cpu"))
    metrics = binary_metrics(labels, scores)
    result = {
        "auc": metrics["auc"], "ap": metrics["ap"], "eer": metrics["eer"], "accuracy@0.5": metrics["accuracy"],
        "heldout_pairs": len(ds), "steps": summary["step"], "epochs": summary["epoch"], "train_seconds": round(train_s, 1),
        "seconds_per_step": round(train_s / max(1, summary["step"]), 3), "prep_seconds": round(prep_s, 1),
        "val_auc_by_step": [[h["step"], h.get("val_auc")] for h in summary["history"]],
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "config": "small",
                     "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "lr": cfg.lr, "scheduler": cfg.scheduler,
                     "fusion_channels": model_cfg.fusion_channels, "feature_mixing": cfg.feature_mixing},
        "cpu_threads": torch.get_num_threads(), "target": args.target,
    }
    atomic_write_text(args.out / "learning_sanity.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if metrics["auc"] >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
