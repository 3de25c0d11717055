"""Where and how big: the budget switch (smoke / cpu / gpu), the device, seeds.

One switch decides sizes (DESIGN: Budgets). Tests set MINICASTLING_BUDGET=smoke; otherwise
the default is "gpu" when CUDA is present and "cpu" elsewhere.
"""

import os
import platform
import random

import numpy as np
import torch

BUDGETS = ("smoke", "cpu", "gpu")
BUDGET_VARIABLE = "MINICASTLING_BUDGET"


def budget() -> str:
    """The budget mode: $MINICASTLING_BUDGET if set, else 'gpu' with CUDA and 'cpu' without."""
    mode = os.environ.get(BUDGET_VARIABLE, "").strip().lower()
    if not mode:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if mode not in BUDGETS:
        raise ValueError(f"{BUDGET_VARIABLE}={mode!r} is not a budget; set it to one of {BUDGETS}")
    return mode


def by_budget(smoke, cpu, gpu):
    """The value for the current budget: `n = by_budget(smoke=2, cpu=20, gpu=200)`."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[budget()]


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


def describe(device: torch.device) -> str:
    """One line naming versions, device and budget: the header of every notebook and run."""
    from . import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (f"minicastling {__version__} | torch {torch.__version__} | python {platform.python_version()} | "
            f"device {device} ({name}, {torch.get_num_threads()} threads) | budget {budget()}")


def setup(seed: int = 0, device: str = "auto") -> torch.device:
    """A notebook's first call: seed everything, pick the device, print what was chosen, and size
    figure text for a projector."""
    from .plot import use_legible_style

    use_legible_style()
    seed_everything(seed)
    chosen = pick_device(device)
    print(describe(chosen))
    return chosen
