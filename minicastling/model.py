"""A Vision Transformer for CIFAR-scale images with pluggable attention, and castle(model).

Paper: Castling-ViT Sec. 3 and 4: the same ViT trained with castling attention (linear-angular +
DWConv + auxiliary softmax), castled for O(N) inference, and compared with its softmax twin.
Introduced in tutorial 05.
"""

import copy
import dataclasses
import math

import torch
from einops import rearrange
from torch import nn

from . import cpu_extension, zoo
from .attention import CastlingAttention, build_attention, set_alpha

ATTENTION_KINDS = ("castling", "linear-angular", "softmax", *zoo.KINDS)
STEMS = ("patch", "conv")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Everything that decides a model's shape. Presets below; override any field with .replace()."""

    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    patch_size: int = 4
    stem: str = "conv"  # "patch": one strided conv; "conv": 3×3 conv stages, a strong prior on small data
    dim: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    attention: str = "castling"  # one of ATTENTION_KINDS; the zoo's kinds take the same DWConv branch
    form: str = "kernel"  # linear-angular form, see attention.linear_angular_attention
    conv: str | None = "1d"  # DWConv branch of castling attention: "1d", "2d" or None
    threshold: float = 0.02  # ε of the auxiliary branch's mask
    mask: str = "absolute"  # "absolute": keep softmax > ε (authors'); "relative": keep softmax > ε / N
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: the last block's rate, rising linearly from 0 at the first

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {self.attention!r}; use one of {ATTENTION_KINDS}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; use one of {STEMS}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                "pick a patch size that tiles the image"
            )
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"stem='conv' downsamples by 2 per stage, so patch_size must be a power of 2, got {self.patch_size}")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def replace(self, **changes) -> "ViTConfig":
        return dataclasses.replace(self, **changes)


PRESETS = {
    # seconds on a CPU: tests and smoke-mode notebooks
    "smoke": ViTConfig(dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
    # minutes on a CPU
    "cpu": ViTConfig(dim=64, depth=4, num_heads=2, mlp_ratio=2.0),
    # the GPU recipe: 256 tokens (patch 2), 4.4M parameters
    "gpu": ViTConfig(dim=256, depth=6, num_heads=8, patch_size=2, mlp_ratio=3.0, dropout=0.0),
}


def get_config(preset: str, **overrides) -> ViTConfig:
    """A preset by name, with any field overridden: get_config("cpu", attention="softmax")."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    return PRESETS[preset].replace(**overrides)


def make_stem(config: ViTConfig) -> nn.Module:
    """Images (B, C, H, W) → patch features (B, dim, H/p, W/p)."""
    if config.stem == "patch":
        return nn.Conv2d(config.channels, config.dim, config.patch_size, stride=config.patch_size)
    stages = int(math.log2(config.patch_size))
    layers, width = [nn.Conv2d(config.channels, config.dim // 2, 3, padding=1, bias=False),
                     nn.BatchNorm2d(config.dim // 2), nn.GELU()], config.dim // 2
    for _ in range(stages):
        layers += [nn.Conv2d(width, config.dim, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(config.dim), nn.GELU()]
        width = config.dim
    layers.append(nn.Conv2d(width, config.dim, 1))
    return nn.Sequential(*layers)


def make_attention(config: ViTConfig) -> nn.Module:
    options = {"castling": dict(form=config.form, conv=config.conv, threshold=config.threshold, mask=config.mask),
               "linear-angular": dict(form=config.form), "softmax": {}}.get(config.attention, {"conv": config.conv})
    return build_attention(config.attention, config.dim, config.num_heads, proj_drop=config.dropout, **options)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): while training, drop a residual branch for a random
    share p of the images and scale it by 1/(1 − p) for the rest. p = 0 draws no random numbers."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1.0 - self.p)  # (B, 1, 1)
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)), each branch droppable."""

    def __init__(self, config: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        hidden = int(config.dim * config.mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.attn = make_attention(config)
        self.mlp = nn.Sequential(nn.Linear(config.dim, hidden), nn.GELU(), nn.Dropout(config.dropout),
                                 nn.Linear(hidden, config.dim), nn.Dropout(config.dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Stem → tokens + learned positions → blocks → mean over tokens → classifier.

    No class token: the tokens stay a square grid, which the 2-D DWConv branch needs.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        # channels-last: the layout oneDNN and cuDNN (under autocast) run convolutions fastest in, and
        # the stem's output is then already token-major, so turning it into tokens copies nothing
        self.stem = make_stem(config).to(memory_format=torch.channels_last)
        self.pos = nn.Parameter(torch.zeros(1, config.tokens, config.dim))
        rates = [config.drop_path * i / max(1, config.depth - 1) for i in range(config.depth)]
        self.blocks = nn.Sequential(*[Block(config, rate) for rate in rates])
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c, s = self.config.channels, self.config.image_size
        if images.dim() != 4 or images.shape[1:] != (c, s, s):
            raise ValueError(f"ViT expects images of shape (batch, {c}, {s}, {s}), got {tuple(images.shape)}; "
                             "the data pipeline turns uint8 (N, H, W, C) arrays into this")
        features = self.stem(images.contiguous(memory_format=torch.channels_last))  # (B, dim, H/p, W/p)
        x = rearrange(features, "b c h w -> b (h w) c") + self.pos  # (B, N, dim)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))  # (B, classes)


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


@torch.no_grad()
def per_layer(model: nn.Module, images: torch.Tensor, kinds, measure) -> list:
    """measure(layer, tokens) for every attention layer of the given kinds, on one eval-mode forward pass."""
    values = []
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    hooks = [layer.register_forward_pre_hook(lambda layer, inputs: values.append(measure(layer, inputs[0])))
             for layer in layers]
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return values


def mask_density(model: nn.Module, images: torch.Tensor) -> float:
    """Share of softmax entries the auxiliary branch's mask keeps, averaged over castling layers.

    0 means the branch adds nothing and, since no gradient passes the mask, learns nothing: with
    near-uniform attention over N > 1/ε tokens every entry 1/N falls below ε.
    """
    from .branches import attention_probabilities

    def density(layer, tokens):
        q, k, _ = layer.split_qkv(tokens)
        return (attention_probabilities(q, k) > layer.mask_threshold(k.shape[-2])).float().mean().item()

    densities = per_layer(model, images, CastlingAttention, density)
    return sum(densities) / len(densities) if densities else 0.0


def branch_share(model: nn.Module, images: torch.Tensor) -> float | None:
    """How much of the attention output the softmax branch makes: ‖y − y₀‖ / ‖y‖ per castling layer,
    y its heads' output with the branch and y₀ without (same input), averaged over layers.

    None when no layer has the branch on (α = 0 or castled). Read beside α: a branch can be weighted
    and still add little, when its mask keeps few entries or its output lies close to the linear path's.
    """
    def share(layer, tokens):
        if not layer.auxiliary_active:
            return None
        qkv = layer.project(tokens)  # (B, N, 3C)
        with_branch, without = layer.attend(qkv), layer.attend(qkv, branch=False)  # (B, H, N, d) each
        return ((with_branch - without).norm() / with_branch.norm().clamp_min(1e-12)).item()

    shares = [s for s in per_layer(model, images, CastlingAttention, share) if s is not None]
    return sum(shares) / len(shares) if shares else None


def row_sharpness(weights: torch.Tensor) -> tuple:
    """(mean of N × each row's largest weight, mean of each row's entropy / log N) for weights (…, N_q, N)."""
    n = weights.shape[-1]
    entropy = torch.special.entr(weights).sum(-1) / math.log(n) if n > 1 else torch.zeros(())
    return weights.amax(-1).mean().item() * n, entropy.mean().item()


def attention_sharpness(model: nn.Module, images: torch.Tensor) -> dict:
    """How far the weights a model attends with are from uniform, averaged over layers, heads and rows.

    max_weight_x_n: the largest weight of a row times N (1 = uniform, N = one-hot); entropy_ratio: the
    row's entropy over log N (1 = uniform, 0 = one-hot). Softmax attention is measured on its
    probabilities; castling attention on the linear angular kernel's weights (½ + q̂·k̂/π) / Σ, what
    the castled model attends with (for form="official" these are the weights q̂ and k̂ imply, though
    that form does not divide by them). Those lie within a factor (½ + 1/π)/(½ − 1/π) ≈ 4.5 of each other.
    """
    from .attention import SoftmaxAttention, attention_weights
    from .branches import attention_probabilities

    def sharpness(layer, tokens):
        q, k, _ = layer.split_qkv(tokens)
        weights = attention_probabilities(q, k) if isinstance(layer, SoftmaxAttention) else \
            attention_weights(q, k, "angular-linear")  # (B, H, N, N)
        return row_sharpness(weights)

    values = per_layer(model, images, (SoftmaxAttention, CastlingAttention), sharpness)
    if not values:
        return {"max_weight_x_n": None, "entropy_ratio": None}
    return {"max_weight_x_n": sum(v[0] for v in values) / len(values),
            "entropy_ratio": sum(v[1] for v in values) / len(values)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_cpu_sdpa() -> None:
    """torch's flop counter knows SDPA's CUDA kernels but not the CPU ones; give them the same formulas."""
    from torch.utils import flop_counter

    forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    registered = lambda op: op in flop_counter.flop_registry or op.default in flop_counter.flop_registry  # noqa: E731
    if not registered(forward):
        flop_counter.register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)
        )
    if not registered(backward):
        flop_counter.register_flop_formula(backward)(
            lambda grad_out, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop_count(
                grad_out, q, k, v)
        )


@torch.no_grad()
def macs(module: nn.Module, *inputs) -> int:
    """Multiply–accumulates of module(*inputs), from torch.utils.flop_counter.

    Counts matmuls and convolutions (attention's N×N products included), not elementwise work.
    """
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_sdpa()
    was_training = module.training
    module.eval()
    try:
        with cpu_extension.off(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2


def count_macs(model: nn.Module, image_size: int | None = None) -> int:
    """MACs of one image's forward pass through a ViT (at its own or another image size)."""
    config = model.config
    size = image_size or config.image_size
    images = torch.zeros(1, config.channels, size, size, device=next(model.parameters()).device)
    return macs(model, images)


def macs_by_variant(config: ViTConfig) -> dict:
    """MACs per image of the softmax twin, the castling model while training (α > 0), and castled."""
    twin = ViT(config.replace(attention="softmax"))
    training = ViT(config.replace(attention="castling"))
    set_alpha(training, 1.0)
    castled = castled_copy(training)
    return {"softmax twin": count_macs(twin), "castling (training)": count_macs(training),
            "castled (inference)": count_macs(castled)}


def castled_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with α set to 0 and every castling attention castled: the inference model."""
    castled = copy.deepcopy(model)
    set_alpha(castled, 0.0)
    return castle(castled)
