"""Fashion-MNIST: real 28×28 grey images that also exist offline, read from the four official IDX files.

Where the files are looked for, in order: the dataset folder (data/ of a clone or $MINICASTLING_DATA,
under fashion-mnist/), where Debian's `dataset-fashion-mnist` package installs them
(/usr/share/datasets/fashion-mnist), and last the dataset's official home, downloaded with a progress
bar into the dataset folder. Every file is checked by the MD5 of its decompressed bytes: Debian
recompressed the .gz files, so their own MD5s differ from the published ones while the content is
the same. The arrays are cached as fashion-mnist.npz beside the files. Introduced in tutorial 06.
"""

import gzip
import hashlib
import urllib.error
from pathlib import Path

import numpy as np

from ..extras.files import shown
from .images import DatasetUnavailable, ImageDataset, cached, data_dir, download

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# file: (MD5 of the published .gz, MD5 of its decompressed bytes); both from the dataset's README
# and its users' loaders, the second checked against Debian's copy
FILES = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
IDX_TYPES = {0x08: np.uint8}  # the IDX type codes Fashion-MNIST uses (unsigned bytes)


class CorruptFile(DatasetUnavailable):
    """A dataset file that exists but cannot be the right one: truncated, not IDX, or other content."""


def read_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """An IDX array from its bytes: 2 zero bytes, a type code, the number of axes, their sizes, the values.

    The format of MNIST and Fashion-MNIST (yann.lecun.com/exdb/mnist). Raises CorruptFile naming `name`.
    """
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_TYPES:
        raise CorruptFile(f"{name} is not an IDX file of unsigned bytes (it starts with {data[:4].hex() or 'nothing'}, "
                          "expected 000008 then the number of axes)")
    axes = data[3]
    header = 4 + 4 * axes
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(axes))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise CorruptFile(f"{name} is truncated or padded: its header promises an array of shape {shape}, "
                          f"{expected:,} bytes with the header, but it holds {len(data):,}")
    return np.frombuffer(data, dtype=IDX_TYPES[data[2]], offset=header).reshape(shape)


def file_bytes(path: Path) -> bytes:
    """The decompressed bytes of a .gz file, or the bytes of an uncompressed one."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise CorruptFile(f"{shown(path)} is not a readable gzip file ({error}); it is corrupt or truncated") from None


def verified(path: Path, name: str) -> np.ndarray:
    """The IDX array in `path`, if its decompressed bytes are Fashion-MNIST's `name`; else CorruptFile."""
    content = file_bytes(path)
    array = read_idx(content, shown(path))
    expected = FILES[name][1]
    if hashlib.md5(content).hexdigest() != expected:
        raise CorruptFile(f"{shown(path)} is an IDX file of shape {array.shape} but not Fashion-MNIST's {name} "
                          f"(the MD5 of its content differs from {expected})")
    return array


def cache_dir() -> Path:
    return data_dir() / "fashion-mnist"


def candidates(name: str):
    """Where `name` may already be, in the order they are tried (compressed and uncompressed)."""
    for folder in (cache_dir(), DEBIAN_DIR):
        yield folder / name
        yield folder / name.removesuffix(".gz")


def local_path(name: str) -> Path | None:
    """The first copy of `name` on this machine, or None. Reads nothing."""
    return next((p for p in candidates(name) if p.is_file()), None)


def find_local() -> dict | None:
    """{file name: path} if all four files are on this machine, else None. Reads nothing."""
    found = {name: local_path(name) for name in FILES}
    return None if None in found.values() else found


def offline_location() -> Path | None:
    """Where Fashion-MNIST can be loaded from without a download (its cached arrays, or the folder of
    its four files), or None. Reads nothing."""
    cache = data_dir() / "fashion-mnist.npz"
    if cache.is_file():
        return cache
    local = find_local()
    return None if local is None else next(iter(local.values())).parent


def fetch(name: str, url: str, progress: bool) -> np.ndarray:
    """Download `name` into the cache folder (atomically), verify it, and fetch once more if corrupt."""
    target = cache_dir() / name
    for attempt in range(2):
        try:
            download(url + name, target, progress)
        except (urllib.error.URLError, OSError) as error:
            raise DatasetUnavailable(
                f"Fashion-MNIST is not on this machine and {name} could not be downloaded from {url} "
                f"({getattr(error, 'reason', error)}); install Debian's package (apt-get install dataset-fashion-mnist) "
                f"or copy the four files {', '.join(FILES)} into {shown(cache_dir())}"
            ) from None
        try:
            return verified(target, name)
        except CorruptFile:
            target.unlink()
            if attempt:
                raise DatasetUnavailable(f"{name} from {url} failed its check twice; the download is being "
                                         f"corrupted. Fetch it by hand into {shown(cache_dir())} and run again") from None
            print(f"{name} arrived corrupt; fetching it again")


def load(progress: bool = True, url: str | None = None, allow_download: bool = True) -> ImageDataset:
    """Fashion-MNIST as uint8 images (N, 28, 28, 1): 60,000 for training, 10,000 for testing.

    Local copies are verified and used; a missing file is downloaded unless allow_download=False,
    which raises DatasetUnavailable instead. A corrupt local file raises CorruptFile naming it.
    """
    cache = data_dir() / "fashion-mnist.npz"

    def from_files() -> ImageDataset:
        arrays = {}
        for name in FILES:
            path = local_path(name)
            if path is not None:
                arrays[name] = verified(path, name)
            elif allow_download:
                arrays[name] = fetch(name, url or URL, progress)
            else:
                raise DatasetUnavailable(f"Fashion-MNIST's {name} is in neither {shown(cache_dir())} nor {DEBIAN_DIR}")
        return ImageDataset(
            "fashion-mnist",
            arrays["train-images-idx3-ubyte.gz"][..., None], arrays["train-labels-idx1-ubyte.gz"],
            arrays["t10k-images-idx3-ubyte.gz"][..., None], arrays["t10k-labels-idx1-ubyte.gz"], CLASSES,
        )

    return cached(cache, "fashion-mnist", CLASSES, from_files)
