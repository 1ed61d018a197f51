"""A training run's settings (torch-free): TrainConfig, the named runs "paper" and "small", config files."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from aunet.config import NAMED_CONFIGS, ModelConfig

PROTOCOLS = ("cross", "in")
SCHEDULERS = ("constant", "cosine")
OPTIMIZERS = ("sgd", "adamw")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# Settings a resumed run may change: they do not alter what the optimizer sees step by step.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "workers", "device", "log_every", "save_every", "val_data", "amp"})


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
            (self.protocol in PROTOCOLS, f"protocol must be cross or in, got {self.protocol!r}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (DEVICE.fullmatch(str(self.device)) is not None, f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}"),
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

    def unresumable_changes(self, saved: Mapping[str, Any]) -> list[str]:
        """The settings in which this config differs from a checkpoint's ``saved`` one and that change what the
        optimizer sees step by step (a resume must keep them)."""
        mine = self.to_dict()
        return sorted(k for k in set(saved) | set(mine) if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k))


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
        except ValueError as exc:  # UnicodeDecodeError too: a binary file
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
    try:
        if "model" in data:
            data["model"] = _model_dict(data["model"])
        for key, value in data.items():  # YAML 1.1 reads 1e-3 as a string; ints are fine where floats go
            if isinstance(getattr(base, key), float) and isinstance(value, (int, str)) and not isinstance(value, bool):
                data[key] = float(value)
        return dataclasses.replace(base, **data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad training setting: {exc}") from None
