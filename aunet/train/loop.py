"""The training run: set up, resume, train step by step, validate, checkpoint (``Trainer``; ``train`` runs one).

A run folder holds config.json, last.pt (resumable: weights, optimizer, schedule, counters, RNG states),
best.pt, history.json and tb/. Rank 0 validates and writes; under torchrun every rank trains its share of each
batch (DistributedDataParallel + DistributedSampler).
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DistributedSampler

from aunet.io import atomic_write_text
from aunet.metrics import roc_auc
from aunet.model import autocast, autocast_dtype, build_model
from aunet.model.backbone import BackboneWeightsError, PretrainedBackbone, describe_provenance, fetch_pretrained
from aunet.model.checkpoint import (CheckpointError, capture_rng_state, checkpoint_config, load_checkpoint,
                                    load_training_state, restore_rng_state, save_checkpoint)
from aunet.tap import FeatureMixing, sample_mix_lambdas
from aunet.tap.losses import AUNetLoss, LossWeights
from aunet.train.config import TrainConfig
from aunet.train.data import (FaceDataset, SkipSampler, TrainingData, collate_for, make_loader, open_training_data,
                              refused_text)
from aunet.train.distributed import DistEnv, any_rank, barrier, init_distributed, leave, pick_device
from aunet.train.errors import EXIT_DIVERGED, TrainError
from aunet.train.optim import make_optimizer, make_scheduler
from aunet.train.preflight import check_inputs
from aunet.train.stop import StopRequest
from aunet.train.validation import labeled_set_metrics, predict

StepHook = Callable[[int, dict[str, float]], Optional[bool]]


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    resume: bool = False,
    console: Optional[Console] = None,
    on_step: Optional[StepHook] = None,
) -> dict[str, Any]:
    """Train; returns a summary ({"step", "epoch", "best_metric", "stopped", "val_source", ...}).

    ``on_step(step, loss terms)`` is called after every optimizer step (progress hooks, time budgets, tests);
    returning True stops the run there as Ctrl-C does (a resumable last.pt, summary["stopped"]).
    Raises TrainError for anything the CLI reports as a one-line error.
    """
    out = Path(out_dir)
    dist = init_distributed(cfg.device)
    device = pick_device(cfg.device, dist)
    # inputs first: a bad cache or run folder fails before anything is written
    cache = check_inputs(cfg, data_dir, out, resume)
    data = open_training_data(cache, cfg)
    state = resume_state(out / "last.pt", cfg) if resume else None
    # a new run's ImageNet weights, before anything is written: weights that cannot be had stop it here
    backbone = None if resume else pretrained_backbone(cfg)
    if dist.main:
        write_run_config(out, cfg)
    trainer = Trainer(cfg, data, cache.root, out, device, dist, console or Console(stderr=True), state, backbone)
    summary = trainer.fit(on_step)
    leave(dist)
    return summary


def resume_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint to resume (its shared part and its training state), refused when it was made for another
    model or with other step-by-step settings. Its training state is unpickled in full: the run's own last.pt."""
    try:
        state = load_checkpoint(path)
        checkpoint_config(state, path, expect=cfg.model_config)
        differ = cfg.unresumable_changes(state.get("train_config", {}))
        if differ:
            raise TrainError(f"{path} was trained with other settings ({', '.join(differ)}); resume with the same config")
        return {**state, **load_training_state(state, path)}
    except CheckpointError as exc:
        raise TrainError(str(exc)) from None


def pretrained_backbone(cfg: TrainConfig) -> PretrainedBackbone:
    """The ImageNet weights a new run starts from (``backbone_weights``: a file, "imagenet" from timm's hub, or
    "none"); TrainError (exit 2) when they cannot be had: a run never falls back to random init unasked."""
    model_cfg = cfg.model_config
    try:
        return fetch_pretrained(model_cfg.backbone_weights, model_cfg.backbone_depth)
    except (BackboneWeightsError, OSError) as exc:
        raise TrainError(str(exc)) from None


def write_run_config(out: Path, cfg: TrainConfig) -> None:
    try:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise TrainError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


class Trainer:
    """One run: the model, its optimizer and schedule, the counters a checkpoint resumes from, and the steps
    that advance them. Built in the order a resumed run must repeat: seeds, model, optimizer, data, schedule,
    then the checkpoint's state over all of them."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, cache_dir: Path, out: Path, device: torch.device,
                 dist: DistEnv, console: Console, state: Optional[dict[str, Any]] = None,
                 backbone: Optional[PretrainedBackbone] = None):
        self.cfg, self.data, self.out, self.device, self.dist, self.console = cfg, data, out, device, dist, console
        self.model_cfg = cfg.model_config
        self.amp_dtype = autocast_dtype(device, cfg.amp)
        self.last_path, self.best_path = out / "last.pt", out / "best.pt"

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        # ImageNet init only for a new run (train() fetched it); a resumed one takes every weight from its checkpoint
        self.model = build_model(self.model_cfg)
        if backbone is not None:
            backbone.apply(self.model)
        self.model = self.model.to(device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.train_ds = FaceDataset(cache_dir, data.train, self.model_cfg, cfg.protocol, cfg.frames_per_video, cfg.seed)
        self.val_ds = FaceDataset(cache_dir, data.val, self.model_cfg, cfg.protocol, cfg.frames_per_video, cfg.seed, fixed=True)
        self.sampler = DistributedSampler(self.train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.seed)
        self.steps_per_epoch = math.ceil(len(self.sampler) / data.batch_items)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_metric, self.history = -math.inf, []
        self.rng_after_step = capture_rng_state()
        if state is not None:
            self._restore(state)

        self.net = self.model
        if dist.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.criterion = AUNetLoss(LossWeights(cfg.lambda_cls, cfg.lambda_token, cfg.lambda_att, cfg.huber_delta))
        self.collate = collate_for(cfg.protocol)
        self.writer = _tensorboard(out / "tb", console) if dist.main else None
        self.running: dict[str, list[float]] = {}  # loss terms since the last TensorBoard flush

    # ------------------------------------------------------------------------------------------------------
    # resume and checkpoints

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TrainError(f"{self.last_path} cannot be resumed: {str(exc).splitlines()[0]}") from None
        provenance = state.get("backbone")
        self.model.backbone_provenance = dict(provenance) if isinstance(provenance, dict) else {"source": "unknown"}
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_metric, self.history = state.get("best_metric", -math.inf), list(state.get("history", []))
        restore_rng_state(state["rng"])
        self.rng_after_step = state["rng"]

    def save(self, path: Path) -> None:
        """Rank 0 writes a checkpoint that resumes right after the last step."""
        if not self.dist.main:
            return
        try:
            training_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                              "scaler": self.scaler.state_dict(), "rng": self.rng_after_step}
            save_checkpoint(
                path, self.model, training_state, step=self.step, epoch=self.epoch,
                batch_in_epoch=self.batch_in_epoch, train_config=self.cfg.to_dict(), best_metric=self.best_metric,
                history=self.history,
            )
        except OSError as exc:  # a full disk: the previous checkpoint is intact (atomic write)
            raise TrainError(f"cannot write {path}: {exc.strerror or exc}; the previous checkpoint is intact") from None

    # ------------------------------------------------------------------------------------------------------
    # training

    @property
    def step_limit_reached(self) -> bool:
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step: Feature-level Mixing at a random stage, the AUNet loss, backward, the schedule."""
        cfg, device = self.cfg, self.device
        images = batch["images"].to(device, non_blocking=True).float().div_(255)
        labels = batch["labels"].to(device)
        tokens = batch["token_labels"].to(device) if batch["token_labels"] is not None and cfg.lambda_token > 0 else None
        y_att = batch["y_att"].to(device) if cfg.lambda_att > 0 else None
        hook = None
        if batch["mask"] is not None and cfg.feature_mixing:
            stage = random.randrange(self.model.num_stages)  # Python's RNG: the same draw on every rank
            lambdas = sample_mix_lambdas(labels.shape[0] // 2, cfg.mix_alpha, device)
            hook = FeatureMixing(stage, batch["mask"].to(device), lambdas)
        with autocast(device, self.amp_dtype):
            out = self.net(images, return_au_maps=y_att is not None, stage_hook=hook)
        terms = self.criterion(out, labels, tokens, y_att)
        if not self.scaler.is_enabled() and not torch.isfinite(terms["total"]):  # a float16 scaler skips such steps
            raise TrainError(f"the loss is not finite ({terms['total'].item()}); lower --lr", EXIT_DIVERGED)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.step(self.optimizer)  # with AMP it skips a step whose gradients overflowed
        self.scaler.update()
        self.scheduler.step()

        self.step += 1
        self.batch_in_epoch += 1
        self.rng_after_step = capture_rng_state()
        values = {k: float(v.detach()) for k, v in terms.items()}
        for key, value in values.items():
            self.running.setdefault(key, []).append(value)
        if self.step % cfg.log_every == 0:
            self.flush_losses()
        return values

    def train_epoch(self, stop: StopRequest, on_step: Optional[StepHook], progress: Progress, task: Any) -> bool:
        """Train on the rest of the current epoch, up to the step limit; True when a stop request ended it."""
        cfg = self.cfg
        self.train_ds.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        batch_items = self.data.batch_items
        loader = make_loader(
            self.train_ds, batch_items, SkipSampler(self.sampler, self.batch_in_epoch * batch_items), self.collate,
            cfg.workers, cfg.seed * 100_003 + self.epoch, self.device,
        )
        progress.update(task, description=f"epoch {self.epoch + 1}/{cfg.epochs}")
        batches = iter(loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return False
            except RuntimeError:  # a worker killed from outside (its stop signals are ignored, SIGKILL is not)
                if not stop.requested:
                    raise
                return True
            terms = self.train_step(batch)
            progress.update(task, completed=self.step, loss=f"loss {terms['total']:.4f}")
            if on_step is not None and on_step(self.step, terms):
                stop.requested = True
            if any_rank(stop.requested, self.dist, self.device):
                return True
            if self.step_limit_reached:
                return False
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save(self.last_path)

    def fit(self, on_step: Optional[StepHook] = None) -> dict[str, Any]:
        """Train epoch by epoch until the epochs or the step limit run out, or a stop request; validate and save
        after every epoch and at the step limit. Returns train()'s summary."""
        cfg = self.cfg
        if self.dist.main:
            self.console.print(
                f"training {self.model_cfg.name} ({cfg.protocol} protocol) on {len(self.data.train)} video(s), "
                f"{len(self.train_ds)} faces/epoch, {self.steps_per_epoch} steps/epoch, device {self.device}; "
                f"validation: {self.data.val_source}"
            )
            self.console.print(f"backbone: {describe_provenance(self.model.backbone_provenance)}",
                               markup=False, highlight=False, soft_wrap=True)
            if self.data.refused:
                self.console.print(f"left out of training: FF++ videos {refused_text(self.data.refused)}",
                                   markup=False, highlight=False, soft_wrap=True)
            if self.writer is not None:
                self.writer.add_text("backbone", json.dumps(self.model.backbone_provenance, sort_keys=True), self.step)
        stopped = False
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, disable=not self.dist.main,
        )
        self.net.train()
        with StopRequest() as stop, progress:
            task = progress.add_task("train", total=self.total_steps, completed=min(self.step, self.total_steps), loss="")
            while self.epoch < cfg.epochs and not self.step_limit_reached:
                stopped = self.train_epoch(stop, on_step, progress, task)
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if stopped:
                    self.save(self.last_path)
                    break
                if self.batch_in_epoch == 0 or self.step_limit_reached:
                    self.record_validation(self.validate())
        if self.writer is not None:
            self.writer.close()
        return {
            "step": self.step, "epoch": self.epoch, "stopped": stopped, "best_metric": self.best_metric,
            "val_source": self.data.val_source, "history": self.history, "last": str(self.last_path),
            "best": str(self.best_path),
        }

    # ------------------------------------------------------------------------------------------------------
    # validation and logs

    def validate(self) -> dict[str, float]:
        """Rank 0 scores the held-out faces (and the labeled set); the other ranks wait."""
        metrics: dict[str, float] = {}
        if self.dist.main:
            cfg = self.cfg
            loader = make_loader(self.val_ds, self.data.batch_items, None, self.collate, min(cfg.workers, 2), cfg.seed, self.device)
            labels, scores = predict(self.model, loader, self.device, self.amp_dtype)
            if not np.isfinite(scores).all():
                raise TrainError(
                    f"validation scores are not finite at step {self.step}: training diverged; lower --lr "
                    f"({self.last_path} holds the last good save)", EXIT_DIVERGED)
            metrics["val_auc"] = roc_auc(labels, scores)
            if cfg.val_data:
                metrics.update(labeled_set_metrics(cfg.val_data, self.model, self.model_cfg, self.device, cfg.amp,
                                                   self.out / "val_cache"))
        barrier(self.dist)
        return metrics

    def record_validation(self, metrics: dict[str, float]) -> None:
        """History, last.pt, best.pt when the validation AUC improved, TensorBoard and the console line."""
        self.flush_losses()
        if not self.dist.main:
            return
        current = metrics.get("val_auc", math.nan)
        self.history.append({"step": self.step, "epoch": self.epoch, **metrics})
        improved = not self.best_path.exists() or (not math.isnan(current) and current > self.best_metric)
        if improved:
            self.best_metric = current if not math.isnan(current) else self.best_metric
        self.save(self.last_path)
        if improved:
            self.save(self.best_path)
        atomic_write_text(self.out / "history.json", json.dumps(self.history, indent=2) + "\n")
        for key, value in metrics.items():
            if self.writer is not None and not math.isnan(value):
                self.writer.add_scalar(f"val/{key}", value, self.step)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self.console.print(f"epoch {self.epoch} step {self.step}: {shown}{' (best)' if improved else ''}")

    def flush_losses(self) -> None:
        """TensorBoard: each loss term averaged since the last flush, and the learning rate."""
        if self.writer is not None and self.running:
            for key, values in self.running.items():
                self.writer.add_scalar(f"loss/{key}", float(np.mean(values)), self.step)
            self.writer.add_scalar("lr", self.optimizer.param_groups[0]["lr"], self.step)
        self.running.clear()


def _tensorboard(path: Path, console: Console):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        console.print("[yellow]tensorboard is not installed: no TensorBoard scalars (pip install tensorboard)[/]")
        return None
    return SummaryWriter(str(path))
