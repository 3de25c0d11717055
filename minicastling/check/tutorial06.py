"""Tutorial 06 · training: the augmentation by hand, where a model's mask fires, and how sharp a castled
layer's weights are."""


import torch

from .core import CheckFailed, Exercise, call, describe, exercise, passed, same_number, same_tensor


@exercise("06", 1, "warm-up", "pad the whole batch with zeros on all four sides first. Then, image by image, take the "
                              "H × W window whose top-left corner is that image's (row, col) offset in the padded "
                              "image, and mirror the window left to right where its flip is True. Keep the dtype.")
def crop_flip(ex: Exercise, fn) -> None:
    """Pad, crop each image at its offset, flip those marked: what data.random_crop_flip does once the draws are made."""
    from ..datasets.batches import crop_flip as reference

    g = torch.Generator().manual_seed(6)
    for shape, padding in [((4, 3, 8, 8), 2), ((5, 1, 6, 10), 1), ((3, 3, 5, 5), 0), ((6, 3, 7, 7), 3)]:
        images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        offsets = torch.randint(0, 2 * padding + 1, (shape[0], 2), generator=g)
        flips = torch.arange(shape[0]) % 2 == 0  # both kinds in every case
        case = {"images": images, "offsets": offsets, "flips": flips, "padding": padding}
        got, expected = call(ex, fn, case), reference(**case)
        if isinstance(got, torch.Tensor) and got.dtype != images.dtype:
            raise CheckFailed(f"{ex.label}: your crops are {got.dtype}; the images are {images.dtype}, and the "
                              f"crops must stay so ({describe(case)}): the training split lives on the device as "
                              "uint8, and padding with zeros need not change that.")
        mirrored_first = torch.where(flips[:, None, None, None], images.flip(-1), images)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.equal(got, expected) \
                and torch.equal(got, reference(mirrored_first, offsets, torch.zeros_like(flips), padding)):
            raise CheckFailed(f"{ex.label}: your flipped images are mirrored before they are cropped ({describe(case)}). "
                              "The offset says where the window sits in the padded image as stored; crop there, "
                              "then mirror the window.")
        same_tensor(ex, got, expected, case, 0.0, 0.0)
    passed(ex, "4 batches of uint8 images, paddings 0 to 3, every crop and flip equal to data.crop_flip.")


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
    from ..measure import mask_density
    from ..model import ViT
    from ..presets import get_config

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
    from ..measure import row_sharpness

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
