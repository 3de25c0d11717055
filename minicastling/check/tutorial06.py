"""Tutorial 06 · training: setting α on a whole model, and watching a layer's mask fire and its
weights sharpen (or not) as it trains."""

import copy
import math

import torch

from .core import CheckFailed, Exercise, call, exercise, passed, same_number
from .tutorial05 import castling_model


@exercise("06", 1, "warm-up", "walk the model's submodules and find the CastlingAttention layers. A layer keeps α in "
                              "two places, a float for people and a buffer its forward multiplies by: which of its "
                              "methods keeps them in step?")
def set_alpha_everywhere(ex: Exercise, fn) -> None:
    """Give the auxiliary branch of every CastlingAttention layer in a model the weight α (what each training step does)."""
    from ..attention import CastlingAttention, set_alpha

    model = castling_model()
    images = torch.randn(4, 3, model.config.image_size, model.config.image_size, generator=torch.Generator().manual_seed(25))
    for alpha in (0.3, 0.0, 0.8):
        expected_model = copy.deepcopy(model)
        set_alpha(expected_model, alpha)
        call(ex, fn, {"model": model, "alpha": alpha})
        for i, layer in enumerate(m for m in model.modules() if isinstance(m, CastlingAttention)):
            if layer.alpha != alpha:
                raise CheckFailed(f"{ex.label}: after your call with alpha={alpha}, layer {i} still has alpha = "
                                  f"{layer.alpha:g}: set it on every CastlingAttention layer.")
            if not math.isclose(float(layer.alpha_weight), alpha, rel_tol=1e-6) or layer.branch_on != (alpha != 0):
                raise CheckFailed(f"{ex.label}: layer {i} reads alpha = {alpha:g}, but the buffer its forward multiplies "
                                  f"by still holds {float(layer.alpha_weight):g}: assigning layer.alpha changes the label, "
                                  "not the layer. Use the layer's own method, layer.set_alpha(alpha).")
        with torch.no_grad():
            if not torch.equal(model(images), expected_model(images)):
                raise CheckFailed(f"{ex.label}: with alpha={alpha} the model's outputs differ from a model set with "
                                  "minicastling's set_alpha: did something besides α change?")
    passed(ex, "α = 0.3, 0 and 0.8 reach every layer, its forward included, with outputs equal to minicastling's set_alpha.")


def _layers_and_tokens() -> list:
    """CastlingAttention layers of several kinds and token batches that make their masks fire to different degrees."""
    from ..attention import CastlingAttention

    g = torch.Generator().manual_seed(26)
    cases = []
    for dim, heads, tokens, options, scale in [(16, 2, 20, dict(threshold=0.02), 3.0),
                                                (24, 3, 36, dict(threshold=0.1), 4.0),
                                                (16, 4, 49, dict(threshold=1.0, mask="relative"), 2.0),
                                                (32, 2, 64, dict(threshold=0.02), 0.5)]:
        torch.manual_seed(len(cases))
        layer = CastlingAttention(dim, heads, **options).eval()
        cases.append({"layer": layer, "x": scale * torch.randn(2, tokens, dim, generator=g)})
    return cases


def mask_density_reference(layer, x):
    """Share of the layer's softmax probabilities above its ε, over every batch, head, query and key."""
    from ..branches import attention_probabilities

    with torch.no_grad():
        q, k, _ = layer.split_qkv(x)  # (B, H, N, d)
        return (attention_probabilities(q, k) > layer.mask_threshold(k.shape[-2])).float().mean().item()


@exercise("06", 2, "core", "get this layer's per-head q and k for the tokens x (the layer can split them for you, as "
                           "it does in its forward), form the softmax probabilities, and compare them with the ε the "
                           "layer uses for this many keys: a layer with mask='relative' scales its threshold.")
def layer_mask_density(ex: Exercise, fn) -> None:
    """The share of softmax entries a CastlingAttention layer's mask keeps for tokens x: where the branch fires."""
    for case in _layers_and_tokens():
        layer = case["layer"]
        same_number(ex, call(ex, fn, case), mask_density_reference(**case), case, rel_tol=1e-5, abs_tol=1e-6,
                    explain=f"The layer has {layer.num_heads} heads, threshold={layer.threshold:g} and mask={layer.mask!r}.")
    passed(ex, "4 layers (absolute and relative masks, 2 to 4 heads, 20 to 64 tokens) match minicastling's mask density.")


def sharpness_reference(layer, x):
    """Mean over batch, heads and queries of N × the largest linear-angular weight of the row."""
    from ..attention import attention_weights

    with torch.no_grad():
        q, k, _ = layer.split_qkv(x)  # (B, H, N, d)
        weights = attention_weights(q, k, "angular-linear")  # (B, H, N, N)
        return weights.amax(-1).mean().item() * weights.shape[-1]


@exercise("06", 3, "stretch", "once castled, the layer attends with the linear kernel ½ + q̂·k̂/π, normalised over the "
                              "keys; those are the weights to measure, not the softmax's. Take each row's largest "
                              "weight and scale it so that uniform attention scores 1.")
def layer_sharpness(ex: Exercise, fn) -> None:
    """How far from uniform a castled layer attends: the mean over rows of N × the largest linear-angular weight."""
    for case in _layers_and_tokens():
        same_number(ex, call(ex, fn, case), sharpness_reference(**case), case, rel_tol=1e-5, abs_tol=1e-6,
                    explain="1 means uniform attention, N one-hot.")
    passed(ex, "4 layers match minicastling.model.attention_sharpness's measure, N × the largest weight of a row.")
