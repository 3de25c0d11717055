"""minicastling: Castling-ViT's linear-angular attention, taught step by step and really run."""

__version__ = "0.1.0"

from .attention import (  # noqa: E402
    CastlingAttention,
    SoftmaxAttention,
    build_attention,
    linear_angular_attention,
    quadratic_attention,
    set_alpha,
)
from .doctor import doctor  # noqa: E402
from .kernels import angular_similarity, arccos_taylor_coefficients, softmax_similarity  # noqa: E402
from .runtime import budget, by_budget, pick_device, setup  # noqa: E402
from .schedule import AlphaSchedule  # noqa: E402

__all__ = [
    "AlphaSchedule", "CastlingAttention", "SoftmaxAttention", "angular_similarity",
    "arccos_taylor_coefficients", "budget", "build_attention", "by_budget", "doctor", "linear_angular_attention",
    "pick_device", "quadratic_attention", "set_alpha", "setup", "softmax_similarity",
]
