"""Tutorial 08 · many tokens: how many weights a mask can keep, an equivalence test, and whether an effect
changes with the number of tokens."""

import math
import numbers
import statistics
from fractions import Fraction

import torch

from .core import (FLOAT32, CheckFailed, Exercise, call, describe, exercise, interval_answer, known_mistake, passed,
                   plain_number, same_number, swapped_ends)


def most_kept_reference(threshold: float) -> int:
    """The largest count m of weights, each strictly above `threshold`, that one softmax row can hold: m · ε < 1."""
    exact = Fraction(threshold)  # the float as it is, so that 0.25 and 0.02 are judged exactly
    whole = 1 / exact
    return math.ceil(whole) - 1 if whole.denominator == 1 else math.floor(whole)


@exercise("08", 1, "warm-up", "a softmax row's weights are positive and sum to 1. If m of them each exceed ε, their "
                              "sum exceeds m · ε: so m · ε < 1. Find the largest whole m that allows, and look hard "
                              "at a threshold such as 0.25, where 1/ε is a whole number.")
def most_kept(ex: Exercise, fn) -> None:
    """The most weights of one softmax row that the mask [p > threshold] can keep, for 0 < threshold < 1."""
    for threshold in (0.3, 0.25, 0.2, 0.1, 0.02, 0.0051, 0.5, 0.125, 0.9):
        case = {"threshold": threshold}
        expected, got = most_kept_reference(threshold), plain_number(call(ex, fn, case))  # torch.tensor(3) is 3
        whole = isinstance(got, numbers.Integral) or (isinstance(got, numbers.Real) and float(got).is_integer())
        if whole and not isinstance(got, bool) and got == expected:  # 49, or 49.0 from numpy
            continue
        why = ""
        if isinstance(got, numbers.Real) and got == math.floor(1 / threshold) and got != expected:
            why = (f" floor(1/ε) = {got} counts a row of {got} weights of exactly ε, and the mask keeps only weights "
                   "strictly above ε; at 1/ε whole, one fewer fits.")
        elif not whole:
            why = " Return a whole number of weights (an int)."
        raise CheckFailed(f"{ex.label}: for {describe(case)} at most {expected} weights can each exceed it; yours says "
                          f"{got!r}.{why}")
    passed(ex, "9 thresholds, 0.5, 0.25 and 0.125 among them, match the largest m with m · ε < 1.")


def _differences(seed: int) -> list:
    """Lists of paired differences a_i − b_i: near 0, off-centre, and some close to the margin."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for n, centre, spread in [(10, 0.05, 0.3), (10, 0.3, 0.25), (12, -0.1, 0.4), (6, 0.0, 0.1), (20, 0.45, 0.3),
                              (10, 0.8, 0.1), (9, -0.6, 0.5)]:  # the last two: means outside ±0.5
        cases.append((centre + spread * torch.randn(n, generator=g, dtype=torch.float64)).tolist())
    return cases


@exercise("08", 2, "core", "equivalence within ±m needs two claims at once: the mean difference is above −m, and it "
                           "is below +m. Test each with a one-sided t-test of the differences against its bound (which "
                           "tail does each claim need?); both must reject, so report the larger p.")
def equivalence_p(ex: Exercise, fn) -> None:
    """The p-value of two one-sided tests (TOST) that the mean of paired differences lies within ±margin."""
    from ..lab.stats import paired_difference

    for differences in _differences(8):
        for margin in (0.5, 1.0):
            case = {"differences": differences, "margin": margin}
            expected = paired_difference(differences, [0.0] * len(differences), margin)["p_equivalence"]
            got = call(ex, fn, case)
            explain = ("The TOST p-value is the larger of the two one-sided t-tests' p-values, each with the sample "
                       "standard deviation (dividing by n − 1) and Student's t with n − 1 degrees of freedom.")
            if isinstance(got, numbers.Real) and abs(got - expected) > 1e-9:
                from scipy import stats

                above = stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
                below = stats.ttest_1samp(differences, margin, alternative="less").pvalue
                if abs(got - min(above, below)) < 1e-9:
                    explain = ("That is the smaller one-sided p: equivalence needs both tests to reject, so the larger "
                               "p decides.")
                elif abs(got - max(1 - above, 1 - below)) < 1e-9:
                    explain = ("The two tails are swapped: against −margin the claim to show is mean > −margin "
                               "(alternative='greater'), against +margin it is mean < +margin (alternative='less').")
                elif abs(got - max(stats.ttest_1samp(differences, -margin).pvalue,
                                   stats.ttest_1samp(differences, margin).pvalue)) < 1e-9:
                    explain = ("Those are two-sided p-values. Each of the two tests is one-sided: against −margin "
                               "the claim is mean > −margin (alternative='greater'), against +margin mean < +margin "
                               "(alternative='less').")
                elif abs(got - stats.ttest_1samp(differences, 0.0).pvalue) < 1e-9:
                    explain = ("That is the test of a zero difference. Equivalence asks the opposite question: are "
                               "differences as large as the margin ruled out?")
                elif min(abs(got - p) for p in _tail_slips(differences, margin)) < 1e-6:
                    explain = ("Where the mean lies beyond a bound, the one-sided p against that bound is above ½: "
                               "halving a two-sided p, or taking the tail at |t|, gives the other tail's p. Ask "
                               "scipy.stats.ttest_1samp for the side itself (alternative='greater' or 'less').")
            same_number(ex, got, expected, case, rel_tol=FLOAT32, abs_tol=1e-9, explain=explain)
    passed(ex, "7 lists of differences at margins ±0.5 and ±1, two with their mean outside ±0.5, match the study's "
               "equivalence test (minicastling.lab.stats.paired_difference).")


def _tail_slips(differences: list, margin: float) -> list:
    """TOST p-values computed with the wrong tail: half a two-sided p, and the upper tail at |t|, per bound."""
    from scipy import stats

    n = len(differences)
    halves = [stats.ttest_1samp(differences, bound).pvalue / 2 for bound in (-margin, margin)]
    tails = [stats.t.sf(abs(stats.ttest_1samp(differences, bound).statistic), n - 1) for bound in (-margin, margin)]
    return [max(halves), max(tails)]


def _welch_mistakes(d49: list, d196: list, difference: float) -> dict:
    """The intervals the usual slips give, each with what to do instead."""
    from scipy import stats

    v196, v49 = statistics.variance(d196) / len(d196), statistics.variance(d49) / len(d49)
    se = math.sqrt(v196 + v49)
    welch_df = (v196 + v49) ** 2 / (v196 ** 2 / (len(d196) - 1) + v49 ** 2 / (len(d49) - 1))
    z, t_simple = stats.norm.ppf(0.975), stats.t.ppf(0.975, len(d196) + len(d49) - 2)
    pooled = stats.ttest_ind(d196, d49).confidence_interval(0.95)
    welch = stats.ttest_ind(d196, d49, equal_var=False)
    welch_low, welch_high = welch.confidence_interval(0.95)
    t_fewest = stats.t.ppf(0.975, min(len(d196), len(d49)) - 1)  # min(n₁, n₂) − 1 degrees of freedom
    return {  # the first that matches is named: with equal sizes the pooled interval is also the middle slip
        "That is the pooled-variance (Student) interval: one spread for both samples and n₁ + n₂ − 2 degrees of "
        "freedom, and these samples' spreads differ. Welch's interval keeps each sample's variance in the standard "
        f"error and takes the Welch–Satterthwaite degrees of freedom (here {welch_df:.1f}): "
        "scipy.stats.ttest_ind(..., equal_var=False).": (pooled.low, pooled.high),
        f"That is the normal quantile z = {z:.2f} with Welch's standard error: take the t quantile at Welch's "
        f"degrees of freedom (here {welch_df:.1f}), or let scipy.stats.ttest_ind(..., equal_var=False) do it.":
            (difference - z * se, difference + z * se),
        f"That is Welch's standard error with n₁ + n₂ − 2 = {len(d196) + len(d49) - 2} degrees of freedom: Welch's "
        f"interval takes the Welch–Satterthwaite degrees of freedom (here {welch_df:.1f}), fewer when the spreads "
        "differ.": (difference - t_simple * se, difference + t_simple * se),
        f"That takes the conservative min(n₁, n₂) − 1 = {min(len(d196), len(d49)) - 1} degrees of freedom: Welch's "
        f"interval takes the Welch–Satterthwaite ones (here {welch_df:.1f}).":
            (difference - t_fewest * se, difference + t_fewest * se),
        "That is Welch's 90 % interval: the question asks for 95 % (confidence_interval(0.95)).":
            tuple(welch.confidence_interval(0.90)),
        "That is Welch's 99 % interval: the question asks for 95 % (confidence_interval(0.95)).":
            tuple(welch.confidence_interval(0.99)),
        "Those variances divide by n: Welch's interval takes each sample's variance dividing by n − 1 "
        "(statistics.variance, or numpy's var(ddof=1)).": _welch_slip(d49, d196, difference, variance=statistics.pvariance),
        "Those Welch–Satterthwaite degrees of freedom divide each squared variance term by n instead of n − 1: "
        f"Welch's divide by n₁ − 1 and n₂ − 1 (here {welch_df:.1f} degrees of freedom).": _welch_slip(d49, d196, difference, df_less=0),
        "That is the interval of mean(d49) − mean(d196), turned round: the interval has to go with the difference, "
        "mean(d196) − mean(d49) (mind the order of the samples).": (-welch_high, -welch_low),
        **swapped_ends(welch_low, welch_high),
    }


def _welch_slip(d49: list, d196: list, difference: float, variance=statistics.variance, df_less: int = 1) -> tuple:
    """Welch's interval as a slip computes it: each sample's `variance` (statistics.pvariance: dividing by n) and
    Welch–Satterthwaite denominators n − `df_less` (0: n instead of n − 1)."""
    from scipy import stats

    v196, v49 = variance(d196) / len(d196), variance(d49) / len(d49)
    df = (v196 + v49) ** 2 / (v196 ** 2 / (len(d196) - df_less) + v49 ** 2 / (len(d49) - df_less))
    half = stats.t.ppf(0.975, df) * math.sqrt(v196 + v49)
    return difference - half, difference + half


@exercise("08", 3, "stretch", "the two studies' models differ in shape, so treat the two sets of paired differences as "
                              "independent samples: compare their means with Welch's t-interval (scipy.stats.ttest_ind with "
                              "equal_var=False has a confidence_interval method). Mind the order: 196 minus 49.")
def effect_change(ex: Exercise, fn) -> None:
    """How the branch's paired effect changes from 49 to 196 tokens: mean(d196) − mean(d49) and its 95 % Welch interval."""
    from ..lab.stats import welch_interval

    g = torch.Generator().manual_seed(11)
    for n49, n196, shift in [(10, 10, 0.3), (10, 12, -0.2), (5, 8, 0.0), (12, 6, 1.0)]:
        d49 = (0.3 * torch.randn(n49, generator=g, dtype=torch.float64)).tolist()
        d196 = (shift + 0.5 * torch.randn(n196, generator=g, dtype=torch.float64)).tolist()
        case = {"d49": d49, "d196": d196}
        difference, (low, high) = welch_interval(d196, d49)
        got_difference, (got_low, got_high) = interval_answer(ex, call(ex, fn, case), case)
        explain = "mean(d196) − mean(d49), then Welch's 95 % interval of it."
        if abs(got_difference + difference) < 1e-9:
            explain = "The sign is turned round: the change from 49 to 196 tokens is mean(d196) − mean(d49)."
        same_number(ex, got_difference, difference, case, rel_tol=FLOAT32, abs_tol=FLOAT32, explain=explain)
        mistake = known_mistake((got_low, got_high), _welch_mistakes(d49, d196, difference)) or (
            "The two samples are independent and their spreads differ: Welch's interval, not a paired one and not a "
            "pooled-variance one. It takes the standard error "
            "√(s₁²/n₁ + s₂²/n₂), with each sample's variance dividing by n − 1, and the t quantile at the "
            "Welch–Satterthwaite degrees of freedom (scipy.stats.ttest_ind(..., equal_var=False)); check each piece.")
        for end, mine, theirs in zip(("lower", "upper"), (got_low, got_high), (low, high)):
            same_number(ex, mine, theirs, case, rel_tol=FLOAT32, abs_tol=FLOAT32, what=f"the interval's {end} end",
                        explain=(
                f"The interval is {low:.4f} to {high:.4f}; yours is {float(got_low):.4f} to {float(got_high):.4f}. "
                + mistake))
    passed(ex, "4 pairs of samples, of equal and unequal sizes and of unequal spreads, match "
               "minicastling.lab.stats.welch_interval.")
