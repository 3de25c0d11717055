"""minicastling: Castling-ViT's linear-angular attention, taught step by step and really run.

The method at the top level, in the paper's order: similarity (the angular kernel and its series),
attention (the O(N²) reference, linear-angular attention, the modules), branches (DWConv, the masked
softmax), schedule (α), model (the ViT, castle), presets and train. Beside it: fast/ (the same numbers,
faster), datasets/, extras/ (what training needs besides the method), lab/ (benchmark, study,
statistics, figures), course/ and check/ (notebook setup, student copies, exercise checkers).
"""

__version__ = "0.1.0"

from .attention import (  # noqa: E402
    CastlingAttention,
    SoftmaxAttention,
    linear_angular_attention,
    quadratic_attention,
    set_alpha,
)
from .course.doctor import doctor  # noqa: E402
from .course.notebook import setup  # noqa: E402
from .extras.runtime import pick_device  # noqa: E402
from .model import ViT, ViTConfig, build_attention, castle  # noqa: E402
from .presets import budget, by_budget, get_recipe  # noqa: E402
from .schedule import AlphaSchedule  # noqa: E402
from .similarity import angular_similarity, arccos_taylor_coefficients, softmax_similarity  # noqa: E402

__all__ = [
    "AlphaSchedule", "CastlingAttention", "SoftmaxAttention", "ViT", "ViTConfig", "angular_similarity",
    "arccos_taylor_coefficients", "budget", "build_attention", "by_budget", "castle", "doctor", "get_recipe",
    "linear_angular_attention", "pick_device", "quadratic_attention", "set_alpha", "setup", "softmax_similarity",
]
