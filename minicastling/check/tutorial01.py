"""Tutorial 01 · attention is kernel smoothing: the estimator with any similarity, a row's entropy, and
Gaussian kernel smoothing as one softmax attention call."""

import torch
import torch.nn.functional as F

from .core import CheckFailed, Exercise, _qkv_cases, _randn, call, compare, exercise, largest_tensor, passed, same_tensor


def _similarities() -> dict:
    from ..similarity import angular_similarity, softmax_similarity

    return {"softmax_similarity": softmax_similarity, "angular_similarity": angular_similarity,
            "gaussian": lambda q, k: torch.exp(-torch.cdist(q, k) ** 2 / 2)}


@exercise("01", 1, "warm-up", "each query's output is an average of the values: weight every key by the similarity "
                              "the given function assigns to it, and make the weights of each query's row add up to 1.")
def kernel_smoothing(ex: Exercise, fn) -> None:
    """Nadaraya–Watson attention with any similarity function (q, k) → (…, N, M): the estimator of section 1."""
    from ..attention import quadratic_attention

    for name, similarity in _similarities().items():
        cases = [dict(case, similarity=similarity) for case in _qkv_cases(1)]
        compare(ex, fn, lambda q, k, v, similarity: quadratic_attention(q, k, v, similarity), cases, ("q", "k", "v"))
    passed(ex, "3 similarities (softmax's, the angular kernel, a Gaussian) on 4 shapes each match "
               "minicastling.quadratic_attention in values and gradients.")


def entropy_reference(weights):
    """−Σ p log p over the last axis, 0 · log 0 = 0, with a gradient of 0 (not infinity) at the zeros."""
    safe = torch.where(weights > 0, weights, torch.ones_like(weights))
    return -(weights * torch.log(safe)).sum(-1)


@exercise("01", 2, "core", "the entropy of a row is −Σ p·log p over its keys, and p·log p tends to 0 as p → 0. Section "
                           "5 showed what the computer makes of 0 · log 0, and why a torch.where around the product "
                           "still puts a NaN in the gradient (torch.special.entr an infinity, torch.xlogy a NaN): make "
                           "the logarithm's input safe before you take it, then add up each row.")
def row_entropy(ex: Exercise, fn) -> None:
    """The entropy of each row of attention weights, rows with exact zeros included, with a finite gradient."""
    g = torch.Generator().manual_seed(3)
    dense = torch.softmax(_randn(2, 3, 5, 7, generator=g, scale=2.0), dim=-1)
    sparse = torch.softmax(_randn(4, 6, generator=g), dim=-1) * (torch.rand(4, 6, generator=g) > 0.5)
    sparse[:, 0] += 1e-3  # no row all zeros
    sparse = sparse / sparse.sum(-1, keepdim=True)
    one_hot = torch.eye(5)
    compare(ex, fn, entropy_reference, [{"weights": dense}], ("weights",))
    compare(ex, fn, entropy_reference, [{"weights": sparse}, {"weights": one_hot}])
    for weights in (sparse, one_hot):  # at an exact 0 the slope of −p log p is infinite: any finite value will do
        leaf = weights.clone().requires_grad_()
        out = call(ex, fn, {"weights": leaf})
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            raise CheckFailed(f"{ex.label}: your values are right, but no gradient flows through your function.")
        out.sum().backward()
        if leaf.grad is None or not torch.isfinite(leaf.grad).all():
            bad = "no gradient" if leaf.grad is None else f"{int((~torch.isfinite(leaf.grad)).sum())} NaN or infinite entries"
            raise CheckFailed(f"{ex.label}: your values are right, but the gradient has {bad} where a weight is 0 "
                              f"(weights {tuple(weights.shape)}, {int((weights == 0).sum())} zeros). The logarithm "
                              "is still taken at 0 somewhere, or its infinite slope reaches the gradient (as with "
                              "torch.special.entr, whose gradient at 0 is infinite, and torch.xlogy, whose gradient "
                              "at 0 is NaN): make the input of the log safe before you take it (section 5). Any "
                              "finite gradient at an exact 0 passes; the reference's is 0.")
        expected = leaf.detach().clone().requires_grad_()
        entropy_reference(expected).sum().backward()
        kept = weights > 0
        same_tensor(ex, leaf.grad[kept], expected.grad[kept], {"weights": weights}, 1e-3, 1e-4,
                    what="the gradient where the weights are above 0")
    passed(ex, "dense rows, rows with zeros and one-hot rows (entropy 0) match in values, and in gradients that stay "
               "finite where a weight is 0.")


def gaussian_reference(q, k, v):
    """Gaussian kernel smoothing, exp(−‖q_i − k_j‖²/2) normalised over j, computed in float64 log-space."""
    distances = torch.cdist(q.double(), k.double()).pow(2)  # (…, N, M)
    return (torch.softmax(-distances / 2, dim=-1) @ v.double()).to(v.dtype)


@exercise("01", 3, "stretch", "expand ‖q_i − k_j‖² into three terms. One depends on the query alone and cancels in the "
                              "row normalisation (section 2's identity); what is left is a dot product plus a term per "
                              "key. One extra feature on each side can carry that term, and torch's "
                              "scaled_dot_product_attention takes a scale of your choosing.")
def gaussian_attention(ex: Exercise, fn) -> None:
    """Gaussian kernel smoothing as one softmax attention call: finite for far queries, and no (N, M) tensor of yours."""
    g = torch.Generator().manual_seed(2)
    far = {"q": _randn(3, 5, generator=g, scale=12.0), "k": _randn(6, 5, generator=g), "v": _randn(6, 2, generator=g)}
    compare(ex, fn, gaussian_reference, _qkv_cases(2), ("q", "k", "v"))
    compare(ex, fn, gaussian_reference, [far], rtol=1e-3, atol=1e-4)
    pairwise(ex, fn)
    passed(ex, "4 random cases match in values and gradients, queries so far from every key that every "
               "exp(−‖q − k‖²/2) underflows to 0 in float32 get the right average, and no (N, M) tensor is built "
               "outside torch's attention call.")


def pairwise(ex: Exercise, fn, tokens: int = 1024, head_dim: int = 4) -> None:
    """Fails if fn builds an (N, M) tensor itself (as distances or scores) rather than leaving them to SDPA."""
    g = torch.Generator().manual_seed(5)
    case = {name: torch.randn(1, tokens, head_dim, generator=g) for name in ("q", "k", "v")}
    largest = largest_tensor(ex, fn, case, uncounted=[F.scaled_dot_product_attention])
    if largest.numel >= tokens * tokens:
        raise CheckFailed(f"{ex.label}: your values are right, but for N = M = {tokens} your function built a tensor "
                          f"of shape {largest.shape}: a score or distance for every (query, key) pair. The exercise is "
                          "to let one scaled_dot_product_attention call do that: write the Gaussian's score as a dot "
                          "product of extended queries and keys.")
