"""Similarity kernels: softmax's exp kernel, the angular kernel and its arccos series.

The abstract's "angular kernels", which measure similarity by "spectral angles", and their
decomposition into "linear terms and high-order residuals". Introduced in tutorials 02 and 03.
"""

import math

import torch
import torch.nn.functional as F

EPS = 1e-6  # keeps q / ‖q‖ finite for zero vectors


def l2_normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """x / max(‖x‖, eps) over the last axis: the q̂, k̂ of the tutorials, with no NaN at x = 0.

    The authors' attention.py divides by the norm alone, which gives NaN for a zero vector.
    """
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def cosine(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q̂·k̂ for every pair: (…, N, d) × (…, M, d) → (…, N, M), clamped to [-1, 1]."""
    check_pair(q, k)
    x = l2_normalize(q) @ l2_normalize(k).transpose(-2, -1)  # (…, N, M)
    return x.clamp(-1.0, 1.0)  # rounding can leave |x| a hair above 1, outside arccos's domain


def softmax_similarity(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """exp(q·k/√d): the kernel that row-normalised gives softmax attention (tutorial 01)."""
    check_pair(q, k)
    return torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))  # (…, N, M)


def arccos_taylor_coefficients(n: int) -> torch.Tensor:
    """c_0 … c_{n-1} of arccos(x) = π/2 − Σ c_m x^(2m+1), c_m = (2m)! / (4^m (m!)² (2m+1)).

    These are arcsin's Taylor coefficients (1, 1/6, 3/40, 5/112, …), all positive (tutorial 03).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int (how many coefficients), got {n!r}")
    coefficients = [math.comb(2 * m, m) / 4**m / (2 * m + 1) for m in range(n)]
    return torch.tensor(coefficients, dtype=torch.float64)


def angular_similarity(q: torch.Tensor, k: torch.Tensor, order: int | None = None) -> torch.Tensor:
    """sim(q, k) = 1 − θ/π with θ = arccos(q̂·k̂); or its truncation at `order`.

    The order-0 arc-cosine kernel: bounded in [0, 1], non-negative, positive semi-definite.
    With `order=n` it returns ½ + (1/π) Σ_{m≤n} c_m x^(2m+1), the series cut after x^(2n+1);
    `order=0` is the linear term ½ + x/π that linear-angular attention keeps.
    The gradient of the exact form is infinite where x = ±1 (parallel vectors), as arccos's is.
    """
    x = cosine(q, k)  # (…, N, M)
    if order is None:
        return 1.0 - torch.arccos(x) / math.pi
    return 1.0 - truncated_arccos(x, order) / math.pi


def truncated_arccos(x: torch.Tensor, order: int) -> torch.Tensor:
    """π/2 − Σ_{m≤order} c_m x^(2m+1): arccos's series cut after the x^(2·order+1) term.

    order=0 gives π/2 − x, the linear term that linear-angular attention keeps (tutorial 03).
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(f"order must be None (exact kernel) or an int >= 0, got {order!r}")
    c = arccos_taylor_coefficients(order + 1).tolist()
    x_squared = x * x
    power, series = x, c[0] * x
    for c_m in c[1:]:
        power = power * x_squared  # x^(2m+1)
        series = series + c_m * power
    return math.pi / 2 - series


def largest_weight_bound(n: int) -> float:
    """How sharp row-normalised linear angular attention can be: the largest weight times N.

    The linear term's kernel ½ + q̂·k̂/π lies in [½ − 1/π, ½ + 1/π], so two weights of one row differ by
    a factor (½ + 1/π)/(½ − 1/π) ≈ 4.5 at most. The largest weight is largest when one key sits at the
    top of that range and the other N − 1 at the bottom:
        w_max · N ≤ N (½ + 1/π) / ((½ + 1/π) + (N − 1)(½ − 1/π)) < 4.5.
    Uniform attention scores 1, one-hot attention N. Measured on trained models in tutorial 07.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (tokens), got {n!r}")
    high, low = 0.5 + 1 / math.pi, 0.5 - 1 / math.pi
    return n * high / (high + (n - 1) * low)


def polynomial_features(x_hat: torch.Tensor, power: int) -> torch.Tensor:
    """φ(x̂) with φ(q̂)·φ(k̂) = (q̂·k̂)^power: the tensor power, of dimension d^power.

    Why linear-angular attention keeps only the linear term: the order-(2n+1) term is
    linear in a feature space of dimension d^(2n+1) (tutorial 03).
    """
    if not isinstance(power, int) or power < 1:
        raise ValueError(f"power must be an int >= 1, got {power!r}")
    features = x_hat
    for _ in range(power - 1):
        features = (features.unsqueeze(-1) * x_hat.unsqueeze(-2)).flatten(-2)  # (…, d^p)
    return features


SIMILARITIES = {
    "softmax": softmax_similarity,
    "angular": angular_similarity,
    "angular-linear": lambda q, k: angular_similarity(q, k, order=0),
}


def get_similarity(name_or_fn):
    """A similarity by name (one of SIMILARITIES) or the callable itself."""
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in SIMILARITIES:
        raise ValueError(
            f"unknown similarity {name_or_fn!r}; use one of {sorted(SIMILARITIES)} "
            "or pass a function (q, k) -> (…, N, M)"
        )
    return SIMILARITIES[name_or_fn]


def check_pair(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.dim() < 2 or k.dim() < 2:
        raise ValueError(
            f"q and k need shape (..., tokens, head_dim), got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same head_dim (last axis), got q {tuple(q.shape)} and "
            f"k {tuple(k.shape)}; project them to one size first"
        )
