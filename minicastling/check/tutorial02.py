"""Tutorial 02 · angular kernels: angular attention weights, angles from random hyperplanes, and
attention with the hashed angular kernel in O(N)."""

import math

import torch

from .core import CheckFailed, Exercise, _qk_cases, _qkv_cases, _randn, call, compare, describe, exercise, \
    linear_in_tokens, passed, same_tensor


@exercise("02", 1, "warm-up", "section 1 gave the angular similarity 1 − θ/π of every (query, key) pair; attention "
                              "weights are those similarities made into a distribution over each query's keys.")
def angular_weights(ex: Exercise, fn) -> None:
    """Row-normalised angular kernel: the attention weights linear-angular attention approximates."""
    from ..attention import attention_weights

    reference = lambda q, k: attention_weights(q, k, "angular")  # noqa: E731
    compare(ex, fn, reference, _qk_cases(7), ("q", "k"))
    g = torch.Generator().manual_seed(8)
    same = _randn(64, 16, generator=g, scale=3.0)  # every query is also a key: cosines of 1, some a hair above
    compare(ex, fn, reference, [{"q": same, "k": same}])
    passed(ex, "4 random cases match attention_weights(q, k, 'angular') in values and gradients, and queries that "
               "are keys (cosines a rounding error above 1) give no NaN.")


def hashed_kernel(q: torch.Tensor, k: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """The share of the given hyperplanes on which q_i and k_j agree, as an explicit (…, N, M) matrix."""
    side_q, side_k = q @ normals.T > 0, k @ normals.T > 0  # (…, N, P), (…, M, P)
    return (side_q.unsqueeze(-2) == side_k.unsqueeze(-3)).to(q.dtype).mean(-1)


@exercise("02", 2, "core", "for one hyperplane, the side a vector lies on is the sign of its dot product with the "
                           "plane's normal. You need, for every (query, key) pair, the share of the P planes on which "
                           "the two sides agree: line the axes up so that every pair meets every plane.")
def hyperplane_agreement(ex: Exercise, fn) -> None:
    """The share of the given hyperplanes that put q_i and k_j on the same side: ≈ 1 − θ/π."""
    g = torch.Generator().manual_seed(6)
    for q_shape, k_shape, planes in [((5, 4), (6, 4), 8000), ((2, 3, 4, 3), (2, 3, 2, 3), 64), ((3, 2), (7, 2), 5)]:
        case = {"q": _randn(*q_shape, generator=g), "k": _randn(*k_shape, generator=g),
                "normals": _randn(planes, q_shape[-1], generator=g)}
        got = call(ex, fn, case)
        if isinstance(got, torch.Tensor) and got.is_floating_point() and got.shape == case["q"].shape[:-1] + (k_shape[-2],):
            counts = got.double() * planes
            if not torch.allclose(counts, counts.round(), atol=1e-3):
                raise CheckFailed(f"{ex.label}: every answer should be a count of hyperplanes divided by P = {planes}, "
                                  f"but yours are not (for {describe(case)}): average booleans over the P axis only.")
        same_tensor(ex, got, hashed_kernel(**case), case, rtol=0.0, atol=1e-6,
                    what="your agreement (for exactly the given hyperplanes)")
    from ..similarity import angular_similarity

    big = {"q": _randn(5, 4, generator=g), "k": _randn(6, 4, generator=g), "normals": _randn(8000, 4, generator=g)}
    spread = (call(ex, fn, big).double() - angular_similarity(big["q"], big["k"]).double()).abs().max().item()
    passed(ex, f"the share of exactly the given hyperplanes, for 5 to 8,000 of them; with 8,000 it is within "
               f"{spread:.3f} of 1 − θ/π everywhere, as Monte Carlo error allows.")


def _with_normals(cases: list, planes: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [dict(case, normals=_randn(planes, case["q"].shape[-1], generator=g)) for case in cases]


@exercise("02", 3, "stretch", "write the agreement of exercise 2 as one dot product φ(q)·φ(k) of features you choose: "
                              "with signs s = ±1 per plane, 'same side' is (1 + s_q·s_k)/2. Once the kernel is a dot "
                              "product of features, group the matrix products so that the keys meet the values first.")
def hashed_angular_attention(ex: Exercise, fn) -> None:
    """Attention whose kernel is the share of P hyperplanes two tokens agree on, in O(N·P) and without an N × N matrix."""
    def reference(q, k, v, normals):
        weights = hashed_kernel(q, k, normals)  # (…, N, M)
        return weights / weights.sum(-1, keepdim=True) @ v

    cases = _with_normals(_qkv_cases(19), planes=64, seed=20)
    compare(ex, fn, reference, cases, ("v",))  # the signs carry no gradient to q and k
    linear_in_tokens(ex, fn, extra=lambda tokens, d: {"normals": torch.randn(64, d, generator=torch.Generator().manual_seed(4))})
    passed(ex, "values and gradients (for v) match attention with the explicit N × N agreement matrix of the same "
               "64 hyperplanes, and no N × N tensor is built.")
