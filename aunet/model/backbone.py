"""Xception (timm's ``legacy_xception``) cut after block11: stride 16, 728 channels."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

TIMM_NAME = "legacy_xception"
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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.bin or .safetensors file (a {'state_dict': ...} wrapper is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_pretrained(backbone: XceptionBackbone, source: str) -> str:
    """Load ImageNet weights from a local file or timm's hub; fall back to random init with one warning.

    Returns what was loaded: the file path, "timm-hub", or "random".
    """
    if source == "none":
        return "random"
    if source != "imagenet":
        backbone.load_timm_state_dict(read_state_dict(source))
        return str(source)
    try:
        import timm

        full = timm.create_model(TIMM_NAME, pretrained=True, num_classes=0)
    except Exception as exc:  # offline, hub unreachable, corrupt cache: training still starts
        warnings.warn(
            f"ImageNet weights for {TIMM_NAME} could not be fetched ({type(exc).__name__}); the backbone starts "
            "from random init. Pass a local weights file (backbone_weights / --backbone-weights) to use them.",
            stacklevel=3,
        )
        return "random"
    backbone.load_timm_state_dict(full.state_dict())
    return "timm-hub"
