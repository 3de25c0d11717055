"""The angular kernel, its arccos series, and the feature-space argument (tutorials 02–03)."""

import math
from fractions import Fraction

import pytest
import torch

from minicastling.similarity import (
    angular_similarity,
    arccos_taylor_coefficients,
    cosine,
    polynomial_features,
    softmax_similarity,
)


def test_coefficients_match_the_recurrence_of_arcsin_series():
    # Independent route: c_{m+1} = c_m · (2m+1)² / ((2m+2)(2m+3)), in exact fractions.
    exact, c = [], Fraction(1)
    for m in range(20):
        exact.append(c)
        c = c * (2 * m + 1) ** 2 / ((2 * m + 2) * (2 * m + 3))
    got = arccos_taylor_coefficients(20)
    assert got.dtype == torch.float64
    assert got[:5].tolist() == pytest.approx([1, 1 / 6, 3 / 40, 5 / 112, 35 / 1152], rel=1e-15)
    assert got.tolist() == pytest.approx([float(f) for f in exact], rel=1e-14)


def test_series_sums_to_arccos():
    c = arccos_taylor_coefficients(400)
    for x in (-0.9, -0.3, 0.0, 0.5, 0.8):
        series = sum(c[m].item() * x ** (2 * m + 1) for m in range(400))
        assert math.pi / 2 - series == pytest.approx(math.acos(x), abs=1e-12)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_coefficients_reject_bad_counts(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        arccos_taylor_coefficients(bad)


def test_angular_similarity_is_one_minus_angle_over_pi():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])
    got = angular_similarity(q, k)
    assert got.tolist()[0] == pytest.approx([1.0, 0.5, 0.0, 0.75], abs=1e-6)


def test_truncations_stay_in_unit_interval_and_converge():
    torch.manual_seed(0)
    q, k = torch.randn(64, 8, dtype=torch.float64), torch.randn(80, 8, dtype=torch.float64)
    exact = angular_similarity(q, k)
    errors = []
    for order in range(8):
        s = angular_similarity(q, k, order=order)
        assert s.min() >= 0 and s.max() <= 1
        errors.append((s - exact).abs().max().item())
    assert all(a > b for a, b in zip(errors, errors[1:]))  # each order strictly closer
    torch.testing.assert_close(angular_similarity(q, k, order=0), 0.5 + cosine(q, k) / math.pi)


def test_angular_kernel_is_positive_semidefinite():
    torch.manual_seed(1)
    x = torch.randn(200, 16, dtype=torch.float64)
    for order in (None, 0, 3):
        gram = angular_similarity(x, x, order=order)
        assert torch.linalg.eigvalsh(gram).min() > -1e-10
    # A kernel that is not PSD fails the same check, so the check can fail.
    assert torch.linalg.eigvalsh(-gram).min() < -1


def test_polynomial_features_realise_powers_of_the_cosine():
    torch.manual_seed(2)
    q_hat = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    k_hat = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    for power in (1, 3, 5):
        phi_q, phi_k = polynomial_features(q_hat, power), polynomial_features(k_hat, power)
        assert phi_q.shape == (5, 4**power)
        torch.testing.assert_close(phi_q @ phi_k.T, (q_hat @ k_hat.T) ** power)


def test_softmax_similarity_is_scaled_exp():
    q, k = torch.randn(3, 16), torch.randn(4, 16)
    torch.testing.assert_close(softmax_similarity(q, k), torch.exp(q @ k.T / 4))


def test_zero_vectors_give_finite_similarity():
    q = torch.zeros(3, 8)
    assert torch.isfinite(angular_similarity(q, torch.randn(5, 8))).all()


def test_mismatched_head_dims_are_named():
    with pytest.raises(ValueError, match=r"same head_dim.*\(3, 8\).*\(5, 7\)"):
        angular_similarity(torch.randn(3, 8), torch.randn(5, 7))
    with pytest.raises(ValueError, match="order must be None"):
        angular_similarity(torch.randn(3, 8), torch.randn(5, 8), order=-1)


def test_linear_angular_weights_cannot_be_sharper_than_the_bound():
    from minicastling.attention import attention_weights
    from minicastling.similarity import largest_weight_bound

    n, d = 49, 16
    q = torch.randn(1, d, dtype=torch.float64)
    k = (-q).repeat(n, 1)
    k[7] = q[0]  # one key along the query, every other key opposite: the sharpest row there is
    sharpest = attention_weights(q[None], k[None], "angular-linear")[0, 0]
    assert torch.isclose(sharpest.max() * n, torch.tensor(largest_weight_bound(n), dtype=torch.float64))
    random = attention_weights(torch.randn(4, n, d), 3 * torch.randn(4, n, d), "angular-linear")
    assert (random.amax(-1) * n < largest_weight_bound(n)).all()
    assert largest_weight_bound(1) == 1.0 and 4.4 < largest_weight_bound(10**6) < (0.5 + 1 / math.pi) / (0.5 - 1 / math.pi)
    with pytest.raises(ValueError, match="positive int"):
        largest_weight_bound(0)
