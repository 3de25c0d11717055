"""Exercise checkers: your function beside minicastling's reference, on random cases, in plain words.

Every tutorial ends with exercises, graded warm-up → core → stretch, that each ask for one function;
`check.NAME(your_function)` runs it on random inputs next to the reference and says what differs: the
type, the shape, the values (and where), the gradient, an input changed in place, or an N × N matrix
or N² time where O(N) was asked for. A pass prints one line; a failure raises CheckFailed, whose message
is the whole story. `EXERCISES` lists them all with their hints (which the student copies of
`python -m minicastling assignments` put into their stubs).

Layout: `core` holds what every checker shares; `tutorial01` … `tutorial08` hold one tutorial's
checkers each, with the references they compare against.
"""

from .core import EXERCISES, LEVELS, CheckFailed, Exercise, for_tutorial
from .tutorial01 import gaussian_attention, kernel_smoothing, row_entropy
from .tutorial02 import angular_weights, hashed_angular_attention, hyperplane_agreement
from .tutorial03 import angular_attention_order1, arccos_series, padded_linear_angular
from .tutorial04 import alpha_at, mass_kept, official_castling_attention, token_dwconv
from .tutorial05 import castle_model, patchify, softmax_attention_macs
from .tutorial06 import accuracy_without_branch, layer_sharpness, model_mask_density
from .tutorial07 import holm_adjusted, paired_interval, seeds_for_power, smallest_weight_bound
from .tutorial08 import effect_change, equivalence_p, most_kept

__all__ = ["EXERCISES", "LEVELS", "CheckFailed", "Exercise", "for_tutorial", *EXERCISES]
