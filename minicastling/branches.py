"""The two branches that stand in for the angular kernel's high-order residual.

The abstract: "we adopt two parameterized modules to approximate high-order residuals: a depthwise
convolution and an auxiliary masked softmax attention". A depthwise convolution on V, as the authors'
code applies it, and the masked softmax branch, present during training only. Introduced in tutorial 04.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention_weights


def masked_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, threshold: float = 0.02
) -> torch.Tensor:
    """(M ⊙ softmax(QKᵀ/√d)) V with M = [softmax > threshold]: the auxiliary sparse branch.

    As in the authors' code the mask is boolean, so no gradient flows through it; only the
    attention weights above the threshold pass their gradient. F.threshold keeps a weight where it
    is above the threshold and puts 0 elsewhere: the mask and the product in one pass, with
    exactly that gradient. O(N²): training only.
    """
    attn = attention_weights(q, k, "softmax")  # (…, N, M)
    return F.threshold(attn, threshold, 0.0) @ v  # (…, N, dv)


class TokenConv1d(nn.Module):
    """The authors' DWConv: a (k, 1) kernel along the flattened token axis of V.

    One filter per head, shared across head_dim: the authors read V (B, H, N, d) as an image with
    H channels and N × d pixels. Token order is row-major, so the window wraps across grid rows.
    The weight keeps their shape (H, 1, k, 1); the convolution runs with each head's filter copied
    to its d channels over token-major memory (channels-last), the layout depthwise kernels are
    fast in and the one the attention output is merged from, so no copy goes back and forth.
    """

    def __init__(self, num_heads: int, kernel_size: int = 9):
        super().__init__()
        _check_odd(kernel_size)
        self.conv = nn.Conv2d(
            num_heads, num_heads, (kernel_size, 1), padding=(kernel_size // 2, 0),
            groups=num_heads, bias=False,
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, h, n, d = v.shape
        # view/permute rather than einops here, as in attention.MultiHeadTokens.heads
        tokens = v.transpose(1, 2).reshape(b, n, 1, h * d).permute(0, 3, 1, 2)  # "b h n d -> b (h d) n 1"
        tokens = tokens.contiguous(memory_format=torch.channels_last)  # a no-op for token-major v
        kernel = self.conv.weight.shape[2]
        weight = self.conv.weight.expand(h, d, kernel, 1).reshape(h * d, 1, kernel, 1)  # each head's filter, d times
        out = F.conv2d(tokens, weight, padding=self.conv.padding, groups=h * d)  # (B, C, N, 1), channels-last
        return out.permute(0, 2, 3, 1).view(b, n, h, d).transpose(1, 2)  # (B, H, N, d) view of token-major memory


class GridConv2d(nn.Module):
    """A k × k depthwise conv over the √N × √N token grid, one filter per channel.

    The 2-D alternative (as in FLatten Transformer): neighbours are spatial, not row-major.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3):
        super().__init__()
        _check_odd(kernel_size)
        self.num_heads = num_heads
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        tokens = v.shape[-2]
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(
                f"conv='2d' needs a square grid of tokens, got N={tokens}, which is not a perfect "
                "square; use conv='1d', or feed patch tokens of an h×w grid with h == w "
                "(no class token)"
            )
        b, h, n, d = v.shape
        grid = v.transpose(1, 2).reshape(b, side, side, h * d).permute(0, 3, 1, 2)  # "b h (y x) d -> b (h d) y x"
        grid = self.conv(grid.contiguous(memory_format=torch.channels_last))  # token-major, as TokenConv1d
        return grid.permute(0, 2, 3, 1).reshape(b, n, h, d).transpose(1, 2)  # "b (h d) y x -> b h (y x) d"


CONV_BRANCHES = {"1d": 9, "2d": 3}  # kind -> default kernel size


def make_conv_branch(kind: str | None, dim: int, num_heads: int, kernel_size: int | None = None):
    """The DWConv branch by name: '1d' (authors'), '2d' (token grid) or None (no branch)."""
    if kind is None:
        return None
    if kind not in CONV_BRANCHES:
        raise ValueError(f"unknown conv {kind!r}; use '1d' (authors' code), '2d' (token grid) or None")
    size = CONV_BRANCHES[kind] if kernel_size is None else kernel_size
    return TokenConv1d(num_heads, size) if kind == "1d" else GridConv2d(dim, num_heads, size)


def _check_odd(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"conv kernel_size must be a positive odd int so the output keeps N tokens, got {kernel_size!r}"
        )
