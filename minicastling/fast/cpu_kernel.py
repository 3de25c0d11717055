"""The CPU kernel: linear-angular attention, its DWConv branch and its masked softmax branch in one call.

At the token counts the course uses, library calls cost more than the arithmetic they do: each
reads and writes a few hundred KiB, and the time goes between calls (tutorial 07). The C++ source
beside this file does the same arithmetic one (image, head) at a time, with that head's q, k, v and
its d × d matrix K̂ᵀV in cache, forward and backward. The masked softmax branch, while training has it,
runs inside the same call as flash attention runs softmax attention: a block of query rows against
all keys, O(N) numbers kept per row instead of the N × N matrix, the weights recomputed in the backward.

It is registered as the operator `torch.ops.minicastling.linear_angular_conv` (torch.library), with
a fake implementation for tracing, its backward as a second operator, and a FLOP formula, so
torch.compile calls it and torch's flop counter counts it like any aten operator.

Nothing here compiles anything by itself: `build()` is the one step that does (torch.utils.cpp_extension,
a C++ compiler and ninja; about a minute the first time on a machine, said in one line, then cached for
later processes). `train`, `bench` and `study` call it; a notebook calls it where it shows the fast
path. Until it has run in a process, `ready()` is False and CastlingAttention's automatic path takes
the library calls (castling.choose_path). It covers CPU tensors, both forms, the 1-D token conv or none,
the softmax branch, head_dim 16, 24, 32, 48 or 64, on torch >= 2.4 (torch.library's custom_op).
MINICASTLING_CPU_KERNEL=0 turns it off.
"""

import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from ..similarity import EPS

SOURCE = Path(__file__).parent / "linear_angular_cpu.cpp"
HEAD_DIMS = (16, 24, 32, 48, 64)
SWITCH = "MINICASTLING_CPU_KERNEL"
OPERATORS = hasattr(torch.library, "custom_op")  # torch >= 2.4
_built = {"module": None, "tried": False}  # what build() found, for this process


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


def build_root() -> Path:
    """torch's extensions cache, where every build of the kernel lives: $TORCH_EXTENSIONS_DIR, else its default."""
    from torch.utils import cpp_extension

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())


def is_built() -> bool:
    """Whether a build of the kernel is in torch's extensions cache (nothing is built by asking)."""
    name = build_name()
    return any(build_root().glob(f"**/{name}/{name}*.so")) or any(build_root().glob(f"**/{name}/{name}*.pyd"))


STALE_LOCK_SECONDS = 600  # a build takes about a minute; a lock ten times older was left by a build that was stopped


def wait_for_another_build(poll: float = 1.0) -> None:
    """Wait while another process builds the kernel; refuse to wait on a build that will never finish.

    torch marks a build in progress with a `lock` file in its folder and makes every other process wait
    until the file is gone, with no word and no end. A build stopped half-way (a notebook interrupted while
    it compiles, a killed job) leaves the file behind. So this waits here instead, where it can tell: while
    the lock is younger than a build ever takes it waits; once it is older, it raises with what to delete.
    """
    for lock in build_root().glob(f"**/{build_name()}/lock"):
        while lock.exists():
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:  # the other build finished between the two looks
                break
            if age > STALE_LOCK_SECONDS:
                raise RuntimeError(
                    f"an earlier build of minicastling's CPU kernel was stopped half-way and left its lock file "
                    f"{lock} ({age / 60:.0f} minutes old; a build takes about one). If no other process is "
                    f"compiling it now, delete the folder {lock.parent} and run again; or set {SWITCH}=0 to "
                    f"use the library-call path instead")
            time.sleep(poll)


def build() -> str:
    """Compile the kernel (or load this machine's earlier build) for this process; say what happened in one line.

    The one place anything is compiled. Where it cannot be built (no compiler, no ninja) it warns once
    and CastlingAttention takes the library-call path, with the same numbers.
    """
    if not OPERATORS:
        return f"CPU kernel: not used (torch {torch.__version__} lacks torch.library.custom_op; 2.4 or newer has it)"
    if not enabled():
        return f"CPU kernel: off (${SWITCH}=0)"
    if _built["module"] is not None:
        return "CPU kernel: ready"
    if _built["tried"]:
        return "CPU kernel: could not be built (see the warning above); castled attention runs library calls"
    from torch.utils import cpp_extension

    wait_for_another_build()
    _built["tried"] = True
    flags, fresh = compiler_flags(), not is_built()
    if fresh:
        print("minicastling: compiling the CPU kernel for castling attention (once per machine, about a minute) ...",
              file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        _built["module"] = cpp_extension.load(
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
        return build()
    seconds = time.perf_counter() - started
    return f"CPU kernel: compiled in {seconds:.0f} s" if fresh else f"CPU kernel: loaded this machine's build ({seconds:.1f} s)"


def forget() -> None:
    """Back to the state before build(): for tests of what happens without the kernel."""
    _built.update(module=None, tried=False)


def ready() -> bool:
    """Whether build() has given this process the kernel and the switch leaves it on. Builds nothing."""
    return OPERATORS and _built["module"] is not None and enabled()


def load():
    """The compiled module; RuntimeError if build() has not made it (the operator calls this)."""
    if _built["module"] is None:
        raise RuntimeError("minicastling's CPU kernel is not built in this process; call "
                           "minicastling.fast.cpu_kernel.build() first")
    return _built["module"]


def covers(device: torch.device, head_dim: int, token_conv: bool) -> bool:
    """Whether the kernel can compute a call: a CPU tensor, a compiled head_dim, the 1-D token conv or none.
    (Whether it is built is ready()'s question.)"""
    return torch.device(device).type == "cpu" and head_dim in HEAD_DIMS and token_conv and OPERATORS


def linear_angular_conv(qkv: torch.Tensor, heads: int, weight=None, eps: float = EPS, form: str = "kernel",
                        alpha=None, threshold: float = 0.02) -> torch.Tensor:
    """Linear-angular attention of `form`, the token conv with `weight` (H, 1, k, 1) or None, and the masked
    softmax branch weighted by `alpha` (a one-element tensor; None: no branch) with mask threshold τ.

    The branch, α · (M ⊙ softmax(QKᵀ/√d)) V with M = [softmax > τ], enters where the form adds it:
    inside the official form's normalisation, after the kernel form's average. α receives no gradient
    (it is the schedule's, not a parameter). qkv (B, N, 3C) → (B, H, N, d), a view of token-major memory.
    bf16/fp16 inputs (autocast included) are computed in float32, as in the readable form, and returned
    in their dtype.
    """
    dtype = qkv.dtype
    wide = torch.promote_types(dtype, torch.float32)  # autocast does not reach into the compiled call
    qkv = qkv.to(wide).contiguous()
    if weight is not None:
        weight = weight.to(wide).flatten(1)  # (H, 1, k, 1) -> (H, k)
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=wide).detach().reshape(())
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (qkv, weight))
    out = torch.ops.minicastling.linear_angular_conv(qkv, weight, heads, eps, save, form == "official", alpha,
                                                     float(threshold))[0]  # (B, N, H, d)
    return out.transpose(1, 2).to(dtype)  # (B, H, N, d)


def _per_head_macs(qkv_shape, heads: int, weight_shape, official: bool, branch: bool) -> tuple:
    """(forward, backward) multiply–accumulates of one call, counted as the library-call path's matmuls and
    conv would be: K̂ᵀV and the queries against it, N·d·d each (N·d·(d + 1) in the kernel form, whose
    [V | 1] carries the denominator); the backward's four matmuls; the conv's N·d·k, twice in the
    backward (input and weight); the softmax branch's QKᵀ and PV, N·N·d each, and its backward's four
    N·N·d products (the kernel's recomputation of QKᵀ in the backward is not counted, as autograd's
    stored matrix would cost none)."""
    b, n, three_c = qkv_shape
    d = three_c // (3 * heads)
    wide = d if official else d + 1
    conv = 0 if weight_shape is None else n * d * weight_shape[-1]
    forward = 2 * n * d * wide + conv + (2 * n * n * d if branch else 0)
    backward = 3 * n * d * wide + n * d * d + 2 * conv + (4 * n * n * d if branch else 0)
    return b * heads * forward, b * heads * backward


if OPERATORS:
    from typing import Optional

    from torch import Tensor
    from torch.utils.flop_counter import register_flop_formula

    @torch.library.custom_op("minicastling::linear_angular_conv", mutates_args=(), device_types="cpu")
    def _forward(qkv: Tensor, weight: Optional[Tensor], heads: int, eps: float, save: bool, official: bool,
                 alpha: Optional[Tensor], threshold: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """out (B, N, H, d), and if `save` what the backward reads: stats, moments, the average, the branch."""
        outputs = load().forward(qkv, heads, weight, eps, save, official, alpha, threshold)
        if save:
            return tuple(outputs)
        nothing = qkv.new_empty(0)
        return outputs[0], nothing, nothing.clone(), nothing.clone(), nothing.clone()

    @_forward.register_fake
    def _(qkv, weight, heads, eps, save, official, alpha, threshold):
        b, n, three_c = qkv.shape
        d = three_c // (3 * heads)
        out = qkv.new_empty(b, n, heads, d)
        if not save:
            return out, qkv.new_empty(0), qkv.new_empty(0), qkv.new_empty(0), qkv.new_empty(0)
        branch = qkv.new_empty(b, heads, n, d) if alpha is not None else qkv.new_empty(0)
        return (out, qkv.new_empty(b, heads, 3 if alpha is None else 5, n), qkv.new_empty(b, heads, d + 2, d),
                qkv.new_empty(b, n, heads, d), branch)

    @torch.library.custom_op("minicastling::linear_angular_conv_backward", mutates_args=(), device_types="cpu")
    def _backward(grad: Tensor, qkv: Tensor, weight: Optional[Tensor], heads: int, eps: float, official: bool,
                  alpha: Optional[Tensor], threshold: float, stats: Tensor, moments: Tensor, average: Tensor,
                  branch: Tensor) -> tuple[Tensor, Tensor]:
        """grad_qkv (B, N, 3C) and grad_weight (H, k) (empty where there is no conv)."""
        grads = load().backward(grad.contiguous(), qkv, heads, weight, eps, official, alpha, threshold, stats, moments,
                                average, branch)
        return tuple(grads)

    @_backward.register_fake
    def _(grad, qkv, weight, heads, eps, official, alpha, threshold, stats, moments, average, branch):
        return qkv.new_empty(qkv.shape), weight.new_empty(weight.shape) if weight is not None else qkv.new_empty(0)

    def _setup_context(ctx, inputs, output):
        qkv, weight, heads, eps, save, official, alpha, threshold = inputs
        ctx.save_for_backward(qkv, weight, alpha, *output[1:])
        ctx.heads, ctx.eps, ctx.saved, ctx.official, ctx.threshold = heads, eps, save, official, threshold

    def _autograd_backward(ctx, grad, *unused):
        if not ctx.saved:
            raise RuntimeError("linear_angular_conv was called with save=False, so it kept nothing to differentiate")
        qkv, weight, alpha, stats, moments, average, branch = ctx.saved_tensors
        grad_qkv, grad_weight = _backward(grad, qkv, weight, ctx.heads, ctx.eps, ctx.official, alpha, ctx.threshold,
                                          stats, moments, average, branch)
        return grad_qkv, grad_weight if weight is not None else None, None, None, None, None, None, None

    _forward.register_autograd(_autograd_backward, setup_context=_setup_context)

    @register_flop_formula(torch.ops.minicastling.linear_angular_conv)
    def _forward_flops(qkv_shape, weight_shape, heads, eps, save, official, alpha_shape, *args, out_shape=None,
                       **kwargs) -> int:
        return 2 * _per_head_macs(qkv_shape, heads, weight_shape, official, alpha_shape is not None)[0]

    @register_flop_formula(torch.ops.minicastling.linear_angular_conv_backward)
    def _backward_flops(grad_shape, qkv_shape, weight_shape, heads, eps, official, alpha_shape, *args, out_shape=None,
                        **kwargs) -> int:
        return 2 * _per_head_macs(qkv_shape, heads, weight_shape, official, alpha_shape is not None)[1]
