"""Tutorial 03 · the linear decomposition: the arccos series, the kernel form over padded keys, and
one more term of the series in O(N)."""

import torch

from .core import Exercise, _qkv_cases, compare, exercise, linear_in_tokens, passed


@exercise("03", 1, "warm-up", "mc.arccos_taylor_coefficients gives c_0, c_1, …; the series subtracts odd powers of x, "
                              "one per coefficient, from π/2. A Python float times a tensor keeps the tensor's dtype.")
def arccos_series(ex: Exercise, fn) -> None:
    """arccos(x) ≈ π/2 − Σ_{m≤order} c_m x^(2m+1), the series behind the decomposition."""
    from ..similarity import truncated_arccos

    g = torch.Generator().manual_seed(8)
    cases = [{"x": torch.rand(*shape, generator=g) * 2 - 1, "order": order}
             for shape, order in [((7,), 0), ((3, 5), 1), ((2, 2, 4), 3), ((6,), 8)]]
    compare(ex, fn, truncated_arccos, cases, ("x",))
    passed(ex, "orders 0, 1, 3 and 8 match minicastling.similarity.truncated_arccos in values and gradients.")


def padded_reference(q, k, v, key_mask):
    """The explicit O(N²) kernel form with padding keys given weight 0."""
    from ..similarity import angular_similarity

    similarity = angular_similarity(q, k, order=0) * key_mask.unsqueeze(-2).to(q.dtype)  # (…, N, M)
    return similarity / similarity.sum(-1, keepdim=True) @ v


def _with_key_masks(cases: list, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    masked = []
    for case in cases:
        key_mask = torch.rand(case["k"].shape[:-1], generator=g) < 0.6  # (…, M): True for a real key
        key_mask[..., 0] = True  # every sequence has at least one real key
        masked.append(dict(case, key_mask=key_mask))
    return masked


@exercise("03", 2, "core", "section 4's O(N) form has three sums over keys: Σ v_j, K̂ᵀV and Σ k̂_j. A padding key must "
                           "be missing from all three, and the ½·N in the denominator counts keys too. Zeroing a "
                           "key's row removes it from a sum.")
def padded_linear_angular(ex: Exercise, fn) -> None:
    """The kernel form, o_i = Σ_j (½ + q̂_i·k̂_j/π) v_j / Σ_j (½ + q̂_i·k̂_j/π), over the real keys only, in O(N)."""
    compare(ex, fn, padded_reference, _with_key_masks(_qkv_cases(21), seed=22), ("q", "k", "v"))
    linear_in_tokens(ex, fn, extra=lambda tokens, d: {"key_mask": torch.arange(tokens) < tokens - 100})
    passed(ex, "values and gradients match the explicit O(N²) form with padding keys weighted 0, "
               "and no N × N tensor is built.")


def _angular_order1(q, k):
    from ..similarity import angular_similarity

    return angular_similarity(q, k, order=1)


@exercise("03", 3, "stretch", "the cubic term (q̂·k̂)³ is itself a dot product of features, polynomial_features(·, 3). "
                              "Gather all three terms of the order-1 kernel, constant included, into one feature "
                              "vector per token, each with the right weight, then follow section 4.")
def angular_attention_order1(ex: Exercise, fn) -> None:
    """Attention with the order-1 truncated angular kernel, in O(N): the cubic term through features."""
    from ..attention import quadratic_attention

    compare(ex, fn, lambda q, k, v: quadratic_attention(q, k, v, _angular_order1), _qkv_cases(9), ("q", "k", "v"))
    linear_in_tokens(ex, fn)
    passed(ex, "values and gradients match the explicit O(N²) form, and no N × N tensor is built.")
