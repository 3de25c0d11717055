"""A Vision Transformer for CIFAR-scale images with pluggable attention.

The same ViT with castling attention (linear-angular + DWConv + auxiliary softmax, castled for O(N)
inference) or with softmax attention in its place: the softmax twin, this course's design for a
comparison in which only the attention differs. Introduced in tutorial 05.
"""

import dataclasses
import math
from functools import partial

import torch
from einops import rearrange
from torch import nn

from . import zoo
from .attention import FORMS, SoftmaxAttention
from .castling import PATHS, CastlingAttention

ATTENTIONS = {  # every attention kind by name: one registry, so the model never branches on strings
    "castling": CastlingAttention,
    "linear-angular": partial(CastlingAttention, conv=None, alpha=0.0),
    "softmax": SoftmaxAttention,
    **zoo.ATTENTIONS,
}
ATTENTION_KINDS = tuple(ATTENTIONS)
WITH_SOFTMAX_BRANCH = ("castling",)  # the kinds whose layers train with the masked softmax branch
CASTLING_KINDS = ("castling", "linear-angular")  # the kinds built from CastlingAttention: form and path apply
STEMS = ("patch", "conv")


def has_softmax_branch(attention: str) -> bool:
    """Whether a model of this attention kind trains with the masked softmax branch (while α > 0)."""
    return attention in WITH_SOFTMAX_BRANCH


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Everything that decides a model's shape; override any field with .replace().

    The defaults are the `cpu` preset's model (presets.py); a run fills in image_size, channels and
    num_classes from its data.
    """

    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    patch_size: int = 4
    stem: str = "conv"  # "patch": one strided conv; "conv": 3×3 conv stages, a strong prior on small data
    dim: int = 64
    depth: int = 4
    num_heads: int = 2
    mlp_ratio: float = 2.0
    attention: str = "castling"  # one of ATTENTION_KINDS; the zoo's kinds take the same DWConv branch
    form: str = "official"  # linear-angular form, see attention.linear_angular_attention: the authors' code
    path: str = "auto"  # which code computes castling attention: castling.choose_path
    conv: str | None = "1d"  # DWConv branch of castling attention: "1d", "2d" or None
    threshold: float = 0.02  # ε of the auxiliary branch's mask
    mask: str = "absolute"  # "absolute": keep softmax > ε (authors'); "relative": keep softmax > ε / N
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: the last block's rate, rising linearly from 0 at the first

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {self.attention!r}; use one of {ATTENTION_KINDS}")
        if self.form not in FORMS:
            raise ValueError(f"unknown form {self.form!r}; use one of {FORMS}")
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}; use one of {PATHS}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; use one of {STEMS}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                "pick a patch size that tiles the image"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path is a probability of dropping a block and must be in [0, 1), got {self.drop_path!r}")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"stem='conv' downsamples by 2 per stage, so patch_size must be a power of 2, got {self.patch_size}")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def replace(self, **changes) -> "ViTConfig":
        return dataclasses.replace(self, **changes)


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


def build_attention(name: str, dim: int, num_heads: int, **options) -> nn.Module:
    """An attention module by name (ATTENTIONS): castling, its two twins, or a zoo kind."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; use one of {list(ATTENTIONS)}")
    return ATTENTIONS[name](dim, num_heads, **options)


def make_attention(config: ViTConfig) -> nn.Module:
    options = {"castling": dict(form=config.form, conv=config.conv, threshold=config.threshold, mask=config.mask,
                                path=config.path),
               "linear-angular": dict(form=config.form, path=config.path),
               "softmax": {}}.get(config.attention, {"conv": config.conv})
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
