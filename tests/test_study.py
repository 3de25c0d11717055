"""The studies: declared designs written once, amendments appended, resumable dated runs, paired contrasts."""

import json

import pytest

from minicastling.__main__ import main
from minicastling.lab import plot, record, study
from minicastling.presets import PRESETS, Recipe


def quick(folder, *extra, part="primary"):
    return main(["study", "--quick", "--part", part, "--workers", "1", "--out", str(folder / "runs"),
                 "--results", str(folder / "study.json"), *extra])


def written(folder):
    return json.loads((folder / "study.json").read_text())


@pytest.fixture(scope="module")
def primary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    assert quick(folder, "--seeds", "2", "--amend", "two seeds: a quick test") == 0
    return folder


@pytest.mark.parametrize("tokens", [49, 196])
def test_every_contrast_names_arms_that_change_one_or_two_things(tokens):
    chosen = study.STUDIES[tokens]
    for c in chosen.contrasts:
        assert c["a"] in study.ARMS and c["b"] in study.ARMS and c["part"] in chosen.parts
        assert c["primary"] == (c["part"] == "primary")
    assert all(1 <= len(change) <= 2 for change in study.ARMS.values())
    primaries = [c["name"] for c in chosen.contrasts if c["primary"]]
    assert primaries == (["branch on vs off, official form", "branch on vs off, kernel form"] if tokens == 49
                         else ["branch on vs off, kernel form"])


@pytest.mark.parametrize("tokens", [49, 196])
def test_the_recipes_of_both_scales_are_valid_and_arms_share_everything_but_their_change(tokens):
    chosen = study.STUDIES[tokens]
    for scale in study.SCALES:
        for dataset, arms in study.arms_by_dataset(chosen, chosen.parts).items():
            recipes = [Recipe.from_dict(study.recipe_for(chosen, dataset, arm, 3, scale, False)) for arm in arms]
            assert {r.seed for r in recipes} == {3} and len({r.epochs for r in recipes}) == 1
    on = Recipe.from_dict(study.recipe_for(chosen, "fashion-mnist", "castling, kernel form", 0, "cpu", False))
    off = Recipe.from_dict(study.recipe_for(chosen, "fashion-mnist", "branch off, kernel form", 0, "cpu", False))
    assert on.replace(alpha0=0.0) == off and on.fades_a_branch and not off.fades_a_branch
    assert (28 // on.model.patch_size) ** 2 == tokens  # Fashion-MNIST's 28 × 28 images in patches


def test_the_plan_runs_each_arm_once_pairs_every_contrast_and_the_references_on_fewer_seeds(tmp_path):
    chosen = study.STUDY_49
    seeds = chosen.design["seeds"]
    tasks = study.plan(chosen, chosen.parts, seeds, "cpu", False, tmp_path, 1)
    assert len({t["out"] for t in tasks}) == len(tasks)
    count = lambda dataset, arm: sum(t["dataset"] == dataset and t["arm"] == arm for t in tasks)  # noqa: E731
    for c in chosen.contrasts:  # both arms of a contrast run on at least the part's seeds
        assert min(count(c["dataset"], c["a"]), count(c["dataset"], c["b"])) >= seeds[c["part"]]
    for noise in study.DIAGNOSTIC_NOISES:
        for arm in study.DIAGNOSTIC_REFERENCES:
            assert count(study.same_different_name(noise), arm) == chosen.design["reference_seeds"]
    twin = Recipe.from_dict(study.recipe_for(chosen, "fashion-mnist", "softmax twin", 0, "cpu", False))
    assert twin.model.form == "kernel"  # pinned: a change of the package's default form keeps its records


def test_the_design_is_written_with_its_time_and_code_before_any_run(tmp_path, monkeypatch):
    def interrupted(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick(tmp_path)
    content = written(tmp_path)
    assert content["runs"] == [] and content["amendments"] == [] and "analysis" not in content
    design = content["design"]
    assert design["margin"] == 1.0 and design["declared_at"].endswith("Z") and design["code"]["training_code_digest"]
    assert [c["name"] for c in design["contrasts"]][:1] == ["branch on vs off, official form"]
    assert any(entry["commit"] == "9a167c0" for entry in content["history"])  # what came before, from the history


def test_quick_study_writes_dated_runs_and_paired_contrasts_with_curves(primary):
    content = written(primary)
    assert all(r["started_at"] <= r["ended_at"] and r["code"]["training_code_digest"] for r in content["runs"])
    analysed = study.read_study(primary / "study.json")
    contrasts = {c["name"]: c for c in analysed["contrasts"]}
    assert set(contrasts) == {"branch on vs off, official form", "branch on vs off, kernel form",
                              "official vs kernel form, castled"}  # a secondary contrast whose arms are both here
    for c in contrasts.values():
        assert {"name", "dataset", "form", "a", "b", "pairs", "difference", "interval_95", "mde_80", "verdict",
                "primary", "excludes_above"} <= set(c)
        assert len(c["pairs"]) == 2 and c["verdict"] in ("better", "worse", "equivalent", "undetermined")
        assert ("p_value_holm" in c) == c["primary"]
        assert c["pairs"][0][0] == analysed["runs"][c["dataset"]][c["a"]]["accuracies"][0]
    assert [c["name"] for c in content["analysis"]["contrasts"]] == [c["name"] for c in analysed["contrasts"]]
    curve = analysed["runs"]["fashion-mnist"]["castling, kernel form"]["curves"][0]
    epochs = PRESETS["smoke"].epochs
    assert len(curve["test_acc"]) == len(curve["train_loss"]) == epochs
    assert curve["alpha_end_of_epoch"][-1] == 0.0 and curve["branch_share"][0] is not None
    assert curve["test_acc_without_branch"][-1] == curve["test_acc"][-1]
    off = analysed["runs"]["fashion-mnist"]["branch off, kernel form"]
    assert off["curves"][0]["branch_share"] == [None] * epochs


def test_completion_counts_the_planned_runs_and_marks_early_looks_interim(primary):
    analysed = study.read_study(primary / "study.json")
    # secondary: five arms of its own on 5 seeds, and seeds 2–4 of the two castling arms
    assert study.completion(analysed) == {"primary": (8, 8), "secondary": (0, 5 * 5 + 2 * 3), "diagnostic": (0, 42)}
    assert all(c["n"] == c["planned_n"] for c in analysed["contrasts"] if c["primary"])
    content = written(primary)
    content["runs"] = [r for r in content["runs"] if r["seed"] == 0 or r["arm"] != "castling, kernel form"]
    assert study.completion(study.read_study(content))["primary"] == (7, 8)
    design = {**analysed["design"], "seeds": {**analysed["design"]["seeds"], "primary": 3}}
    assert all(c["planned_n"] == 3 > c["n"] for c in study.compare(analysed["runs"], design["contrasts"], design)
               if c["primary"])


def test_a_primary_whose_mde_misses_the_target_is_interim_where_the_rule_adds_seeds():
    rule = {"mde_target": 0.5, "seeds_rule": "10 seeds; if the MDE is then above 0.5, seeds are added until it is not"}
    assert study.interim_why(9, 10, True, 0.3, rule) == "9 of 10 seeds"
    assert study.interim_why(10, 10, True, 0.6, rule).startswith("MDE 0.60 above the target 0.5")
    assert study.interim_why(10, 10, True, 0.5, rule) == ""
    assert study.interim_why(10, 10, False, 0.9, rule) == ""  # exploratory MDEs are reported, not targeted
    fixed = {"mde_target": 0.5, "seeds_rule": "10 seeds per primary arm, the number a pilot gave"}
    assert study.interim_why(10, 10, True, 0.9, fixed) == ""  # a rule that fixes its seeds decides at them


def test_a_changed_design_is_refused_without_a_reason_and_appended_with_one(primary, monkeypatch, capsys):
    trained = []
    original = study.run_one
    monkeypatch.setattr(study, "run_one", lambda task: trained.append(task["seed"]) or original(task))
    assert quick(primary, "--seeds", "2") == 0 and trained == []  # resumed: every run recorded, nothing trained again
    assert quick(primary, "--seeds", "3") == 1  # more seeds change the design: a reason is asked for
    assert "seeds.primary: 2 -> 3" in capsys.readouterr().err and trained == []
    assert quick(primary, "--seeds", "3", "--amend", "a third seed, by the seeds rule") == 0
    assert sorted(trained) == [2, 2, 2, 2]  # the third seed of each arm, nothing else
    content = written(primary)
    (amendment,) = content["amendments"]
    assert amendment["changes"] == {"seeds.primary": [2, 3]} and amendment["at"].endswith("Z")
    assert amendment["why"] == "a third seed, by the seeds rule" and amendment["seen_by_then"]["finished_runs"] == 8
    assert content["design"]["seeds"]["primary"] == 2  # the design as declared is never written over
    assert all(len(c["pairs"]) == 3 for c in content["analysis"]["contrasts"])
    assert quick(primary) == 0 and sorted(trained) == [2, 2, 2, 2]  # a plain rerun resumes with the seeds in force
    assert len(written(primary)["amendments"]) == 1


def test_a_lost_run_is_trained_again_and_replaces_nothing_else(tmp_path):
    assert quick(tmp_path, "--seeds", "2", "--amend", "two seeds") == 0
    content = written(tmp_path)
    lost = next(r for r in content["runs"] if r["arm"] == "castling, kernel form" and r["seed"] == 1)
    content["runs"].remove(lost)
    (tmp_path / "study.json").write_text(json.dumps(content))
    assert quick(tmp_path, "--seeds", "2") == 0
    runs = written(tmp_path)["runs"]
    assert len(runs) == 8 and sum(r["arm"] == "castling, kernel form" and r["seed"] == 1 for r in runs) == 1


def test_a_recorded_run_reproduces_from_its_recipe(primary, capsys):
    command = ["study", "--quick", "--results", str(primary / "study.json"), "--out", str(primary / "again"),
               "--reproduce", "castling, kernel form", "1"]
    assert main(command) == 0
    assert "castling, kernel form, seed 1: recorded" in capsys.readouterr().out


def test_an_unreadable_record_is_kept_and_named(tmp_path, capsys):
    (tmp_path / "study.json").write_text("[1, 2]")
    assert quick(tmp_path) == 1
    assert "is not a study record" in capsys.readouterr().err and (tmp_path / "study.json").read_text() == "[1, 2]"


def test_designs_differ_key_by_key_and_amendments_apply_in_order():
    a = {"seeds": {"primary": 10, "secondary": 5}, "margin": 1.0}
    b = {"seeds": {"primary": 12, "secondary": 5}, "margin": 0.5, "new": "x"}
    changes = record.differences(a, b)
    assert changes == {"margin": [1.0, 0.5], "new": [None, "x"], "seeds.primary": [10, 12]}
    assert record.apply(a, changes) == b


def test_holm_is_applied_within_each_family():
    runs = {"d": {arm: {"seeds": [0, 1, 2], "accuracies": acc} for arm, acc in {
        "a": [86.0, 86.5, 87.0], "b": [85.0, 85.6, 85.9], "c": [86.1, 86.4, 86.8]}.items()}}
    contrasts = [study.contrast("first", "d", "a", "b", "primary"), study.contrast("second", "d", "c", "b", "primary"),
                 study.contrast("third", "d", "a", "c", "secondary")]
    results = {r["name"]: r for r in study.compare(runs, contrasts, study.STUDY_49.design)}
    first, second = results["first"], results["second"]
    assert sorted([first["p_value_holm"], second["p_value_holm"]]) == pytest.approx(
        sorted([2 * min(first["p_value"], second["p_value"]), max(2 * min(first["p_value"], second["p_value"]),
                                                                   max(first["p_value"], second["p_value"]))]))
    assert "p_value_holm" not in results["third"] and results["third"]["p_value_holm_in_part"] == results["third"]["p_value"]


def test_the_196_token_study_runs_in_quick_form_and_times_its_trained_models(tmp_path, capsys):
    common = ["--quick", "--tokens", "196", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "s.json")]
    assert main(["study", *common, "--part", "secondary", "--workers", "1", "--seeds", "2"]) == 0
    content = json.loads((tmp_path / "s.json").read_text())
    assert content["design"]["tokens"] == 196 and content["design"]["margin"] == 0.5
    assert {r["arm"] for r in content["runs"]} == {"castling, official form", "branch off, official form",
                                                  "castling, kernel form", "softmax twin"}
    assert main(["study", *common, "--speed"]) == 0
    speed = json.loads((tmp_path / "s.json").read_text())["speed"]
    assert [(r["seed"], r["arm"]) for r in speed["rows"]] == [(s, a) for s in (0, 1) for a in study.SPEED_ARMS]
    assert all(r["images_per_s"] > 0 and r["macs"] > 0 for r in speed["rows"]) and speed["at"].endswith("Z")
    assert "images/s" in capsys.readouterr().out


def test_bad_arguments_exit_2_with_one_sentence(tmp_path, capsys):
    assert quick(tmp_path, "--seeds", "1") == 2
    assert capsys.readouterr().err.strip() == "error: --seeds must be at least 2 (a paired interval needs two pairs), got 1"
    with pytest.raises(SystemExit) as exit_:
        main(["study", "--part", "everything"])
    assert exit_.value.code == 2
    assert main(["study", "--tokens", "196", "--part", "diagnostic", "--results", str(tmp_path / "x.json")]) == 1
    assert "part ['diagnostic']" in capsys.readouterr().err


def test_the_figures_draw_the_contrasts_and_curves(primary):
    analysed = study.read_study(primary / "study.json")
    figure = plot.plot_contrasts(analysed)
    assert len(figure.axes[0].lines) >= 1
    figure = plot.plot_curves(analysed, "fashion-mnist", ["castling, kernel form", "branch off, kernel form"])
    assert [ax.get_ylabel() for ax in figure.axes][:2] == ["test accuracy (%)", "training loss"]


def test_a_token_table_pairs_each_shared_contrast_and_its_figures_mark_interim_looks(primary):
    analysed = study.read_study(primary / "study.json")
    n = analysed["design"]["seeds"]["primary"]  # the fixture's record may have been extended by an earlier test
    early = {**analysed, "contrasts": study.compare(analysed["runs"], analysed["design"]["contrasts"],
                                                    {**analysed["design"], "seeds": {**analysed["design"]["seeds"],
                                                                                     "primary": n + 1}})}
    rows = study.token_table({49: analysed, 196: early}, names=["branch on vs off, kernel form"])
    assert [(r["tokens"], r["n"], r["planned_n"]) for r in rows] == [(49, n, n), (196, n, n + 1)]
    figure = plot.plot_token_table(rows, {49: 1.0, 196: 0.5})
    notes = [" ".join(t.get_text().split()) for t in figure.axes[0].texts]  # wrapped over lines
    assert any(f"interim: {n} of {n + 1}" in t for t in notes) and sum("interim" in t for t in notes) == 1
    assert len(notes) == 2 and all("(primary, n=" in t for t in notes)  # each row says which part it belongs to
    labels = [" ".join(t.get_text().split()) for t in plot.plot_contrasts(early).axes[0].get_yticklabels()]
    assert any(f"interim ({n} of {n + 1} seeds)" in label for label in labels)
    means = study.epoch_means(analysed, "castling, kernel form", "mask_density")
    figure = plot.plot_epoch_means({"49 tokens, castling, kernel form": means}, "share kept", "t", log=True)
    assert figure.axes[0].get_yscale() == "log" and len(figure.axes[0].lines) == 1
