"""Tutorial 05 · the model: images to tokens, the MACs of one softmax attention layer, and castling a
whole model."""

import contextlib
import numbers
import sys

import torch
import torch.nn.functional as F

from .core import CheckFailed, Exercise, _randn, call, compare, describe, exercise, passed


@exercise("05", 1, "warm-up", "each image is a grid of (H/p) × (W/p) patches, and a token is one patch with its C "
                              "channels and p × p pixels laid out as features, channel first, then pixel row, then "
                              "pixel column (the order F.unfold uses). einops.rearrange can name every one of those axes.")
def patchify(ex: Exercise, fn) -> None:
    """Images (B, C, H, W) → tokens (B, H/p · W/p, C·p·p), row-major: what the patch stem sees."""
    g = torch.Generator().manual_seed(14)
    cases = [{"images": _randn(*shape, generator=g), "patch": patch}
             for shape, patch in [((2, 3, 8, 8), 4), ((1, 1, 6, 4), 2), ((3, 2, 5, 5), 5)]]
    compare(ex, fn, lambda images, patch: F.unfold(images, patch, stride=patch).transpose(1, 2), cases, ("images",))
    passed(ex, "3 image and patch sizes match torch's F.unfold(images, p, stride=p).transpose(1, 2).")


@exercise("05", 2, "core", "follow one image of N tokens through the layer and list every matrix product on the "
                              "way, per head where the work is per head. An (a × b) by (b × c) product costs a·b·c "
                              "multiply-accumulates; biases, softmax and other elementwise work are not counted.")
def softmax_attention_macs(ex: Exercise, fn) -> None:
    """The MACs of one SoftmaxAttention layer, as torch's flop counter measures them."""
    from ..attention import SoftmaxAttention
    from ..measure import macs

    # the first size tells the terms apart (at N = 2C, say, N·C² = 2 N²·C and a wrong term could pass for another)
    for tokens, width, heads in [(196, 96, 3), (64, 128, 4), (16, 64, 2), (1, 32, 1), (1024, 256, 8)]:
        case = {"tokens": tokens, "width": width, "heads": heads}
        expected = macs(SoftmaxAttention(width, heads), torch.zeros(1, tokens, width))
        got = call(ex, fn, case)
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            raise CheckFailed(f"{ex.label}: return a number (an int); got a {type(got).__name__} for {describe(case)}.")
        got = int(got) if isinstance(got, numbers.Integral) else float(got)  # numpy's integers are numbers too
        if got != expected:
            difference = expected - got
            units = {"N·C²": tokens * width * width, "N²·C": tokens * tokens * width, "N·C": tokens * width}
            explained = [f"{difference / size:g} × {name}" for name, size in units.items()
                         if difference % size == 0 and abs(difference / size) <= 4]
            advice = (f" The difference is {' or '.join(explained)}: a term of that size is missing or extra."
                      if explained else "")
            raise CheckFailed(f"{ex.label}: for {describe(case)} you count {got:,} MACs; the flop counter measures "
                              f"{expected:,} (you are {'under' if difference > 0 else 'over'} by {abs(difference):,}).{advice}")
    passed(ex, "your formula matches torch's flop counter on 5 layer sizes, from 1 to 1,024 tokens.")


def castling_model():
    """A four-layer smoke-sized castling ViT in eval mode, the same every call."""
    from ..model import ViT
    from ..presets import get_config

    torch.manual_seed(0)
    return ViT(get_config("smoke", attention="castling", depth=4)).eval()


@contextlib.contextmanager
def _calls_to(functions):
    """The names of those `functions` that run while the block runs, however they were imported."""
    codes = {function.__code__: function.__name__ for function in functions}
    seen, previous = [], sys.getprofile()

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.append(codes[frame.f_code])

    sys.setprofile(profiler)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def _castle_yourself(ex: Exercise, fn, case: dict):
    """fn(**case), failing if it hands the work to minicastling's own castle(model) or castled_copy(model)."""
    from ..castling import castle, castled_copy

    with _calls_to([castle, castled_copy]) as seen:
        try:
            return call(ex, fn, case)
        finally:
            if seen:
                raise CheckFailed(f"{ex.label}: your function calls minicastling's {seen[0]}(), which section 5 "
                                  "used: this exercise is to write what it does. Go through the model's "
                                  "CastlingAttention layers yourself and castle each with layer.castle().") from None


@exercise("05", 3, "stretch", "two passes over the model's CastlingAttention layers (model.modules() finds them): the "
                              "first only looks, at every layer, the second acts. What should the first look for, and "
                              "why must no layer change when one of them, any one, cannot be castled?")
def castle_model(ex: Exercise, fn) -> None:
    """Castle every layer or none: refuse (RuntimeError) while any α > 0, before touching a layer."""
    from ..castling import CastlingAttention, set_alpha

    for live in (2, 0, 3):  # a middle layer, the first, the last
        model = castling_model()
        layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]
        set_alpha(model, 0.0)
        layers[live].set_alpha(0.25)
        try:
            _castle_yourself(ex, fn, {"model": model})
        except CheckFailed as failure:
            said = str(failure)
            if "is not written yet" in said or "calls minicastling's" in said:
                raise
            if "raised RuntimeError" not in said:
                raise CheckFailed(f"{ex.label}: with layer {live}'s alpha at 0.25 your function should raise "
                                  f"RuntimeError, but {said.split(': ', 1)[1]}") from None
        else:
            raise CheckFailed(f"{ex.label}: layer {live} of {len(layers)} still has alpha = 0.25, so castling would "
                              "change the model, but your function did not raise RuntimeError. Look at every layer's "
                              "alpha, not one of them.")
        done = [i for i, layer in enumerate(layers) if layer.castled]
        if done:
            raise CheckFailed(f"{ex.label}: with layer {live}'s alpha at 0.25 you raised, but only after castling "
                              f"layer(s) {done}: the model is left half castled. Check every alpha first, then castle.")
        if layers[live].alpha != 0.25 or any(layer.alpha != 0.0 for i, layer in enumerate(layers) if i != live):
            raise CheckFailed(f"{ex.label}: your function changed a layer's alpha while refusing; a refusal must leave "
                              "the model exactly as it was.")
    layers[live].set_alpha(0.0)
    images = torch.randn(4, 3, model.config.image_size, model.config.image_size, generator=torch.Generator().manual_seed(15))
    before = model(images)
    returned = _castle_yourself(ex, fn, {"model": model})
    left = [i for i, layer in enumerate(layers) if not layer.castled]
    if left:
        raise CheckFailed(f"{ex.label}: with every alpha at 0, layer(s) {left} of {len(layers)} were not castled.")
    if returned is not model:
        raise CheckFailed(f"{ex.label}: return the model you castled (got a {type(returned).__name__}).")
    if not torch.equal(model(images), before):
        raise CheckFailed(f"{ex.label}: after castling at alpha = 0 the outputs changed: only layer.castle() should run.")
    passed(ex, "refuses while the first, a middle or the last layer's alpha > 0 without castling or changing any "
               "layer, and castles all four at alpha = 0 with outputs bit-for-bit unchanged.")
