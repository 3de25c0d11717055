"""The library-call path (minicastling.fast.library_calls) and the DWConv branches against the readable forms, in float64."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minicastling.attention import linear_angular_attention
from minicastling.castling import CastlingAttention
from minicastling.branches import GridConv2d, TokenConv1d
from minicastling.fast.library_calls import linear_angular

SHAPES = [(1, 1, 1, 3), (2, 7, 3, 4), (1, 49, 2, 5), (3, 16, 2, 8)]  # (batch, tokens, heads, head_dim)


def readable(qkv, heads, form, auxiliary=None):
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)
    return linear_angular_attention(q, k, v, form=form, auxiliary=auxiliary), v


@pytest.mark.parametrize("form", ["kernel", "official"])
@pytest.mark.parametrize("with_auxiliary", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_library_path_equals_the_readable_form_in_values_and_gradients(form, with_auxiliary, shape,
                                                                     same_values_and_gradients):
    b, n, h, d = shape
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(b, n, 3 * h * d, generator=g, dtype=torch.float64, requires_grad=True)
    auxiliary = torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True) if with_auxiliary else None
    inputs = [qkv] + ([auxiliary] if with_auxiliary else [])
    same_values_and_gradients(linear_angular(qkv, h, form, auxiliary), readable(qkv, h, form, auxiliary), inputs)


@pytest.mark.parametrize("form", ["kernel", "official"])
def test_library_path_passes_gradcheck(form):
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
def test_module_library_path_equals_its_readable_path(conv, form, alpha, gradients):
    torch.manual_seed(0)
    library = CastlingAttention(12, 3, form=form, conv=conv, alpha=alpha, path="library").double()
    readable_module = CastlingAttention(12, 3, form=form, conv=conv, alpha=alpha, path="readable").double()
    readable_module.load_state_dict(library.state_dict())
    for batch, tokens in ((1, 49), (2, 16)):
        x = torch.randn(batch, tokens, 12, dtype=torch.float64, requires_grad=True)
        fast, slow = library(x), readable_module(x)
        torch.testing.assert_close(fast, slow)
        for got, expected in zip(gradients(fast, [x, *library.parameters()]),
                                 gradients(slow, [x, *readable_module.parameters()])):
            torch.testing.assert_close(got, expected)


def test_token_conv_runs_the_authors_convolution(same_values_and_gradients):
    conv = TokenConv1d(num_heads=3, kernel_size=9).double()
    v = torch.randn(2, 3, 11, 4, dtype=torch.float64, requires_grad=True)
    authors = F.conv2d(v, conv.conv.weight, padding=(4, 0), groups=3)  # their layout: H channels, N × d pixels
    same_values_and_gradients(conv(v), authors, [v, conv.conv.weight])


def test_grid_conv_runs_a_plain_depthwise_convolution_over_the_grid(same_values_and_gradients):
    conv = GridConv2d(dim=6, num_heads=2).double()
    v = torch.randn(2, 2, 25, 3, dtype=torch.float64, requires_grad=True)
    grid = rearrange(v, "b h (y x) d -> b (h d) y x", y=5)
    expected = rearrange(conv.conv(grid), "b (h d) y x -> b h (y x) d", h=2)
    same_values_and_gradients(conv(v), expected, [v])
