"""minicastling: Castling-ViT's linear-angular attention, taught step by step and really run.

`import minicastling` imports the method, in the course's order: similarity (the angular kernel and its
series), attention (the O(N²) reference, linear-angular attention), branches (DWConv, the masked softmax)
and schedule (α), castling (the layer and the switch), model (the ViT), presets, train. Beside it, imported
when asked for: fast/ (the same numbers, faster), datasets/, extras/ (what training needs besides the
method), lab/ (benchmark, study, statistics, figures), course/ (notebook setup, doctor, student copies)
and check/ (exercise checkers).
"""

from .extras.version import __version__
from .similarity import angular_similarity, arccos_taylor_coefficients, softmax_similarity
from .attention import SoftmaxAttention, linear_angular_attention, quadratic_attention
from .branches import masked_softmax_attention
from .schedule import AlphaSchedule
from .castling import CastlingAttention, castle, castled_copy, set_alpha
from .model import ViT, ViTConfig, build_attention
from .presets import budget, by_budget, get_recipe
from .extras.runtime import pick_device

__all__ = [
    "AlphaSchedule", "CastlingAttention", "SoftmaxAttention", "ViT", "ViTConfig", "__version__", "angular_similarity",
    "arccos_taylor_coefficients", "budget", "build_attention", "by_budget", "castle", "castled_copy", "get_recipe",
    "linear_angular_attention", "masked_softmax_attention", "pick_device", "quadratic_attention", "set_alpha",
    "softmax_similarity",
]
