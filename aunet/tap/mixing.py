"""Tampered AU Prediction, feature level (section 3.3): Feature-level Mixing and token labels."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

Lambda = Union[float, torch.Tensor]


def _per_sample(value: Lambda, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A float or a [B] tensor as [B, 1, 1, 1] on like's device and dtype."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"a mixing weight must be a float or a [{batch}] tensor, got shape {tuple(t.shape)}")
    return t.view(batch, 1, 1, 1)


def _masked_stats(f: torch.Tensor, mask: torch.Tensor, area: torch.Tensor, eps: float):
    """Eqs. 10-11: channel-wise mean and std over the masked region -> [B, C, 1, 1] each."""
    mu = (f * mask).sum(dim=(2, 3), keepdim=True) / area
    var = ((f - mu) ** 2 * mask).sum(dim=(2, 3), keepdim=True) / area
    return mu, torch.sqrt(var + eps)


def feature_mix(
    f_real: torch.Tensor,
    f_fake: torch.Tensor,
    mask: torch.Tensor,
    lambdas: Sequence[Lambda],
    eps: float = 1e-6,
) -> torch.Tensor:
    """Feature-level Mixing, exactly Eqs. 10-17: mix the real features' statistics into the fake features'
    tampered region M'_p; the rest of the fake feature is unchanged.

    f_real, f_fake [B, C, H, W]; mask [B, 1, H, W] (M_p resized to the feature size); lambdas (λ1, λ2, λ3),
    each a float or a [B] tensor. ε is added to the variance inside the square root (Eq. 11). An empty mask
    leaves the fake feature as it is.
    """
    if f_real.shape != f_fake.shape:
        raise ValueError(f"real and fake features differ in shape: {tuple(f_real.shape)} vs {tuple(f_fake.shape)}")
    b, _, h, w = f_fake.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(f"mask must be [{b}, 1, {h}, {w}], got {tuple(mask.shape)}")
    if len(lambdas) != 3:
        raise ValueError("lambdas must be (λ1, λ2, λ3)")
    mask = mask.to(f_fake.dtype)
    l1, l2, l3 = (_per_sample(v, b, f_fake) for v in lambdas)
    # Guard only the empty mask: for any non-empty mask the area is used exactly.
    area = mask.sum(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(f_fake.dtype).tiny)
    mu_r, sigma_r = _masked_stats(f_real, mask, area, eps)
    mu_f, sigma_f = _masked_stats(f_fake, mask, area, eps)
    norm_r = (f_real - mu_r) * mask / sigma_r  # Eq. 12
    norm_f = (f_fake - mu_f) * mask / sigma_f
    mu_s = l1 * mu_f + (1 - l1) * mu_r  # Eq. 13
    sigma_s = l2 * sigma_f + (1 - l2) * sigma_r  # Eq. 14
    norm_s = l3 * norm_f + (1 - l3) * norm_r  # Eq. 15
    region = sigma_s * norm_s + mu_s * mask  # Eq. 16
    return f_fake * (1 - mask) + region  # Eq. 17


def sample_mix_lambdas(batch: int, alpha: float = 0.1, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(λ1, λ2, λ3), each [B], from torch's global RNG (seeded and checkpointed by the trainer).

    The paper draws them from "a beta distribution" and wants *harder fakes*. A TAP fake equals its real image
    outside M_p and differs inside mostly by colour and frequency statistics, so a weight near 0 — frequent
    under a U-shaped Beta(0.1, 0.1) — copies the real's statistics (λ1, λ2) or content (λ3) into the fake and
    leaves a real feature labelled fake: the class loss then stays at ln 2. Each λ is therefore
    max(b, 1 - b) with b ~ Beta(α, α): anywhere from an untouched fake (1) to an even mix (0.5), never more real
    than fake. α = 0.1 as in MixStyle, the statistics mixing that Feature-level Mixing extends.
    """
    b = torch.distributions.Beta(float(alpha), float(alpha)).sample((3, batch))
    lam = torch.maximum(b, 1 - b)
    lam = lam.to(device) if device is not None else lam
    return lam[0], lam[1], lam[2]


class FeatureMixing:
    """A stage hook (see aunet.model.aunet.StageHook) applying feature_mix at one stage.

    The batch holds real images in its first half and their TAP fakes, pair by pair, in the second half.
    ``mask`` is M_p of the fakes [B/2, 1, S, S] at image size; it is area-resized to each stage's size.
    """

    def __init__(self, stage: int, mask: torch.Tensor, lambdas: Sequence[Lambda], eps: float = 1e-6):
        self.stage = stage
        self.mask = mask
        self.lambdas = lambdas
        self.eps = eps

    def __call__(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        if stage != self.stage:
            return x
        half = x.shape[0] // 2
        if x.shape[0] != 2 * half or self.mask.shape[0] != half:
            raise ValueError("Feature-level Mixing needs a batch of real images followed by their fakes")
        mask = F.adaptive_avg_pool2d(self.mask.to(x.dtype), x.shape[-2:])
        mixed = feature_mix(x[:half], x[half:], mask, self.lambdas, self.eps)
        return torch.cat([x[:half], mixed], dim=0)
