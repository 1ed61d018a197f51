"""`aunet-train`: train AUNet on a face cache (built by aunet-prep).

    aunet-train --data CACHE --out RUN [--config small|paper|FILE.yaml] [--max-steps N] [--resume] [overrides]

Paper defaults (section 4.1): SGD lr 1e-3 momentum 0.9, batch 32 = 16 reals + their 16 TAP fakes, 100 epochs,
8 frames per video, λc = 1, λt = 30, λa = 0.5, Feature-level Mixing at a random stage each step with λ's from
a Beta distribution. Multi-GPU / multi-node: launch with torchrun (DistributedDataParallel + DistributedSampler).

RUN holds config.json (the resolved config), last.pt and best.pt (aunet.checkpoint), history.json (per-epoch
metrics) and tb/ (TensorBoard scalars). Exit codes: 0 done, 1 training diverged (non-finite loss), 2 bad input
(config, data, checkpoint, unwritable RUN), 3 missing hardware (--device cuda without CUDA), 130 stopped by
Ctrl-C / SIGTERM after writing a resumable last.pt.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .checkpoint import CheckpointError, capture_rng_state, checkpoint_config, load_checkpoint, restore_rng_state, save_checkpoint
from .config import NAMED_CONFIGS, ModelConfig
from .io import atomic_write_text

EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_NO_HARDWARE, EXIT_INTERRUPTED = 1, 2, 3, 130
SCHEDULERS = ("constant", "cosine")
OPTIMIZERS = ("sgd", "adamw")
# Settings a resumed run may change: they do not alter what the optimizer sees step by step.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "workers", "device", "log_every", "save_every", "val_data", "amp"})


class TrainError(Exception):
    """A run that cannot start or go on; ``code`` is the CLI's exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; the defaults are the paper's (section 4.1)."""

    model: dict = field(default_factory=lambda: NAMED_CONFIGS["paper"].to_dict())  # a full ModelConfig dict
    protocol: str = "cross"  # "cross": real faces + TAP (Tables 2-3); "in": real and fake faces, no TAP (Table 1)
    epochs: int = 100
    max_steps: int = 0  # 0 = no limit; otherwise stop after this many optimizer steps
    batch_size: int = 32  # images per step; cross protocol: half reals, half their fakes
    frames_per_video: int = 8
    optimizer: str = "sgd"  # the paper's; "adamw" (betas 0.9, 0.999) learns far faster from random init
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0  # the paper gives none
    scheduler: str = "constant"  # the paper gives only the learning rate; "cosine" decays it to 0 per step
    warmup_steps: int = 0  # linear warm-up of the learning rate over the first steps (0 = none)
    lambda_cls: float = 1.0
    lambda_token: float = 30.0
    lambda_att: float = 0.5
    huber_delta: float = 0.5
    feature_mixing: bool = True
    mix_alpha: float = 0.1  # Beta(α, α) of the mixing weights (aunet.tap.sample_mix_lambdas)
    val_fraction: float = 0.1  # videos held out for the TAP validation AUC when the cache has no "val" split
    val_data: str = ""  # an optional labeled set (anything aunet-eval reads) evaluated every epoch
    seed: int = 0
    amp: bool = True  # autocast on CUDA: bfloat16 where the GPU has it, else float16 + GradScaler; ignored on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 4
    log_every: int = 10
    save_every: int = 500  # steps between mid-epoch last.pt saves (each epoch end saves too); 0 = epoch ends only

    def __post_init__(self) -> None:
        checks = [
            (self.protocol in ("cross", "in"), f"protocol must be cross or in, got {self.protocol!r}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps >= 0, "max_steps must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.protocol != "cross" or self.batch_size % 2 == 0, "the cross protocol needs an even batch_size"),
            (self.frames_per_video >= 1, "frames_per_video must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.workers >= 0 and self.log_every >= 1 and self.save_every >= 0, "workers, log_every, save_every"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        ModelConfig.from_dict(self.model)  # validates the model fields

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _small_run() -> TrainConfig:
    # The CPU demo and tests: the small model, short runs, few workers. AdamW 3e-4: from random init (no
    # ImageNet weights offline) it reached a held-out TAP AUC >= 0.9 in about 360 steps where the paper's
    # SGD 1e-3 needed about 600, and SGD 1e-2 / AdamW 1e-3 did not learn (docs/training.md, learning sanity).
    # Cosine to 0 over the run (epochs or --max-steps): short runs swing between validations otherwise.
    return TrainConfig(model=NAMED_CONFIGS["small"].to_dict(), optimizer="adamw", lr=3e-4, scheduler="cosine",
                       batch_size=16, epochs=30, workers=2, save_every=100)


NAMED_TRAIN_CONFIGS: dict[str, Callable[[], TrainConfig]] = {"paper": TrainConfig, "small": _small_run}


def _model_dict(value: Any) -> dict:
    """``model:`` in a config file: a named config, or a mapping of ModelConfig fields with an optional base."""
    if isinstance(value, str):
        return ModelConfig.named(value).to_dict()
    if isinstance(value, Mapping):
        fields = dict(value)
        base = ModelConfig.named(str(fields.pop("base", fields.get("name", "paper"))))
        return base.replace(**fields).to_dict() if fields else base.to_dict()
    raise ValueError(f"model must be a config name or a mapping, got {type(value).__name__}")


def _read_config_file(path: Path) -> Any:
    """JSON (e.g. a run's config.json) or YAML. JSON goes through json: YAML 1.1 reads 1e-06 as a string."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def load_train_config(source: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """A named config ("paper", "small") or a YAML/JSON file, then ``overrides`` (None values are ignored).

    A file may start from a named config with ``base: small``; its ``model`` is a name or a mapping.
    """
    source = source or "paper"
    if source in NAMED_TRAIN_CONFIGS:
        data: dict[str, Any] = {}
        base = NAMED_TRAIN_CONFIGS[source]()
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"config {source!r} is neither a file nor one of {', '.join(NAMED_TRAIN_CONFIGS)}")
        try:
            data = _read_config_file(path)
        except ValueError as exc:
            raise ValueError(f"cannot parse config {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config {path} must be a mapping of settings")
        base_name = str(data.pop("base", "paper"))
        if base_name not in NAMED_TRAIN_CONFIGS:
            raise ValueError(f"config {path}: unknown base {base_name!r}")
        base = NAMED_TRAIN_CONFIGS[base_name]()
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(unknown)}")
    if "model" in data:
        data["model"] = _model_dict(data["model"])
    try:
        for key, value in data.items():  # YAML 1.1 reads 1e-3 as a string; ints are fine where floats go
            if isinstance(getattr(base, key), float) and isinstance(value, (int, str)) and not isinstance(value, bool):
                data[key] = float(value)
        return dataclasses.replace(base, **data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad training setting: {exc}") from None


# ----------------------------------------------------------------------------------------------------------
# runtime context: device, distributed, stop requests


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _pick_device(name: str, dist_env: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"--device {name}: CUDA is not available on this machine", EXIT_NO_HARDWARE)
        if dist_env.world > 1:
            return torch.device("cuda", dist_env.local_rank)
        return torch.device(name)
    if name != "cpu":
        raise TrainError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


def _init_distributed(device_name: str) -> _Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; join its process group (NCCL on GPUs, gloo on CPUs)."""
    env = _Dist(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))
    if env.world > 1 and not torch.distributed.is_initialized():
        cuda = device_name != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(env.local_rank)
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return env


class _StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step (it then writes a resumable last.pt);
    a second SIGINT interrupts at once (last.pt is then the previous save)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _SkipSampler(Sampler):
    """The epoch's (distributed) order minus the items already trained on: a resumed epoch goes on exactly."""

    def __init__(self, base: Sampler, skip: int):
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


# ----------------------------------------------------------------------------------------------------------
# steps


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, name: str, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate multiplier before optimizer step ``step`` (0-based): a linear warm-up to 1 over
    ``warmup_steps``, times 1 (constant) or a cosine decay to 0 at ``total_steps`` (cosine)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if name == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    return warm


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.scheduler, total_steps, cfg.warmup_steps)
    )


def _train_step(model, batch, criterion, optimizer, scheduler, scaler, device, cfg: TrainConfig, num_stages: int,
                amp_dtype: Optional[torch.dtype]):
    from .model import autocast
    from .tap import FeatureMixing, sample_mix_lambdas

    images = batch["images"].to(device, non_blocking=True).float().div_(255)
    labels = batch["labels"].to(device)
    tokens = batch["token_labels"].to(device) if batch["token_labels"] is not None and cfg.lambda_token > 0 else None
    y_att = batch["y_att"].to(device) if cfg.lambda_att > 0 else None
    hook = None
    if batch["mask"] is not None and cfg.feature_mixing:
        stage = random.randrange(num_stages)  # Python's RNG: the same draw on every rank
        lambdas = sample_mix_lambdas(labels.shape[0] // 2, cfg.mix_alpha, device)
        hook = FeatureMixing(stage, batch["mask"].to(device), lambdas)
    with autocast(device, amp_dtype):
        out = model(images, return_au_maps=y_att is not None, stage_hook=hook)
    terms = criterion(out, labels, tokens, y_att)
    if not scaler.is_enabled() and not torch.isfinite(terms["total"]):  # a float16 scaler skips such steps
        raise TrainError(f"the loss is not finite ({terms['total'].item()}); lower --lr", EXIT_DIVERGED)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    scaler.step(optimizer)  # with AMP it skips a step whose gradients overflowed
    scaler.update()
    scheduler.step()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def predict(model, loader, device: torch.device, amp_dtype: Optional[torch.dtype] = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, fake scores) of every image the loader yields, model in eval mode."""
    from .model import autocast

    was_training = model.training
    model.eval()
    labels, scores = [], []
    for batch in loader:
        images = batch["images"].to(device).float().div_(255)
        with autocast(device, amp_dtype):
            out = model(images)
        labels.append(batch["labels"].numpy())
        scores.append(out.score.float().cpu().numpy())
    model.train(was_training)
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(labels), np.concatenate(scores)


# ----------------------------------------------------------------------------------------------------------
# the run


def _check_resumable(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    mine = cfg.to_dict()
    differ = sorted(k for k in set(saved) | set(mine) if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k))
    if differ:
        raise TrainError(f"{path} was trained with other settings ({', '.join(differ)}); resume with the same config")


def _loader(dataset, batch_items: int, sampler, collate, workers: int, seed: int, device: torch.device) -> DataLoader:
    # An explicit generator: DataLoader would otherwise draw its worker seed from torch's global RNG, and a
    # resumed run would then draw different Beta mixing weights than an uninterrupted one.
    return DataLoader(
        dataset, batch_size=batch_items, sampler=sampler,
        collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed), drop_last=False,
    )


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    resume: bool = False,
    console: Optional[Console] = None,
    on_step: Optional[Callable[[int, dict[str, float]], Optional[bool]]] = None,
) -> dict[str, Any]:
    """Train; returns a summary ({"step", "epoch", "best_metric", "stopped", "val_source", ...}).

    ``on_step(step, loss terms)`` is called after every optimizer step (progress hooks, time budgets, tests);
    returning True stops the run there as Ctrl-C does (a resumable last.pt, summary["stopped"]).
    Raises TrainError for anything the CLI reports as a one-line error.
    """
    from .cache import FaceCache
    from .data import DataError, FaceDataset, collate_for, items_per_batch, split_train_val, usable_records
    from .losses import AUNetLoss, LossWeights
    from .metrics import roc_auc
    from .model import autocast_dtype, build_model

    console = console or Console(stderr=True)
    out = Path(out_dir)
    dist_env = _init_distributed(cfg.device)
    device = _pick_device(cfg.device, dist_env)
    amp_dtype = autocast_dtype(device, cfg.amp)
    model_cfg = cfg.model_config
    last_path, best_path = out / "last.pt", out / "best.pt"

    # data first: a bad cache fails before anything is written
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainError(f"--data {data_dir} is not a folder (build a face cache with aunet-prep)")
    try:
        cache = FaceCache(data_dir)
        records = usable_records(cache, cfg.protocol)
        batch_items = items_per_batch(cfg.protocol, cfg.batch_size)
    except (DataError, OSError, ValueError) as exc:
        raise TrainError(f"--data {data_dir}: {exc}") from None
    if not records:
        wanted = "real faces (label 0 or unlabeled)" if cfg.protocol == "cross" else "labeled faces (0 real / 1 fake)"
        raise TrainError(f"--data {data_dir}: the cache has no usable {wanted} for the {cfg.protocol} protocol")
    if cfg.protocol == "in" and len({r.label for r in records}) < 2:
        raise TrainError(f"--data {data_dir}: the in-dataset protocol needs both real and fake videos")
    train_records, val_records, val_source = split_train_val(records, cfg.val_fraction, cfg.seed)

    if resume and not last_path.is_file():
        raise TrainError(f"--resume: {last_path} does not exist (nothing to resume)")
    if not resume and last_path.exists():
        raise TrainError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    state = None
    if resume:  # refuse another config's checkpoint before touching RUN
        try:
            state = load_checkpoint(last_path)
            checkpoint_config(state, last_path, expect=model_cfg)
        except CheckpointError as exc:
            raise TrainError(str(exc)) from None
        _check_resumable(state.get("train_config", {}), cfg, last_path)
    if dist_env.main:
        try:
            atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise TrainError(f"cannot write to --out {out}: {exc.strerror or exc}") from None

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    # ImageNet init only for a new run: a resumed one takes every weight from its checkpoint
    model = build_model(model_cfg, pretrained=state is None and model_cfg.backbone_weights != "none").to(device)
    optimizer = _make_optimizer(model, cfg)
    train_ds = FaceDataset(data_dir, train_records, model_cfg, cfg.protocol, cfg.frames_per_video, cfg.seed)
    val_ds = FaceDataset(data_dir, val_records, model_cfg, cfg.protocol, cfg.frames_per_video, cfg.seed, fixed=True)
    sampler = DistributedSampler(train_ds, num_replicas=dist_env.world, rank=dist_env.rank, shuffle=True, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / batch_items)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = _make_scheduler(optimizer, cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = epoch = batch_in_epoch = 0
    best_metric, history = -math.inf, []
    rng_after_step = capture_rng_state()

    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TrainError(f"{last_path} cannot be resumed: {str(exc).splitlines()[0]}") from None
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        best_metric, history = state.get("best_metric", -math.inf), list(state.get("history", []))
        restore_rng_state(state["rng"])
        rng_after_step = state["rng"]

    net = model
    if dist_env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = AUNetLoss(LossWeights(cfg.lambda_cls, cfg.lambda_token, cfg.lambda_att, cfg.huber_delta))
    collate = collate_for(cfg.protocol)
    writer = _tensorboard(out / "tb", console) if dist_env.main else None

    def save(path: Path, **extra: Any) -> None:
        if not dist_env.main:
            return
        try:
            save_checkpoint(
                path, model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(), step=step, epoch=epoch, batch_in_epoch=batch_in_epoch,
                rng=rng_after_step, train_config=cfg.to_dict(), best_metric=best_metric, history=history, **extra,
            )
        except OSError as exc:  # a full disk: the previous checkpoint is intact (atomic write)
            raise TrainError(f"cannot write {path}: {exc.strerror or exc}; the previous checkpoint is intact") from None

    def validate() -> dict[str, float]:
        """Rank 0 scores the held-out faces (and the labeled set); the other ranks wait."""
        metrics: dict[str, float] = {}
        if dist_env.main:
            val_loader = _loader(val_ds, batch_items, None, collate, min(cfg.workers, 2), cfg.seed, device)
            labels, scores = predict(model, val_loader, device, amp_dtype)
            if not np.isfinite(scores).all():
                raise TrainError(
                    f"validation scores are not finite at step {step}: training diverged; lower --lr "
                    f"({last_path} holds the last good save)", EXIT_DIVERGED)
            metrics["val_auc"] = roc_auc(labels, scores)
            if cfg.val_data:
                from .evaluate import EvalError, evaluate_source, torch_scorer

                try:
                    report = evaluate_source(cfg.val_data, torch_scorer(model, device, cfg.amp), model_cfg, out / "val_cache")
                except EvalError as exc:
                    raise TrainError(f"--val-data: {exc}") from None
                metrics["labeled_frame_auc"] = report["frame"]["auc"]
                metrics["labeled_video_auc"] = report["video"]["auc"]
        if dist_env.world > 1:
            torch.distributed.barrier()
        return metrics

    running: dict[str, list[float]] = {}

    def flush_losses() -> None:
        """TensorBoard: each loss term averaged since the last flush, and the learning rate."""
        if writer is not None and running:
            for key, values in running.items():
                writer.add_scalar(f"loss/{key}", float(np.mean(values)), step)
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
        running.clear()

    def end_of_validation(metrics: dict[str, float]) -> None:
        nonlocal best_metric
        flush_losses()
        if not dist_env.main:
            return
        current = metrics.get("val_auc", math.nan)
        history.append({"step": step, "epoch": epoch, **metrics})
        improved = not best_path.exists() or (not math.isnan(current) and current > best_metric)
        if improved:
            best_metric = current if not math.isnan(current) else best_metric
        save(last_path)
        if improved:
            save(best_path)
        atomic_write_text(out / "history.json", json.dumps(history, indent=2) + "\n")
        for key, value in metrics.items():
            if writer is not None and not math.isnan(value):
                writer.add_scalar(f"val/{key}", value, step)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        console.print(f"epoch {epoch} step {step}: {shown}{' (best)' if improved else ''}")

    if dist_env.main:
        console.print(
            f"training {model_cfg.name} ({cfg.protocol} protocol) on {len(train_records)} video(s), "
            f"{len(train_ds)} faces/epoch, {steps_per_epoch} steps/epoch, device {device}; validation: {val_source}"
        )
    stopped = False
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not dist_env.main,
    )
    net.train()
    with _StopRequest() as stop, progress:
        task = progress.add_task("train", total=total_steps, completed=min(step, total_steps), loss="")
        while epoch < cfg.epochs and (not cfg.max_steps or step < cfg.max_steps):
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            loader = _loader(
                train_ds, batch_items, _SkipSampler(sampler, batch_in_epoch * batch_items), collate,
                cfg.workers, cfg.seed * 100_003 + epoch, device,
            )
            progress.update(task, description=f"epoch {epoch + 1}/{cfg.epochs}")
            batches = iter(loader)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except RuntimeError:  # Ctrl-C reaches the loader's workers too; they exit while we stop
                    if not stop.requested:
                        raise
                    stopped = True
                    break
                terms = _train_step(net, batch, criterion, optimizer, scheduler, scaler, device, cfg, model.num_stages, amp_dtype)
                step += 1
                batch_in_epoch += 1
                rng_after_step = capture_rng_state()
                for key, value in terms.items():
                    running.setdefault(key, []).append(value)
                if step % cfg.log_every == 0:
                    flush_losses()
                progress.update(task, completed=step, loss=f"loss {terms['total']:.4f}")
                if on_step is not None and on_step(step, terms):
                    stop.requested = True
                stopped = _any_rank(stop.requested, dist_env, device)
                if stopped or (cfg.max_steps and step >= cfg.max_steps):
                    break
                if cfg.save_every and step % cfg.save_every == 0:
                    save(last_path)
            if batch_in_epoch >= steps_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
            if stopped:
                save(last_path)
                break
            if batch_in_epoch == 0 or (cfg.max_steps and step >= cfg.max_steps):
                end_of_validation(validate())
    if writer is not None:
        writer.close()
    if dist_env.world > 1:
        torch.distributed.destroy_process_group()
    return {
        "step": step, "epoch": epoch, "stopped": stopped, "best_metric": best_metric, "val_source": val_source,
        "history": history, "last": str(last_path), "best": str(best_path),
    }


def _any_rank(flag: bool, dist_env: _Dist, device: torch.device) -> bool:
    """A stop request on any rank stops all of them at the same step (DDP needs every rank in each step)."""
    if dist_env.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _tensorboard(path: Path, console: Console):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        console.print("[yellow]tensorboard is not installed: no TensorBoard scalars (pip install tensorboard)[/]")
        return None
    return SummaryWriter(str(path))


# ----------------------------------------------------------------------------------------------------------
# CLI

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def cli(
    data: Path = typer.Option(..., "--data", help="a face cache made by aunet-prep"),
    out: Path = typer.Option(..., "--out", help="the run folder (config.json, last.pt, best.pt, tb/)"),
    config: Optional[str] = typer.Option(None, "--config", help="small | paper | a YAML/JSON file [paper; on --resume: RUN/config.json]"),
    resume: bool = typer.Option(False, "--resume", help="continue RUN/last.pt where it stopped"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after N optimizer steps in all"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="images per step (cross: half reals, half fakes)"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd (the paper's) | adamw"),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="cross (real + TAP) | in (real and fake, no TAP)"),
    frames_per_video: Optional[int] = typer.Option(None, "--frames-per-video"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    workers: Optional[int] = typer.Option(None, "--workers"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="a labeled set to evaluate every epoch"),
    backbone_weights: Optional[str] = typer.Option(None, "--backbone-weights", help="ImageNet Xception weights file"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="mixed precision on CUDA (bfloat16, or float16 on pre-Ampere GPUs)"),
) -> None:
    """Train AUNet on a face cache (aunet-prep). Multi-GPU: torchrun ... -m aunet.train. Exit codes: 0 done,
    1 non-finite loss, 2 bad input, 3 no CUDA for --device cuda, 130 stopped by Ctrl-C (resumable)."""
    console = Console(stderr=True)
    overrides = dict(
        max_steps=max_steps, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, protocol=protocol,
        frames_per_video=frames_per_video, device=device, workers=workers, seed=seed, val_data=val_data, amp=amp,
    )
    if config is None and resume and (out / "config.json").is_file():
        config = str(out / "config.json")
    try:
        cfg = load_train_config(config, overrides)
        if backbone_weights is not None:
            cfg = dataclasses.replace(cfg, model={**cfg.model, "backbone_weights": backbone_weights})
    except ValueError as exc:
        print(f"aunet-train: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        summary = train(cfg, data, out, resume=resume, console=console)
    except TrainError as exc:
        print(f"aunet-train: {exc}", file=sys.stderr)
        raise typer.Exit(exc.code) from None
    if summary["stopped"]:
        console.print(
            f"stopped at step {summary['step']}; {summary['last']} is resumable: "
            f"aunet-train --data {data} --out {out} --resume", markup=False, highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    console.print(f"done: step {summary['step']}, best validation AUC {summary['best_metric']:.4f} -> {summary['best']}")


def main() -> None:
    app()


if __name__ == "__main__":  # torchrun -m aunet.train ...
    main()
