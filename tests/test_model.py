"""The ViT, presets, castle(model) and MAC counting (tutorial 05)."""

import pytest
import torch

from minicastling.attention import SoftmaxAttention
from minicastling.castling import CastlingAttention, castle, set_alpha
from minicastling.measure import count_macs, count_parameters, macs_by_variant, mask_density
from minicastling.model import ViT
from minicastling.presets import PRESETS, get_config


@pytest.mark.parametrize("attention", ["castling", "linear-angular", "softmax"])
@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_forward_shapes(attention, stem):
    model = ViT(get_config("smoke", attention=attention, stem=stem))
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_presets_have_honest_sizes():
    sizes = {name: count_parameters(ViT(recipe.model)) for name, recipe in PRESETS.items()}
    assert sizes["smoke"] < 100_000
    assert 100_000 < sizes["cpu"] < 1_000_000
    assert 3_000_000 < sizes["gpu"] < 6_000_000


def test_twins_share_parameter_count_except_the_conv_branch():
    castling = ViT(get_config("smoke", conv=None))
    twin = ViT(get_config("smoke", attention="softmax"))
    assert count_parameters(castling) == count_parameters(twin)
    assert isinstance(twin.blocks[0].attn, SoftmaxAttention)
    assert isinstance(castling.blocks[0].attn, CastlingAttention)


def test_2d_conv_branch_works_on_the_patch_grid():
    model = ViT(get_config("smoke", conv="2d", image_size=48, patch_size=4))
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 10)


@pytest.mark.parametrize("stem", ["patch", "conv"])
@pytest.mark.parametrize("conv", ["1d", "2d"])
def test_fashion_mnist_shapes_run_natively(stem, conv):
    """28 × 28 × 1 images, no padding: a 7 × 7 grid of 49 tokens through every stem and conv branch."""
    config = get_config("smoke", image_size=28, channels=1, stem=stem, conv=conv)
    assert config.tokens == 49
    model = ViT(config)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    macs = macs_by_variant(config)
    assert macs["castled (inference)"] < macs["castling (training)"] and count_macs(model) > 0
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 1, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28))


def test_castle_model_is_all_or_nothing_and_exact_at_alpha_zero():
    torch.manual_seed(0)
    model = ViT(get_config("smoke")).eval()
    images = torch.randn(4, 3, 32, 32)
    with pytest.raises(RuntimeError, match=r"2 of 2 castling attentions.*alpha=1.*castle\(model, force=True\)"):
        castle(model)
    assert not any(m.castled for m in model.modules() if isinstance(m, CastlingAttention))
    set_alpha(model, 0.0)
    before = model(images)
    castle(model)
    assert torch.equal(model(images), before)


def peaked(model):
    """Scale W_q and W_k so attention is peaked enough for the mask to keep entries."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, CastlingAttention):
                layer.qkv.weight[: 2 * layer.dim] *= 30
    return model


def test_mask_density_is_zero_at_init_and_positive_when_attention_peaks():
    torch.manual_seed(0)
    model = ViT(get_config("smoke"))
    images = torch.randn(4, 3, 32, 32)
    assert mask_density(model, images) == 0.0  # uniform 1/64 < ε = 0.02: the branch starts silent
    assert mask_density(peaked(model), images) > 0.01
    assert mask_density(ViT(get_config("smoke", attention="softmax")), images) == 0.0


def test_forced_castle_changes_outputs():
    torch.manual_seed(0)
    model = peaked(ViT(get_config("smoke"))).eval()
    images = torch.randn(4, 3, 32, 32)
    before = model(images)
    with pytest.warns(RuntimeWarning, match="forced"):
        castle(model, force=True)
    assert not torch.equal(model(images), before)


def test_macs_count_attention_and_shrink_with_castling():
    config = get_config("smoke", stem="patch", dim=32, depth=1, num_heads=2, mlp_ratio=1.0)
    tokens, dim = config.tokens, config.dim
    twin = count_macs(ViT(config.replace(attention="softmax")))
    # patch conv + (qkv, proj, 2 MLP linears) + N×N×d twice for QKᵀ and AV + head
    expected = tokens * dim * 3 * 16 + tokens * (3 * dim * dim + dim * dim + 2 * dim * dim) + 2 * tokens**2 * dim + dim * 10
    assert twin == expected
    macs = macs_by_variant(get_config("smoke", image_size=128))
    assert macs["castled (inference)"] < macs["softmax twin"] < macs["castling (training)"]


def test_castled_advantage_grows_with_tokens():
    ratios = []
    for size in (32, 64, 128):
        macs = macs_by_variant(get_config("smoke", image_size=size))
        ratios.append(macs["castled (inference)"] / macs["softmax twin"])
    assert ratios[0] > ratios[1] > ratios[2]


def test_config_errors():
    with pytest.raises(ValueError, match="image_size=32 is not divisible by patch_size=5"):
        get_config("smoke", patch_size=5, stem="patch")
    with pytest.raises(ValueError, match="power of 2"):
        get_config("smoke", image_size=36, patch_size=6)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        get_config("smoke", attention="flash")
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 3, 32, 32\), got \(2, 32, 32, 3\)"):
        ViT(get_config("smoke"))(torch.randn(2, 32, 32, 3))
