"""Helpers the tests share, as fixtures: no test module imports another."""

import pytest
import torch


def _gradients(outputs, inputs, seed=1):
    """d(Σ w · outputs)/d(inputs) for fixed random weights w (one output or a list of them)."""
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    g = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(total, inputs)


def _assert_same_values_and_gradients(got, expected, inputs, **tolerances):
    """`got` equals `expected` (a tensor or a list of tensors), and so do their gradients for `inputs`."""
    pairs = zip([got] if isinstance(got, torch.Tensor) else got, [expected] if isinstance(expected, torch.Tensor) else expected)
    for a, b in pairs:
        torch.testing.assert_close(a, b, **tolerances)
    for a, b in zip(_gradients(got, inputs), _gradients(expected, inputs)):
        torch.testing.assert_close(a, b, **tolerances)


@pytest.fixture
def gradients():
    return _gradients


@pytest.fixture
def same_values_and_gradients():
    return _assert_same_values_and_gradients
