"""Tutorial 06 · training: another α schedule, where a model's mask fires, and how sharp a castled
layer's weights are."""


import torch

from .core import CheckFailed, Exercise, call, exercise, passed, same_number


@exercise("06", 1, "warm-up", "three phases: before `hold`, between `hold` and `end`, after `end`. In the middle one, "
                              "measure the progress as a share of that window; a straight line takes α from alpha0 to "
                              "0 across it.")
def linear_alpha(ex: Exercise, fn) -> None:
    """α(t) that holds alpha0 until `hold`, falls linearly to 0 at `end`, then stays 0: AlphaSchedule(shape="linear")."""
    from ..schedule import AlphaSchedule

    for alpha0, hold, end in [(1.0, 0.25, 0.75), (0.5, 0.0, 0.5), (2.0, 0.4, 0.9)]:
        schedule = AlphaSchedule(alpha0=alpha0, hold=hold, end=end, shape="linear")
        for t in [i / 20 for i in range(21)] + [hold, end]:
            case = {"t": t, "alpha0": alpha0, "hold": hold, "end": end}
            phase = "held" if t < hold else "falling" if t < end else "off: the branch must be exactly 0"
            same_number(ex, call(ex, fn, case), schedule(t), case, rel_tol=1e-9, abs_tol=1e-12,
                        explain=f"At t = {t:g} α is {phase}.")
    passed(ex, "every t on a grid of 3 schedules matches AlphaSchedule(shape='linear'), hold and end included.")


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


@exercise("06", 2, "core", "each CastlingAttention layer sees its own input, its block's normalised tokens, which only "
                           "a forward pass produces: capture it on the way in (a forward pre-hook), measure that layer's "
                           "mask as tutorial 04 did, with the ε the layer uses for that many keys, and average over "
                           "layers. Measure in eval mode, and leave the model as you found it.")
def model_mask_density(ex: Exercise, fn) -> None:
    """The share of softmax entries the auxiliary mask keeps, averaged over a model's CastlingAttention layers."""
    from ..model import ViT, get_config, mask_density

    g = torch.Generator().manual_seed(26)
    for seed, options in enumerate([dict(threshold=0.02), dict(threshold=1.0, mask="relative"), dict(threshold=0.05)]):
        torch.manual_seed(seed)
        model = ViT(get_config("smoke", attention="castling", **options)).train()
        images = 2 * torch.randn(4, 3, model.config.image_size, model.config.image_size, generator=g)
        case = {"model": model, "images": images}
        expected = mask_density(model, images)
        got = call(ex, fn, case)
        if not model.training:
            raise CheckFailed(f"{ex.label}: the model came back in eval mode; it was in training mode. Restore it "
                              "(model.train(was_training)), or a training loop that measures every epoch stops training.")
        if any(m._forward_pre_hooks for m in model.modules()):
            raise CheckFailed(f"{ex.label}: your hooks are still registered on the model: remove each one "
                              "(hook.remove()) after the forward pass.")
        same_number(ex, got, expected, case, rel_tol=1e-5, abs_tol=1e-6,
                    explain=f"The model's layers use threshold={options['threshold']:g}, "
                            f"mask={options.get('mask', 'absolute')!r}.")
    passed(ex, "3 smoke models (absolute and relative masks) match minicastling.model.mask_density, and each comes "
               "back in training mode without hooks.")


def sharpness_reference(layer, x):
    """Mean over batch, heads and queries of N × the largest linear-angular weight of the row."""
    from ..attention import attention_weights
    from ..model import row_sharpness

    with torch.no_grad():
        q, k, _ = layer.split_qkv(x)  # (B, H, N, d)
        return row_sharpness(attention_weights(q, k, "angular-linear"))[0]


@exercise("06", 3, "stretch", "once castled, the layer attends with the linear kernel ½ + q̂·k̂/π, normalised over the "
                              "keys; those are the weights to measure, not the softmax's. Take each row's largest "
                              "weight and scale it so that uniform attention scores 1.")
def layer_sharpness(ex: Exercise, fn) -> None:
    """How far from uniform a castled layer attends: the mean over rows of N × the largest linear-angular weight."""
    for case in _layers_and_tokens():
        same_number(ex, call(ex, fn, case), sharpness_reference(**case), case, rel_tol=1e-5, abs_tol=1e-6,
                    explain="1 means uniform attention, N one-hot.")
    passed(ex, "4 layers match minicastling.model.attention_sharpness's measure, N × the largest weight of a row.")
