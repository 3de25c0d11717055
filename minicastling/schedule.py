"""The α schedule: how the auxiliary softmax branch's weight decays to exactly 0.

The abstract says the masks for softmax attention are "regularized to gradually become zeros"; how,
neither the abstract nor the authors' release says. This course's stand-in for it, its own reading: the
branch output is scaled by α(t), t = fraction of training done, which holds, decays and reaches exactly
0 at `end` < 1, so the last part of training already runs without the branch and castling changes nothing.
Introduced in tutorial 04.
"""

import math
from dataclasses import dataclass

SHAPES = ("cosine", "linear", "step")


@dataclass(frozen=True)
class AlphaSchedule:
    """α(t) for t in [0, 1]: `alpha0` until `hold`, decay of `shape` until `end`, then 0.

    cosine: α0·½(1 + cos(π s)); linear: α0·(1 − s); step: α0 until `end`; with s the
    fraction of the decay window done. `end` < 1 leaves time to train without the branch.
    """

    alpha0: float = 1.0
    hold: float = 0.0
    end: float = 0.75
    shape: str = "cosine"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; use one of {SHAPES}")
        if not (math.isfinite(self.alpha0) and self.alpha0 >= 0):
            raise ValueError(f"alpha0 must be a finite number >= 0, got {self.alpha0!r}")
        if not 0.0 <= self.hold <= self.end < 1.0:
            raise ValueError(
                f"need 0 <= hold <= end < 1, got hold={self.hold}, end={self.end}; α must reach 0 "
                "before training ends, or castling would change the trained model"
            )

    def __call__(self, progress: float) -> float:
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress is the fraction of training done, in [0, 1]; got {progress!r}")
        if progress >= self.end:
            return 0.0
        if progress < self.hold or self.shape == "step":
            return float(self.alpha0)
        s = (progress - self.hold) / (self.end - self.hold)  # fraction of the decay done
        if self.shape == "linear":
            return self.alpha0 * (1.0 - s)
        return self.alpha0 * 0.5 * (1.0 + math.cos(math.pi * s))
