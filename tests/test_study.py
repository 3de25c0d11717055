import json
import statistics

import pytest
from scipy import stats

from minicastling import plot, study
from minicastling.__main__ import main


def test_welch_interval_matches_scipy_and_is_never_narrower():
    a, b = [88.1, 87.4, 88.9, 87.9], [86.0, 86.9, 85.7]
    difference, (low, high) = study.welch_interval(a, b)
    exact = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert difference == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert low <= exact.low + 1e-12 and high >= exact.high - 1e-12  # df rounded down to a tabulated one
    assert (high - low) < 1.25 * (exact.high - exact.low)
    for df, quantile in study.T_95.items():
        assert quantile == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


def test_mean_interval_matches_scipy():
    values = [74.2, 75.9, 77.1]
    mean, half = study.mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(statistics.mean(values)) and half == pytest.approx((high - low) / 2, rel=1e-3)
    assert study.mean_interval([80.0]) == (80.0, 0.0)


def test_verdicts_say_better_worse_or_within_noise():
    assert "better" in study.verdict("x", 2.0, 0.5, 3.5)
    assert "worse" in study.verdict("x", -2.0, -3.5, -0.5)
    assert "within noise" in study.verdict("x", 0.4, -1.0, 1.8)


def test_summary_compares_every_variant_with_castling():
    runs = {study.REFERENCE: {"accuracies": [80.0, 81.0, 82.0]}, "softmax twin": {"accuracies": [90.0, 91.0, 92.0]}}
    summary = study.summarise(runs)
    assert summary[study.REFERENCE] == {"mean": 81.0, "std": 1.0, "seeds": 3}
    assert summary["softmax twin"]["difference"] == pytest.approx(10.0) and "better" in summary["softmax twin"]["verdict"]


def test_suites_name_known_variants_and_change_one_thing_each():
    for variants, datasets in study.SUITES.values():
        assert study.REFERENCE in variants and set(variants) <= set(study.VARIANTS)
        assert set(datasets) <= set(study.DATASET_RECIPES)
    assert all(len(change) <= 2 for change in study.VARIANTS.values())


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    code = main(["study", "--quick", "--dataset", "same-different", "--variant", study.REFERENCE,
                 "--variant", "linear-angular only", "--seeds", "2", "--workers", "1",
                 "--out", str(folder / "runs"), "--results", str(folder / "study.json")])
    assert code == 0
    return folder / "study.json"


def test_quick_study_writes_the_results_the_tutorials_read(quick_study):
    written = json.loads(quick_study.read_text())
    runs = written["datasets"]["same-different"]["runs"]
    assert set(runs) == {study.REFERENCE, "linear-angular only"}
    for entry in runs.values():
        assert len(entry["accuracies"]) == 2 and len(entry["test_acc_per_epoch"][0]) == study.QUICK["epochs"]
        assert entry["sharpness"][0]["max_weight_x_n"] >= 1.0
    assert runs[study.REFERENCE]["mask_density_per_epoch"][0][0] is not None
    assert "interval_95" in written["datasets"]["same-different"]["summary"]["linear-angular only"]
    figure = plot.plot_study(written)
    assert [ax.get_title() for ax in figure.axes] == ["same-different"]
    intervals = [c for c in figure.axes[0].containers if c.has_xerr]  # one mean ± 95 % interval per variant
    assert len(intervals) == 2


def test_unknown_variants_are_named():
    assert main(["study", "--quick", "--variant", "castling, typo"]) == 1


def test_an_ingredients_study_reuses_matching_reference_runs(quick_study, tmp_path, capsys):
    second = tmp_path / "ingredients.json"
    assert main(["study", "--suite", "ingredients", "--quick", "--dataset", "same-different", "--variant",
                 study.REFERENCE, "--variant", "+ mixup", "--seeds", "2", "--workers", "1", "--reuse", str(quick_study),
                 "--out", str(tmp_path / "runs"), "--results", str(second)]) == 0
    assert "+ mixup" in capsys.readouterr().out
    runs = json.loads(second.read_text())["datasets"]["same-different"]["runs"]
    reference = json.loads(quick_study.read_text())["datasets"]["same-different"]["runs"][study.REFERENCE]
    assert runs[study.REFERENCE]["reused"] and runs[study.REFERENCE]["accuracies"] == reference["accuracies"]
    assert not (tmp_path / "runs" / "ingredients" / "same-different" / "castling-e-0-02").exists()
    assert (tmp_path / "runs" / "ingredients" / "same-different" / "mixup").is_dir()
    three_seeds = study.tasks_for(["same-different"], [study.REFERENCE], 3, True, tmp_path, 1)
    assert study.reusable(json.loads(quick_study.read_text()), three_seeds) == {}  # a third seed was never run
