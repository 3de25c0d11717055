"""Where a run happens: the device, seeds, the allocator, and the one line that says so."""

import ctypes
import os
import platform
import random

import numpy as np
import torch

from .version import __version__

BUDGETS = ("smoke", "cpu", "gpu")  # the budget modes, each a preset's name (presets.PRESETS)
BUDGET_VARIABLE = "MINICASTLING_BUDGET"


def budget() -> str:
    """The budget mode, a preset's name: $MINICASTLING_BUDGET if set, else 'gpu' with CUDA and 'cpu' without."""
    mode = os.environ.get(BUDGET_VARIABLE, "").strip().lower()
    if not mode:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if mode not in BUDGETS:
        raise ValueError(f"{BUDGET_VARIABLE}={mode!r} is not a budget; set it to one of {list(BUDGETS)}")
    return mode


def pick_device(device: str = "auto") -> torch.device:
    """'auto' → cuda, then mps, then cpu; anything else is passed to torch.device."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# glibc's mallopt parameters (malloc.h), and the sizes keep_freed_memory() sets them to
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# requests below 1 GiB come from the heap (where a glibc refuses that, below 32 MiB, the most its manual
# names: a training run then still faults in its larger tensors), and up to 1 GiB of freed heap stays mapped
MMAP_THRESHOLDS = (1 << 30, 32 << 20)
TRIM_THRESHOLD = 1 << 30
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next tensor instead of handing it back to the OS.

    By default glibc gives large requests fresh pages (mmap) and returns the heap's free top once it
    passes a threshold, so a tensor of a few MiB that is freed and allocated again on every call is
    page-faulted in again each time: the kernel zeroes every 4 KiB page before the first write. On a
    CPU that can cost as much as the arithmetic, most in code that makes several temporaries per call
    (tutorial 07 measures it). The command line and setup() call this first; a script may too. It has
    the effect of MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set before the process starts,
    from then on, for this process and the ones it forks. The price: resident memory stays near its peak.

    Returns True where applied (Linux with glibc); False elsewhere (macOS, Windows, musl), where
    nothing changes.
    """
    if platform.system() != "Linux":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "gnu_get_libc_version"):  # mallopt's parameters are glibc's
        return False
    mmap_set = any(libc.mallopt(M_MMAP_THRESHOLD, size) == 1 for size in MMAP_THRESHOLDS)  # the first it takes
    return mmap_set and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def describe(device: torch.device) -> str:
    """One line naming versions, device and budget: the header of every notebook and run. Builds nothing."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return (f"minicastling {__version__} | torch {torch.__version__} | python {platform.python_version()} | "
            f"device {device} ({name}, {threads} thread{'' if threads == 1 else 's'}) | budget {budget()}")
