"""CIFAR-10 from its official archive: downloaded once, checked by MD5, parsed from the python
pickle batches into uint8 arrays and cached as data/cifar10.npz. Offline, one sentence says what to do.
"""

import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np

from ..extras.files import shown
from .images import DatasetUnavailable, ImageDataset, cached, data_dir, download, md5

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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
    return cached(root / "cifar10.npz", "cifar10", CIFAR10_CLASSES,
                  lambda: parse_cifar10_archive(fetch_cifar10_archive(root, progress=progress, **fetch_options)))
