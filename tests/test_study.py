"""The study: its declared design, resumable and extendable runs, paired contrasts, the quick mode."""

import json

import pytest

from minicastling.__main__ import main
from minicastling.lab import plot, study
from minicastling.presets import PRESETS, Recipe


def quick(folder, *extra):
    return main(["study", "--quick", "--part", "primary", "--workers", "1", "--out", str(folder / "runs"),
                 "--results", str(folder / "study.json"), *extra])


@pytest.fixture(scope="module")
def primary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    assert quick(folder, "--seeds", "2") == 0
    return folder


def test_every_contrast_names_arms_that_change_one_or_two_things():
    for c in study.CONTRASTS:
        assert c["a"] in study.ARMS and c["b"] in study.ARMS and c["part"] in study.PARTS
        assert c["primary"] == (c["part"] == "primary")
    assert all(1 <= len(change) <= 2 for change in study.ARMS.values())
    assert [c["name"] for c in study.CONTRASTS if c["primary"]] == [
        "branch on vs off, official form", "branch on vs off, kernel form"]


def test_the_recipes_of_both_scales_are_valid_and_arms_share_everything_but_their_change():
    for scale in study.SCALES:
        for dataset, arms in study.arms_by_dataset(study.PARTS).items():
            recipes = [Recipe.from_dict(study.recipe_for(dataset, arm, 3, scale, False)) for arm in arms]
            assert {r.seed for r in recipes} == {3} and len({r.epochs for r in recipes}) == 1
    on = Recipe.from_dict(study.recipe_for("fashion-mnist", "castling, kernel form", 0, "cpu", False))
    off = Recipe.from_dict(study.recipe_for("fashion-mnist", "branch off, kernel form", 0, "cpu", False))
    assert on.replace(alpha0=0.0) == off and on.fades_a_branch and not off.fades_a_branch


def test_the_plan_runs_each_arm_once_pairs_every_contrast_and_the_references_on_fewer_seeds(tmp_path):
    seeds = study.DESIGN["seeds"]
    tasks = study.plan(study.PARTS, seeds, "cpu", False, tmp_path, 1)
    assert len({t["out"] for t in tasks}) == len(tasks)
    count = lambda dataset, arm: sum(t["dataset"] == dataset and t["arm"] == arm for t in tasks)  # noqa: E731
    for c in study.CONTRASTS:  # both arms of a contrast run on at least the part's seeds
        assert min(count(c["dataset"], c["a"]), count(c["dataset"], c["b"])) >= seeds[c["part"]]
    for noise in study.DIAGNOSTIC_NOISES:
        for arm in study.DIAGNOSTIC_REFERENCES:
            assert count(study.same_different_name(noise), arm) == study.DESIGN["reference_seeds"]
    twin = Recipe.from_dict(study.recipe_for("fashion-mnist", "softmax twin", 0, "cpu", False))
    assert twin.model.form == "kernel"  # pinned: a change of the package's default form keeps its records


def test_the_design_is_written_before_any_run(tmp_path, monkeypatch):
    def interrupted(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick(tmp_path, "--seeds", "2")
    written = json.loads((tmp_path / "study.json").read_text())
    assert set(written) == {"design"} and written["design"]["margin"] == 1.0
    assert [c["name"] for c in written["design"]["contrasts"]][:1] == ["branch on vs off, official form"]


def test_quick_study_writes_paired_contrasts_with_curves(primary):
    written = json.loads((primary / "study.json").read_text())
    contrasts = {c["name"]: c for c in written["contrasts"]}
    assert set(contrasts) == {"branch on vs off, official form", "branch on vs off, kernel form"}
    for c in contrasts.values():
        assert {"name", "dataset", "form", "a", "b", "pairs", "difference", "interval_95", "mde_80", "verdict",
                "primary", "p_value_holm"} <= set(c)
        assert len(c["pairs"]) == 2 and c["verdict"] in ("better", "worse", "equivalent", "undetermined")
        a = written["runs"][c["dataset"]][c["a"]]
        assert c["pairs"][0][0] == a["accuracies"][0]
    castling = written["runs"]["fashion-mnist"]["castling, kernel form"]
    curve = castling["curves"][0]
    epochs = PRESETS["smoke"].epochs
    assert len(curve["test_acc"]) == len(curve["train_loss"]) == epochs
    assert curve["alpha_end_of_epoch"][-1] == 0.0 and curve["branch_share"][0] is not None
    assert curve["test_acc_without_branch"][-1] == curve["test_acc"][-1]
    assert written["runs"]["fashion-mnist"]["branch off, kernel form"]["curves"][0]["branch_share"] == [None] * epochs


def test_an_interrupted_study_resumes_and_more_seeds_extend_it(primary, monkeypatch):
    trained = []
    original = study.run_one
    monkeypatch.setattr(study, "run_one", lambda task: trained.append(task["seed"]) or original(task))
    assert quick(primary, "--seeds", "2") == 0
    assert trained == []  # every run recorded: nothing trained again
    (primary / "runs" / "quick" / "fashion-mnist" / "castling-kernel-form" / "seed1" / "record.json").unlink()
    assert quick(primary, "--seeds", "3") == 0
    assert sorted(trained) == [1, 2, 2, 2, 2]  # the lost record, then the third seed of each arm
    written = json.loads((primary / "study.json").read_text())
    assert all(len(c["pairs"]) == 3 for c in written["contrasts"])


def test_holm_is_applied_across_the_primary_contrasts_only():
    runs = {"d": {arm: {"seeds": [0, 1, 2], "accuracies": acc} for arm, acc in {
        "a": [86.0, 86.5, 87.0], "b": [85.0, 85.6, 85.9], "c": [86.1, 86.4, 86.8]}.items()}}
    contrasts = [study.contrast("first", "d", "a", "b", "primary"), study.contrast("second", "d", "c", "b", "primary"),
                 study.contrast("third", "d", "a", "c", "secondary")]
    results = {r["name"]: r for r in study.compare(runs, contrasts)}
    first, second = results["first"], results["second"]
    assert sorted([first["p_value_holm"], second["p_value_holm"]]) == pytest.approx(
        sorted([2 * min(first["p_value"], second["p_value"]), max(2 * min(first["p_value"], second["p_value"]),
                                                                   max(first["p_value"], second["p_value"]))]))
    assert "p_value_holm" not in results["third"]


def test_bad_arguments_exit_2_with_one_sentence(tmp_path, capsys):
    assert quick(tmp_path, "--seeds", "1") == 2
    assert capsys.readouterr().err.strip() == "error: --seeds must be at least 2 (a paired interval needs two pairs), got 1"
    with pytest.raises(SystemExit) as exit_:
        main(["study", "--part", "everything"])
    assert exit_.value.code == 2


def test_the_figures_draw_the_contrasts_and_curves(primary):
    written = json.loads((primary / "study.json").read_text())
    figure = plot.plot_contrasts(written)
    assert len(figure.axes[0].lines) >= 1
    figure = plot.plot_curves(written, "fashion-mnist", ["castling, kernel form", "branch off, kernel form"])
    assert [ax.get_ylabel() for ax in figure.axes][:2] == ["test accuracy (%)", "training loss"]
