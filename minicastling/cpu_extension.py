"""The CPU kernel: linear-angular attention and its DWConv branch in one compiled call per layer.

At the token counts the course uses, fused.LinearAngular's dozen library calls cost more than the
arithmetic they do: each reads and writes a few hundred KiB, and the time goes between calls
(tutorial 07). csrc/linear_angular_cpu.cpp does the same arithmetic one (image, head) at a time,
with that head's q, k, v and its d × d matrix K̂ᵀV in L1 cache, forward and backward.

It is built by torch.utils.cpp_extension the first time it is needed (about a minute; needs a C++
compiler and ninja) and cached for later runs. Where it cannot be built, or for what it does not
cover, CastlingAttention uses fused.LinearAngular and gets the same numbers (tests compare the two
against attention.linear_angular_attention in float64). It covers: CPU tensors, form="kernel",
conv="1d" or no conv, head_dim 16, 24, 32, 48 or 64. MINICASTLING_CPU_KERNEL=0 turns it off.
"""

import contextlib
import functools
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

from .branches import TokenConv1d
from .kernels import EPS

SOURCE = Path(__file__).parent / "csrc" / "linear_angular_cpu.cpp"
HEAD_DIMS = (16, 24, 32, 48, 64)
SWITCH = "MINICASTLING_CPU_KERNEL"


_suspended = 0  # > 0 inside off()


@contextlib.contextmanager
def off():
    """The library-call path inside the block: what torch's flop counter needs, since it counts aten's
    operators and cannot see into the compiled call (the arithmetic is the same)."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


def enabled() -> bool:
    """False inside off(), or when $MINICASTLING_CPU_KERNEL is 0 (or false/off/no)."""
    if _suspended:
        return False
    value = os.environ.get(SWITCH, "1").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    if value not in ("1", "true", "on", "yes", ""):
        raise ValueError(f"{SWITCH}={value!r}: set it to 1 (use the CPU kernel, the default) or 0 (do not)")
    return True


def compiler_flags() -> list[str]:
    """Optimised, with OpenMP threads on Linux and AVX2 where the CPU has it (torch says so)."""
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    flags = ["-O3"]
    if sys.platform.startswith("linux"):
        flags.append("-fopenmp")
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        flags += ["-mavx2", "-mfma"]
    return flags


@functools.cache
def load():
    """The compiled module, built on first use; None (with one warning) where it cannot be built."""
    from torch.utils import cpp_extension

    flags = compiler_flags()
    name = "minicastling_linear_angular_" + ("avx2" if "-mavx2" in flags else "base")
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    if not any(root.glob(f"**/{name}/{name}*.*")):  # nothing built yet: say why this call takes a minute
        print("minicastling: building the CPU kernel (once per machine; about a minute)", file=sys.stderr)
    try:
        return cpp_extension.load(
            name=name, sources=[str(SOURCE)], extra_cflags=flags,
            extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [], verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, a failed build: all leave the library path
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"minicastling's CPU kernel could not be built ({reason}); CastlingAttention uses the "
            f"library-call path instead (same numbers, slower at small token counts). Install a C++ "
            f"compiler and `pip install ninja` to build it, or set {SWITCH}=0 to skip it",
            RuntimeWarning, stacklevel=2,
        )
        return None


def covers(qkv: torch.Tensor, heads: int, form: str, conv) -> bool:
    """Whether the CPU kernel computes this call (and can be built); if not, use fused.LinearAngular."""
    return (
        qkv.device.type == "cpu" and form == "kernel" and (conv is None or isinstance(conv, TokenConv1d))
        and qkv.shape[-1] // (3 * heads) in HEAD_DIMS and enabled() and load() is not None
    )


def linear_angular_conv(qkv: torch.Tensor, heads: int, weight=None, eps: float = EPS) -> torch.Tensor:
    """Kernel-form linear-angular attention plus the token conv with `weight` (H, 1, k, 1) or None.

    qkv (B, N, 3C) → (B, H, N, d), a view of token-major memory. bf16/fp16 inputs (autocast
    included) are computed in float32, as in the readable form, and returned in their dtype.
    """
    dtype = qkv.dtype
    wide = torch.promote_types(dtype, torch.float32)  # autocast does not reach into the compiled call
    qkv = qkv.to(wide).contiguous()
    if weight is not None:
        weight = weight.to(wide).flatten(1)  # (H, 1, k, 1) -> (H, k)
    if torch.is_grad_enabled() and (qkv.requires_grad or (weight is not None and weight.requires_grad)):
        out = _LinearAngularConv.apply(qkv, weight, heads, eps)
    else:  # no graph to record: skip autograd.Function's bookkeeping, which costs as much as a small call
        out = load().forward(qkv, heads, weight, eps, False)[0]
    return out.transpose(1, 2).to(dtype)  # (B, N, H, d) -> (B, H, N, d)


class _LinearAngularConv(torch.autograd.Function):
    """The compiled forward and backward as one autograd node."""

    @staticmethod
    def forward(ctx, qkv, weight, heads: int, eps: float):
        out, stats, moments, average = load().forward(qkv, heads, weight, eps, True)
        ctx.save_for_backward(qkv, weight, stats, moments, average)
        ctx.heads, ctx.eps = heads, eps
        return out  # (B, N, H, d)

    @staticmethod
    def backward(ctx, grad):
        qkv, weight, stats, moments, average = ctx.saved_tensors
        grads = load().backward(grad.contiguous(), qkv, ctx.heads, weight, ctx.eps, stats, moments, average)
        grad_weight = grads[1] if weight is not None else None
        return grads[0], grad_weight, None, None
