"""Augmentations of the recipes that train small ViTs well, done on the device on whole batches.

What the strong small-data ViT recipes share (CCT, SL-ViT; see the README): a TrivialAugment-style
image operation per image, mixup and cutmix of pairs of images and their labels. No torchvision and
no loader processes: every operation below is a handful of tensor operations on a (B, C, H, W) float
batch in [0, 1], with its randomness drawn from a torch.Generator so that a seed repeats a run.
Crops and flips live in datasets/batches.py, stochastic depth in model.py, the weight average in train.py.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

# name: strongest magnitude (TrivialAugment "wide" ranges); a draw scales it by a uniform factor in [0, 1]
OPERATIONS = {
    "identity": 0.0, "brightness": 0.99, "contrast": 0.99, "saturation": 0.99, "sharpness": 0.99,
    "posterize": 6.0, "solarize": 1.0, "autocontrast": 0.0,
    "rotate": 135.0, "shear_x": 0.99, "shear_y": 0.99, "translate_x": 0.3, "translate_y": 0.3,
}
SIGNED = {"brightness", "contrast", "saturation", "sharpness", "rotate", "shear_x", "shear_y", "translate_x",
          "translate_y"}


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """degenerate + factor · (images − degenerate), per image; factor 1 leaves the image as it is."""
    return (degenerate + factor[:, None, None, None] * (images - degenerate)).clamp(0, 1)


def _grey(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    return (images * weights[:, None, None]).sum(1, keepdim=True)


def _affine(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample each image through a 2 × 3 affine map of the [−1, 1] square; outside is black."""
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_operation(name: str, images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """One named operation on a batch (B, C, H, W) in [0, 1], with one magnitude per image (B,)."""
    b = images.shape[0]
    if name == "identity":
        return images
    if name == "brightness":
        return _blend(torch.zeros_like(images), images, 1 + magnitude)
    if name == "contrast":
        return _blend(_grey(images).mean((1, 2, 3), keepdim=True).expand_as(images), images, 1 + magnitude)
    if name == "saturation":
        return _blend(_grey(images).expand_as(images), images, 1 + magnitude)
    if name == "sharpness":
        kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=images.device, dtype=images.dtype) / 13
        c = images.shape[1]
        blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
        return _blend(blurred, images, 1 + magnitude)
    if name == "posterize":
        levels = 2.0 ** (8 - magnitude.round()).clamp(0, 8)  # keep 8 − m bits
        return torch.floor(images * 255 / levels[:, None, None, None]) * levels[:, None, None, None] / 255
    if name == "solarize":
        threshold = (1 - magnitude)[:, None, None, None]
        return torch.where(images >= threshold, 1 - images, images)
    if name == "autocontrast":
        low = images.amin((2, 3), keepdim=True)
        high = images.amax((2, 3), keepdim=True)
        return torch.where(high > low, (images - low) / (high - low).clamp_min(1e-6), images)
    matrix = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1
    if name == "rotate":
        angle = torch.deg2rad(magnitude)
        matrix[:, 0, 0], matrix[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
        matrix[:, 1, 0], matrix[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    elif name in ("shear_x", "shear_y"):
        matrix[:, 0 if name == "shear_x" else 1, 1 if name == "shear_x" else 0] = magnitude
    elif name in ("translate_x", "translate_y"):
        matrix[:, 0 if name == "translate_x" else 1, 2] = -2 * magnitude  # content moves right/down by that share
    else:
        raise ValueError(f"unknown augmentation {name!r}; use one of {list(OPERATIONS)}")
    return _affine(images, matrix)


def trivial_draws(count: int, generator: torch.Generator | None = None) -> list:
    """TrivialAugment's random choices for `count` images: operation index, magnitude in [0, 1], sign."""
    choice = torch.randint(0, len(OPERATIONS), (count,), generator=generator)
    magnitude = torch.rand(count, generator=generator)
    sign = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
    return [choice, magnitude, sign]


def trivial_augment(images: torch.Tensor, generator: torch.Generator | None = None, strength: float = 1.0,
                    draws: list | None = None) -> torch.Tensor:
    """TrivialAugment (Müller & Hutter, 2021): one operation per image, uniform, at a uniform magnitude.

    images (B, C, H, W) in [0, 1]. `strength` scales every operation's strongest magnitude; `draws`
    (from trivial_draws) replaces the random choices, which are otherwise drawn from `generator`.
    """
    choice, magnitude, sign = draws if draws is not None else trivial_draws(images.shape[0], generator)
    out = images.clone()
    for index, name in enumerate(OPERATIONS):
        chosen = (choice == index).nonzero().flatten()
        if len(chosen) == 0 or name == "identity":
            continue
        m = magnitude[chosen] * OPERATIONS[name] * strength * (sign[chosen] if name in SIGNED else 1.0)
        picked = chosen.to(images.device)
        out[picked] = apply_operation(name, images[picked], m.to(images.device, images.dtype))
    return out


def beta(generator: torch.Generator | None, alpha: float) -> float:
    """One draw from Beta(alpha, alpha), reproducible from the torch generator."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None, mixup: float = 0.0,
        cutmix: float = 0.0):
    """Mixup (Zhang et al., 2018) or cutmix (Yun et al., 2019), one of them per batch, half the time each.

    targets (B, K) class probabilities. Image i is mixed with image i − 1 of the batch, with weight λ
    from Beta(α, α); for cutmix, a box of area 1 − λ is pasted instead and λ becomes the area kept.
    Each returned target row sums to one. mixup = cutmix = 0 returns the inputs untouched.
    """
    if mixup <= 0 and cutmix <= 0:
        return images, targets
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(1, generator=generator) < 0.5))
    lam = beta(generator, cutmix if use_cutmix else mixup)
    partner = images.roll(1, dims=0)
    if use_cutmix:
        h, w = images.shape[-2:]
        cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        top = int(torch.randint(0, h - cut_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cut_w + 1, (1,), generator=generator))
        images = images.clone()
        images[..., top:top + cut_h, left:left + cut_w] = partner[..., top:top + cut_h, left:left + cut_w]
        lam = 1 - cut_h * cut_w / (h * w)
    else:
        images = lam * images + (1 - lam) * partner
    return images, lam * targets + (1 - lam) * targets.roll(1, dims=0)
