"""The zoo of linear attentions: each O(N) form equals its explicit O(N²) kernel form."""

import math

import pytest
import torch

from minicastling.attention import quadratic_attention
from minicastling.model import ViT
from minicastling.presets import get_config
from minicastling.zoo import (
    FEATURE_MAPS,
    FeatureMapAttention,
    PerformerFeatures,
    feature_similarity,
    focused_features,
    linear_attention,
)


def qkv(seed=0, shape=(2, 3, 40, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("name", [*FEATURE_MAPS, "performer"])
def test_linear_form_equals_explicit_form(name):
    q, k, v = qkv()
    phi = PerformerFeatures(8).double() if name == "performer" else FEATURE_MAPS[name]
    torch.testing.assert_close(linear_attention(q, k, v, phi, eps=0.0), quadratic_attention(q, k, v, feature_similarity(phi)))


def test_performer_estimates_the_softmax_kernel():
    q, k, _ = (0.5 * t for t in qkv(1, (1, 1, 16, 8)))  # moderate norms: the estimator's variance grows with them
    phi = PerformerFeatures(8, num_features=8192).double()
    estimate = feature_similarity(phi)(q, k)
    estimate = estimate / estimate.sum(-1, keepdim=True)
    exact = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    assert (estimate - exact).abs().max() < 0.02
    few = feature_similarity(PerformerFeatures(8, num_features=8).double())(q, k)
    assert ((few / few.sum(-1, keepdim=True)) - exact).abs().max() > (estimate - exact).abs().max()


def test_focusing_keeps_the_norm_and_sharpens():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    f = focused_features(x)
    torch.testing.assert_close(f.norm(), x.norm(), rtol=1e-5, atol=1e-5)
    assert f[0, 2] / f[0, 0] > x[0, 2] / x[0, 0]


@pytest.mark.parametrize("kind", [*FEATURE_MAPS, "performer"])
def test_every_kind_runs_as_the_models_attention(kind):
    model = ViT(get_config("smoke", attention=kind))
    assert isinstance(model.blocks[0].attn, FeatureMapAttention)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gradcheck_feature_map_attention():
    torch.manual_seed(0)
    module = FeatureMapAttention(8, 2, kind="elu", conv="1d").double()
    assert torch.autograd.gradcheck(module, (torch.randn(1, 9, 8, dtype=torch.float64, requires_grad=True),))


def test_unknown_feature_map_is_named():
    with pytest.raises(ValueError, match="unknown feature map 'cosine'"):
        FeatureMapAttention(8, 2, kind="cosine")

