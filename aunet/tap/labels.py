"""Per-token tamper labels (Eq. 18): a patch token is fake when more than half of its region was tampered."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def token_labels(mask: torch.Tensor, grid: int, threshold: float = 0.5) -> torch.Tensor:
    """Eq. 18: M_p [B, 1, H, W] in [0, 1], area-averaged to grid x grid, label = (y' > t) -> int64 [B, grid²]
    (row-major, the patch tokens' order). Real images have an all-zero mask, hence all-zero labels."""
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be [B, 1, H, W], got {tuple(mask.shape)}")
    coarse = F.adaptive_avg_pool2d(mask.float(), grid)
    return (coarse > threshold).flatten(1).long()
