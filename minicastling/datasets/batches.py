"""Batches on the device: one split's uint8 images, normalised, cropped, flipped and augmented there.

DESIGN: Data. The whole dataset lives on the device as uint8 (CIFAR-10's 50,000 images are 150 MB),
so a batch is an index, a crop and a flip, with no loader processes. Introduced in tutorial 06.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..extras.augment import trivial_augment, trivial_draws


class DeviceData:
    """One split's uint8 images on the device, served as normalised, augmented float batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device, mean=None, std=None):
        images = np.require(images, requirements="W")  # a read-only array (a file's buffer) is copied, not shared
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)  # (N, C, H, W) uint8
        self.labels = torch.as_tensor(labels).to(device)
        if mean is None or std is None:  # a test split reuses the training split's statistics
            pixels = self.images.float() / 255
            mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)  # (C,)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images, or float images in [0, 1], to zero mean and unit variance per channel."""
        pixels = images.float() / 255 if images.dtype == torch.uint8 else images
        return (pixels - self.mean[:, None, None]) / self.std[:, None, None]

    def split(self, batch_size: int, shard=None, images: int | None = None) -> list:
        """The split (or its first `images`) as normalised batches [(images, labels), …], in order, made once:
        what evaluation runs over. shard (a distributed.Process): this process's share of each batch."""
        out, end = [], len(self) if images is None else min(images, len(self))
        for start in range(0, end, batch_size):
            index = torch.arange(start, min(start + batch_size, end), device=self.images.device)
            part = slice(None) if shard is None else shard.share(len(index))
            out.append((self.normalise(self.images[index[part]]), self.labels[index[part]]))
        return out

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                crop_padding: int = 4, flip: bool = True, strength: float = 0.0, shard=None):
        """Yield (images (B, C, H, W) float, labels (B,)) over the whole split once.

        augment: random crop after `crop_padding` zero pixels per side, horizontal flips if `flip`, and
        TrivialAugment at `strength` (0: off). shard (a distributed.Process): yield only this process's
        share of each batch; the random draws are made for the whole batch on every process, so the
        processes together see exactly the batches one process would.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator, device="cpu").to(self.images.device) if shuffle \
            else torch.arange(n, device=self.images.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            part = slice(None) if shard is None else shard.share(len(index))
            images = self.images[index[part]]
            if augment:
                offsets, flips = crop_flip_draws(len(index), generator, crop_padding, flip)
                images = crop_flip(images, offsets[part].to(images.device), flips[part].to(images.device), crop_padding)
                if strength:
                    draws = trivial_draws(len(index), generator)
                    images = trivial_augment(images.float() / 255, strength=strength, draws=[d[part] for d in draws])
            yield self.normalise(images), self.labels[index[part]]


def crop_flip_draws(count: int, generator: torch.Generator | None = None, padding: int = 4, flip: bool = True):
    """Random (row, col) offsets (B, 2) in [0, 2·padding] and flips (B,) bool, on the CPU."""
    offsets = torch.randint(0, 2 * padding + 1, (2, count), generator=generator).T  # (B, 2)
    flips = (torch.rand(count, generator=generator) < 0.5) & flip
    return offsets, flips


def random_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding, and a random horizontal flip, on the whole batch at once."""
    offsets, flips = crop_flip_draws(images.shape[0], generator, padding, flip)
    return crop_flip(images, offsets.to(images.device), flips.to(images.device), padding)


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Pad by `padding` zeros, crop each image at its (row, col) offset, flip those marked.

    images (B, C, H, W); offsets (B, 2) in [0, 2·padding]; flips (B,) bool. One gather, no loop.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)  # (B, C, H + 2p, W + 2p)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch_index = torch.arange(b, device=images.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return crops.permute(0, 3, 1, 2)
