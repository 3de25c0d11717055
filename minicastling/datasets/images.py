"""Image datasets as uint8 arrays: the ImageDataset every loader returns, its checks, .npz files,
the data folder and verified downloads.

DESIGN: Data. Training accepts any uint8 image array (N, H, W, C) with integer labels, so CIFAR-100,
SVHN or your own data work as the built-in ones do. Introduced in tutorial 06.
"""

import hashlib
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..extras.files import InputError, atomic_write


class DatasetUnavailable(InputError):
    """The dataset cannot be had here (offline, or a download that keeps failing its checksum)."""


@dataclass
class ImageDataset:
    """uint8 images (N, H, W, C) and integer labels, split into train and test.

    Checked on creation: anything a model could not train on raises InputError naming the array,
    what it holds and how to convert it.
    """

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
            raise InputError(f"train images are {_size(self.x_train)} and test images {_size(self.x_test)}; both "
                             "splits need images of one size and channel count")
        top = int(self.y_train.max())
        if not self.classes:
            self.classes = tuple(str(i) for i in range(top + 1))
        if top >= len(self.classes):
            raise InputError(f"labels go up to {top} but only {len(self.classes)} class names were given")

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


def _size(x: np.ndarray) -> str:
    return "×".join(str(n) for n in x.shape[1:])


def _check_images(name: str, x) -> None:
    """uint8 (N, H, H, C) with C 1 or 3 and N ≥ 1, or InputError saying what x is and how to convert it."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name} must be a numpy array of images, got {type(x).__name__}; np.asarray(...) it first")
    if x.ndim == 3 and x.dtype == np.uint8:
        raise InputError(f"{name} has shape {x.shape}, images without a channel axis; add one with {name}[..., None]")
    if x.ndim != 4:
        raise InputError(f"{name} must have 4 axes (images, height, width, channels), got shape {x.shape}")
    if len(x) == 0:
        raise InputError(f"{name} holds no images (shape {x.shape})")
    if x.dtype != np.uint8:
        how = ("(x * 255).round().astype(np.uint8) for floats in [0, 1]" if np.issubdtype(x.dtype, np.floating)
               else "x.astype(np.uint8) if its values lie in 0 … 255")
        raise InputError(f"{name} holds {x.dtype} values; images must be uint8, 0 … 255: convert with {how}")
    if x.shape[3] not in (1, 3):
        channels_first = x.shape[1] in (1, 3) and x.shape[2] == x.shape[3]
        how = (f"it looks channels-first: {name}.transpose(0, 2, 3, 1)" if channels_first
               else "keep 1 (grey) or 3 (RGB) channels, e.g. x[..., :3] to drop an alpha channel")
        raise InputError(f"{name} has {x.shape[3]} channels on its last axis (shape {x.shape}); {how}")
    if x.shape[1] != x.shape[2]:
        raise InputError(f"{name} holds {x.shape[1]}×{x.shape[2]} images; the model needs square images, so crop or "
                         "pad them to one side length")


def _check_split(split: str, x, y) -> np.ndarray:
    _check_images(f"x_{split}", x)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"y_{split} must hold one label per image, {len(x)} of them; got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        whole = np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
        how = f"y_{split}.astype(np.int64)" if whole else "class numbers 0 … classes − 1"
        raise InputError(f"y_{split} holds {y.dtype} values; labels must be integers: use {how}")
    if y.min() < 0:
        raise InputError(f"y_{split} has negative labels (smallest {y.min()}); labels must be 0 … classes − 1")
    return y.astype(np.int64)


def data_dir() -> Path:
    """$MINICASTLING_DATA, else data/ of a clone, else ~/.cache/minicastling."""
    if os.environ.get("MINICASTLING_DATA"):
        return Path(os.environ["MINICASTLING_DATA"]).expanduser()
    clone = Path(__file__).resolve().parents[2] / "data"
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


def save_npz(dataset: ImageDataset, path: Path) -> None:
    """Write x_train, y_train, x_test, y_test atomically (a temporary file, then a rename)."""
    atomic_write(path, lambda f: np.savez(f, x_train=dataset.x_train, y_train=dataset.y_train,
                                          x_test=dataset.x_test, y_test=dataset.y_test))


def cached(path: Path, name: str, classes: tuple, build) -> ImageDataset:
    """The dataset cached as arrays at `path`; where there is none, or it is damaged, build() it and cache it."""
    if path.exists():
        try:
            return load_npz(path, name=name, classes=classes)
        except (ValueError, OSError, KeyError):
            path.unlink()  # an interrupted write or a stale format: rebuilt below
    dataset = build()
    save_npz(dataset, path)
    return dataset


def load_npz(path, name: str | None = None, classes: tuple = ()) -> ImageDataset:
    """An .npz holding x_train, y_train, x_test, y_test: uint8 (N, H, H, C), any number of classes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no dataset file {path}" + (" (it is a folder)" if path.is_dir() else "") +
                         "; check the path, or use a dataset by name (--data fashion-mnist, stand-in, …)")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes), an interrupted download or copy; fetch or write it again")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise InputError(f"{path} is not an .npz archive (numpy's np.savez format, a zip file); save the four "
                             "arrays with np.savez(path, x_train=…, y_train=…, x_test=…, y_test=…)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = sorted({"x_train", "y_train", "x_test", "y_test"} - set(arrays.files))
            if missing:
                raise InputError(f"{path.name} lacks {missing}; it needs arrays x_train, y_train, x_test, y_test "
                                 f"(found {sorted(arrays.files)})")
            parts = {key: arrays[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except InputError:
        raise
    except ValueError as error:  # object arrays: numpy will not unpickle them without allow_pickle
        raise InputError(f"{path} holds Python objects rather than plain arrays ({error}); save numeric arrays "
                         "with np.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} is a damaged archive ({error}); write or fetch it again") from None
    dataset = ImageDataset(name or path.stem, **parts, classes=classes)
    unseen = sorted(set(np.unique(dataset.y_test).tolist()) - set(np.unique(dataset.y_train).tolist()))
    if unseen:
        raise InputError(f"{path.name}: y_test has classes {unseen} that y_train never has, so no model can learn "
                         "them; drop those test images or add training images of those classes")
    return dataset
