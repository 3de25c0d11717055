"""A notebook's first call: seed, device, a readable figure style, and one line saying what was chosen."""

import torch

from ..extras.runtime import describe, keep_freed_memory, pick_device, seed_everything
from ..lab.plot import use_legible_style


def setup(seed: int = 0, device: str = "auto") -> torch.device:
    """Seed everything, pick the device, keep freed memory for reuse (extras.runtime.keep_freed_memory),
    size figure text for a projector, and print versions, device and budget. Builds and downloads nothing."""
    use_legible_style()
    keep_freed_memory()
    seed_everything(seed)
    chosen = pick_device(device)
    print(describe(chosen))
    return chosen
