"""The CPU kernel: linear-angular attention and its DWConv branch in one compiled call.

At the token counts the course uses, library calls cost more than the arithmetic they do: each
reads and writes a few hundred KiB, and the time goes between calls (tutorial 07). The C++ source
beside this file does the same arithmetic one (image, head) at a time, with that head's q, k, v and
its d × d matrix K̂ᵀV in L1 cache, forward and backward.

It is registered as the operator `torch.ops.minicastling.linear_angular_conv` (torch.library), with
a fake implementation for tracing, its backward as a second operator, and a FLOP formula, so
torch.compile calls it and torch's flop counter counts it like any aten operator. The C++ is built
by torch.utils.cpp_extension the first time a call needs it (a C++ compiler and ninja; about a
minute, said in one line) and cached for later processes. It covers CPU tensors, both forms (with the
softmax branch's output passed in for the official form, which adds it inside its normalisation), the
1-D token conv or none, head_dim 16, 24, 32, 48 or 64, on torch >= 2.4 (torch.library's custom_op). For
anything else, a build that fails (one warning), or MINICASTLING_CPU_KERNEL=0, CastlingAttention takes
another path with the same numbers (attention.CastlingAttention.attend).
"""

import functools
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from ..branches import TokenConv1d
from ..similarity import EPS

SOURCE = Path(__file__).parent / "linear_angular_cpu.cpp"
HEAD_DIMS = (16, 24, 32, 48, 64)
SWITCH = "MINICASTLING_CPU_KERNEL"
OPERATORS = hasattr(torch.library, "custom_op")  # torch >= 2.4


def enabled() -> bool:
    """False when $MINICASTLING_CPU_KERNEL is 0 (or false/off/no)."""
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


def build_name() -> str:
    """The build's name: the instruction set, and a digest of the source and flags, so a changed kernel is a new build."""
    import hashlib

    flags = compiler_flags()
    digest = hashlib.sha1(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:10]
    return f"minicastling_linear_angular_{'avx2' if '-mavx2' in flags else 'base'}_{digest}"


def is_built() -> bool:
    """Whether a build of the kernel is in torch's extensions cache (nothing is built by asking)."""
    from torch.utils import cpp_extension

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    name = build_name()
    return any(root.glob(f"**/{name}/{name}*.so")) or any(root.glob(f"**/{name}/{name}*.pyd"))


@functools.cache
def load():
    """The compiled module, built on first use; None (with one warning) where it cannot be built."""
    from torch.utils import cpp_extension

    flags, fresh = compiler_flags(), not is_built()
    if fresh:
        print("minicastling: compiling the CPU kernel for castled attention (once per machine, about a minute) ...",
              file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=build_name(), sources=[str(SOURCE)], extra_cflags=flags,
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
    if fresh:
        print(f"minicastling: CPU kernel compiled in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return module


def _available() -> bool:
    return OPERATORS and enabled() and load() is not None


# torch.compile asks once per graph, at trace time, and keeps the answer (building the kernel then, if needed)
available = torch.compiler.assume_constant_result(_available) if OPERATORS else _available


def covers(qkv: torch.Tensor, heads: int, form: str, conv) -> bool:
    """Whether the CPU kernel computes this call (building it on first use); if not, another path does."""
    return (qkv.device.type == "cpu" and form in ("kernel", "official")
            and (conv is None or isinstance(conv, TokenConv1d)) and qkv.shape[-1] // (3 * heads) in HEAD_DIMS
            and available())


def linear_angular_conv(qkv: torch.Tensor, heads: int, weight=None, eps: float = EPS, form: str = "kernel",
                        auxiliary=None) -> torch.Tensor:
    """Linear-angular attention of `form` plus the token conv with `weight` (H, 1, k, 1) or None.

    auxiliary (B, H, N, d) or None: the weighted softmax branch, added where the form adds it: inside
    the official form's normalisation (here), after the kernel form's average (by the caller, as well).

    qkv (B, N, 3C) → (B, H, N, d), a view of token-major memory. bf16/fp16 inputs (autocast
    included) are computed in float32, as in the readable form, and returned in their dtype.
    """
    dtype = qkv.dtype
    wide = torch.promote_types(dtype, torch.float32)  # autocast does not reach into the compiled call
    qkv = qkv.to(wide).contiguous()
    if weight is not None:
        weight = weight.to(wide).flatten(1)  # (H, 1, k, 1) -> (H, k)
    official = form == "official"
    branch = auxiliary.to(wide).contiguous() if official and auxiliary is not None else None
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (qkv, weight, branch))
    out = torch.ops.minicastling.linear_angular_conv(qkv, weight, heads, eps, save, official, branch)[0]  # (B, N, H, d)
    out = out.transpose(1, 2)  # (B, H, N, d)
    if auxiliary is not None and not official:
        out = out + auxiliary.to(wide)  # the kernel form adds the branch to its average
    return out.to(dtype)


def _per_head_macs(qkv_shape, heads: int, weight_shape, official: bool) -> tuple:
    """(forward, backward) multiply–accumulates of one call, counted as the library-call path's
    matmuls and conv would be: K̂ᵀV and the queries against it, N·d·d each (N·d·(d + 1) in the kernel
    form, whose [V | 1] carries the denominator); the backward's four matmuls; the conv's N·d·k, twice
    in the backward (input and weight)."""
    b, n, three_c = qkv_shape
    d = three_c // (3 * heads)
    wide = d if official else d + 1
    conv = 0 if weight_shape is None else n * d * weight_shape[-1]
    forward = 2 * n * d * wide + conv
    backward = 3 * n * d * wide + n * d * d + 2 * conv
    return b * heads * forward, b * heads * backward


if OPERATORS:
    from typing import Optional

    from torch import Tensor
    from torch.utils.flop_counter import register_flop_formula

    @torch.library.custom_op("minicastling::linear_angular_conv", mutates_args=(), device_types="cpu")
    def _forward(qkv: Tensor, weight: Optional[Tensor], heads: int, eps: float, save: bool, official: bool,
                 auxiliary: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """out (B, N, H, d), and if `save` what the backward reads: stats, moments, the average."""
        outputs = load().forward(qkv, heads, weight, eps, save, official, auxiliary)
        if save:
            return tuple(outputs)
        nothing = qkv.new_empty(0)
        return outputs[0], nothing, nothing.clone(), nothing.clone()

    @_forward.register_fake
    def _(qkv, weight, heads, eps, save, official, auxiliary):
        b, n, three_c = qkv.shape
        d = three_c // (3 * heads)
        out = qkv.new_empty(b, n, heads, d)
        if not save:
            return out, qkv.new_empty(0), qkv.new_empty(0), qkv.new_empty(0)
        return out, qkv.new_empty(b, heads, 3, n), qkv.new_empty(b, heads, d + 2, d), qkv.new_empty(b, n, heads, d)

    @torch.library.custom_op("minicastling::linear_angular_conv_backward", mutates_args=(), device_types="cpu")
    def _backward(grad: Tensor, qkv: Tensor, weight: Optional[Tensor], heads: int, eps: float, official: bool,
                  stats: Tensor, moments: Tensor, average: Tensor, with_auxiliary: bool) -> tuple[Tensor, Tensor, Tensor]:
        """grad_qkv (B, N, 3C), grad_weight (H, k) and grad_auxiliary (B, H, N, d) (empty where there is none)."""
        grads = load().backward(grad.contiguous(), qkv, heads, weight, eps, official, stats, moments, average,
                                with_auxiliary)
        return tuple(grads)

    @_backward.register_fake
    def _(grad, qkv, weight, heads, eps, official, stats, moments, average, with_auxiliary):
        b, n, three_c = qkv.shape
        return (qkv.new_empty(qkv.shape), weight.new_empty(weight.shape) if weight is not None else qkv.new_empty(0),
                qkv.new_empty(b, heads, n, three_c // (3 * heads)) if with_auxiliary else qkv.new_empty(0))

    def _setup_context(ctx, inputs, output):
        qkv, weight, heads, eps, save, official, auxiliary = inputs
        ctx.save_for_backward(qkv, weight, *output[1:])
        ctx.heads, ctx.eps, ctx.saved, ctx.official, ctx.auxiliary = heads, eps, save, official, auxiliary is not None

    def _autograd_backward(ctx, grad, *unused):
        if not ctx.saved:
            raise RuntimeError("linear_angular_conv was called with save=False, so it kept nothing to differentiate")
        qkv, weight, stats, moments, average = ctx.saved_tensors
        grad_qkv, grad_weight, grad_auxiliary = _backward(grad, qkv, weight, ctx.heads, ctx.eps, ctx.official, stats,
                                                          moments, average, ctx.auxiliary)
        return (grad_qkv, grad_weight if weight is not None else None, None, None, None, None,
                grad_auxiliary if ctx.auxiliary else None)

    _forward.register_autograd(_autograd_backward, setup_context=_setup_context)

    @register_flop_formula(torch.ops.minicastling.linear_angular_conv)
    def _forward_flops(qkv_shape, weight_shape, heads, eps, save, official, *args, out_shape=None, **kwargs) -> int:
        return 2 * _per_head_macs(qkv_shape, heads, weight_shape, official)[0]

    @register_flop_formula(torch.ops.minicastling.linear_angular_conv_backward)
    def _backward_flops(grad_shape, qkv_shape, weight_shape, heads, eps, official, *args, out_shape=None, **kwargs) -> int:
        return 2 * _per_head_macs(qkv_shape, heads, weight_shape, official)[1]
