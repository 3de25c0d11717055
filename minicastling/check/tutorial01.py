"""Tutorial 01 · attention is kernel smoothing: causal softmax attention, Gaussian kernel smoothing
computed stably as a softmax, and a row's entropy."""

import torch
import torch.nn.functional as F

from .core import Exercise, _qkv_cases, _randn, compare, exercise, passed


@exercise("01", 1, "warm-up", "query i may look at keys 0 … i only. Give every later key a score that the softmax turns "
                              "into a weight of exactly 0 (which number is that?), using a boolean N × N mask of the "
                              "entries above the diagonal; the rest is section 2's softmax attention.")
def causal_softmax_attention(ex: Exercise, fn) -> None:
    """softmax(QKᵀ/√d)V where query i sees keys j ≤ i: what a language model's attention does."""
    reference = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    compare(ex, fn, reference, _qkv_cases(1, scale=2.0, cross=False), ("q", "k", "v"))
    passed(ex, "3 random cases (with and without batch axes, one token alone) match torch's "
               "scaled_dot_product_attention(q, k, v, is_causal=True) in values and gradients.")


def gaussian_reference(q, k, v):
    """Gaussian kernel smoothing, exp(−‖q_i − k_j‖²/2) normalised over j, computed in float64 log-space."""
    distances = torch.cdist(q.double(), k.double()).pow(2)  # (…, N, M)
    return (torch.softmax(-distances / 2, dim=-1) @ v.double()).to(v.dtype)


@exercise("01", 2, "core", "expand ‖q_i − k_j‖² into three terms. One depends on the query alone and cancels in the row "
                           "normalisation (section 2's identity); what is left is a score per (query, key) pair. "
                           "softmax exponentiates scores after subtracting each row's largest, so nothing underflows.")
def gaussian_attention(ex: Exercise, fn) -> None:
    """Nadaraya–Watson with the Gaussian kernel exp(−‖q − k‖²/2), finite even for queries far from every key."""
    g = torch.Generator().manual_seed(2)
    far = {"q": _randn(3, 5, generator=g, scale=12.0), "k": _randn(6, 5, generator=g), "v": _randn(6, 2, generator=g)}
    compare(ex, fn, gaussian_reference, _qkv_cases(2), ("q", "k", "v"))
    compare(ex, fn, gaussian_reference, [far], rtol=1e-3, atol=1e-4)
    passed(ex, "4 random cases match in values and gradients, and queries so far from every key that every "
               "exp(−‖q − k‖²/2) underflows to 0 in float32 still get the right average.")


@exercise("01", 3, "stretch", "the entropy of a row is −Σ p·log p over its keys. What is p·log p in the limit p → 0, "
                              "and what does the computer make of 0 · log 0? Keep the NaN out of the gradient too: "
                              "a torch.where still differentiates both of its branches.")
def row_entropy(ex: Exercise, fn) -> None:
    """The entropy of each row of attention weights, rows with exact zeros included."""
    g = torch.Generator().manual_seed(3)
    dense = torch.softmax(_randn(2, 3, 5, 7, generator=g, scale=2.0), dim=-1)
    sparse = torch.softmax(_randn(4, 6, generator=g), dim=-1) * (torch.rand(4, 6, generator=g) > 0.5)
    sparse[:, 0] += 1e-3  # no row all zeros
    sparse = sparse / sparse.sum(-1, keepdim=True)
    one_hot = torch.eye(5)
    reference = lambda weights: torch.special.entr(weights).sum(-1)  # noqa: E731
    compare(ex, fn, reference, [{"weights": dense}], ("weights",))
    compare(ex, fn, reference, [{"weights": sparse}, {"weights": one_hot}])
    passed(ex, "dense rows (values and gradients), rows with zeros and one-hot rows (entropy 0) all match.")
