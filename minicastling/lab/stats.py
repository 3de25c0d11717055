"""The statistics behind the study's verdicts: paired differences, power, equivalence, Holm.

DESIGN: Evidence. Two arms trained with the same seed share their initialisation and data order, so
they are compared by the per-seed differences d_i = a_i − b_i (a paired t-interval), which is narrower
than an interval that ignores the pairing when the seed's luck moves both arms together (and, with
n − 1 degrees of freedom against Welch's up to 2n − 2, a little wider when it does not). A verdict is one of four words: *better* or
*worse* when the interval excludes 0, *equivalent* when two one-sided tests put the difference inside
±margin, *undetermined* otherwise — an interval that contains 0 is never read as "no effect". The
quantiles, tests and intervals come from scipy.stats. Introduced in tutorial 07.
"""

import math
import statistics

from scipy import optimize, stats

VERDICTS = ("better", "worse", "equivalent", "undetermined")


def mean_interval(values, confidence: float = 0.95) -> tuple:
    """mean(values) and the half-width of its t-interval: t(n − 1) · std / √n (0 for one value)."""
    values = list(values)
    if len(values) < 2:
        return statistics.mean(values), 0.0
    quantile = stats.t.ppf(0.5 + confidence / 2, len(values) - 1)
    return statistics.mean(values), float(quantile * statistics.stdev(values) / math.sqrt(len(values)))


def welch_interval(a, b, confidence: float = 0.95) -> tuple:
    """mean(a) − mean(b) and its Welch t-interval, for two arms that share nothing (no pairing)."""
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return statistics.mean(a) - statistics.mean(b), (float(interval.low), float(interval.high))


def p_text(p: float) -> str:
    """A p-value as printed: three decimals, or two significant digits below 0.001, which would round to 0.000."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def paired_power(n: int, sd: float, difference: float, critical: float, df: int | None = None) -> float:
    """P(|T| > critical) for T ~ t(df, noncentrality difference·√n / sd): the power of a two-sided paired
    t-test of n pairs (df = n − 1 unless given) whose rejection line is `critical`."""
    df = n - 1 if df is None else df
    noncentrality = difference * math.sqrt(n) / sd
    wrong_side = stats.nct.cdf(-critical, df, noncentrality)  # tiny; scipy can return NaN for it far out
    return float(stats.nct.sf(critical, df, noncentrality) + (wrong_side if math.isfinite(wrong_side) else 0.0))


def minimum_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test of n pairs detects with `power`.

    Exact, from the noncentral t distribution: the shift δ at which P(|T| > t_crit) = power for
    T ~ t(n − 1, noncentrality δ√n / sd). For large n it approaches (z_{1−α/2} + z_power) · sd / √n.
    """
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {n}")
    if sd == 0:
        return 0.0
    critical = stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(delta):
        return paired_power(n, sd, delta, critical) - power

    high = (critical + 1.0) * sd / math.sqrt(n)  # shortfall(high) < 0 at power 0.5; double until above power
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high))


def seeds_needed(sd: float, target: float, alpha: float = 0.05, power: float = 0.8, minimum: int = 10) -> int:
    """The fewest pairs (at least `minimum`) whose minimum detectable difference is at most `target`."""
    n = max(minimum, 2)
    while minimum_detectable_difference(sd, n, alpha, power) > target:
        n += 1
    return n


def paired_difference(a, b, margin: float = 1.0, confidence: float = 0.95, power: float = 0.8) -> dict:
    """Everything a paired comparison reports: a_i − b_i's mean, sd, interval, tests and power.

    p_value: the paired t-test of a difference of 0 (two-sided), whose interval is interval_95;
    p_equivalence: the larger p of the two one-sided tests (TOST) that the difference exceeds −margin and
    falls short of +margin, below 5 % exactly when interval_90 lies inside ±margin; mde_80: the
    smallest difference this many pairs with this spread detect with 80 % power.
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError(f"paired arms need one value per seed each; got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {len(a)}")
    differences = [x - y for x, y in zip(a, b)]
    sd = statistics.stdev(differences)
    mean = statistics.mean(differences)
    if sd == 0:  # identical differences (tiny test sets, quick runs): no t-test is defined, decide nothing
        p_value = p_equivalence = 1.0
        interval = equivalence_interval = (mean, mean)
    else:
        test = stats.ttest_rel(a, b)
        p_value = float(test.pvalue)
        interval = tuple(float(x) for x in test.confidence_interval(confidence))
        # TOST at 1 − confidence rejects exactly when this interval lies inside ±margin
        equivalence_interval = tuple(float(x) for x in test.confidence_interval(1 - 2 * (1 - confidence)))
        above = stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
        below = stats.ttest_1samp(differences, margin, alternative="less").pvalue
        p_equivalence = float(max(above, below))
    return {"difference": mean, "sd": sd, "n": len(a), "interval_95": list(interval),
            "interval_90": list(equivalence_interval), "p_value": p_value,
            "p_equivalence": p_equivalence, "margin": margin,
            "mde_80": minimum_detectable_difference(sd, len(a), 1 - confidence, power)}


def holm(p_values) -> list:
    """Holm's step-down adjustment: p-values whose rejections at level α hold for the whole family."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(difference: float, p_value: float, p_equivalence: float, alpha: float = 0.05) -> str:
    """better / worse when the test of 0 rejects at α (for an unadjusted p: the (1 − α) interval excludes
    0); else equivalent when both one-sided tests against ±margin reject; else undetermined."""
    if p_value < alpha:
        return "better" if difference > 0 else "worse"
    return "equivalent" if p_equivalence < alpha else "undetermined"


def equivalence_seeds(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int:
    """About how many pairs two one-sided tests at ±margin need to call a true difference of 0 equivalent with
    `power`, when the paired differences spread with `sd`: the fewest n with 2 F(margin √n / sd − t_{1−α}) − 1 ≥ power,
    F the t distribution of n − 1 degrees of freedom (the usual approximation, which treats sd as known)."""
    n = 2
    while 2 * stats.t.cdf(margin * math.sqrt(n) / sd - stats.t.ppf(1 - alpha, n - 1), n - 1) - 1 < power and n < most:
        n += 1
    return n


def sign_test_pairs(only_a: float, only_b: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int:
    """About how many pairs an exact two-sided sign test of a binary endpoint needs for `power`, when a pair's arms
    disagree with probabilities only_a (a succeeds, b not) and only_b (the reverse): the pairs where both or neither
    succeed carry no information, so n pairs give about n·(only_a + only_b) that count."""
    if only_a + only_b == 0 or only_a == only_b:
        raise ValueError("the arms must disagree, and one more often than the other, for a sign test to find anything")
    share = max(only_a, only_b) / (only_a + only_b)
    for n in range(2, most):
        counted = max(1, round(n * (only_a + only_b)))
        critical = stats.binom.ppf(1 - alpha / 2, counted, 0.5)
        if stats.binom.sf(critical, counted, share) >= power:
            return n
    return most
