"""Tutorial 07 · measure it: the bound on linear-angular weights, a paired difference with its interval,
Holm's adjustment across a family of tests, and how many seeds a test needs to detect a difference."""

import math
import numbers
import statistics

import torch

from .core import (FLOAT32, CheckFailed, Exercise, call, describe, exercise, interval_answer, known_mistake, numbers_in,
                   passed, same_number, swapped_ends)


@exercise("07", 1, "warm-up", "section 7 (\"Why kernel-form linear-angular weights cannot be sharp\") found the largest share "
                              "one key can take; now the smallest. Every numerator "
                              "½ + q̂·k̂/π lies between ½ − 1/π and ½ + 1/π: for one key's share to be as small as it "
                              "can be, where should its own numerator sit, and where the other N − 1?")
def smallest_weight_bound(ex: Exercise, fn) -> None:
    """The smallest value N × w_min can take in a row of N row-normalised linear-angular weights: no key is ignored."""
    high, low = 0.5 + 1 / math.pi, 0.5 - 1 / math.pi  # the range of ½ + q̂·k̂/π
    for tokens in (1, 2, 36, 49, 64, 1000):
        expected = tokens * low / (low + (tokens - 1) * high)
        case = {"tokens": tokens}
        got = call(ex, fn, case)
        explain = "For one token it must be 1; as N grows it falls towards (½ − 1/π)/(½ + 1/π) from above."
        if isinstance(got, numbers.Real):
            explain = known_mistake((float(got),), _weight_mistakes(tokens, low, high)) or explain
        same_number(ex, got, expected, case, rel_tol=1e-6, explain=explain)  # float32 arithmetic passes
    passed(ex, "six token counts from 1 to 1,000 match the mirror image of minicastling.similarity.largest_weight_bound.")


def _weight_mistakes(tokens: int, low: float, high: float) -> dict:
    """The values the usual slips give for N × w_min, each with what to do instead."""
    smallest = low / (low + (tokens - 1) * high)
    return {
        "That is w_min itself, the smallest weight: the function returns N × w_min, the weight measured "
        "against the even weight 1/N (multiply by the number of tokens).": (smallest,),
        "That is the largest weight's bound, N × w_max (section 7's): for the smallest, the key's own "
        "numerator sits at ½ − 1/π and the other N − 1 at ½ + 1/π.": (tokens * high / (high + (tokens - 1) * low),),
    }


def _paired_lists(seed: int) -> list:
    """Accuracies of two arms that share each seed's luck: a common per-seed term plus a little of their own."""
    g = torch.Generator().manual_seed(seed)
    lists = []
    for n, shared, own, shift in [(3, 1.5, 0.3, 0.4), (5, 0.8, 0.5, -0.2), (10, 1.0, 0.2, 0.1), (12, 2.0, 0.6, 1.0)]:
        luck = shared * torch.randn(n, generator=g, dtype=torch.float64)
        lists.append({"a": (86 + shift + luck + own * torch.randn(n, generator=g, dtype=torch.float64)).tolist(),
                      "b": (86 + luck + own * torch.randn(n, generator=g, dtype=torch.float64)).tolist()})
    return lists


@exercise("07", 2, "core", "the two arms of a seed share its initialisation and data order, so compare them seed by "
                           "seed: one difference per seed, then the mean of those differences and its standard error "
                           "(the sample standard deviation, dividing by n − 1, over √n). For 95 %, take the t "
                           "quantile with n − 1 degrees of freedom: scipy.stats.t.ppf.")
def paired_interval(ex: Exercise, fn) -> None:
    """The mean of the per-seed differences a_i − b_i and its paired 95 % t-interval: (difference, (low, high))."""
    from ..lab.stats import paired_difference

    for case in _paired_lists(27):
        expected = paired_difference(case["a"], case["b"])
        low, high = expected["interval_95"]
        difference, (got_low, got_high) = interval_answer(ex, call(ex, fn, case), case)
        same_number(ex, difference, expected["difference"], case, rel_tol=FLOAT32, abs_tol=FLOAT32,
                    explain="The difference is the mean of a_i − b_i.")
        width = f"The interval is {low:.4f} to {high:.4f}; yours is {float(got_low):.4f} to {float(got_high):.4f}."
        mistake = known_mistake((got_low, got_high), _paired_mistakes(case, difference))
        if mistake:
            width += " " + mistake
        elif got_high - got_low < high - low - 1e-9:
            width += (" Too narrow for a t-interval: divide the variance by n − 1, and use the t quantile for n − 1 "
                      "degrees of freedom (wider than 1.96 for few seeds); a bootstrap interval is also narrower "
                      "than the t-interval with few seeds.")
        for end, mine, theirs in zip(("lower", "upper"), (got_low, got_high), (low, high)):
            same_number(ex, mine, theirs, case, rel_tol=FLOAT32, abs_tol=FLOAT32, what=f"the interval's {end} end",
                        explain=width)
    passed(ex, "4 pairs of arms (3 to 12 seeds) match minicastling.lab.stats.paired_difference.")


def _paired_mistakes(case: dict, difference: float) -> dict:
    """The intervals the usual slips give, each with what to do instead."""
    from scipy import stats

    from ..lab.stats import welch_interval

    d = [a - b for a, b in zip(case["a"], case["b"])]
    n = len(d)
    t, z = stats.t.ppf(0.975, n - 1), stats.norm.ppf(0.975)
    sample, population = statistics.stdev(d) / math.sqrt(n), statistics.pstdev(d) / math.sqrt(n)
    return {
        "That is the unpaired (Welch) interval: it ignores the pairing. Take the per-seed differences first: their "
        "interval is narrower where a seed's luck moves both arms together, wider where it moves them apart.":
            welch_interval(case["a"], case["b"])[1],
        f"That is the normal quantile z = {z:.2f}: with {n} seeds, (mean − true difference) / (s/√n) follows "
        f"Student's t with {n - 1} degrees of freedom, whose quantile is {t:.2f}: scipy.stats.t.ppf(0.975, n - 1).":
            (difference - z * sample, difference + z * sample),
        "That standard deviation divides by n: the sample's divides by n − 1 (statistics.stdev, or numpy's "
        "std(ddof=1)).": (difference - t * population, difference + t * population),
        "That takes both shortcuts, the normal quantile 1.96 and a standard deviation that divides by n: use the t "
        "quantile for n − 1 degrees of freedom and divide by n − 1.":
            (difference - z * population, difference + z * population),
        "That interval uses the standard deviation itself: the mean's standard error is the standard deviation "
        "over √n.": (difference - t * statistics.stdev(d), difference + t * statistics.stdev(d)),
        f"That uses t_0.95, a one-sided quantile: a two-sided 95 % interval leaves 2.5 % in each tail, "
        f"t_0.975 = {t:.2f} here.": (difference - stats.t.ppf(0.95, n - 1) * sample,
                                      difference + stats.t.ppf(0.95, n - 1) * sample),
        f"That takes 2n − 2 = {2 * n - 2} degrees of freedom, the count of two unrelated samples: the paired interval "
        f"has n − 1 = {n - 1}, one per difference less one.": (difference - stats.t.ppf(0.975, 2 * n - 2) * sample,
                                                             difference + stats.t.ppf(0.975, 2 * n - 2) * sample),
        f"That takes the t quantile with n = {n} degrees of freedom: n differences leave n − 1 = {n - 1}.":
            (difference - stats.t.ppf(0.975, n) * sample, difference + stats.t.ppf(0.975, n) * sample),
        "That is the pooled two-sample (Student) interval: it treats the arms as unrelated samples. Take the "
        "per-seed differences first.": tuple(stats.ttest_ind(case["a"], case["b"]).confidence_interval(0.95)),
        "That standard error, √(var a / n + var b / n), treats the arms as unrelated: the paired one is the "
        "standard deviation of the differences a_i − b_i over √n.": _unpaired_se_interval(case, difference, t),
        **swapped_ends(difference - t * sample, difference + t * sample),
    }


def _unpaired_se_interval(case: dict, difference: float, t: float) -> tuple:
    """The paired t quantile with the two arms' variances added as if they were independent."""
    n = len(case["a"])
    half = t * math.sqrt(statistics.variance(case["a"]) / n + statistics.variance(case["b"]) / n)
    return difference - half, difference + half


def seeds_reference(sd: float, difference: float) -> int:
    """The fewest pairs with which a two-sided paired t-test at 5 % detects `difference` with 80 % power."""
    from ..lab.stats import seeds_needed

    return seeds_needed(sd, difference, minimum=2)


def _on_the_line(got, expected: int, sd: float, difference: float, tolerance: float = 0.02) -> bool:
    """A count a simulation of the power may land on: its power reaches 80 % to within `tolerance`, and one pair
    fewer falls short of it to within `tolerance`. A simulation with a few thousand draws (its standard error
    near 80 % is about 1 point at 2,000) cannot tell those counts apart where the power grows slowly with n."""
    if not isinstance(got, numbers.Integral) or isinstance(got, bool) or got < 2 or abs(got - expected) > expected // 10 + 1:
        return False
    from scipy import stats

    from ..lab.stats import paired_power

    def power(n):
        return paired_power(n, sd, difference, stats.t.ppf(0.975, n - 1))

    return power(got) >= 0.8 - tolerance and (got == 2 or power(got - 1) < 0.8 + tolerance)


def _shortcuts(sd: float, difference: float) -> dict:
    """What the usual shortcuts answer, each named as a student would recognise it: {name: seeds}."""
    from scipy import stats

    from ..lab.stats import paired_power

    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    normal = max(2, math.ceil((z * sd / difference) ** 2))
    answers = {"the normal approximation, n = ((z_0.975 + z_0.8) · sd / difference)²": normal}
    n = 2  # the central t: the same formula with t quantiles of n − 1 degrees of freedom, solved for n
    while n < ((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / difference) ** 2:
        n += 1
    answers["the central-t approximation, n ≥ ((t_0.975 + t_0.8 with n − 1 degrees of freedom) · sd / difference)²"] = n
    n = 2
    while stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) > difference:
        n += 1
    answers["a 95 % interval as narrow as ± the difference, which gives about 50 % power"] = n

    def fewest(critical, df, spread=sd):  # the noncentral t's answer for a critical value, degrees of freedom, sd
        n = 2
        while paired_power(n, spread, difference, critical(n), df(n)) < 0.8:
            n += 1
        return n

    answers["a one-sided test at 5 % (t_0.95): the question asks for a two-sided one, t_0.975"] = fewest(
        lambda n: stats.t.ppf(0.95, n - 1), lambda n: n - 1)
    answers["n degrees of freedom: a paired t-test of n differences has n − 1"] = fewest(
        lambda n: stats.t.ppf(0.975, n), lambda n: n)
    answers["2n − 2 degrees of freedom, the count of two unrelated samples: a paired t-test of n differences has "
            "n − 1"] = fewest(lambda n: stats.t.ppf(0.975, 2 * n - 2), lambda n: 2 * n - 2)
    # what an unpaired power calculator (statsmodels' TTestIndPower, say) answers per arm
    answers["a two-sample (unpaired) power calculation, noncentrality δ√(n/2)/sd with 2n − 2 degrees of freedom: "
            "the paired test's is δ√n/sd, with n − 1, sd being the spread of the differences"] = fewest(
        lambda n: stats.t.ppf(0.975, 2 * n - 2), lambda n: 2 * n - 2, spread=sd * math.sqrt(2))
    return answers


_P_VALUES = [  # families of p-values, in the order a study would list its contrasts
    [0.2255, 0.3029],  # the two primary contrasts of this record: both end at 0.4510
    [0.04, 0.01, 0.03],
    [0.5, 0.001, 0.02, 0.3, 0.04],
    [0.6, 0.7],  # doubled, the smaller passes 1
    [0.03],
    [0.02, 0.02, 0.5, 0.001],  # a tie
    [0.0008, 0.096, 0.009, 0.028, 0.519, 0.028, 1.8e-05],  # section 4's seven unadjusted p, as printed there
]


@exercise("07", 3, "core", "order the p-values from smallest to largest. The smallest is multiplied by the number of "
                           "tests m, the next by m − 1, and so on down to 1. Two rules keep the result a p-value of "
                           "the family: no adjusted p may be smaller than one before it in that order, and none may "
                           "exceed 1. Give them back in the order they came.")
def holm_adjusted(ex: Exercise, fn) -> None:
    """Holm's step-down adjustment of a family of p-values, returned in their input order."""
    from ..lab.stats import holm

    for p_values in _P_VALUES:
        case = {"p_values": list(p_values)}
        expected, got = holm(p_values), call(ex, fn, case)
        try:
            values = numbers_in(got)
        except TypeError:
            values = []
        if len(values) != len(expected):
            raise CheckFailed(f"{ex.label}: for p_values = {p_values} return the adjusted p-values themselves (numbers, "
                              f"not decisions), one per p-value, {len(expected)} in all, in the order they came; got {got!r}")
        if all(math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-12) for g, e in zip(values, expected)):
            continue
        shown = ", ".join(f"{e:.4g}" for e in expected)
        mistake = known_mistake(tuple(values), _holm_mistakes(p_values, expected))
        raise CheckFailed(f"{ex.label}: for p_values = {p_values} Holm's adjusted p-values are [{shown}]; yours are "
                          f"[{', '.join(f'{g:.4g}' for g in values)}]. " + (mistake or ex.hint))
    passed(ex, f"{len(_P_VALUES)} families of 1 to 7 p-values, a tie and a product above 1 among them, match "
               "minicastling.lab.stats.holm.")


def _holm_mistakes(p_values: list, adjusted: list) -> dict:
    """The adjusted p-values the usual slips give, each with what to do instead (`adjusted`: Holm's own)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    bonferroni = [min(1.0, m * p) for p in p_values]
    stepped, uncapped, running_uncapped = [0.0] * m, [0.0] * m, 0.0
    for rank, i in enumerate(order):
        stepped[i] = min(1.0, (m - rank) * p_values[i])  # no running maximum
        running_uncapped = max(running_uncapped, (m - rank) * p_values[i])
        uncapped[i] = running_uncapped
    hochberg = _step_up(p_values, order, lambda rank: m - rank)  # Hochberg: the multipliers of Holm's, stepping up
    benjamini = _step_up(p_values, order, lambda rank: m / (rank + 1))  # Benjamini–Hochberg: m / rank
    return {
        "That is a step-up adjustment (Hochberg's; on two p-values Benjamini–Hochberg's gives the same), from the "
        "largest p down, carrying the smallest so far: Holm's steps down, from the smallest p up, carrying the "
        "largest so far. (Benjamini–Hochberg's bounds the false discovery rate, not the chance of any false "
        "rejection.)": tuple(hochberg),
        "That is Benjamini–Hochberg's adjustment (scipy.stats.false_discovery_control): it bounds the false "
        "discovery rate, not the chance of any false rejection in the family, which Holm's does.": tuple(benjamini),
        "That is Bonferroni's adjustment, every p times m: Holm's multiplies only the smallest by m, the next by "
        "m − 1, and so on, which keeps the family's error rate at the same level and rejects more.": tuple(bonferroni),
        "Those products are right but not yet Holm's: an adjusted p may not fall below one that comes before it in "
        "the sorted order (carry the largest so far), or a later test could pass where an earlier one failed.":
            tuple(stepped),
        "A p-value cannot exceed 1: cap each adjusted p at 1.": tuple(uncapped),
        "Those are the right adjusted p-values in sorted order: give each back at its own contrast's place.":
            tuple(sorted(adjusted)),
    }


def _step_up(p_values: list, order: list, multiplier) -> list:
    """A step-up adjustment: from the largest p down (`order`: indices from the smallest p up), each p times
    `multiplier(rank)`, carrying the smallest so far (it never exceeds 1, the largest p's own value or less)."""
    adjusted, running_min = [0.0] * len(p_values), 1.0
    for rank, i in reversed(list(enumerate(order))):
        running_min = min(running_min, multiplier(rank) * p_values[i])
        adjusted[i] = running_min
    return adjusted


@exercise("07", 4, "stretch", "a test at 5 % rejects when |t| > t_crit(n − 1). If the true difference is δ, t follows "
                              "a noncentral t distribution with noncentrality δ√n / sd; the power is the chance it "
                              "lands beyond ±t_crit (scipy.stats.nct). Increase n until that chance reaches 80 %.")
def seeds_for_power(ex: Exercise, fn) -> None:
    """How many paired seeds detect a true difference `difference` with 80 % power, when differences spread by `sd`."""
    from ..lab.stats import minimum_detectable_difference

    # answers from 3 to 73 (at 2 pairs, 1 degree of freedom, the noncentral t's tail is too heavy to judge by)
    for sd, difference in [(1.0, 1.0), (0.7, 1.0), (2.0, 1.0), (1.0, 3.0), (0.5, 0.2), (0.2, 1.0), (3.0, 1.0), (0.2, 2.0)]:
        case = {"sd": sd, "difference": difference}
        expected, got = seeds_reference(**case), call(ex, fn, case)
        if got == expected or _on_the_line(got, expected, sd, difference):
            continue
        used = [name for name, answer in _shortcuts(sd, difference).items() if answer == got] \
            if isinstance(got, numbers.Integral) else []
        if isinstance(got, numbers.Integral) and got < expected:
            verdict = (f"too few: with {got} pairs a true difference of {difference} is detected less than 80 % of "
                       "the time. " + (f"{got} is also what {', or '.join(used)} gives" if used else "") +
                       ("; t" if used else "T") + "he power of a t-test when the difference is real comes from the "
                       "noncentral t distribution, which the shortcuts only approximate (they undercount at small n).")
        elif used:
            verdict = f"more than needed: {got} is what {', or '.join(used)} gives."
        elif isinstance(got, numbers.Integral) and got > 3 * expected:
            verdict = ("far more than needed: check the noncentrality, difference × √n / sd, which grows with the "
                       "number of pairs.")
        else:
            verdict = "more than needed: the fewest that reach 80 % is asked for." if isinstance(got, numbers.Integral) \
                else "not a whole number of seeds."
        raise CheckFailed(f"{ex.label}: for {describe(case)} the answer is {expected} seeds; yours, {got!r}, is {verdict}")
    passed(ex, "8 spreads and differences, with answers from 3 to 73 seeds, match the noncentral t's power (a seed "
               "or a few either way where the power at the line is within 2 points of 80 %, as a simulation of a few "
               "thousand draws may land).")
