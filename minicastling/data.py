"""Image data: CIFAR-10 from its official archive, any uint8 arrays, the datasets by name, and
batches normalised and augmented on the device. Fashion-MNIST and the generated datasets have
modules of their own (fashion_mnist, synthetic).

DESIGN: Data. The whole dataset lives on the device as uint8 (CIFAR-10's 50,000 images are 150 MB),
so a batch is an index, a crop and a flip, with no loader processes. Introduced in tutorial 06.
"""

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .files import atomic_write, shown

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be had here (offline, or a download that keeps failing its checksum)."""


@dataclass
class ImageDataset:
    """uint8 images (N, H, W, C) and integer labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple

    def __post_init__(self):
        self.y_train = _check_split("train", self.x_train, self.y_train)
        self.y_test = _check_split("test", self.x_test, self.y_test)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train images {self.x_train.shape[1:]} and test images {self.x_test.shape[1:]} differ in shape")
        top = int(max(self.y_train.max(), self.y_test.max()))
        if not self.classes:
            self.classes = tuple(str(i) for i in range(top + 1))
        if top >= len(self.classes):
            raise ValueError(f"labels go up to {top} but only {len(self.classes)} class names were given")

    @property
    def image_size(self) -> int:
        return self.x_train.shape[1]

    @property
    def channels(self) -> int:
        return self.x_train.shape[3]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}: {len(self.x_train)} train / {len(self.x_test)} test images of "
                f"{self.image_size}×{self.image_size}×{self.channels}, {self.num_classes} classes)")


def _check_split(split: str, x, y) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"x_{split} must be a uint8 numpy array (N, H, W, C); got "
                         f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}. "
                         "Convert floats in [0, 1] with (x * 255).round().astype(np.uint8)")
    if x.shape[1] != x.shape[2] or x.shape[3] not in (1, 3):
        raise ValueError(f"x_{split} must hold square images with 1 or 3 channels last (N, H, H, C); got {x.shape}")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_{split} must be {len(x)} integer labels, one per image; got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise ValueError(f"y_{split} has negative labels (min {y.min()}); labels must be 0 … classes-1")
    return y.astype(np.int64)


def data_dir() -> Path:
    """$MINICASTLING_DATA, else data/ of a clone, else ~/.cache/minicastling."""
    if os.environ.get("MINICASTLING_DATA"):
        return Path(os.environ["MINICASTLING_DATA"]).expanduser()
    clone = Path(__file__).resolve().parent.parent / "data"
    return clone if clone.is_dir() else Path.home() / ".cache" / "minicastling"


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, target: Path, progress: bool = True) -> None:
    """Fetch url to target through a temporary file, so a broken transfer never looks complete."""
    def stream(file):
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    file.write(chunk)
                    bar.update(len(chunk))

    atomic_write(target, stream)


def fetch_cifar10_archive(root: Path, url: str | None = None, checksum: str | None = None, progress: bool = True) -> Path:
    """The verified archive under root: reused if its MD5 matches, else (re-)downloaded once or twice."""
    url, checksum = url or CIFAR10_URL, checksum or CIFAR10_MD5
    archive = root / CIFAR10_ARCHIVE
    for _ in range(2):  # a corrupt copy gets one fresh download
        if archive.exists() and md5(archive) == checksum:
            return archive
        if archive.exists():
            print(f"{archive.name} is corrupt or incomplete (MD5 mismatch); fetching it again")
            archive.unlink()
        try:
            download(url, archive, progress)
        except (urllib.error.URLError, OSError) as error:
            raise DatasetUnavailable(
                f"CIFAR-10 could not be downloaded from {url} ({getattr(error, 'reason', error)}); to use it "
                f"offline, download that file on a machine with internet and copy it to {shown(archive)}, or "
                "train on the built-in stand-in with --data stand-in"
            ) from None
    if md5(archive) != checksum:
        archive.unlink()
        raise DatasetUnavailable(
            f"the CIFAR-10 archive from {url} failed its MD5 check twice (expected {checksum}); the download "
            f"is being corrupted. Fetch it by hand into {shown(archive)}, check its MD5, and run again"
        )
    return archive


def parse_cifar10_archive(archive: Path) -> ImageDataset:
    """The python-pickle batches → uint8 arrays (N, 32, 32, 3) and int64 labels."""
    def batch(tar, name):
        member = tar.extractfile(f"cifar-10-batches-py/{name}")
        if member is None:
            raise DatasetUnavailable(f"{shown(archive)} has no cifar-10-batches-py/{name}; it is not the CIFAR-10 python archive")
        entry = pickle.load(io.BytesIO(member.read()), encoding="bytes")
        images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), np.asarray(entry[b"labels"], dtype=np.int64)

    try:
        with tarfile.open(archive, "r:gz") as tar:
            train = [batch(tar, f"data_batch_{i}") for i in range(1, 6)]
            x_test, y_test = batch(tar, "test_batch")
    except (tarfile.TarError, EOFError, KeyError, pickle.UnpicklingError) as error:
        raise DatasetUnavailable(f"{shown(archive)} could not be read ({error}); delete it and run again") from None
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    return ImageDataset("cifar10", x_train, y_train, x_test, y_test, CIFAR10_CLASSES)


def load_cifar10(root: Path | None = None, progress: bool = True, **fetch_options) -> ImageDataset:
    """CIFAR-10, cached as arrays in root/cifar10.npz after the first (verified) download."""
    root = Path(root) if root is not None else data_dir()
    cache = root / "cifar10.npz"
    if cache.exists():
        try:
            return load_npz(cache, name="cifar10", classes=CIFAR10_CLASSES)
        except (ValueError, OSError, KeyError):
            cache.unlink()  # an interrupted write or a stale format: rebuild it from the archive
    dataset = parse_cifar10_archive(fetch_cifar10_archive(root, progress=progress, **fetch_options))
    save_npz(dataset, cache)
    return dataset


def save_npz(dataset: ImageDataset, path: Path) -> None:
    """Write x_train, y_train, x_test, y_test atomically (a temporary file, then a rename)."""
    atomic_write(path, lambda f: np.savez(f, x_train=dataset.x_train, y_train=dataset.y_train,
                                          x_test=dataset.x_test, y_test=dataset.y_test))


def load_npz(path, name: str | None = None, classes: tuple = ()) -> ImageDataset:
    """An .npz holding x_train, y_train, x_test, y_test: uint8 (N, H, H, C), any number of classes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset file: {path}")
    with np.load(path) as arrays:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
        if missing:
            raise ValueError(f"{path.name} lacks {sorted(missing)}; it needs arrays x_train, y_train, x_test, y_test "
                             f"(found {sorted(arrays.files)})")
        parts = {key: arrays[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    return ImageDataset(name or path.stem, **parts, classes=classes)


DATASETS = ("auto", "cifar10", "fashion-mnist", "stand-in", "same-different")


def load_dataset(spec: str, progress: bool = True) -> ImageDataset:
    """A dataset by name (DATASETS) or a path to an .npz file.

    'auto' prefers CIFAR-10; offline it takes Fashion-MNIST if its files are on this machine (never
    downloading it), else the built-in stand-in, and says which and why.
    """
    from . import fashion_mnist, synthetic

    if spec == "auto":
        try:
            return load_cifar10(progress=progress)
        except DatasetUnavailable as reason:
            where = fashion_mnist.offline_location()
            if where is not None:
                print(f"{reason}. Using Fashion-MNIST, found in {shown(where)}, instead.")
                return fashion_mnist.load(progress, allow_download=False)
            print(f"{reason}. No Fashion-MNIST on this machine either (apt-get install dataset-fashion-mnist, or "
                  "--data fashion-mnist to download it). Using the built-in stand-in instead.")
            return synthetic.stand_in()
    loaders = {"cifar10": lambda: load_cifar10(progress=progress),
               "fashion-mnist": lambda: fashion_mnist.load(progress),
               "stand-in": synthetic.stand_in, "same-different": synthetic.same_different}
    if spec in loaders:
        return loaders[spec]()
    if spec.endswith(".npz"):
        return load_npz(spec)
    raise ValueError(f"unknown dataset {spec!r}; use one of {DATASETS} or a path to an .npz file")


class DeviceData:
    """One split's uint8 images on the device, served as normalised, augmented float batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device, mean=None, std=None):
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().to(device)  # (N, C, H, W) uint8
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

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                crop_padding: int = 4, flip: bool = True, strength: float = 0.0, shard=None):
        """Yield (images (B, C, H, W) float, labels (B,)) over the whole split once.

        augment: random crop after `crop_padding` zero pixels per side, horizontal flips if `flip`, and
        TrivialAugment at `strength` (0: off). shard (a distributed.Process): yield only this process's
        share of each batch; the random draws are made for the whole batch on every process, so the
        processes together see exactly the batches one process would.
        """
        from .augment import trivial_augment, trivial_draws

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
