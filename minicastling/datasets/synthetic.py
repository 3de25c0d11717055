"""Generated datasets, deterministic and offline: a stand-in that needs shape, and a task that needs attention.

stand_in(): ten shapes (disc, ring, square, …) drawn at a random place, size and tilt, in a random
light colour on a random dark background. Colour is drawn independently of the class; only the shape's
area leaks into the mean brightness, and a classifier on colour statistics alone stays near chance
(tested), while the `cpu` recipe's castled model reaches 99.7 % on it (README, "The stand-in"). It lets the offline demo show
learning rather than a cap.

same_different(): two small glyphs far apart on a noisy field; the label says whether they are the
same glyph. Each glyph fits one patch, so the patch embedding sees it whole, but no single layer's
local window sees both: the answer lies in a relation between two distant tokens, which sharp global
attention can pick out and near-uniform pooling cannot. (Stacked, the DWConvs along the flattened
token sequence reach some pairs: 4 tokens either way per layer, 16 over four layers of the 6 × 6 grid.)
Introduced in tutorials 06 and 07.
"""

import math

import torch

from .images import ImageDataset

SHAPES = ("disc", "ring", "square", "frame", "triangle", "plus", "cross", "bar", "pillar", "dumbbell")


def _inside(shape: int, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Whether the points (u, w) of the unit shape's frame (radius 1, w pointing down) lie in `shape`."""
    radius, box = torch.sqrt(u * u + w * w), torch.maximum(u.abs(), w.abs())
    diagonal_u, diagonal_w = (u + w) / math.sqrt(2), (w - u) / math.sqrt(2)
    arms = lambda a, b: ((a.abs() < 0.25) & (b.abs() < 0.9)) | ((b.abs() < 0.25) & (a.abs() < 0.9))  # noqa: E731
    return [
        radius < 1.0,
        (radius > 0.55) & (radius < 1.0),
        box < 0.8,
        (box > 0.45) & (box < 0.85),
        (w > -0.85) & (w < 0.7) & (u.abs() < (w + 0.85) * 0.6),
        arms(u, w),
        arms(diagonal_u, diagonal_w),
        (u.abs() < 0.95) & (w.abs() < 0.3),
        (u.abs() < 0.3) & (w.abs() < 0.95),
        ((u - 0.55) ** 2 + w * w < 0.16) | ((u + 0.55) ** 2 + w * w < 0.16) | ((u.abs() < 0.55) & (w.abs() < 0.12)),
    ][shape]


def _draw_shapes(count: int, size: int, generator: torch.Generator):
    labels = torch.randint(0, len(SHAPES), (count,), generator=generator)
    radius = (0.24 + 0.12 * torch.rand(count, generator=generator)) * size  # pixels
    centre = radius[:, None] + 1 + torch.rand(count, 2, generator=generator) * (size - 2 - 2 * radius[:, None])
    tilt = (torch.rand(count, generator=generator) - 0.5) * math.radians(40)  # ±20°: plus and cross stay apart
    coords = torch.arange(size).float() + 0.5
    y, x = coords[None, :, None] - centre[:, 1, None, None], coords[None, None, :] - centre[:, 0, None, None]
    cos, sin = torch.cos(tilt)[:, None, None], torch.sin(tilt)[:, None, None]
    u, w = (x * cos + y * sin) / radius[:, None, None], (-x * sin + y * cos) / radius[:, None, None]  # (N, H, W)
    mask = torch.zeros(count, size, size, dtype=torch.bool)
    for shape in range(len(SHAPES)):
        chosen = labels == shape
        mask[chosen] = _inside(shape, u[chosen], w[chosen])
    # a random dark background and a random light foreground: colour is drawn independently of the
    # class, and the shape always stands out by its outline
    background = 0.45 * torch.rand(count, 3, generator=generator)
    foreground = 0.55 + 0.45 * torch.rand(count, 3, generator=generator)
    image = torch.where(mask[..., None], foreground[:, None, None], background[:, None, None])
    image = image + 0.04 * torch.randn(count, size, size, 3, generator=generator)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), labels.numpy()


def stand_in(n_train: int = 10000, n_test: int = 2000, seed: int = 0, size: int = 32) -> ImageDataset:
    """The offline stand-in: ten shapes in random colours, size × size × 3 uint8 (CIFAR-10's shape).

    Deterministic for a seed. Flips and crops keep the class. Numbers on it say nothing about CIFAR-10.
    """
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = _draw_shapes(n_train, size, generator)
    x_test, y_test = _draw_shapes(n_test, size, generator)
    return ImageDataset("stand-in", x_train, y_train, x_test, y_test, SHAPES)


def glyphs(count: int = 8, patch: int = 4, seed: int = 0) -> torch.Tensor:
    """`count` distinct patch × patch binary glyphs, each left-right symmetric and half on.

    Symmetric, so a horizontal flip keeps every glyph itself; half on, so no glyph is brighter.
    """
    generator = torch.Generator().manual_seed(seed)
    half = patch // 2
    found: list[torch.Tensor] = []
    while len(found) < count:
        left = torch.zeros(patch * half, dtype=torch.bool)
        left[torch.randperm(patch * half, generator=generator)[: patch * half // 2]] = True
        left = left.view(patch, half)
        glyph = torch.cat([left, left.flip(1)], dim=1)  # (patch, patch)
        if not any(torch.equal(glyph, other) for other in found):
            found.append(glyph)
    return torch.stack(found)


def _draw_pairs(count: int, size: int, patch: int, vocabulary: torch.Tensor, noise: float, generator):
    grid = size // patch
    labels = torch.randint(0, 2, (count,), generator=generator)  # 1: the same glyph twice
    first = torch.randint(0, len(vocabulary), (count,), generator=generator)
    other = (first + torch.randint(1, len(vocabulary), (count,), generator=generator)) % len(vocabulary)
    second = torch.where(labels == 1, first, other)
    # cell a, then cell b at least half the grid further down and to the right (mirrored for half the images)
    half = grid // 2
    a = torch.randint(0, grid - half, (count, 2), generator=generator)
    b = a + half + (torch.rand(count, 2, generator=generator) * (grid - half - a)).long()
    anti = torch.rand(count, generator=generator) < 0.5  # the other diagonal for half the images
    a[anti, 1], b[anti, 1] = grid - 1 - a[anti, 1], grid - 1 - b[anti, 1]
    image = 0.5 + noise * torch.randn(count, size, size, generator=generator)
    for cells, glyph_index in ((a, first), (b, second)):
        for i in range(count):
            row, col = cells[i].tolist()
            image[i, row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = vocabulary[glyph_index[i]].float()
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)[..., None].numpy(), labels.numpy()


def same_different(n_train: int = 10000, n_test: int = 2000, seed: int = 0, size: int = 24, patch: int = 4,
                   vocabulary: int = 8, noise: float = 0.18) -> ImageDataset:
    """The diagnostic task: are two glyphs far apart in the image the same? (1 = same)

    size × size × 1 uint8 images; each glyph fills one patch × patch cell of the token grid and the
    two cells are at least half the grid apart on both axes. Balanced labels, deterministic for a seed.
    The defaults (24 × 24: a 6 × 6 grid of 36 tokens; noise 0.18) were calibrated with the `cpu` model
    so that a few CPU minutes teach the softmax twin the task and leave linear-angular attention alone
    at chance: less noise lets near-uniform pooling pick up the relation, more keeps the twin from
    learning it in time (README, "The diagnostic task"). The 49-token study runs it at noise 0.03, 0.04 and
    0.06, where linear-angular alone learns much of it (tutorial 07, section 6).
    """
    if size % patch or size // patch < 4:
        raise ValueError(f"size={size} must be a multiple of patch={patch} giving a grid of at least 4 × 4 cells")
    words = glyphs(vocabulary, patch, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    x_train, y_train = _draw_pairs(n_train, size, patch, words, noise, generator)
    x_test, y_test = _draw_pairs(n_test, size, patch, words, noise, generator)
    return ImageDataset("same-different", x_train, y_train, x_test, y_test, ("different", "same"))

