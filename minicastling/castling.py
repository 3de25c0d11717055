"""Castling attention: linear-angular attention + DWConv(V) + α · masked softmax, and the castling switch.

The abstract: Castling-ViT "trains ViTs using both linear-angular attention and masked softmax-based
quadratic attention, but then switches to having only linear angular attention during ViT inference".
This module is that layer, with α(t) (schedule.py) as this course's stand-in for masks "regularized to
gradually become zeros": `castle()` removes the softmax branch once α is 0, and inference is O(N).
Which code computes it is one argument, `path`, resolved in `choose_path` below. Introduced in tutorial 04.
"""

import math
import warnings

import torch
from torch import nn

from .attention import MultiHeadTokens, check_form, linear_angular_attention
from .branches import TokenConv1d, make_conv_branch, masked_softmax_attention
from .fast import cpu_kernel, library_calls

MASKS = ("absolute", "relative")
PATHS = ("auto", "readable", "library", "cpu-kernel")


def choose_path(path: str, qkv: torch.Tensor, head_dim: int, conv) -> str:
    """Which code computes castling attention for this call: the one place the choice is made.

    "readable": linear_angular_attention and the branches as tutorials 03 and 04 write them;
    "library": the same numbers through fewer library calls with a hand-written backward (fast.library_calls);
    "cpu-kernel": the same numbers in one compiled call per layer, softmax branch included (fast.cpu_kernel);
    "auto": the CPU kernel where it covers the call and cpu_kernel.build() has run in this process (train,
    bench and study run it), else the readable form under torch.compile (the compiler fuses it), else
    library calls. Every path is tested against the readable one in float64.
    """
    covered = cpu_kernel.covers(qkv.device, head_dim, conv is None or isinstance(conv, TokenConv1d))
    if path == "auto":
        if covered and cpu_kernel.ready():
            return "cpu-kernel"
        return "readable" if torch.compiler.is_compiling() else "library"
    if path == "cpu-kernel" and not (covered and cpu_kernel.ready()):
        why = ("call minicastling.fast.cpu_kernel.build() first" if covered else
               f"it covers CPU tensors, head_dim in {cpu_kernel.HEAD_DIMS} and conv '1d' or None; this call has a "
               f"{qkv.device.type} tensor, head_dim {head_dim} and conv {type(conv).__name__}")
        raise RuntimeError(f"path='cpu-kernel' cannot compute this call: {why}; or use path='auto'")
    return path


class CastlingAttention(MultiHeadTokens):
    """Castling attention: linear-angular + DWConv(V) + α · masked softmax (while α > 0).

    The auxiliary branch's weight α is driven to 0 by an AlphaSchedule; `castle()` then removes it,
    and inference is O(N). While α > 0 the branch is part of the model in train and eval mode alike,
    so evaluation measures what was trained.

    form: "official" (what the authors' released code computes, and the default for that reason; the name
        means only that, not the paper's final block, which is not published) or "kernel" (the row-normalised
        linear angular kernel, this course's Nadaraya–Watson reading); see attention.linear_angular_attention.
    conv: "1d" (the authors' (9, 1) kernel over tokens), "2d" (3×3 over the token grid) or None.
    threshold: ε of the mask [softmax > ε]; with mask="relative" it is in units of the uniform
        weight 1/N, so the mask keeps the weights above threshold/N (the authors' mask is "absolute").
    alpha: the branch's initial weight.
    path: which code computes it, "auto" (default), "readable", "library" or "cpu-kernel" (choose_path).
    """

    def __init__(
        self, dim: int, num_heads: int = 4, *, qkv_bias: bool = False, form: str = "official",
        conv: str | None = "1d", conv_kernel_size: int | None = None, threshold: float = 0.02,
        mask: str = "absolute", alpha: float = 1.0, proj_drop: float = 0.0, path: str = "auto",
    ):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        check_form(form)
        check_path(path)
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; use 'absolute' (ε = threshold, the authors') or 'relative' "
                             "(ε = threshold / N, in units of the uniform weight)")
        if mask == "absolute" and not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold ε compares softmax probabilities, so it must be in [0, 1); got {threshold!r}")
        if not (math.isfinite(threshold) and threshold >= 0.0):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        self.form, self.threshold, self.mask, self.path = form, threshold, mask, path
        self.conv = make_conv_branch(conv, dim, num_heads, conv_kernel_size)
        self.castled = False
        # α lives twice: a float for people and checks, and a buffer the forward multiplies by, so
        # torch.compile sees a changing α as data rather than a constant that forces a recompile
        self.register_buffer("alpha_weight", torch.zeros(()), persistent=False)
        self.set_alpha(alpha)

    @property
    def auxiliary_active(self) -> bool:
        return not self.castled and self.branch_on

    def set_alpha(self, alpha: float) -> None:
        """Set the auxiliary branch's weight; the training loop calls this with AlphaSchedule(t)."""
        alpha = float(alpha)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if self.castled and alpha != 0.0:
            raise RuntimeError("this attention is castled: its auxiliary branch is gone, so alpha must stay 0")
        self.alpha = alpha
        self.alpha_weight.fill_(alpha)
        self.branch_on = alpha != 0.0  # a bool that flips once per run: cheap for torch.compile to guard

    def castle(self, force: bool = False) -> "CastlingAttention":
        """Remove the auxiliary softmax branch for O(N) inference.

        Refuses while α > 0, since the outputs would change; `force=True` removes it anyway,
        with a warning (tutorial 04 shows the harm). Once α = 0 the eval outputs stay bit-for-bit.
        """
        if self.alpha != 0.0:
            message = (
                f"castling while the auxiliary softmax branch still has weight alpha={self.alpha:g} "
                "changes the model's outputs"
            )
            if not force:
                raise RuntimeError(
                    message + "; train until the AlphaSchedule reaches 0 (set_alpha(0.0)), "
                    "or call castle(force=True) to remove it anyway"
                )
            warnings.warn(message + " (forced)", RuntimeWarning, stacklevel=2)
            self.set_alpha(0.0)
        self.castled = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.attend(self.project(x)))  # (B, N, C)

    def attend(self, qkv: torch.Tensor, branch: bool = True) -> torch.Tensor:
        """The heads' output (B, H, N, d) before the projection; branch=False leaves out the softmax branch."""
        with_branch = branch and self.auxiliary_active  # at α = 0 the O(N²) branch is skipped, not multiplied by 0
        path = choose_path(self.path, qkv, self.dim // self.num_heads, self.conv)
        if path == "cpu-kernel":  # linear-angular attention, 1-D conv and softmax branch: one compiled call
            weight = None if self.conv is None else self.conv.conv.weight
            return cpu_kernel.linear_angular_conv(qkv, self.num_heads, weight, form=self.form,
                                                  alpha=self.alpha_weight if with_branch else None,
                                                  threshold=self.mask_threshold(qkv.shape[1]))
        q, k, v = self.heads(qkv)  # (B, H, N, d) views
        auxiliary = self.auxiliary(q, k, v) if with_branch else None
        if path == "readable":  # the formula of tutorial 03, the branches of tutorial 04
            out = linear_angular_attention(q, k, v, form=self.form, auxiliary=auxiliary)
        else:  # "library": fewer passes over memory, a hand-written backward; v comes back token-major
            out, v = library_calls.linear_angular(qkv, self.num_heads, self.form, auxiliary)
        return out if self.conv is None else out + self.conv(v)

    def auxiliary(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """α · masked softmax attention (B, H, N, d): the training-time branch, as branches.py writes it."""
        return self.alpha_weight * masked_softmax_attention(q, k, v, self.mask_threshold(k.shape[-2]))

    def mask_threshold(self, keys: int) -> float:
        """ε for `keys` keys: the threshold itself, or threshold / keys for mask="relative"."""
        return self.threshold / keys if self.mask == "relative" else self.threshold

    def get_extra_state(self):
        return {"alpha": self.alpha, "castled": self.castled}

    def set_extra_state(self, state):
        self.castled = False
        self.set_alpha(state["alpha"])
        self.castled = bool(state["castled"])

    def extra_repr(self) -> str:
        return (f"form={self.form!r}, threshold={self.threshold}, mask={self.mask!r}, alpha={self.alpha:g}, "
                f"castled={self.castled}, path={self.path!r}")


def check_path(path: str) -> None:
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; use one of {PATHS} (castling.choose_path says what each runs)")


def set_alpha(module: nn.Module, alpha: float) -> None:
    """Set α on every CastlingAttention inside `module` (what the training loop calls each step)."""
    for layer in module.modules():
        if isinstance(layer, CastlingAttention):
            layer.set_alpha(alpha)


def castle(model: nn.Module, force: bool = False) -> nn.Module:
    """Castle every CastlingAttention in `model`: all or none, refusing while any α > 0."""
    layers = [m for m in model.modules() if isinstance(m, CastlingAttention)]
    live = [m.alpha for m in layers if m.alpha != 0.0]
    if live and not force:
        raise RuntimeError(
            f"{len(live)} of {len(layers)} castling attentions still weight their softmax branch "
            f"(alpha={live[0]:g}); castling now changes the model. Train until the AlphaSchedule "
            "reaches 0, or call castle(model, force=True)"
        )
    for layer in layers:
        layer.castle(force=force)
    return model


def castled_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with α set to 0 and every castling attention castled: the inference model."""
    import copy

    castled = copy.deepcopy(model)
    set_alpha(castled, 0.0)
    return castle(castled)


def build_fast_path(model: nn.Module, device) -> str | None:
    """Build the CPU kernel where a CastlingAttention of `model` may run it on `device`, and say so in one line
    (train, bench and study call this before their first step); None where no layer could use it."""
    could = [m for m in model.modules() if isinstance(m, CastlingAttention) and m.path in ("auto", "cpu-kernel")
             and cpu_kernel.covers(device, m.dim // m.num_heads, m.conv is None or isinstance(m.conv, TokenConv1d))]
    return cpu_kernel.build() if could else None


def paths_run(model: nn.Module, device) -> list:
    """The path each CastlingAttention of `model` takes on `device` now (what a run's metrics record)."""
    probe = torch.empty(1, 1, 0, device=device)
    return sorted({choose_path(m.path, probe, m.dim // m.num_heads, m.conv)
                   for m in model.modules() if isinstance(m, CastlingAttention)})
