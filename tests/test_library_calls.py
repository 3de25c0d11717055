"""The fast path (minicastling.fused, channels-last DWConv) against the readable forms, in float64."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minicastling import attention
from minicastling.attention import CastlingAttention, linear_angular_attention
from minicastling.branches import GridConv2d, TokenConv1d
from minicastling.fast.library_calls import linear_angular

SHAPES = [(1, 1, 1, 3), (2, 7, 3, 4), (1, 49, 2, 5), (3, 16, 2, 8)]  # (batch, tokens, heads, head_dim)


def readable(qkv, heads, form, auxiliary=None):
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)
    return linear_angular_attention(q, k, v, form=form, auxiliary=auxiliary), v


def gradients(outputs, inputs, seed=1):
    """d(Σ w · outputs)/d(inputs) for fixed random weights w."""
    g = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(total, inputs)


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("with_auxiliary", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_fast_path_equals_the_readable_form_in_values_and_gradients(form, with_auxiliary, shape):
    b, n, h, d = shape
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(b, n, 3 * h * d, generator=g, dtype=torch.float64, requires_grad=True)
    auxiliary = torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True) if with_auxiliary else None
    inputs = [qkv] + ([auxiliary] if with_auxiliary else [])
    fast, reference = linear_angular(qkv, h, form, auxiliary), readable(qkv, h, form, auxiliary)
    for got, expected in zip(fast, reference):
        torch.testing.assert_close(got, expected)
    for got, expected in zip(gradients(fast, inputs), gradients(reference, inputs)):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_fast_path_passes_gradcheck(form):
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, 5, 12, generator=g, dtype=torch.float64, requires_grad=True)
    auxiliary = torch.randn(2, 2, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: linear_angular(x, 2, form, a), (qkv, auxiliary))


def test_outputs_are_token_major_so_merging_heads_is_free():
    out, values = linear_angular(torch.randn(2, 10, 36), 3)
    assert out.shape == values.shape == (2, 3, 10, 4)
    assert out.transpose(1, 2).is_contiguous() and values.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_low_precision_inputs_are_reduced_in_float32(form):
    qkv = torch.randn(2, 300, 48) + 0.5
    exact = readable(qkv.double(), 4, form)[0]
    for low in (torch.bfloat16, torch.float16):
        out = linear_angular(qkv.to(low), 4, form)[0]
        assert out.dtype == low
        assert (out.double() - exact).norm() / exact.norm() < 0.01


@pytest.mark.parametrize("conv", ["1d", "2d", None])
@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_module_fast_path_equals_its_readable_path(monkeypatch, conv, form, alpha):
    torch.manual_seed(0)
    module = CastlingAttention(12, 3, form=form, conv=conv, alpha=alpha).double()
    for batch, tokens in ((1, 49), (2, 16)):
        x = torch.randn(batch, tokens, 12, dtype=torch.float64, requires_grad=True)
        inputs = [x, *module.parameters()]
        fast = module(x)
        fast_grads = gradients([fast], inputs)
        monkeypatch.setattr(attention, "_compiling", lambda: True)  # the path torch.compile traces
        readable_out = module(x)
        torch.testing.assert_close(fast, readable_out)
        for got, expected in zip(fast_grads, gradients([readable_out], inputs)):
            torch.testing.assert_close(got, expected)
        monkeypatch.undo()


def test_token_conv_runs_the_authors_convolution():
    conv = TokenConv1d(num_heads=3, kernel_size=9).double()
    v = torch.randn(2, 3, 11, 4, dtype=torch.float64, requires_grad=True)
    authors = F.conv2d(v, conv.conv.weight, padding=(4, 0), groups=3)  # their layout: H channels, N × d pixels
    ours = conv(v)
    torch.testing.assert_close(ours, authors)
    torch.testing.assert_close(gradients([ours], [v, conv.conv.weight]), gradients([authors], [v, conv.conv.weight]))


def test_grid_conv_runs_a_plain_depthwise_convolution_over_the_grid():
    conv = GridConv2d(dim=6, num_heads=2).double()
    v = torch.randn(2, 2, 25, 3, dtype=torch.float64, requires_grad=True)
    grid = rearrange(v, "b h (y x) d -> b (h d) y x", y=5)
    expected = rearrange(conv.conv(grid), "b (h d) y x -> b h (y x) d", h=2)
    ours = conv(v)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(gradients([ours], [v]), gradients([expected], [v]))
