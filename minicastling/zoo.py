"""A zoo of linear attentions behind one interface: a feature map φ, then O(N) attention.

Each kind computes o_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ Σ_j φ(k_j), the row-normalised kernel
φ(q)·φ(k) evaluated through K's summary first, like linear-angular attention (tutorial 03). Each is
checked against the explicit O(N²) form and can be the model's attention (`--attention relu`, …).
Castling-ViT's angular kernel is the member whose φ is exact up to order 0.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from functools import partial

from .attention import MultiHeadTokens, check_qkv
from .branches import make_conv_branch


def relu_features(x: torch.Tensor) -> torch.Tensor:
    """ReLU(x): EfficientViT's feature map (Cai et al., ICCV 2023)."""
    return F.relu(x)


def elu_features(x: torch.Tensor) -> torch.Tensor:
    """ELU(x) + 1: "Transformers are RNNs" (Katharopoulos et al., ICML 2020); always positive."""
    return F.elu(x) + 1


def focused_features(x: torch.Tensor, power: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """FLatten Transformer's focusing function (Han et al., ICCV 2023).

    f(x) = ‖ReLU(x)‖ · ReLU(x)^p / ‖ReLU(x)^p‖: keeps the norm, sharpens the direction towards the
    largest coordinates, so attention can focus without softmax.
    """
    positive = F.relu(x) + eps
    sharpened = positive**power
    return sharpened * (positive.norm(dim=-1, keepdim=True) / sharpened.norm(dim=-1, keepdim=True))


class PerformerFeatures(nn.Module):
    """FAVOR+ positive random features (Choromanski et al., ICLR 2021).

    φ(x) = exp(Wx − ‖x‖²/2) / √m with W (m × d) Gaussian, orthogonal blocks, so that
    E[φ(q)·φ(k)] = exp(q·k): softmax's kernel, in expectation. q and k are pre-scaled by d^(-1/4)
    so the estimate targets exp(q·k/√d). The random matrix is a buffer: fixed after construction.
    """

    def __init__(self, head_dim: int, num_features: int | None = None, seed: int = 0):
        super().__init__()
        m = num_features or 2 * head_dim
        generator = torch.Generator().manual_seed(seed)
        blocks, rows = [], 0
        while rows < m:
            gaussian = torch.randn(head_dim, head_dim, generator=generator)
            q, r = torch.linalg.qr(gaussian)
            q = q * torch.sign(torch.diagonal(r))  # sign fix: makes q Haar-distributed, so rows are uniform
            lengths = torch.randn(head_dim, head_dim, generator=generator).norm(dim=1)  # chi-distributed norms
            blocks.append(q * lengths[:, None])
            rows += head_dim
        self.register_buffer("projection", torch.cat(blocks)[:m])  # (m, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * x.shape[-1] ** -0.25
        projected = x @ self.projection.T  # (…, N, m)
        # one constant shift for the whole tensor guards exp against overflow; a constant factor on
        # all φ(q) or all φ(k) cancels in the row normalisation, so the result is unchanged
        stabiliser = projected.detach().amax() if projected.numel() else 0.0
        return torch.exp(projected - x.pow(2).sum(-1, keepdim=True) / 2 - stabiliser) / math.sqrt(projected.shape[-1])


FEATURE_MAPS = {"relu": relu_features, "elu": elu_features, "flatten": focused_features}
KINDS = (*FEATURE_MAPS, "performer")  # the zoo's attention kinds; Performer's map is a module


def linear_attention(q, k, v, feature_map, eps: float = 1e-6) -> torch.Tensor:
    """o_i = φ(q_i)ᵀ(Σ_j φ(k_j)v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), in O(N m dv) for m features."""
    check_qkv(q, k, v)
    phi_q, phi_k = feature_map(q), feature_map(k)  # (…, N, m), (…, M, m)
    kv = phi_k.transpose(-2, -1) @ v  # (…, m, dv)
    normaliser = phi_q @ phi_k.sum(dim=-2).unsqueeze(-1)  # (…, N, 1)
    return (phi_q @ kv) / (normaliser + eps)


def feature_similarity(feature_map):
    """The kernel φ(q)·φ(k) as a similarity for quadratic_attention: the explicit O(N²) check."""
    return lambda q, k: feature_map(q) @ feature_map(k).transpose(-2, -1)


class FeatureMapAttention(MultiHeadTokens):
    """Multi-head linear attention with a named feature map, optionally + DWConv(V) (as FLatten does).

    kind: "relu", "elu", "flatten" or "performer".
    """

    def __init__(self, dim: int, num_heads: int = 4, *, kind: str = "relu", conv: str | None = None,
                 qkv_bias: bool = False, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        if kind not in KINDS:
            raise ValueError(f"unknown feature map {kind!r}; use one of {sorted(KINDS)}")
        self.kind = kind
        self.features = PerformerFeatures(dim // num_heads) if kind == "performer" else FEATURE_MAPS[kind]
        self.conv = make_conv_branch(conv, dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_qkv(x)  # (B, H, N, d) each
        out = linear_attention(q, k, v, self.features)
        if self.conv is not None:
            out = out + self.conv(v)
        return self.merge(out)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


ATTENTIONS = {kind: partial(FeatureMapAttention, kind=kind) for kind in KINDS}  # model.ATTENTIONS takes them in
