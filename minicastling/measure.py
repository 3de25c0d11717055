"""Measuring a model: its multiply–accumulates, how sharp its attention is, how much it uses the branch.

What the course measures of a model: MACs before and after castling (the abstract compares models
"under comparable FLOPs"), how far the weights it attends with are from uniform, and, while training,
the softmax branch's mask density and its share of the attention output; and its test accuracy. Training logs
these every epoch (epoch_tests) and at its end; tutorials 05–07 plot them.
"""

import contextlib
import copy
import math

import torch
from torch import nn

from .attention import SoftmaxAttention, attention_weights
from .castling import CastlingAttention, castled_copy, set_alpha
from .extras import distributed
from .model import ViT


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """The model in eval mode inside the block, back in the mode it was in after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_cpu_sdpa() -> None:
    """torch's flop counter knows SDPA's CUDA kernels but not the CPU ones; give them the same formulas."""
    from torch.utils import flop_counter

    forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    registered = lambda op: op in flop_counter.flop_registry or op.default in flop_counter.flop_registry  # noqa: E731
    if not registered(forward):
        flop_counter.register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)
        )
    if not registered(backward):
        flop_counter.register_flop_formula(backward)(
            lambda grad_out, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop_count(
                grad_out, q, k, v)
        )


def macs(module: nn.Module, *inputs, backward: bool = False) -> int:
    """Multiply–accumulates of module(*inputs) (and its backward), from torch.utils.flop_counter.

    Counts matmuls, convolutions and the CPU kernel's operator (its formula counts the same products
    as the library calls), attention's N×N products included; not elementwise work. The counter's
    formula for a convolution's backward ignores `groups`, counting a depthwise conv as a dense one;
    it is counted here as what it is, twice the forward (input and weight).
    """
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_sdpa()
    with evaluating(module), FlopCounterMode(display=False) as counter:
        if backward:
            leaves = [x.detach().requires_grad_() for x in inputs]
            module(*leaves).sum().backward()
        else:
            with torch.no_grad():
                module(*inputs)
    flops = {str(op): count for op, count in counter.get_flop_counts()["Global"].items()}
    if "aten.convolution_backward" in flops:
        flops["aten.convolution_backward"] = 2 * flops["aten.convolution"]
    return sum(flops.values()) // 2


def count_macs(model: ViT) -> int:
    """MACs of one image's forward pass through a ViT."""
    config = model.config
    images = torch.zeros(1, config.channels, config.image_size, config.image_size, device=next(model.parameters()).device)
    return macs(model, images)


def macs_by_variant(config) -> dict:
    """MACs per image of the softmax twin, the castling model while training (α > 0), and castled."""
    twin = ViT(config.replace(attention="softmax"))
    training = ViT(config.replace(attention="castling"))
    set_alpha(training, 1.0)
    return {"softmax twin": count_macs(twin), "castling (training)": count_macs(training),
            "castled (inference)": count_macs(castled_copy(training))}


@torch.no_grad()
def per_layer(model: nn.Module, images: torch.Tensor, kinds, measure) -> list:
    """measure(layer, tokens) for every attention layer of the given kinds, on one eval-mode forward pass."""
    values = []
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    hooks = [layer.register_forward_pre_hook(lambda layer, inputs: values.append(measure(layer, inputs[0])))
             for layer in layers]
    try:
        with evaluating(model):
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return values


def mask_density(model: nn.Module, images: torch.Tensor) -> float:
    """Share of softmax entries the auxiliary branch's mask keeps, averaged over castling layers.

    0 means the branch adds nothing and, since no gradient passes the mask, learns nothing: with
    near-uniform attention over N > 1/ε tokens every entry 1/N falls below ε.
    """
    def density(layer, tokens):
        q, k, _ = layer.split_qkv(tokens)
        return (attention_weights(q, k, "softmax") > layer.mask_threshold(k.shape[-2])).float().mean().item()

    densities = per_layer(model, images, CastlingAttention, density)
    return sum(densities) / len(densities) if densities else 0.0


def branch_share(model: nn.Module, images: torch.Tensor) -> float | None:
    """How much of the attention output the softmax branch makes: ‖y − y₀‖ / ‖y‖ per castling layer,
    y the layer's attention output (the DWConv's included) with the branch and y₀ without (same input),
    averaged over layers.

    None when no layer has the branch on (α = 0 or castled). Read beside α: a branch can be weighted
    and still add little, when its mask keeps few entries or its output lies close to the linear path's.
    """
    def share(layer, tokens):
        if not layer.auxiliary_active:
            return None
        qkv = layer.project(tokens)  # (B, N, 3C)
        with_branch, without = layer.attend(qkv), layer.attend(qkv, branch=False)  # (B, H, N, d) each
        return ((with_branch - without).norm() / with_branch.norm().clamp_min(1e-12)).item()

    shares = [s for s in per_layer(model, images, CastlingAttention, share) if s is not None]
    return sum(shares) / len(shares) if shares else None


def branch_use(model: nn.Module, images: torch.Tensor) -> tuple:
    """(mask_density, branch_share) on `images`: what training logs at the end of each epoch."""
    return mask_density(model, images), branch_share(model, images)


def castled_measures(model: ViT, images: torch.Tensor, alpha0: float) -> dict:
    """What a finished run reports of its trained `model` (α already 0, not yet castled): MACs per image with the
    softmax branch on at α₀, as while training (the same as castled where there is no branch), and castled; and
    how sharp its attention is on `images`."""
    sharpness = attention_sharpness(model, images)
    with_branch = copy.deepcopy(model).cpu()
    set_alpha(with_branch, alpha0)
    before, after = count_macs(with_branch), count_macs(castled_copy(model).cpu())
    return {"macs_before_castling": before, "macs_after_castling": after, "mac_reduction": before / after,
            "attention_sharpness": sharpness}


def row_sharpness(weights: torch.Tensor) -> tuple:
    """(mean of N × each row's largest weight, mean of each row's entropy / log N) for weights (…, N_q, N)."""
    n = weights.shape[-1]
    entropy = torch.special.entr(weights).sum(-1) / math.log(n) if n > 1 else torch.zeros(())
    return weights.amax(-1).mean().item() * n, entropy.mean().item()


def attention_sharpness(model: nn.Module, images: torch.Tensor) -> dict:
    """How far the weights a model attends with are from uniform, averaged over layers, heads and rows.

    max_weight_x_n: the largest weight of a row times N (1 = uniform, N = one-hot); entropy_ratio: the
    row's entropy over log N (1 = uniform, 0 = one-hot). Softmax attention is measured on its
    probabilities; castling attention on the linear angular kernel's weights (½ + q̂·k̂/π) / Σ, what a
    castled form="kernel" layer attends with. Those lie within a factor (½ + 1/π)/(½ − 1/π) ≈ 4.5 of each
    other. A form="official" layer does not mix its values with them (it mixes with ½ I + Q̂K̂ᵀ/π, then
    rescales each output to length 1): there they say only how its q̂ and k̂ align, not how it attends.
    """
    def sharpness(layer, tokens):
        q, k, _ = layer.split_qkv(tokens)
        weights = attention_weights(q, k, "softmax") if isinstance(layer, SoftmaxAttention) else \
            attention_weights(q, k, "angular-linear")  # (B, H, N, N)
        return row_sharpness(weights)

    values = per_layer(model, images, (SoftmaxAttention, CastlingAttention), sharpness)
    if not values:
        return {"max_weight_x_n": None, "entropy_ratio": None}
    return {"max_weight_x_n": sum(v[0] for v in values) / len(values),
            "entropy_ratio": sum(v[1] for v in values) / len(values)}


@torch.no_grad()
def evaluate(model, split: list, precision, process=distributed.Process()) -> float:
    """Top-1 accuracy (%) over a split's batches [(images, labels), …], each process holding its share of each
    batch, under the precision's autocast (extras/precision.py). The model is in eval mode for it and back in the
    mode it was in after it."""
    correct = torch.zeros((), device=split[0][1].device)
    images_seen = torch.zeros((), device=split[0][1].device)
    with evaluating(model):
        for images, labels in split:
            with precision.autocast():
                correct += (model(images).argmax(dim=-1) == labels).sum()
            images_seen += len(labels)
    return 100.0 * process.sum(correct).item() / process.sum(images_seen).item()


def epoch_tests(run, alpha: float, tested: bool) -> dict:
    """The end of an epoch's measurements of a training run (train.Run), at α's end-of-epoch value `alpha`, which
    it sets and leaves set: test accuracy; with α forced to 0 for a moment (how much the model leans on the
    softmax branch; once α is 0 the same); the mask's density and the branch's share of the attention output
    on the probe batch. None where they do not apply."""
    run.set_alpha(alpha)
    branch = run.recipe.fades_a_branch
    test_acc = evaluate(run.evaluated, run.epoch_test, run.precision, run.process) if tested else None
    without = test_acc if tested and branch and alpha == 0.0 else None
    if tested and branch and alpha != 0.0:
        run.set_alpha(0.0)
        without = evaluate(run.evaluated, run.epoch_test, run.precision, run.process)
        run.set_alpha(alpha)
    density, share = branch_use(run.model, run.probe) if branch else (None, None)
    return {"test_acc": test_acc, "test_acc_without_branch": without, "mask_density": density, "branch_share": share}
