"""Tutorial 07 · measure it: the bound on linear-angular weights, a difference with its interval,
and how many seeds an interval needs."""

import math

import torch

from .core import CheckFailed, Exercise, call, describe, exercise, passed, same_number


@exercise("07", 1, "warm-up", "section 2 found the largest share one key can take; now the smallest. Every numerator "
                              "½ + q̂·k̂/π lies between ½ − 1/π and ½ + 1/π: for one key's share to be as small as it "
                              "can be, where should its own numerator sit, and where the other N − 1?")
def smallest_weight_bound(ex: Exercise, fn) -> None:
    """The smallest value N × w_min can take in a row of N row-normalised linear-angular weights: no key is ignored."""
    high, low = 0.5 + 1 / math.pi, 0.5 - 1 / math.pi  # the range of ½ + q̂·k̂/π
    for tokens in (1, 2, 36, 49, 64, 1000):
        expected = tokens * low / (low + (tokens - 1) * high)
        case = {"tokens": tokens}
        same_number(ex, call(ex, fn, case), expected, case, rel_tol=1e-9,
                    explain="For one token it must be 1; as N grows it falls towards (½ − 1/π)/(½ + 1/π) from above.")
    passed(ex, "N = 1 to 1,000 match the mirror image of minicastling.kernels.largest_weight_bound.")


def _accuracy_lists(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    lists = []
    for n_a, n_b, spread in [(3, 3, 2.0), (5, 3, 0.5), (3, 4, 6.0), (10, 10, 1.0)]:
        lists.append({"a": (80 + spread * torch.randn(n_a, generator=g)).tolist(),
                      "b": (79 + spread * torch.randn(n_b, generator=g) * 2).tolist()})
    return lists


@exercise("07", 2, "core", "each mean has a squared standard error s²/n, with the sample variance s² (divide by n − 1). "
                           "Welch adds the two and does not assume equal spreads; the Welch–Satterthwaite formula gives "
                           "the degrees of freedom, and minicastling.study.t_quantile(df) the factor for a 95 % interval.")
def difference_interval(ex: Exercise, fn) -> None:
    """mean(a) − mean(b) and its 95 % Welch interval: (difference, (low, high)), the study's verdicts."""
    from ..study import welch_interval

    for case in _accuracy_lists(27):
        difference, (low, high) = welch_interval(**case)
        got = call(ex, fn, case)
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], tuple) and len(got[1]) == 2):
            raise CheckFailed(f"{ex.label}: return (difference, (low, high)); got {got!r} for {describe(case)}.")
        same_number(ex, got[0], difference, case, explain="The difference is mean(a) − mean(b).")
        width = f"The interval should be {low:.4f} to {high:.4f}; yours is {got[1][0]:.4f} to {got[1][1]:.4f}."
        if got[1][1] - got[1][0] < high - low - 1e-6:
            width += " Too narrow: sample variances divide by n − 1, and the t quantile is wider than 1.96 for few seeds."
        for mine, theirs in zip(got[1], (low, high)):
            same_number(ex, mine, theirs, case, explain=width)
    passed(ex, "4 pairs of seed lists (3 to 10 seeds, equal and unequal spreads) match minicastling.study.welch_interval.")


def seeds_reference(std: float, half_width: float) -> int:
    """The fewest seeds per variant for which Welch's 95 % interval of a difference is ± half_width or narrower."""
    from ..study import t_quantile

    n = 2
    while t_quantile(2 * (n - 1)) * std * math.sqrt(2 / n) > half_width:
        n += 1
    return n


@exercise("07", 3, "stretch", "write the interval's half-width as a function of n when both variants spread alike and "
                              "have n seeds each (what do Welch's degrees of freedom become then?). It shrinks as n "
                              "grows in two ways; no closed form gives n, so search.")
def seeds_needed(ex: Exercise, fn) -> None:
    """How many seeds per variant make the 95 % interval of a difference ± half_width, for runs that spread by std."""
    for std, half_width in [(1.0, 2.0), (2.0, 2.0), (4.5, 1.0), (0.5, 4.0), (3.0, 3.0)]:
        case = {"std": std, "half_width": half_width}
        expected, got = seeds_reference(**case), call(ex, fn, case)
        if got != expected:
            verdict = ("too few: with that many the interval is wider than asked. Is your t quantile the one for "
                       "2(n − 1) degrees of freedom?") if isinstance(got, int) and got < expected else "not the fewest."
            raise CheckFailed(f"{ex.label}: for {describe(case)} the answer is {expected} seeds; yours, {got!r}, is {verdict}")
    passed(ex, "5 spreads and widths, from 2 to hundreds of seeds, match the search over Welch's interval.")
