"""Model configuration (torch-free, so the runtime and the CLIs can read it without torch)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

SCORE_FUSIONS = ("cls", "patch_max", "cls_patchmax")
AU_EMBEDDINGS = ("fast", "naive")


def xception_feature_grid(img_size: int) -> int:
    """Side of the feature map that Xception's block3..block11 produce for a square input.

    conv1 (3x3, stride 2, no padding), conv2 (3x3, no padding), then three stride-2 blocks whose
    MaxPool(3, 2, padding 1) maps n -> ceil(n / 2). 224 -> 14, 384 -> 24 (the paper's Fig. 5), 112 -> 7.
    """
    n = (img_size - 3) // 2 + 1 - 2
    for _ in range(3):
        n = (n + 1) // 2
    return n


@dataclass(frozen=True)
class ModelConfig:
    """AUNet hyper-parameters; the defaults are the paper's (section 3 and 4.1)."""

    name: str = "paper"
    img_size: int = 224
    # Xception blocks kept: the paper cuts after block11 (stride 16, 728 channels). Any depth >= 3 keeps both.
    backbone_depth: int = 11
    # ImageNet weights for the backbone: a local file, "imagenet" (timm's hub, when online) or "none".
    backbone_weights: str = "imagenet"
    num_aus: int = 15  # K, the AU-related regions of the attention module
    num_encoders: int = 3
    att_channels: int = 128  # width of the attention module's two 3x3 convs
    embed_dim: int = 256  # C', the AU-agnostic branch's token width
    num_heads: int = 8
    mlp_ratio: float = 4.0
    # Width of the first of Eq. 7's two 3x3 fusion convs: 0 = C (728), the paper's. Those convs are about two
    # thirds of the small config's cost, so it narrows them to train faster on CPUs.
    fusion_channels: int = 0
    # "fast": the exact GAP∘Conv rewrite of Eq. 2 (one small matmul); "naive": K full 3x3 convolutions.
    au_embedding: str = "fast"
    # How `score` (the fake probability) is fused from the class token and the patch tokens:
    #   cls          p_cls
    #   patch_max    max over patch tokens of p_patch
    #   cls_patchmax score_cls_weight * p_cls + (1 - score_cls_weight) * max_j p_patch_j
    score_fusion: str = "cls_patchmax"
    score_cls_weight: float = 0.5
    eps: float = 1e-6  # guard of the AU-importance denominator (Eq. 4)

    def __post_init__(self) -> None:
        if self.backbone_depth < 3 or self.backbone_depth > 11:
            raise ValueError(f"backbone_depth must be in 3..11 (728 channels at stride 16), got {self.backbone_depth}")
        if self.grid < 2:
            raise ValueError(f"img_size {self.img_size} is too small: the feature map would be {self.grid}x{self.grid}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(f"score_fusion must be one of {SCORE_FUSIONS}, got {self.score_fusion!r}")
        if not 0.0 <= self.score_cls_weight <= 1.0:
            raise ValueError(f"score_cls_weight must be in [0, 1], got {self.score_cls_weight}")
        if self.au_embedding not in AU_EMBEDDINGS:
            raise ValueError(f"au_embedding must be one of {AU_EMBEDDINGS}, got {self.au_embedding!r}")
        if self.fusion_channels < 0:
            raise ValueError(f"fusion_channels must be >= 0 (0 = {self.channels}), got {self.fusion_channels}")
        if self.num_aus < 1 or self.num_encoders < 1:
            raise ValueError("num_aus and num_encoders must be positive")

    @property
    def channels(self) -> int:
        """C: channels of the backbone feature map F."""
        return 728

    @property
    def grid(self) -> int:
        """Side of the patch-token grid (sqrt(n)); 14 at 224."""
        return xception_feature_grid(self.img_size)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def named(cls, name: str) -> "ModelConfig":
        """A named configuration: "paper" (the defaults) or "small" (tests, CPU demo)."""
        try:
            return NAMED_CONFIGS[name]
        except KeyError:
            raise ValueError(f"unknown config {name!r}; known: {', '.join(NAMED_CONFIGS)}") from None


NAMED_CONFIGS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    # Same architecture, fewer Xception blocks, narrower tokens and fusion convs, 112x112 faces (7x7 patch
    # grid): fast enough to train for a few minutes on a 2-core CPU.
    "small": ModelConfig(
        name="small",
        img_size=112,
        backbone_depth=4,
        backbone_weights="none",
        att_channels=32,
        embed_dim=64,
        num_heads=4,
        mlp_ratio=2.0,
        fusion_channels=128,
    ),
}


def resolve_config(cfg: "ModelConfig | str | Mapping[str, Any] | None") -> ModelConfig:
    """Accept a ModelConfig, a named config, a dict (e.g. from a checkpoint) or None (the paper's)."""
    if cfg is None:
        return ModelConfig()
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, str):
        return ModelConfig.named(cfg)
    if isinstance(cfg, Mapping):
        return ModelConfig.from_dict(cfg)
    raise TypeError(f"expected ModelConfig, config name or mapping, got {type(cfg).__name__}")
