"""The library-call fast path of CastlingAttention: linear-angular attention as one autograd.Function.

The readable form is attention.linear_angular_attention; this module computes the same numbers
with fewer passes over memory, which is what limits it at the token counts the course uses
(tutorial 07, `python -m minicastling bench`). It runs wherever the compiled CPU kernel
(cpu_kernel.py) does not: on CUDA, for form="official", the 2-D conv, other head dims, or with the
kernel switched off. What it changes, and why:

* q̂ and k̂ are normalised in one pass over the q, k part of the qkv projection and written straight
  into the head-major layout that batched matmuls want.
* The kernel form's numerator and denominator come out of one batched matmul, K̂ᵀ[V | 1], and the
  ½-terms ride in baddbmm's added input instead of passes of their own.
* The result is written token-major, (B, N, H, d) in memory, so merging the heads costs nothing;
  so are the values handed to the DWConv branch, the layout its channels-last kernel reads.
* The backward pass is written out: four batched matmuls and a few elementwise passes, where
  autograd's graph of the readable formula has some thirty nodes.
* Reshapes are plain view/permute with the shapes in comments: at these sizes einops' parsing
  costs as much as some of the arithmetic.

Tests check it against attention.linear_angular_attention in float64, values and gradients.
Reductions run in float32 for bf16/fp16 inputs, also under autocast, as in the readable form.
"""

import math

import torch

from ..similarity import EPS


def _token_major(batch: int, heads: int, tokens: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """An empty (B, H, N, d) view of (B, N, H, d) memory: merging the heads afterwards is free."""
    return like.new_empty(batch, tokens, heads, d).transpose(1, 2)


def _inverse_norms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / max(‖x‖, eps) over the last axis, keepdim: one division per row, then multiplications."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(eps).reciprocal_()


def _normalize_backward(grad_hat, x_hat, inverse_norms, eps, scale=1.0, out=None):
    """dL/dx for x̂ = x / max(‖x‖, eps), from scale · dL/dx̂: (dx̂ − (dx̂ · x̂) x̂) / (scale ‖x‖).

    Below eps the norm is the constant eps, so the radial part stays in.
    """
    radial = torch.linalg.vecdot(grad_hat, x_hat).unsqueeze(-1).mul_(inverse_norms < 1 / eps)
    return torch.mul(torch.addcmul(grad_hat, radial, x_hat, value=-1.0), inverse_norms / scale, out=out)


class LinearAngular(torch.autograd.Function):
    """Multi-head linear-angular attention from the qkv projection (B, N, 3C).

    form="kernel": o_i = (½ Σ_j v_j + q̂_iᵀ K̂ᵀV / π) / (N/2 + q̂_i · Σ_j k̂_j / π) + a_i;
    form="official": o_i = normalize(½ v_i + q̂_iᵀ K̂ᵀV / π + a_i), what the authors' code computes.
    `auxiliary` a (B, H, N, d) or None is the weighted masked-softmax branch. Returns o and v, both
    (B, H, N, d) views of token-major memory; v is there for the DWConv branch.
    """

    @staticmethod
    def forward(ctx, qkv, heads: int, form: str, auxiliary=None, eps: float = EPS):
        kernel = form == "kernel"
        b, n, three_c = qkv.shape
        d = three_c // (3 * heads)
        with torch.autocast(qkv.device.type, enabled=False):
            wide = qkv.to(torch.promote_types(qkv.dtype, torch.float32)).reshape(b, n, 3, heads, d)
            qk = wide[:, :, :2]  # (B, N, 2, H, d)
            inverse_norms = _inverse_norms(qk, eps)  # (B, N, 2, H, 1)
            qk_hat = wide.new_empty(2, b, heads, n, d)  # head-major, as the batched matmuls want
            torch.mul(qk, inverse_norms, out=qk_hat.permute(1, 3, 0, 2, 4))
            q_hat, k_hat = qk_hat.view(2, b * heads, n, d)  # (B·H, N, d) each
            values = wide.new_empty(b, n, heads, d)  # token-major, for the DWConv branch
            values.copy_(wide[:, :, 2])
            v = wide.new_empty(b, heads, n, d + kernel)  # v head-major, or [v | 1] for the kernel form
            v[..., :d].copy_(values.transpose(1, 2))
            if kernel:
                v[..., d].fill_(1.0)
            v = v.view(b * heads, n, d + kernel)
            kv = k_hat.transpose(1, 2) @ v  # (B·H, d, d(+1)): K̂ᵀV, and K̂ᵀ1 = Σ_j k̂_j last if kernel
            out = _token_major(b, heads, n, d, wide)  # (B, H, N, d)
            if kernel:
                half_sums = v.sum(dim=1, keepdim=True).mul_(0.5)  # (B·H, 1, d + 1): ½ Σ_j v_j, then N/2
                raw = torch.baddbmm(half_sums, q_hat, kv, alpha=1 / math.pi).view(b, heads, n, d + 1)
                scale = raw[..., d:].reciprocal()  # 1 / denominator; the denominator is >= (½ − 1/π) N
                torch.mul(raw[..., :d], scale, out=out)  # the kernel average
            else:
                raw = torch.baddbmm(v, q_hat, kv, beta=0.5, alpha=1 / math.pi).view(b, heads, n, d)
                if auxiliary is not None:  # raw = ½ v_i + q̂_iᵀ K̂ᵀV / π + a_i
                    raw += auxiliary
                scale = _inverse_norms(raw, eps)  # 1 / ‖raw_i‖
                torch.mul(raw, scale, out=out)
            ctx.save_for_backward(qk_hat, inverse_norms, v, kv, scale, out)
            if kernel and auxiliary is not None:
                out = torch.add(out, auxiliary, out=_token_major(b, heads, n, d, wide))
        ctx.dtype, ctx.form, ctx.eps = qkv.dtype, form, eps
        ctx.auxiliary_dtype = None if auxiliary is None else auxiliary.dtype
        return out.to(qkv.dtype), values.transpose(1, 2).to(qkv.dtype)

    @staticmethod
    def backward(ctx, grad, grad_values):
        qk_hat, inverse_norms, v, kv, scale, out = ctx.saved_tensors  # scale: 1/denominator or 1/‖raw‖
        b, heads, n, d = out.shape
        q_hat, k_hat = qk_hat.view(2, b * heads, n, d)
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(out.dtype)
            grad_raw = v.new_empty(b * heads, n, v.shape[-1])  # head-major, for the matmuls
            raw = grad_raw.view(b, heads, n, -1)
            if ctx.form == "kernel":  # o = numerator / denominator: [dL/dnumerator | dL/ddenominator]
                torch.mul(grad, scale, out=raw[..., :d])
                torch.mul(torch.linalg.vecdot(grad, out).unsqueeze(-1), scale, out=raw[..., d:]).neg_()
                grad_v_input = grad_raw.sum(dim=1, keepdim=True)[..., :d]  # via ½ Σ_j v_j, (B·H, 1, d)
                grad_auxiliary = grad
            else:  # o = raw / ‖raw‖
                _normalize_backward(grad, out, scale, ctx.eps, out=raw)
                grad_v_input = grad_raw  # via ½ v_i
                grad_auxiliary = raw
            grad_qk_hat = grad_raw.new_empty(2, b * heads, n, d)  # π · dL/dq̂ and π · dL/dk̂
            torch.bmm(grad_raw, kv.transpose(1, 2), out=grad_qk_hat[0])
            grad_kv = q_hat.transpose(1, 2) @ grad_raw  # π · dL/dkv, (B·H, d, d(+1))
            torch.bmm(v, grad_kv.transpose(1, 2), out=grad_qk_hat[1])
            grad_v = torch.baddbmm(grad_v_input, k_hat, grad_kv[..., :d], beta=0.5, alpha=1 / math.pi)
            grad_qkv = grad_raw.new_empty(b, n, 3, heads, d)
            by_head = lambda t: t.permute(2, 0, 3, 1, 4)  # noqa: E731  (B, N, 2, H, ·) -> (2, B, H, N, ·)
            _normalize_backward(grad_qk_hat.view(2, b, heads, n, d), qk_hat, by_head(inverse_norms), ctx.eps, math.pi,
                                out=by_head(grad_qkv[:, :, :2]))
            grad_v = grad_v.view(b, heads, n, d).transpose(1, 2)  # (B, N, H, d)
            if grad_values is None:
                grad_qkv[:, :, 2] = grad_v
            else:
                torch.add(grad_v, grad_values.transpose(1, 2), out=grad_qkv[:, :, 2])
        if ctx.auxiliary_dtype is None:
            grad_auxiliary = None
        else:
            grad_auxiliary = grad_auxiliary.to(ctx.auxiliary_dtype)
        return grad_qkv.view(b, n, -1).to(ctx.dtype), None, None, grad_auxiliary, None


def linear_angular(qkv: torch.Tensor, heads: int, form: str = "kernel", auxiliary=None, eps: float = EPS):
    """LinearAngular.apply with keywords: qkv (B, N, 3C) → o, v (B, H, N, d), token-major memory."""
    return LinearAngular.apply(qkv, heads, form, auxiliary, eps)
