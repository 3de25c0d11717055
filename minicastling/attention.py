"""Attention as formulas: the O(N²) reference, linear-angular attention in O(N); the softmax module.

Functional forms act per head on q (…, N, d), k (…, M, d), v (…, M, dv); modules act on tokens
x (B, N, C). The castling module, which computes linear-angular attention inside a transformer
layer, is in castling.py. Introduced in tutorials 01 and 03.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .similarity import EPS, check_pair, get_similarity, l2_normalize

FORMS = ("official", "kernel")  # the two readings of the linear term: the authors' code, the kernel average


def attention_weights(q: torch.Tensor, k: torch.Tensor, similarity="softmax") -> torch.Tensor:
    """Row-normalised kernel weights sim(q_i, k_j) / Σ_j sim(q_i, k_j): (…, N, M).

    For "softmax" this is softmax(QKᵀ/√d), computed as torch.softmax does (the largest score
    subtracted first), so that large scores do not overflow exp: the one softmax helper of the package.
    """
    if similarity == "softmax":
        check_pair(q, k)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (…, N, M)
    scores = get_similarity(similarity)(q, k)  # (…, N, M)
    return scores / scores.sum(dim=-1, keepdim=True)


def quadratic_attention(q, k, v, similarity="softmax") -> torch.Tensor:
    """Explicit O(N²) attention as Nadaraya–Watson kernel smoothing: o_i = Σ_j w_ij v_j.

    `similarity` is a name from similarity.SIMILARITIES or a function (q, k) -> (…, N, M).
    With "softmax" this is softmax(QKᵀ/√d)V (tutorial 01): the reference other forms are checked
    against. It builds the N×M matrix, so memory grows as N².
    """
    check_qkv(q, k, v)
    return attention_weights(q, k, similarity) @ v  # (…, N, dv)


def linear_angular_attention(q, k, v, form="official", auxiliary=None, eps=EPS) -> torch.Tensor:
    """Linear-angular attention in O(N d²): K̂ᵀV (d × dv) first, then each query (tutorial 03).

    form="kernel": exactly the row-normalised linear angular kernel ½ + q̂·k̂/π,
        o_i = (½ Σ_j v_j + (1/π) q̂_iᵀ(K̂ᵀV)) / (M/2 + (1/π) q̂_i·Σ_j k̂_j);
        equals quadratic_attention(q, k, v, "angular-linear").
    form="official": as the authors' released code computes it (the name means only that, not the paper's
        final block, which is not published), and not a weighted average:
        o_i = normalize(½ v_i + (1/π) q̂_iᵀ(K̂ᵀV) + auxiliary_i) over head_dim; needs M == N.
    `auxiliary` (…, N, dv), the weighted masked-softmax branch, is added where the authors add it:
    before the normalisation (official) or to the average (kernel). This is the readable form; the
    fast paths (minicastling.fast) compute the same numbers. Sums over tokens run in float32 (float64
    stays float64), also under autocast, where fp16 sums would overflow; the result has v's dtype.
    """
    check_qkv(q, k, v)
    check_form(form)
    if form == "official" and q.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"form='official' adds ½·v_i to query i, so it needs as many queries as values; got "
            f"q {tuple(q.shape)} and v {tuple(v.shape)}. Use form='kernel' for cross-attention"
        )
    dtype = v.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in (q, k, v))
        q_hat, k_hat = l2_normalize(q, eps), l2_normalize(k, eps)  # (…, N, d), (…, M, d)
        kv = k_hat.transpose(-2, -1) @ v  # (…, d, dv): K̂ᵀV, the O(M d dv) step
        if form == "kernel":
            numerator = 0.5 * v.sum(dim=-2, keepdim=True) + q_hat @ kv / math.pi  # (…, N, dv)
            denominator = 0.5 * k.shape[-2] + q_hat @ k_hat.sum(dim=-2).unsqueeze(-1) / math.pi  # (…, N, 1)
            out = numerator / denominator
            if auxiliary is not None:
                out = out + auxiliary
        else:
            out = 0.5 * v + q_hat @ kv / math.pi  # (…, N, dv)
            if auxiliary is not None:
                out = out + auxiliary
            out = l2_normalize(out, eps)
    return out.to(dtype)


class MultiHeadTokens(nn.Module):
    """What every attention module shares: tokens (B, N, C) → q, k, v per head → projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, proj_drop: float = 0.0):
        super().__init__()
        if not (isinstance(dim, int) and isinstance(num_heads, int) and dim > 0 and num_heads > 0):
            raise ValueError(f"dim and num_heads must be positive ints, got dim={dim!r}, num_heads={num_heads!r}")
        if dim % num_heads:
            fits = [h for h in range(1, min(dim, 16) + 1) if dim % h == 0]
            raise ValueError(
                f"dim={dim} is not divisible by num_heads={num_heads}; each head gets dim/num_heads "
                f"channels. Pick num_heads from {fits} or change dim"
            )
        self.dim, self.num_heads = dim, num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) → the fused q, k, v projection (B, N, 3C)."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}(dim={self.dim}) expects tokens of shape (batch, tokens, {self.dim}), "
                f"got {tuple(x.shape)}"
            )
        return self.qkv(x)

    def heads(self, qkv: torch.Tensor):
        """q, k, v (B, H, N, d): views of the projection (B, N, 3C), split into heads.

        Here and in merge, view/permute rather than einops: these run in every layer's forward,
        where einops' pattern handling costs about as much as the copy it describes.
        """
        b, n, _ = qkv.shape
        return qkv.view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # "b n (3 h d) -> 3 b h n d"

    def split_qkv(self, x: torch.Tensor):
        """Tokens (B, N, C) → q, k, v (B, H, N, d)."""
        return self.heads(self.project(x))

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """Heads (B, H, N, d) → projected tokens (B, N, C); the reshape is free if `out` is token-major."""
        b, h, n, d = out.shape
        out = out.transpose(1, 2).reshape(b, n, h * d)  # "b h n d -> b n (h d)"
        return self.proj_drop(self.proj(out))


class SoftmaxAttention(MultiHeadTokens):
    """Standard multi-head softmax attention via torch's scaled_dot_product_attention.

    The twin CastlingAttention is compared against: same projections, same interface.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_qkv(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v))


def check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use 'official' (authors' code) or 'kernel' (exact kernel)")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v need the same number of axes, at least (tokens, head_dim); got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share head_dim (last axis); got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of tokens (axis -2); got {shapes}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q, k, v must share their leading (batch, head) axes; got {shapes}")
