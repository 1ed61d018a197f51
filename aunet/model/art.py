"""The AU Relation Transformer (ART) encoder, section 3.2 of the paper, and its building blocks."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class AttentionModule(nn.Module):
    """Two 3x3 convs, a 1x1 conv with K filters and a sigmoid: M_AU [B, K, H, W]."""

    def __init__(self, channels: int, hidden: int, num_aus: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, hidden), conv_bn_relu(hidden, hidden))
        self.out = nn.Conv2d(hidden, num_aus, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.body(f)))


def _window_masks(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[3, size]: which rows of the unpadded map each of the three 3x3-conv row offsets covers.

    With zero padding 1, offset u reads padded rows u..u+size-1, i.e. unpadded rows u-1..u+size-2 clipped:
    offset 0 drops the last row, offset 1 keeps all, offset 2 drops the first.
    """
    idx = torch.arange(size, device=device)
    return torch.stack([idx <= size - 2, torch.ones_like(idx, dtype=torch.bool), idx >= 1]).to(dtype)


class AUEmbedding(nn.Module):
    """Eq. 2: E_i = GAP(Conv3x3(F ⊙ M_i + F)), i = 1..K  ->  [B, K, C].

    GAP∘Conv is linear, so GAP(Conv(X)) = W · S(X) + b, where S(X)[c, u, v] is the mean of the zero-padded X
    over the HxW window at offset (u, v). With X_i = F ⊙ (1 + M_i), S(X_i) is one batched matmul of F with the
    K*9 border-aware windows weighted by (1 + M_i), and E is one [K, 9C] x [9C, C] matmul: about 0.2 GFLOPs per
    encoder at 224 instead of about 28 for K full convolutions. ``naive`` runs those K convolutions (the
    reference and the benchmark's baseline); both use the same weights.
    """

    def __init__(self, channels: int, mode: str = "fast"):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.mode = mode

    def forward(self, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.forward_naive(f, m) if self.mode == "naive" else self.forward_fast(f, m)

    def forward_naive(self, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        k = m.shape[1]
        x = f.unsqueeze(1) * (1 + m.unsqueeze(2))  # [B, K, C, H, W]
        return self.conv(x.reshape(b * k, c, h, w)).mean((2, 3)).view(b, k, c)

    def forward_fast(self, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        k = m.shape[1]
        rows = _window_masks(h, f.device, f.dtype)  # [3, H]
        cols = _window_masks(w, f.device, f.dtype)  # [3, W]
        win = (rows[:, None, :, None] * cols[None, :, None, :]).reshape(1, 1, 9, h * w) / (h * w)
        q = (1 + m).reshape(b, k, 1, h * w) * win  # [B, K, 9, HW]: window means of F ⊙ (1 + M_i)
        s = torch.bmm(q.reshape(b, k * 9, h * w), f.reshape(b, c, h * w).transpose(1, 2))  # [B, 9K, C]
        weight = self.conv.weight.permute(0, 2, 3, 1).reshape(c, 9 * c)  # [C_out, (u, v, c_in)]
        return s.reshape(b, k, 9 * c) @ weight.t() + self.conv.bias


def au_importance(e: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eqs. 3-4 without forming A: W_i = Σ_j E_i·E_j / Σ_i Σ_j E_i·E_j = (E_i·s) / ‖s‖², s = Σ_j E_j.

    e [B, K, C] -> W [B, K]. Both factors are scaled to max-abs 1 before any product, so every dot product is
    bounded by C (728 at most) and cannot overflow float16; the denominator is guarded for s = 0.
    """
    e_n = e / e.abs().amax(dim=(1, 2), keepdim=True).clamp_min(eps)  # |e_n| <= 1
    t = e_n.sum(dim=1)  # s / scale(e), |t| <= K
    t_scale = t.abs().amax(dim=-1, keepdim=True).clamp_min(eps)
    t_n = t / t_scale  # |t_n| <= 1 and max |t_n| = 1 unless s = 0
    num = (e_n * t_n.unsqueeze(1)).sum(-1)  # E_i·s / (scale(e)² · t_scale)
    # ‖t_n‖² >= 1 whenever s != 0, so the clamp only acts for s = 0 (then W = 0 instead of 0/0).
    den = (t_n * t_n).sum(-1, keepdim=True).clamp_min(1.0) * t_scale  # ‖s‖² / (scale(e)² · t_scale)
    return num / den


class AUImportance(nn.Module):
    """au_importance as a module, so that its exported nodes carry a stable name scope (``.../importance/...``):
    precision tools keep this normalization in float32 by that name."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return au_importance(e, self.eps)


class TokenEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (Eq. 6): x' = LN(x + MSA(x)), x_o = LN(x' + FFN(x')).

    Written out (rather than nn.TransformerEncoderLayer) so that there is no eval fast path to dodge at
    export, and so that q is scaled before q·k (float16-safe attention logits).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.mlp(x))


class TokenBranch(nn.Module):
    """1x1 conv C -> C', patch tokens plus a learnable class token and position embedding, one post-norm
    transformer layer. Returns the tokens [B, 1 + n, C'] (class token first, patches row-major)."""

    def __init__(self, channels: int, dim: int, num_patches: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.proj_in = nn.Conv2d(channels, dim, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, dim))
        self.layer = TokenEncoderLayer(dim, num_heads, mlp_ratio)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        patches = self.proj_in(f).flatten(2).transpose(1, 2)  # [B, HW, C']
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return self.layer(torch.cat([cls, patches], dim=1) + self.pos_embed)


class ARTEncoder(nn.Module):
    """One ART encoder (Fig. 3): AU-specific branch, AU-agnostic branch, fusion (Eq. 7)."""

    def __init__(
        self,
        channels: int,
        num_aus: int,
        att_channels: int,
        dim: int,
        num_patches: int,
        num_heads: int,
        mlp_ratio: float,
        au_embedding: str = "fast",
        eps: float = 1e-6,
        fusion_channels: int = 0,
    ):
        super().__init__()
        # AU-specific branch
        self.attention = AttentionModule(channels, att_channels, num_aus)
        self.au_embed = AUEmbedding(channels, au_embedding)
        self.importance = AUImportance(eps)
        # AU-agnostic branch
        self.tokens = TokenBranch(channels, dim, num_patches, num_heads, mlp_ratio)
        self.proj_out = nn.Conv2d(dim, channels, 1)
        # Feature integration, Eq. 7: two 3x3 convs on F_S + F_A (C -> fusion_channels -> C; 0 = C, the paper's)
        mid = fusion_channels or channels
        self.fuse = nn.Sequential(conv_bn_relu(channels, mid), conv_bn_relu(mid, channels))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f [B, C, H, W] -> (F_out [B, C, H, W], M_AU [B, K, H, W])."""
        b, _, h, w = f.shape
        m_au = self.attention(f)
        e = self.au_embed(f, m_au)  # [B, K, C]
        imp = self.importance(e)  # [B, K], Eqs. 3-4
        m_i = (imp[:, :, None, None] * m_au).amax(dim=1, keepdim=True)  # Eq. 5
        f_s = m_i * f
        tokens = self.tokens(f)
        f_a = self.proj_out(tokens[:, 1:].transpose(1, 2).reshape(b, -1, h, w))
        return self.fuse(f_s + f_a), m_au


def init_weights(module: nn.Module) -> None:
    """timm-style init for the non-backbone layers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


__all__ = [
    "ARTEncoder",
    "AUEmbedding",
    "AUImportance",
    "AttentionModule",
    "TokenBranch",
    "TokenEncoderLayer",
    "au_importance",
    "init_weights",
]
