"""Tutorial 03 · the linear decomposition: the arccos series, the kernel form over padded keys, and
one more term of the series in O(N)."""

import math

import torch

from .core import CheckFailed, Exercise, _qkv_cases, call, compare, describe, exercise, linear_in_tokens, passed


def _count_the_terms(ex: Exercise, got, case: dict) -> None:
    """A series with one term too few or too many, said as such: order n keeps n + 1 terms, c_0 x … c_n x^(2n+1)."""
    from ..similarity import truncated_arccos

    x, order = case["x"], case["order"]
    terms = (f"the series cut after x^(2·order+1) has order + 1 terms, c_0·x … c_order·x^(2·order+1), so for order "
             f"{order} it has {order + 1}")
    if isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(got, math.pi / 2):
        raise CheckFailed(f"{ex.label}: for {describe(case)} your function returned the number π/2 = {got:.6g}, a "
                          f"series with no term in x, where a tensor shaped like x was expected: {terms} (a sum "
                          "over range(order) stops one term short).")
    if not (isinstance(got, torch.Tensor) and got.shape == x.shape):
        return  # compare() says what is wrong with its type or shape
    if torch.allclose(got.double(), truncated_arccos(x.double(), order), rtol=1e-4, atol=1e-5):
        return  # right (where a term more or less changes little, compare() decides)
    for cut, short in ((order - 1, "one term short"), (order + 1, "one term too many")):
        series = truncated_arccos(x.double(), cut) if cut >= 0 else torch.full_like(x.double(), math.pi / 2)
        if torch.allclose(got.double(), series, rtol=1e-4, atol=1e-5):
            after = f"after the x^{2 * cut + 1} term" if cut >= 0 else "before the x term: π/2 alone"
            raise CheckFailed(f"{ex.label}: for {describe(case)} your series is {short}: it is arccos's series cut "
                              f"{after}; {terms}" + (" (a sum over range(order) stops one term short)." if cut < order
                                                      else "."))


@exercise("03", 1, "warm-up", "mc.arccos_taylor_coefficients gives c_0, c_1, …; the series subtracts odd powers of x, "
                              "one per coefficient, from π/2. A Python float times a tensor keeps the tensor's dtype.")
def arccos_series(ex: Exercise, fn) -> None:
    """arccos(x) ≈ π/2 − Σ_{m≤order} c_m x^(2m+1), the series behind the decomposition."""
    from ..similarity import truncated_arccos

    g = torch.Generator().manual_seed(8)
    cases = [{"x": torch.rand(*shape, generator=g) * 2 - 1, "order": order}
             for shape, order in [((7,), 0), ((3, 5), 1), ((2, 2, 4), 3), ((6,), 8)]]
    for case in cases:
        _count_the_terms(ex, call(ex, fn, case), case)
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
