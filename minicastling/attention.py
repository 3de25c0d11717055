"""Attention: the O(N²) reference, linear-angular attention in O(N), and the modules.

Paper: Castling-ViT Sec. 3.2–3.3. Functional forms act per head on q (…, N, d), k (…, M, d),
v (…, M, dv); modules act on tokens x (B, N, C). Introduced in tutorials 01, 03 and 04.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .fast import cpu_kernel, library_calls
from .branches import make_conv_branch, masked_softmax_attention
from .similarity import EPS, get_similarity, l2_normalize

FORMS = ("official", "kernel")
MASKS = ("absolute", "relative")


def attention_weights(q: torch.Tensor, k: torch.Tensor, similarity="softmax") -> torch.Tensor:
    """Row-normalised kernel weights sim(q_i, k_j) / Σ_j sim(q_i, k_j): (…, N, M)."""
    scores = get_similarity(similarity)(q, k)  # (…, N, M)
    return scores / scores.sum(dim=-1, keepdim=True)


def quadratic_attention(q, k, v, similarity="softmax") -> torch.Tensor:
    """Explicit O(N²) attention as Nadaraya–Watson kernel smoothing: o_i = Σ_j w_ij v_j.

    `similarity` is a name from similarity.SIMILARITIES or a function (q, k) -> (…, N, M).
    With "softmax" this is softmax(QKᵀ/√d)V (tutorial 01): the reference other forms are checked
    against. It builds the N×M matrix, so memory grows as N².
    """
    _check_qkv(q, k, v)
    return attention_weights(q, k, similarity) @ v  # (…, N, dv)


def linear_angular_attention(q, k, v, form="official", auxiliary=None, eps=EPS) -> torch.Tensor:
    """Linear-angular attention in O(N d²): K̂ᵀV (d × dv) first, then each query (tutorial 03).

    form="kernel": exactly the row-normalised linear angular kernel ½ + q̂·k̂/π,
        o_i = (½ Σ_j v_j + (1/π) q̂_iᵀ(K̂ᵀV)) / (M/2 + (1/π) q̂_i·Σ_j k̂_j);
        equals quadratic_attention(q, k, v, "angular-linear").
    form="official": the authors' code, which is not a weighted average:
        o_i = normalize(½ v_i + (1/π) q̂_iᵀ(K̂ᵀV) + auxiliary_i) over head_dim; needs M == N.
    `auxiliary` (…, N, dv), the weighted masked-softmax branch, is added where the authors add it:
    before the normalisation (official) or to the average (kernel). This is the readable form; the
    fast paths (minicastling.fast) compute the same numbers. Sums over tokens run in float32 (float64
    stays float64), also under autocast, where fp16 sums would overflow; the result has v's dtype.
    """
    _check_qkv(q, k, v)
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


class CastlingAttention(MultiHeadTokens):
    """Castling attention: linear-angular + DWConv(V) + α · masked softmax (training only).

    Paper: Castling-ViT Fig. 3 / Sec. 3.3. The auxiliary branch's weight α is driven to 0 by an
    AlphaSchedule; `castle()` then removes it, and inference is O(N). While α > 0 the branch is
    part of the model in train and eval mode alike, so evaluation measures what was trained.

    form: "official" (what the authors' released code computes; the default: castled, it scored a point
    higher than the kernel form on Fashion-MNIST in the study, tutorial 07 and the README) or "kernel"
    (the row-normalised linear angular kernel, the Nadaraya–Watson reading); see linear_angular_attention.
    conv: "1d" (authors' (9, 1) kernel over tokens), "2d" (3×3 over the token grid) or None.
    threshold: ε of the mask [softmax > ε]; with mask="relative" it is in units of the uniform
    weight 1/N, so the mask keeps the weights above threshold/N (the authors' mask is "absolute").
    alpha: the branch's initial weight.
    Three paths compute the same numbers, chosen in `attend`: on the CPU the compiled kernel where it
    covers the call (fast.cpu_kernel), else the readable form under torch.compile, else the
    library-call path (fast.library_calls).
    """

    def __init__(
        self, dim: int, num_heads: int = 4, *, qkv_bias: bool = False, form: str = "official",
        conv: str | None = "1d", conv_kernel_size: int | None = None, threshold: float = 0.02,
        mask: str = "absolute", alpha: float = 1.0, proj_drop: float = 0.0,
    ):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        check_form(form)
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; use 'absolute' (ε = threshold, the authors') or 'relative' "
                             "(ε = threshold / N, in units of the uniform weight)")
        if mask == "absolute" and not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold ε compares softmax probabilities, so it must be in [0, 1); got {threshold!r}")
        if not (math.isfinite(threshold) and threshold >= 0.0):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        self.form, self.threshold, self.mask = form, threshold, mask
        self.conv = make_conv_branch(conv, dim, num_heads, conv_kernel_size)
        self.castled = False
        # α lives twice: a float for people and checks, and a buffer the forward multiplies by, so
        # torch.compile sees a changing α as data rather than a constant that forces a recompile
        self.register_buffer("alpha_weight", torch.zeros(()), persistent=False)
        self.set_alpha(alpha)

    @property
    def auxiliary_active(self) -> bool:
        return not self.castled and self.branch_on

    def set_alpha(self, alpha: float) -> None:
        """Set the auxiliary branch's weight; the training loop calls this with AlphaSchedule(t)."""
        alpha = float(alpha)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if self.castled and alpha != 0.0:
            raise RuntimeError("this attention is castled: its auxiliary branch is gone, so alpha must stay 0")
        self.alpha = alpha
        self.alpha_weight.fill_(alpha)
        self.branch_on = alpha != 0.0  # a bool that flips once per run: cheap for torch.compile to guard

    def castle(self, force: bool = False) -> "CastlingAttention":
        """Remove the auxiliary softmax branch for O(N) inference.

        Refuses while α > 0, since the outputs would change; `force=True` removes it anyway,
        with a warning (tutorial 04 shows the harm). Once α = 0 the eval outputs stay bit-for-bit.
        """
        if self.alpha != 0.0:
            message = (
                f"castling while the auxiliary softmax branch still has weight alpha={self.alpha:g} "
                "changes the model's outputs"
            )
            if not force:
                raise RuntimeError(
                    message + "; train until the AlphaSchedule reaches 0 (set_alpha(0.0)), "
                    "or call castle(force=True) to remove it anyway"
                )
            warnings.warn(message + " (forced)", RuntimeWarning, stacklevel=2)
            self.set_alpha(0.0)
        self.castled = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.attend(self.project(x)))  # (B, N, C)

    def attend(self, qkv: torch.Tensor, branch: bool = True) -> torch.Tensor:
        """The heads' output (B, H, N, d) before the projection; branch=False leaves out the softmax branch.

        The one place that chooses how linear-angular attention is computed; every path gives the
        same numbers as linear_angular_attention (tested in float64).
        """
        auxiliary = self.auxiliary(qkv) if branch and self.auxiliary_active else None  # skipped at α = 0: O(N²)
        if cpu_kernel.covers(qkv, self.num_heads, self.form, self.conv):  # attention and 1-D conv, one C++ call
            weight = None if self.conv is None else self.conv.conv.weight
            return cpu_kernel.linear_angular_conv(qkv, self.num_heads, weight, form=self.form, auxiliary=auxiliary)
        if _compiling():  # elsewhere under torch.compile: the readable form, which the compiler fuses
            q, k, v = self.heads(qkv)  # (B, H, N, d) views
            out = linear_angular_attention(q, k, v, form=self.form, auxiliary=auxiliary)
        else:  # elsewhere: fewer passes over memory through library calls, with a hand-written backward
            out, v = library_calls.linear_angular(qkv, self.num_heads, self.form, auxiliary)
        return out if self.conv is None else out + self.conv(v)

    def auxiliary(self, qkv: torch.Tensor) -> torch.Tensor:
        """α · masked softmax attention (B, H, N, d) from the projection: the training-time branch."""
        q, k, v = self.heads(qkv)  # (B, H, N, d) views
        return self.alpha_weight * masked_softmax_attention(q, k, v, self.mask_threshold(k.shape[-2]))

    def mask_threshold(self, keys: int) -> float:
        """ε for `keys` keys: the threshold itself, or threshold / keys for mask="relative"."""
        return self.threshold / keys if self.mask == "relative" else self.threshold

    def get_extra_state(self):
        return {"alpha": self.alpha, "castled": self.castled}

    def set_extra_state(self, state):
        self.castled = False
        self.set_alpha(state["alpha"])
        self.castled = bool(state["castled"])

    def extra_repr(self) -> str:
        return (f"form={self.form!r}, threshold={self.threshold}, mask={self.mask!r}, alpha={self.alpha:g}, "
                f"castled={self.castled}")


def set_alpha(module: nn.Module, alpha: float) -> None:
    """Set α on every CastlingAttention inside `module` (what the training loop calls each step)."""
    for layer in module.modules():
        if isinstance(layer, CastlingAttention):
            layer.set_alpha(alpha)


def check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use 'official' (authors' code) or 'kernel' (exact kernel)")


def _compiling() -> bool:
    """True while torch.compile traces the model (torch >= 2.3 names it torch.compiler.is_compiling)."""
    return torch.compiler.is_compiling()


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v need the same number of axes, at least (tokens, head_dim); got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share head_dim (last axis); got {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of tokens (axis -2); got {shapes}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q, k, v must share their leading (batch, head) axes; got {shapes}")
