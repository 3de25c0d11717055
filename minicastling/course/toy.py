"""A toy task: teach an attention module to mimic a sharp softmax-attention teacher.

Small enough to train in seconds on a CPU, and hard in the way the paper cares about: the
teacher's attention has sharp peaks, which the linear angular term alone cannot make. Tutorial 04
uses it to show what the residual branches buy and what castling too early costs.
"""

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attention import SoftmaxAttention
from ..castling import set_alpha
from ..schedule import AlphaSchedule


def make_teacher(dim: int = 32, num_heads: int = 2, sharpness: float = 3.0, seed: int = 0) -> SoftmaxAttention:
    """A frozen random SoftmaxAttention whose q and k weights are scaled by `sharpness`."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    teacher = SoftmaxAttention(dim, num_heads)
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        teacher.qkv.weight[: 2 * dim] *= sharpness  # rows of W_q and W_k: peakier softmax
    return teacher.requires_grad_(False).eval()


def sample_tokens(batch: int, tokens: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, tokens, dim, generator=generator)  # (B, N, C)


@torch.no_grad()
def relative_error(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor) -> float:
    """‖student(x) − teacher(x)‖² / ‖teacher(x) − mean‖²: 0 is perfect, 1 is "predict the mean"."""
    target = teacher(tokens)
    error = (student(tokens) - target).pow(2).mean()
    return (error / target.var()).item()


def fit(
    student: nn.Module, teacher: nn.Module, steps: int, *, batch: int = 32, tokens: int = 64,
    lr: float = 3e-3, schedule: AlphaSchedule | None = None, seed: int = 0, progress: bool = True,
) -> dict:
    """Train `student` to match `teacher` on random tokens with Adam; drive α by `schedule`.

    Returns the history {"step", "loss", "alpha"} (loss = relative error of each batch).
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    history = {"step": [], "loss": [], "alpha": []}
    student.train()
    for step in tqdm(range(steps), desc="fit", disable=not progress, leave=False):
        alpha = schedule(step / steps) if schedule is not None else None
        if alpha is not None:
            set_alpha(student, alpha)
        x = sample_tokens(batch, tokens, teacher.dim, generator)
        target = teacher(x)
        loss = (student(x) - target).pow(2).mean() / target.var()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["alpha"].append(alpha if alpha is not None else getattr(student, "alpha", 0.0))
    if schedule is not None:
        set_alpha(student, schedule(1.0))
    return history

