"""Xception (timm's ``legacy_xception``) cut after block11: stride 16, 728 channels; its ImageNet weights and
where they came from (a file and its sha256, timm's hub, or random init)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

TIMM_NAME = "legacy_xception"
_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")  # torch.hub names: <name>-<sha256 prefix>.<ext>
# Keys of timm's checkpoint that the cut backbone drops (block12 and the 1/32 head).
_DROPPED_PREFIXES = ("block12.", "conv3.", "bn3.", "conv4.", "bn4.", "fc.")


class XceptionBackbone(nn.Module):
    """conv1/conv2 stem and Xception blocks 1..depth, with timm's module names (so timm weights load)."""

    def __init__(self, depth: int = 11):
        super().__init__()
        import timm  # the training extra; imported here so `import aunet` stays light

        full = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0)
        self.depth = depth
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2"):
            setattr(self, name, getattr(full, name))
        self.blocks = nn.ModuleList(getattr(full, f"block{i}") for i in range(1, depth + 1))
        self.out_channels = 728

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(x)))

    def load_timm_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a full legacy_xception state dict (timm names), keeping the layers up to block{depth}."""
        mapped = {}
        for key, value in state.items():
            if key.startswith("block"):
                index, rest = key[len("block"):].split(".", 1)
                if int(index) > self.depth:
                    continue
                mapped[f"blocks.{int(index) - 1}.{rest}"] = value
            elif not key.startswith(_DROPPED_PREFIXES):
                mapped[key] = value
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"not a legacy_xception checkpoint: {len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )


class BackboneWeightsError(RuntimeError):
    """ImageNet weights that were asked for and cannot be had: a missing or foreign file, or timm's hub out of
    reach. A run never falls back to random init on its own; ``backbone_weights="none"`` asks for it."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.bin or .safetensors file (a {'state_dict': ...} wrapper is unwrapped),
    read as weights only: a file that would run code to load is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a weights file, truncated, or one that holds more than tensors
        raise BackboneWeightsError(f"cannot read backbone weights {path}: {type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def hub_provenance(pretrained_cfg: Any) -> dict[str, Any]:
    """Where timm's hub weights come from: the model name, timm's tag, its URL or Hugging Face id, and the
    sha256 prefix that torch.hub file names carry (``xception-43020ad28.pth``) where there is one."""
    import timm

    cfg = pretrained_cfg if isinstance(pretrained_cfg, Mapping) else dict(getattr(pretrained_cfg, "__dict__", {}))
    prov: dict[str, Any] = {"source": "hub", "timm_name": TIMM_NAME, "timm_version": timm.__version__}
    for key in ("tag", "hf_hub_id", "url"):
        if cfg.get(key):
            prov[key] = str(cfg[key])
    match = _HUB_HASH.search(str(cfg.get("url") or ""))
    if match:
        prov["sha256_prefix"] = match.group(1)
    return prov


@dataclass(frozen=True)
class PretrainedBackbone:
    """ImageNet weights for an XceptionBackbone (its own key names; None: random init) and their provenance:
    ``{"source": "file", "file": name, "sha256": ...}``, ``{"source": "hub", "timm_name": ..., ...}`` or
    ``{"source": "random"}``."""

    state: Optional[dict[str, torch.Tensor]]
    provenance: dict[str, Any]

    def apply(self, model: nn.Module) -> None:
        """Load the weights into ``model.backbone`` and record where they came from on the model."""
        if self.state is not None:
            model.backbone.load_state_dict(self.state)
        model.backbone_provenance = dict(self.provenance)


def fetch_pretrained(source: str, depth: int) -> PretrainedBackbone:
    """The backbone weights ``source`` names, checked against an Xception cut after block{depth}: a local file,
    "imagenet" (timm's hub) or "none" (random init). BackboneWeightsError when they cannot be had."""
    if source == "none":
        return PretrainedBackbone(None, {"source": "random"})
    if source == "imagenet":
        try:
            import timm

            full = timm.create_model(TIMM_NAME, pretrained=True, num_classes=0)
        except Exception as exc:  # offline, hub unreachable, corrupt cache
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackboneWeightsError(
                f"ImageNet weights for {TIMM_NAME} could not be fetched from timm's hub ({type(exc).__name__}"
                f"{': ' + reason[:200] if reason else ''}): pass a local file with --backbone-weights FILE "
                "(e.g. xception-43020ad28.pth), or --backbone-weights none to train from random init") from None
        timm_state, provenance = full.state_dict(), hub_provenance(getattr(full, "pretrained_cfg", {}))
    else:
        from aunet.artifacts import file_sha256

        timm_state = read_state_dict(source)
        provenance = {"source": "file", "file": Path(source).name, "sha256": file_sha256(source)}
    backbone = XceptionBackbone(depth)
    try:
        backbone.load_timm_state_dict(timm_state)
    except ValueError as exc:
        raise BackboneWeightsError(f"backbone weights {source}: {exc}") from None
    return PretrainedBackbone(backbone.state_dict(), provenance)


def describe_provenance(provenance: Optional[Mapping[str, Any]]) -> str:
    """One line for a run's log: where the backbone's initial weights came from."""
    p = dict(provenance or {})
    if p.get("source") == "file":
        return f"ImageNet weights from the file {p.get('file')} (sha256 {p.get('sha256')})"
    if p.get("source") == "hub":
        name = ".".join(x for x in (p.get("timm_name"), p.get("tag")) if x)
        digest = f", sha256 {p['sha256_prefix']}..." if p.get("sha256_prefix") else ""
        return f"ImageNet weights from timm's hub ({name}{digest})"
    if p.get("source") == "random":
        return "random init (backbone_weights none)"
    return "unknown (a checkpoint that does not record it)"
