"""Training losses (kept out of the model, as timm does): Eqs. 1, 19 and 20."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aunet.model import AUNetOutput


@dataclass(frozen=True)
class LossWeights:
    """λc, λt, λa of Eq. 20 and the Huber δ of Eq. 1; the defaults are the paper's."""

    cls: float = 1.0
    token: float = 30.0
    att: float = 0.5
    huber_delta: float = 0.5


def attention_loss(au_maps: Sequence[torch.Tensor], y_att: torch.Tensor, delta: float = 0.5) -> torch.Tensor:
    """Eq. 1, Huber(M_AU - Y_Att) with δ = 0.5, averaged over pixels, AUs and the encoders' attention modules.

    y_att [B, K, H, W] is the ground-truth AU attention at the feature size.
    """
    if not au_maps:
        raise ValueError("attention_loss needs the encoders' M_AU (call the model with return_au_maps=True)")
    losses = []
    for m_au in au_maps:
        if m_au.shape != y_att.shape:
            raise ValueError(f"Y_Att shape {tuple(y_att.shape)} does not match M_AU {tuple(m_au.shape)}")
        losses.append(F.huber_loss(m_au.float(), y_att.float(), delta=delta))
    return torch.stack(losses).mean()


def token_loss(patch_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 19: softmax cross-entropy of the shared patch head against the token labels, mean over n and B."""
    return F.cross_entropy(patch_logits.float().flatten(0, 1), labels.flatten())


class AUNetLoss(nn.Module):
    """Eq. 20: L = λc L_cls + λt L_token + λa L_att. Returns a dict with each term and the total.

    Pass token_labels=None to drop L_token (the in-dataset protocol trains ART without TAP), y_att=None to
    drop L_att (no landmarks).
    """

    def __init__(self, weights: LossWeights = LossWeights()):
        super().__init__()
        self.weights = weights

    def forward(
        self,
        out: AUNetOutput,
        labels: torch.Tensor,
        token_labels: Optional[torch.Tensor] = None,
        y_att: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        w = self.weights
        terms = {"cls": F.cross_entropy(out.cls_logits.float(), labels)}
        total = w.cls * terms["cls"]
        if token_labels is not None:
            terms["token"] = token_loss(out.patch_logits, token_labels)
            total = total + w.token * terms["token"]
        if y_att is not None:
            terms["att"] = attention_loss(out.au_maps or (), y_att, w.huber_delta)
            total = total + w.att * terms["att"]
        terms["total"] = total
        return terms
