"""Which floating-point precision a training run uses, per device, and the autocast and scaler for it.

bf16 autocast only where the GPU computes in bf16 natively (compute capability 8.0 and up: A100, L4,
H100); below that (T4, V100) fp16 autocast with a gradient scaler, since fp16's narrow range would
otherwise underflow small gradients. torch.cuda.is_bf16_supported() answers True on a T4, where bf16
is emulated and slow and cuDNN has no bf16 convolutions, so the choice reads the capability instead.
The CPU trains in fp32 unless asked otherwise. The linear-angular core keeps its token reductions in
fp32 under every choice (attention.linear_angular_attention, fast.library_calls.LinearAngular).
"""

import contextlib
import dataclasses
import functools
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_capability(device: torch.device) -> tuple:
    return torch.cuda.get_device_capability(device)


def native_bf16(capability: tuple) -> bool:
    """Whether a GPU of this compute capability computes in bf16 natively (8.0 and up)."""
    return tuple(capability) >= (8, 0)


def choose_precision(device: torch.device, requested: str = "auto") -> str:
    """The precision to train in: `requested`, or for "auto" the fastest safe one for `device`."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; use one of {PRECISIONS}")
    device = torch.device(device)
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if native_bf16(cuda_capability(device)) else "fp16"
    if requested == "bf16" and device.type == "cuda" and not native_bf16(cuda_capability(device)):
        major, minor = cuda_capability(device)
        warnings.warn(f"bf16 on a GPU of compute capability {major}.{minor} runs emulated and slow (no native bf16 "
                      "below 8.0); --precision fp16 (with a gradient scaler) is the fast choice there", stacklevel=2)
    if requested == "fp16" and device.type == "mps":
        raise ValueError("fp16 autocast with a gradient scaler is not supported on MPS here; use --precision fp32")
    return requested


def autocast(device: torch.device, precision: str):
    """The autocast context for a precision: a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


@dataclasses.dataclass
class Precision:
    """A run's precision: its name, its autocast context (`with precision.autocast():`, a no-op for fp32) and its
    gradient scaler (on for fp16 only)."""

    name: str
    autocast: object  # a function of no arguments that returns the context
    scaler: torch.amp.GradScaler


def training_precision(device: torch.device, requested: str = "auto") -> Precision:
    """The precision a run on `device` trains in (choose_precision), with its autocast and gradient scaler."""
    name = choose_precision(device, requested)
    return Precision(name, functools.partial(autocast, device, name), grad_scaler(device, name))


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler that is on only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def describe_choice(device: torch.device) -> str:
    """One line for doctor and the start of a run: what "auto" picks here, and why."""
    device = torch.device(device)
    chosen = choose_precision(device)
    if device.type != "cuda":
        return f"{chosen} (no CUDA GPU: autocast would only slow a {device.type} run down)"
    major, minor = cuda_capability(device)
    why = "native bf16" if chosen == "bf16" else "no native bf16 below 8.0, so fp16 with a gradient scaler"
    return f"{chosen} (compute capability {major}.{minor}: {why})"
