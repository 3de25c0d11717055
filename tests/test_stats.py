"""The study's statistics against scipy.stats, and the power calculation against a simulation."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from minicastling.lab import stats

A = [86.1, 85.4, 86.9, 85.9, 86.3, 85.2, 86.6, 86.0, 85.7, 86.4]
B = [85.6, 85.5, 86.1, 85.2, 86.0, 84.9, 86.5, 85.1, 85.8, 85.7]


def test_paired_difference_matches_scipy():
    result = stats.paired_difference(A, B)
    test = scipy_stats.ttest_rel(A, B)
    low, high = test.confidence_interval(0.95)
    differences = np.subtract(A, B)
    assert result["difference"] == pytest.approx(differences.mean())
    assert result["sd"] == pytest.approx(differences.std(ddof=1))
    assert result["interval_95"] == pytest.approx([low, high]) and result["p_value"] == pytest.approx(test.pvalue)
    upper = scipy_stats.ttest_1samp(differences, 1.0, alternative="less").pvalue
    lower = scipy_stats.ttest_1samp(differences, -1.0, alternative="greater").pvalue
    assert result["p_equivalence"] == pytest.approx(max(upper, lower))


def test_pairing_narrows_the_interval_when_seeds_share_their_luck():
    paired = stats.paired_difference(A, B)["interval_95"]
    _, welch = stats.welch_interval(A, B)
    assert paired[1] - paired[0] < 0.75 * (welch[1] - welch[0])


def test_equivalence_is_the_ninety_percent_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = rng.normal(85, 0.5, 12)
        a = b + rng.normal(rng.uniform(-1.5, 1.5), 0.6, 12)
        result = stats.paired_difference(a, b, margin=1.0)
        low, high = scipy_stats.ttest_rel(a, b).confidence_interval(0.90)
        assert (result["p_equivalence"] < 0.05) == (-1.0 < low and high < 1.0)


def test_minimum_detectable_difference_has_the_stated_power_in_a_simulation():
    rng = np.random.default_rng(1)
    for n, sd in ((10, 1.0), (14, 0.7)):
        mde = stats.minimum_detectable_difference(sd, n)
        samples = rng.normal(mde, sd, (40000, n))
        t = samples.mean(1) / (samples.std(1, ddof=1) / np.sqrt(n))
        power = np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, n - 1))
        assert power == pytest.approx(0.8, abs=0.01)
    large = stats.minimum_detectable_difference(1.0, 400)
    assert large == pytest.approx((scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) / 20, rel=0.01)


def test_seeds_needed_is_the_fewest_that_reach_the_target_and_at_least_ten():
    assert stats.seeds_needed(0.5, 1.0) == 10
    n = stats.seeds_needed(1.3, 1.0)
    assert stats.minimum_detectable_difference(1.3, n) <= 1.0 < stats.minimum_detectable_difference(1.3, n - 1)


def test_holm_adjusts_step_down():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.2, 0.5]) == pytest.approx([0.4, 0.5])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("difference, p, p_equivalence, word", [
    (0.8, 0.01, 0.01, "better"), (-0.8, 0.01, 0.4, "worse"), (0.1, 0.6, 0.01, "equivalent"),
    (0.3, 0.2, 0.2, "undetermined"), (1.5, 0.07, 0.9, "undetermined"),
])
def test_verdicts_are_one_of_four_words(difference, p, p_equivalence, word):
    assert stats.verdict(difference, p, p_equivalence) == word
    assert word in stats.VERDICTS


def test_a_verdict_matches_the_paired_interval():
    rng = np.random.default_rng(2)
    for _ in range(100):
        b = rng.normal(85, 0.5, 10)
        a = b + rng.normal(rng.uniform(-2, 2), 0.8, 10)
        result = stats.paired_difference(a, b)
        word = stats.verdict(result["difference"], result["p_value"], result["p_equivalence"])
        low, high = result["interval_95"]
        assert (word == "better") == (low > 0) and (word == "worse") == (high < 0)


def test_mean_interval_matches_scipy():
    mean, half = stats.mean_interval([74.2, 75.9, 77.1])
    low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean([74.2, 75.9, 77.1]), scale=scipy_stats.sem([74.2, 75.9, 77.1]))
    assert half == pytest.approx((high - low) / 2) and stats.mean_interval([80.0]) == (80.0, 0.0)


def test_bad_pairs_are_refused():
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        stats.paired_difference([1.0], [1.0])


def test_equivalence_seeds_grow_as_the_margin_shrinks_and_match_a_simulation():
    from minicastling.lab.stats import equivalence_seeds, paired_difference

    wide, narrow = equivalence_seeds(0.3, 1.0), equivalence_seeds(0.3, 0.25)
    assert wide < narrow and equivalence_seeds(0.3, 0.25) == equivalence_seeds(0.6, 0.5)  # sd / margin decides
    rng = np.random.default_rng(0)
    n, hits = equivalence_seeds(0.5, 0.5), 0
    for _ in range(400):  # a true difference of 0: the share of studies that call it equivalent is about the power
        d = rng.normal(0.0, 0.5, n)
        hits += paired_difference(d, np.zeros(n), margin=0.5)["p_equivalence"] < 0.05
    assert 0.7 < hits / 400 < 0.95


def test_sign_test_pairs_need_disagreeing_arms():
    from minicastling.lab.stats import sign_test_pairs

    assert sign_test_pairs(0.3, 0.05) < sign_test_pairs(0.2, 0.1)
    with pytest.raises(ValueError, match="must disagree"):
        sign_test_pairs(0.1, 0.1)


def test_a_p_value_below_a_thousandth_keeps_its_digits():
    assert stats.p_text(0.0468) == "0.047"
    assert stats.p_text(1.3e-4) == "1.3e-04"  # not 0.000
