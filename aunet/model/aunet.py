"""AUNet: Xception up to block11, three ART encoders, a token read-out, class and patch-token heads."""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import torch
from torch import nn

from aunet.model.art import ARTEncoder, TokenBranch, init_weights
from aunet.model.backbone import XceptionBackbone, fetch_pretrained
from aunet.config import ModelConfig, resolve_config

# A training-time injection point (Feature-level Mixing): called with (stage index, features) after every
# stage, returns the features to continue with. Stages: 0 stem, 1..depth Xception blocks, then the encoders.
StageHook = Callable[[int, torch.Tensor], torch.Tensor]


class AUNetOutput(NamedTuple):
    cls_logits: torch.Tensor  # [B, 2]  (index 1 = fake)
    patch_logits: torch.Tensor  # [B, n, 2], patches row-major over the grid x grid feature map
    score: torch.Tensor  # [B] fake probability fused from both heads (cfg.score_fusion)
    au_maps: Optional[tuple[torch.Tensor, ...]] = None  # M_AU [B, K, H, W] of each encoder, on request


def fuse_score(cls_logits: torch.Tensor, patch_logits: torch.Tensor, fusion: str, cls_weight: float) -> torch.Tensor:
    """The fake probability from both heads (see ModelConfig.score_fusion).

    sigmoid(l1 - l0) is softmax(l)[1], without exponentials that can overflow in float16.
    """
    p_cls = torch.sigmoid(cls_logits[:, 1] - cls_logits[:, 0])
    if fusion == "cls":
        return p_cls
    p_patch = torch.sigmoid(patch_logits[..., 1] - patch_logits[..., 0]).amax(dim=1)
    if fusion == "patch_max":
        return p_patch
    return cls_weight * p_cls + (1.0 - cls_weight) * p_patch


class AUNet(nn.Module):
    """Images [B, 3, S, S] RGB in [0, 1] -> AUNetOutput. Normalization (Xception's mean = std = 0.5) is inside.

    The paper reads both heads from "the output of the last transformer block". Taken literally after the
    third encoder's own transformer, the third encoder's AU-specific branch and fusion would feed nothing. So
    the heads read a final token block of the AU-agnostic form (1x1 projection, class token, position
    embedding, one post-norm transformer layer) over the third encoder's fused output F_out: every encoder's
    both branches reach the class and patch tokens.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.backbone = XceptionBackbone(cfg.backbone_depth)
        c, n = cfg.channels, cfg.num_patches
        self.encoders = nn.ModuleList(
            ARTEncoder(
                c, cfg.num_aus, cfg.att_channels, cfg.embed_dim, n, cfg.num_heads, cfg.mlp_ratio,
                cfg.au_embedding, cfg.eps, cfg.fusion_channels,
            )
            for _ in range(cfg.num_encoders)
        )
        self.readout = TokenBranch(c, cfg.embed_dim, n, cfg.num_heads, cfg.mlp_ratio)
        self.cls_head = nn.Linear(cfg.embed_dim, 2)
        self.patch_head = nn.Linear(cfg.embed_dim, 2)  # shared by every patch token (Eq. 19)
        init_weights(self.encoders)
        init_weights(self.readout)
        init_weights(self.cls_head)
        init_weights(self.patch_head)
        # Where the backbone's initial weights came from (aunet.model.backbone.PretrainedBackbone); checkpoints
        # and the ONNX spec carry it.
        self.backbone_provenance: dict[str, Any] = {"source": "random"}

    @property
    def num_stages(self) -> int:
        return 1 + self.cfg.backbone_depth + self.cfg.num_encoders

    def forward_tokens(
        self, images: torch.Tensor, stage_hook: Optional[StageHook] = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (read-out tokens [B, 1 + n, C'], M_AU of each encoder)."""
        s = self.cfg.img_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(f"expected images [B, 3, {s}, {s}], got {list(images.shape)}")
        hook = stage_hook or (lambda _i, t: t)
        x = hook(0, self.backbone.stem((images - self.mean) / self.std))
        for i, block in enumerate(self.backbone.blocks, start=1):
            x = hook(i, block(x))
        au_maps = []
        for i, encoder in enumerate(self.encoders, start=1 + self.cfg.backbone_depth):
            x, m_au = encoder(x)
            x = hook(i, x)
            au_maps.append(m_au)
        return self.readout(x), au_maps

    def forward(
        self, images: torch.Tensor, *, return_au_maps: bool = False, stage_hook: Optional[StageHook] = None
    ) -> AUNetOutput:
        tokens, au_maps = self.forward_tokens(images, stage_hook)
        cls_logits = self.cls_head(tokens[:, 0])
        patch_logits = self.patch_head(tokens[:, 1:])
        score = fuse_score(cls_logits, patch_logits, self.cfg.score_fusion, self.cfg.score_cls_weight)
        return AUNetOutput(cls_logits, patch_logits, score, tuple(au_maps) if return_au_maps else None)


def build_model(cfg: "ModelConfig | str | Mapping[str, Any] | None" = None, *, pretrained: bool = False) -> AUNet:
    """Build AUNet from a ModelConfig, a named config ("paper", "small"), a dict, or None (the paper's).

    ``pretrained=True`` loads ImageNet weights into the backbone from ``cfg.backbone_weights``: a local file,
    "imagenet" (timm's hub, when online) or "none" (random init, asked for). Weights that cannot be had raise
    aunet.model.backbone.BackboneWeightsError; nothing falls back to random init unasked.
    ``model.backbone_provenance`` records where the weights came from.
    """
    cfg = resolve_config(cfg)
    model = AUNet(cfg)
    if pretrained:
        fetch_pretrained(cfg.backbone_weights, cfg.backbone_depth).apply(model)
    return model


def autocast_dtype(device: torch.device, enabled: bool = True) -> Optional[torch.dtype]:
    """The mixed-precision dtype for running AUNet on ``device``, or None for float32.

    CUDA only: bfloat16 where the GPU has it (Ampere and later, Jetson Orin) — float32's range, so no loss
    scaling and no overflow to inf in the 728-channel activations; float16 (with a GradScaler) on older GPUs."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """The autocast context for ``autocast_dtype``'s answer: mixed precision in ``dtype``, or off for None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
