"""How much memory a training step needs, estimated on the CPU, so a batch too large for a GPU says so.

A step's peak grows linearly with the batch: weights, gradients and AdamW's two moments are fixed,
activations grow with every image, and in castling attention's training branch they grow as N² per
image (the softmax matrix). Two measured steps, at batch 1 and 2, give the line. They run in float32
on the CPU, so under bf16 or fp16 autocast the real peak is lower: the estimate errs on the safe side.
"""

import contextlib
import functools
import os

import torch

from .castling import set_alpha
from .model import ViT, ViTConfig

@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ profiler's start/stop lines, which bypass Python's logging."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory(fn, device=torch.device("cpu")) -> int:
    """Peak bytes allocated while fn() runs, above what was allocated before.

    CUDA: the caching allocator's peak. CPU: the profiler's allocation events, summed in order,
    so tensors freed inside fn (the N×N scores, say) count while they were alive.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak



GPUS = {"T4": 16, "L4": 24, "A100 40GB": 40, "A100 / H100 80GB": 80}  # GiB, the cards users meet


@functools.lru_cache(maxsize=8)
def step_line(config: ViTConfig) -> tuple:
    """(base, per_image) bytes: a training step at batch B peaks near base + per_image · B (softmax branch on)."""
    model = ViT(config)
    set_alpha(model, 1.0)  # the training-time model, masked-softmax branch included
    fixed = 4 * 4 * sum(p.numel() for p in model.parameters())  # weights, gradients, two AdamW moments

    def step(b):
        images = torch.randn(b, config.channels, config.image_size, config.image_size)
        return lambda: model(images).float().logsumexp(-1).sum().backward()

    one, two = peak_memory(step(1)), peak_memory(step(2))
    per_image = max(two - one, 1)
    return fixed + one - per_image, per_image


def largest_batch(line: tuple, gib: float, headroom: float = 0.9) -> int:
    """The largest batch whose estimated step fits in `headroom` of `gib` GiB."""
    base, per_image = line
    return max(0, int((headroom * gib * 2**30 - base) // per_image))


def check_fits(config: ViTConfig, batch: int, device: torch.device, precision: str = "fp32") -> str:
    """One line on whether a step fits this CUDA device. The estimate is float32's: in fp32 a step that
    does not fit raises ValueError saying what to lower; under bf16/fp16 autocast, whose activations are
    smaller, the line says it may not fit and how far to lower the batch if it runs out of memory."""
    total = torch.cuda.get_device_properties(device).total_memory
    line = step_line(config)
    needed = line[0] + line[1] * batch
    estimate = f"a training step at batch {batch} needs about {needed / 2**30:.1f} GiB in float32"
    if needed <= 0.9 * total:
        return f"{estimate}, of this GPU's {total / 2**30:.1f} GiB"
    lower = f"lower --batch-size to {largest_batch(line, total / 2**30)} or less"
    if precision == "fp32":
        raise ValueError(f"{estimate} and this GPU has {total / 2**30:.1f} GiB; {lower}")
    return (f"{estimate}, more than 90 % of this GPU's {total / 2**30:.1f} GiB; under {precision} it needs less and "
            f"may fit; if it runs out of memory, {lower}")


def table(config: ViTConfig, batch: int) -> tuple:
    """The estimated GiB of a step at `batch`, and per GPU in GPUS whether it fits and the largest batch that does."""
    line = step_line(config)
    needed = (line[0] + line[1] * batch) / 2**30
    return needed, [{"gpu": name, "gib": gib, "fits": needed <= 0.9 * gib, "largest_batch": largest_batch(line, gib)}
                    for name, gib in GPUS.items()]
