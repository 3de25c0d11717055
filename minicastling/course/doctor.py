"""`python -m minicastling doctor`: what this environment is, the first thing to paste into a bug report.

Versions, where minicastling is imported from, the device and what it supports, the budget mode and
why, and the state of the dataset cache. Never downloads anything and never fails: a missing piece
is reported as missing.
"""

import importlib.metadata
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

PACKAGES = ("torch", "numpy", "einops", "matplotlib", "tqdm", "jupyterlab", "notebook", "ipykernel", "nbval", "pytest")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _installed_from() -> str:
    """A clone (on sys.path or `pip install -e .`) or an installed copy (a wheel, Colab)."""
    package = Path(__file__).resolve().parents[1]
    if (package.parent / "pyproject.toml").is_file() and (package.parent / "tutorials").is_dir():
        return "a clone of the repository"
    return "an installed copy (wheel or git install)"


def _device_lines() -> list:
    from ..extras.precision import describe_choice, native_bf16
    from ..extras.runtime import pick_device

    device = pick_device()
    lines = [f"device (auto)    {device}"]
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        memory = torch.cuda.get_device_properties(index).total_memory / 2**30
        lines.append(f"  cuda           {torch.cuda.get_device_name(index)}, compute capability {major}.{minor}, "
                     f"{memory:.1f} GiB, {torch.cuda.device_count()} device(s), CUDA {torch.version.cuda}")
        lines.append(f"  bf16           {'native' if native_bf16((major, minor)) else 'emulated (slow) below compute capability 8.0'}")
    else:
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build of torch"
        lines.append(f"  cuda           not available ({built})")
    mps = getattr(torch.backends, "mps", None)
    lines.append(f"  mps            {'available' if mps is not None and mps.is_available() else 'not available'}")
    lines.append(f"  cpu            {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                 f"torch uses {torch.get_num_threads()} threads")
    lines.append(f"precision (auto) {describe_choice(device)}")
    lines.append(f"cpu kernel       {_kernel_state()}")
    return lines


def _kernel_state() -> str:
    """Whether castled attention's compiled CPU kernel is built, without building it."""
    from ..fast import cpu_kernel

    if not cpu_kernel.OPERATORS:
        return f"not used: torch {torch.__version__} has no torch.library.custom_op (2.4 and later do)"
    try:
        if not cpu_kernel.enabled():
            return f"off (${cpu_kernel.SWITCH}=0): castled attention runs the library-call path"
    except ValueError as error:
        return f"INVALID: {error}"
    if cpu_kernel.is_built():
        return "built, in torch's extensions cache (train, bench and study load it with cpu_kernel.build())"
    return ("not built yet: cpu_kernel.build() compiles it, which train, bench and study call first (about a "
            "minute; needs a C++ compiler and ninja)")


def _memory_lines() -> list:
    """The gpu preset's training step against the memory of common GPUs (estimated; see memory.py)."""
    from ..memory import table
    from ..presets import get_config, get_recipe

    batch = get_recipe("gpu").batch_size
    try:
        needed, rows = table(get_config("gpu"), batch)
    except Exception as error:  # the report never fails
        return [f"gpu preset step could not be estimated ({type(error).__name__}: {error})"]
    fits = ", ".join(f"{r['gpu']} {'fits' if r['fits'] else 'too small'} (up to batch {r['largest_batch']})" for r in rows)
    return [f"gpu preset step batch {batch}: about {needed:.1f} GiB in float32 (less under bf16/fp16); {fits}"]


def _budget_lines() -> list:
    from ..presets import BUDGET_VARIABLE, budget

    setting = os.environ.get(BUDGET_VARIABLE)
    try:
        mode = budget()
    except ValueError as error:
        return [f"budget           INVALID: {error}"]
    why = f"from ${BUDGET_VARIABLE}={setting}" if setting else f"default ({'CUDA found' if torch.cuda.is_available() else 'no CUDA'}); set ${BUDGET_VARIABLE} to smoke, cpu or gpu to change it"
    return [f"budget           {mode} ({why})"]


def _data_lines() -> list:
    from ..datasets.cifar10 import CIFAR10_ARCHIVE
    from ..datasets.images import data_dir

    root = data_dir()
    source = "from $MINICASTLING_DATA" if os.environ.get("MINICASTLING_DATA") else "default"
    lines = [f"data folder      {root} ({source}; {'exists' if root.is_dir() else 'not created yet'})"]
    cache, archive = root / "cifar10.npz", root / CIFAR10_ARCHIVE
    if cache.is_file():
        state = f"cached as cifar10.npz ({cache.stat().st_size / 2**20:.0f} MiB): ready offline"
    elif archive.is_file():
        state = (f"archive present ({archive.stat().st_size / 2**20:.0f} MiB), not yet unpacked: the first run "
                 "checks its MD5 and caches it")
    else:
        state = "not downloaded: the first run fetches it (170 MB), or falls back to the stand-in offline"
    lines.append(f"  cifar10        {state}")
    lines.append(f"  fashion-mnist  {_fashion_mnist_state()}")
    if root.is_dir():
        lines.append(f"  free disk      {shutil.disk_usage(root).free / 2**30:.1f} GiB")
    return lines


def _fashion_mnist_state() -> str:
    from ..datasets import fashion_mnist

    where = fashion_mnist.offline_location()
    if where is not None and where.suffix == ".npz":
        return f"cached as {where.name}: ready offline"
    if where is not None:
        return f"the four files found in {where}: ready offline (checked on first use)"
    return "not found: --data fashion-mnist downloads it (30 MB), or apt-get install dataset-fashion-mnist"


def report() -> str:
    """The whole report as text."""
    from ..extras.version import __version__

    colab = "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ
    lines = [
        f"minicastling     {__version__}, from {_installed_from()}",
        f"python           {platform.python_version()} ({sys.executable})",
        f"platform         {platform.platform()}{' (Google Colab)' if colab else ''}",
        "packages         " + ", ".join(f"{name} {_version(name)}" for name in PACKAGES),
        *_device_lines(),
        *_budget_lines(),
        *_data_lines(),
        *_memory_lines(),
    ]
    return "\n".join(lines)


def doctor() -> str:
    """Print the environment report and return it."""
    text = report()
    print(text)
    return text
