"""Datasets by name: CIFAR-10, Fashion-MNIST, the generated stand-in and diagnostic task, any .npz.

Every loader returns an ImageDataset of uint8 arrays (images.py); training serves them from the
device in batches (batches.py). Introduced in tutorial 06.
"""

from ..extras.files import InputError, shown
from . import fashion_mnist, synthetic
from .cifar10 import load_cifar10
from .images import DatasetUnavailable, ImageDataset, load_npz

DATASETS = ("auto", "cifar10", "fashion-mnist", "stand-in", "same-different")


def load_dataset(spec: str, progress: bool = True) -> ImageDataset:
    """A dataset by name (DATASETS) or a path to an .npz file.

    'auto' prefers CIFAR-10; offline it takes Fashion-MNIST if its files are on this machine (never
    downloading it), else the built-in stand-in, and says which and why.
    """
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
    if spec.endswith(".npz") or "/" in spec or spec.startswith("."):
        return load_npz(spec)
    raise InputError(f"unknown dataset {spec!r}; use one of {list(DATASETS)} or a path to an .npz file")


