"""A toy task: teach an attention module to mimic a sharp softmax-attention teacher.

Small enough to train in seconds on a CPU, and hard where linear-angular attention is weak: the
teacher's attention has sharp peaks, which the linear angular term alone cannot make. Tutorial 04
uses it to show what the residual branches buy and what castling too early costs. The teacher and the
students are drawn under different seeds: a student that started from the teacher's weights (its W_v
and projection, and W_q, W_k at 1/sharpness of the teacher's) would only have to rescale them.
"""

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attention import SoftmaxAttention
from ..castling import CastlingAttention, set_alpha
from ..schedule import AlphaSchedule


def make_teacher(dim: int = 32, num_heads: int = 2, sharpness: float = 3.0, seed: int = 0) -> SoftmaxAttention:
    """A frozen random SoftmaxAttention whose q and k weights are scaled by `sharpness`, drawn under `seed`."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left where it was
        torch.manual_seed(seed)
        teacher = SoftmaxAttention(dim, num_heads)
    with torch.no_grad():
        teacher.qkv.weight[: 2 * dim] *= sharpness  # rows of W_q and W_k: peakier softmax
    return teacher.requires_grad_(False).eval()


def make_student(teacher: SoftmaxAttention, seed: int = 1, **options) -> CastlingAttention:
    """A CastlingAttention of the teacher's size, PyTorch's default initialisation drawn under `seed`.

    Students built under one seed start from the same weights (their branches aside), so they differ only in
    what they are given; the seed must not be the teacher's, or the student would start from the teacher.
    `options` go to CastlingAttention (form, conv, alpha, path, ...).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = CastlingAttention(teacher.dim, teacher.num_heads, **options)
    value_rows = slice(2 * teacher.dim, 3 * teacher.dim)  # W_v, which make_teacher leaves unscaled
    if torch.equal(student.qkv.weight[value_rows], teacher.qkv.weight[value_rows]):
        raise ValueError(f"seed {seed} draws the teacher's own weights, so this student would start from the "
                         "teacher; pass another seed")
    return student


def sample_tokens(batch: int, tokens: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, tokens, dim, generator=generator)  # (B, N, C)


@torch.no_grad()
def relative_error(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor) -> float:
    """The mean squared difference over every output entry, divided by the variance of all the teacher's
    output entries together (one number for the whole batch): 0 is a perfect copy, 1 is what predicting the
    mean of the teacher's outputs scores."""
    target = teacher(tokens)
    error = (student(tokens) - target).pow(2).mean()
    return (error / target.var()).item()


def fit(
    student: nn.Module, teacher: nn.Module, steps: int, *, batch: int = 32, tokens: int = 64,
    lr: float = 3e-3, schedule: AlphaSchedule | None = None, seed: int = 0, progress: bool = True,
) -> dict:
    """Train `student` to match `teacher` on random tokens with Adam; drive α by `schedule`.

    Returns the history {"step", "loss", "alpha"} (loss = relative_error's measure on each batch).
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

