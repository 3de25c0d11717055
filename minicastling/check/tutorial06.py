"""Tutorial 06 · training: how much a model still training leans on the softmax branch, where its mask
fires, and how sharp a castled kernel-form layer's weights are."""


import math

import torch

from .core import CheckFailed, Exercise, call, describe, exercise, passed, same_number, same_tensor


def _model_with_live_branch(seed: int, training: bool = True):
    """A smoke castling ViT in training mode whose layers weight the softmax branch differently, images and labels
    on which forcing α to 0 changes some predictions. The labels are what the α = 0 model predicts, but for
    the last `wrong` images, shifted by one class: the α = 0 accuracy is known exactly and is not 100."""
    from ..castling import CastlingAttention, set_alpha
    from ..measure import evaluating
    from ..model import ViT
    from ..presets import get_config

    torch.manual_seed(seed)
    model = ViT(get_config("smoke", attention="castling", threshold=0.0)).train(training)
    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]
    with torch.no_grad():
        for layer in layers:
            layer.qkv.weight.mul_(8.0)  # sharp softmax: a branch worth forcing off
    images = 3 * torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    set_alpha(model, 0.0)
    with evaluating(model), torch.no_grad():
        labels = model(images).argmax(-1)  # α = 0 everywhere: these are the predictions to reproduce
    wrong = 32 if seed == 0 else 48
    labels[-wrong:] = (labels[-wrong:] + 1) % model.config.num_classes  # the model gets these wrong at α = 0
    for layer, alpha in zip(layers, (0.6, 1.5)):
        layer.set_alpha(alpha)
    return model, layers, images, labels, 100.0 * (len(labels) - wrong) / len(labels)


@exercise("06", 1, "warm-up", "while α > 0 the model's output includes the softmax branch. Set α to 0 on every "
                              "CastlingAttention layer, measure as evaluation does (eval mode, no gradients), then put "
                              "back each layer's own α and the mode the model was in: the caller keeps training it.")
def accuracy_without_branch(ex: Exercise, fn) -> None:
    """Test accuracy (%) with the softmax branch forced off: how much a model still training leans on it."""
    from ..castling import CastlingAttention
    from ..measure import evaluating

    for seed, training in ((0, True), (1, False)):
        model, layers, images, labels, expected = _model_with_live_branch(seed, training)
        state = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        with evaluating(model), torch.no_grad():
            with_branch = 100.0 * (model(images).argmax(-1) == labels).float().mean().item()
        case = {"model": model, "images": images, "labels": labels}
        got = call(ex, fn, case)
        if any(layer.castled for layer in layers):
            raise CheckFailed(f"{ex.label}: your function castled the model; castling removes the branch for good, "
                              "and this model is still training. Set α to 0 for the measurement, then back.")
        if [layer.alpha for layer in layers] != [0.6, 1.5]:
            raise CheckFailed(f"{ex.label}: the layers came back with alphas {[layer.alpha for layer in layers]}; they "
                              "went in with [0.6, 1.5]. Remember each layer's own α and restore it.")
        if model.training != training:
            was, now = ("training", "eval") if training else ("eval", "training")
            raise CheckFailed(f"{ex.label}: the model came back in {now} mode; it was in {was} mode. Restore the "
                              "mode it had (the caller may be training it, or evaluating it).")
        if any(not torch.equal(model.state_dict()[k], v) for k, v in state.items()):
            raise CheckFailed(f"{ex.label}: measuring changed the model's weights or statistics. In training mode the "
                              "conv stem's BatchNorm updates its running averages on every forward pass: measure in "
                              "eval mode.")
        hint = ""
        if isinstance(got, (int, float)) and abs(got - with_branch) < 1e-6:
            hint = " That is the accuracy with the branch still on: set α to 0 on every CastlingAttention layer."
        same_number(ex, got, expected, case, rel_tol=1e-6, abs_tol=1e-6,
                    explain="These labels are chosen so that the model with α = 0, in eval mode, gets exactly "
                            f"{expected:g} % of the images right (in percent, not a fraction)." + hint)
    passed(ex, "on 2 models whose layers weight the branch differently, one training and one in eval mode, the "
               "accuracy with α forced to 0 is right, in percent, and every layer's α, the mode and the weights come "
               "back as they were.")


def _kernel_form_layers() -> list:
    """Kernel-form CastlingAttention layers of several sizes and branches, castled or not, with token batches."""
    from ..castling import CastlingAttention

    g = torch.Generator().manual_seed(26)
    cases = []
    for dim, heads, tokens, options, scale in [(16, 2, 20, dict(conv="1d"), 3.0),
                                                (24, 3, 36, dict(conv=None), 4.0),
                                                (16, 4, 49, dict(conv="2d", alpha=0.0), 2.0),
                                                (32, 2, 64, dict(conv="1d", alpha=0.0), 0.5)]:
        torch.manual_seed(len(cases))
        layer = CastlingAttention(dim, heads, form="kernel", **options).eval()
        if layer.alpha == 0.0:
            layer.castle()
        cases.append({"layer": layer, "x": scale * torch.randn(2, tokens, dim, generator=g)})
    return cases


def _density_without_scale(model, images) -> float:
    """mask_density with the logits q·k not divided by √d: what a student who forgets the scale measures."""
    from ..castling import CastlingAttention
    from ..measure import per_layer

    def density(layer, tokens):
        q, k, _ = layer.split_qkv(tokens)  # (B, H, N, d)
        return (torch.softmax(q @ k.transpose(-2, -1), dim=-1) > layer.mask_threshold(k.shape[-2])).float().mean().item()

    densities = per_layer(model, images, CastlingAttention, density)
    return sum(densities) / len(densities)


@exercise("06", 2, "core", "each CastlingAttention layer sees its own input, its block's normalised tokens, which only "
                           "a forward pass produces: capture it on the way in (a forward pre-hook), measure that layer's "
                           "mask as tutorial 04 did, with the ε the layer uses for that many keys, and average over "
                           "layers. Measure in eval mode, and leave the model as you found it.")
def model_mask_density(ex: Exercise, fn) -> None:
    """The share of softmax entries the auxiliary mask keeps, averaged over a model's CastlingAttention layers."""
    from ..castling import CastlingAttention
    from ..measure import mask_density
    from ..model import ViT
    from ..presets import get_config

    g = torch.Generator().manual_seed(26)
    # (mask options, image side, factor on W_q and W_k): at initialisation attention is nearly uniform, and over
    # 64 tokens no weight passes an absolute ε = 0.02, so a function returning 0 would pass; sharper attention
    # (and 16 tokens for ε = 0.05) makes every case's mask keep some entries and drop others
    for seed, (options, side, sharpen) in enumerate([(dict(threshold=0.02), 32, 8.0),
                                                     (dict(threshold=1.0, mask="relative"), 32, 1.0),
                                                     (dict(threshold=0.05), 16, 8.0)]):
        torch.manual_seed(seed)
        config = get_config("smoke", attention="castling", image_size=side, **options)
        model = ViT(config).train(seed != 2)  # the last in eval mode
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, CastlingAttention):
                    layer.qkv.weight[: 2 * layer.dim].mul_(sharpen)  # the rows of W_q and W_k
        images = 2 * torch.randn(4, 3, side, side, generator=g)
        case = {"model": model, "images": images}
        expected = mask_density(model, images)
        if not 0.0 < expected < 1.0:  # a mask that keeps nothing, or everything, cannot tell a right answer from 0 or 1
            raise RuntimeError(f"checker 06.2's case {seed} has mask density {expected:g}; each case's must lie strictly "
                               "between 0 and 1")
        unscaled = _density_without_scale(model, images)
        alphas = [m.alpha for m in model.modules() if isinstance(m, CastlingAttention)]
        state = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        got = call(ex, fn, case)
        if model.training != (seed != 2):
            was = "training" if seed != 2 else "eval"
            raise CheckFailed(f"{ex.label}: the model came back in another mode than the {was} mode it was in. Restore "
                              "it (model.train(was_training)): a training loop that measures every epoch would stop "
                              "training, and a model being evaluated would start to.")
        if any(m._forward_pre_hooks for m in model.modules()):
            raise CheckFailed(f"{ex.label}: your hooks are still registered on the model: remove each one "
                              "(hook.remove()) after the forward pass.")
        now = [m.alpha for m in model.modules() if isinstance(m, CastlingAttention)]
        if now != alphas:
            raise CheckFailed(f"{ex.label}: the layers came back with alphas {now}; they went in with {alphas}. "
                              "Measuring the mask needs no change of α: leave each layer's α as it is.")
        changed = [k for k, v in state.items() if not torch.equal(model.state_dict()[k], v)]
        if changed:
            what = ("the conv stem's BatchNorm statistics" if all("running" in k or "num_batches" in k for k in changed)
                    else "the model's weights")
            raise CheckFailed(f"{ex.label}: measuring changed {what} ({changed[0]} and {len(changed) - 1} more). In "
                              "training mode every forward pass updates the BatchNorm running averages: run the "
                              "model in eval mode (and without gradients), then restore the mode it was in.")
        hint = ""
        if isinstance(got, (int, float)) and math.isclose(got, unscaled, rel_tol=1e-5, abs_tol=1e-4):
            hint = (" That is the density of softmax(q kᵀ) without the scale: the branch's logits are q·k/√d, d the "
                    "head dimension.")
        same_number(ex, got, expected, case, rel_tol=1e-5, abs_tol=1e-4,  # a few entries may sit on the threshold
                    explain=f"The model's layers use threshold={options['threshold']:g}, "
                            f"mask={options.get('mask', 'absolute')!r}, on {config.tokens} tokens." + hint)
    passed(ex, "3 smoke models (absolute and relative masks) match minicastling.measure.mask_density, and each comes "
               "back in the mode it was in (training or eval), without hooks, with its α, weights and BatchNorm "
               "statistics unchanged.")


def sharpness_reference(layer, x):
    """Mean over batch, heads and queries of N × the largest kernel-form weight of the row."""
    from ..attention import attention_weights
    from ..measure import row_sharpness

    with torch.no_grad():
        q, k, _ = layer.split_qkv(x)  # (B, H, N, d)
        return row_sharpness(attention_weights(q, k, "angular-linear"))[0]


def _official_mix_sharpness(layer, x):
    """N × the largest entry of each row of ½ I + Q̂K̂ᵀ/π, the official form's mix (not weights that sum to 1)."""
    import torch.nn.functional as F

    with torch.no_grad():
        q, k, _ = layer.split_qkv(x)  # (B, H, N, d)
        mix = 0.5 * torch.eye(q.shape[-2]) + F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) / math.pi
        return mix.amax(-1).mean().item() * mix.shape[-1]


@exercise("06", 3, "stretch", "castled, a kernel-form layer mixes its values with the weights of tutorial 03's kernel "
                              "form: compute those for the layer's own queries and keys. Then a number per row that is 1 "
                              "for uniform attention and N for one-hot, averaged over everything else.")
def layer_sharpness(ex: Exercise, fn) -> None:
    """How far from uniform a castled kernel-form layer attends: the mean over rows of N × its largest weight."""
    for case in _kernel_form_layers():
        got = call(ex, fn, case)
        hint = " That is N × the largest entry of the official form's mix ½ I + Q̂K̂ᵀ/π, whose rows do not sum to 1: " \
               "take the kernel form's weights, each row divided by its sum." \
            if isinstance(got, (int, float)) and math.isclose(got, _official_mix_sharpness(**case), rel_tol=1e-5) else ""
        same_number(ex, got, sharpness_reference(**case), case, rel_tol=1e-5, abs_tol=1e-6,
                    explain="1 means uniform attention, N one-hot." + hint)
    passed(ex, "4 kernel-form layers, castled or not, match minicastling.measure.attention_sharpness's measure, N × the "
               "largest weight of a row.")
