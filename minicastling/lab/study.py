"""Does the softmax branch make the castled model better? Two studies designed to answer it, at 49 and 196 tokens.

`python -m minicastling study` trains paired arms (same seed: same initialisation and data order),
castles every model, and keeps a record (record.py): the design written once before the first run, with
its time and code; amendments appended with their reason; every run with its start, end and code. The
question is this course's own reading of the abstract's "auxiliary masked softmax attention", with α(t)
standing in for masks "regularized to gradually become zeros".

* 49 tokens (Fashion-MNIST, patch 4; results/study.json): primary, the castling recipe (branch on) against
  the same recipe with α₀ = 0 (branch off), once per form, Holm across the two; secondary, exploratory:
  castled against the softmax twin and linear-angular attention alone, α held at 1 for half of training,
  the two forms castled; diagnostic, exploratory: the same/different task at three noise levels.
* 196 tokens (Fashion-MNIST, patch 2; results/study_196.json, `--tokens 196`), where ε = 0.02 keeps only
  weights about four times the uniform 1/196: primary, branch on against off in the kernel form, where the
  branch carries weight; secondary, exploratory: the same in the official form, and castled against the twin.

Each run's record is also written in out/…/record.json. An interrupted study resumes; a larger --seeds
extends one, as an amendment. Statistics: stats.py. Tutorial 07.
"""

import dataclasses
import functools
import platform
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from ..attention import FORMS
from ..datasets import load_dataset
from ..datasets.synthetic import same_different, stand_in
from ..extras.files import InputError, save_json
from ..presets import Recipe, get_recipe
from ..train import read_history, train
from . import stats
from .record import code_identity, now, open_record

FASHION = "fashion-mnist"
PARTS = ("primary", "secondary", "diagnostic")
SCALES = ("cpu", "gpu")
DIAGNOSTIC_NOISES = (0.03, 0.04, 0.06)  # from a calibration of one seed each (history below); the references measure it


def same_different_name(noise: float) -> str:
    return f"same-different, noise {noise:g}"


ARMS = {  # name: what it changes in the dataset's recipe; every arm names its form, whatever the default
    **{f"castling, {form} form": dict(form=form) for form in FORMS},
    **{f"branch off, {form} form": dict(form=form, alpha0=0.0) for form in FORMS},
    "softmax twin": dict(attention="softmax", form="kernel"),  # form unused by softmax; pinned, so the twin's
    # recipe, and so its recorded runs, do not move when the package's default form does
    **{f"linear-angular alone, {form} form": dict(attention="linear-angular", form=form) for form in FORMS},
    **{f"α held for half, {form} form": dict(form=form, alpha_hold=0.5) for form in FORMS},
}
DIAGNOSTIC_REFERENCES = ("linear-angular alone, kernel form", "softmax twin")  # what the task asks of attention
DIAGNOSTIC_ARMS = ("castling, kernel form", "branch off, kernel form", *DIAGNOSTIC_REFERENCES)


def contrast(name, dataset, a, b, part, form=None):
    return {"name": name, "dataset": dataset, "a": a, "b": b, "part": part, "primary": part == "primary",
            "form": form}


def branch_contrast(form, part):
    return contrast(f"branch on vs off, {form} form", FASHION, f"castling, {form} form", f"branch off, {form} form", part,
                    form)


def twin_contrast(form, part):
    return contrast(f"castled vs softmax twin, {form} form", FASHION, f"castling, {form} form", "softmax twin", part,
                    form)


@dataclasses.dataclass(frozen=True)
class Study:
    """One study: its question and rules (the design), its contrasts, its recipes and where its record goes."""

    tokens: int
    results: str
    design: dict
    contrasts: tuple
    recipes: dict  # scale -> {"fashion-mnist" or "same-different": (preset, fields)}
    history: tuple = ()  # what happened before this record's design was written, from the repository's history

    @property
    def parts(self) -> tuple:
        return tuple(p for p in PARTS if any(c["part"] == p for c in self.contrasts))


RULES = {  # shared by both studies' designs
    "pairing": "the arms of a contrast share the seed, hence the initialisation and the data order",
    "alpha": 0.05, "power": 0.8,
    "verdicts": "better / worse: the test of 0 rejects (primary: Holm-adjusted p < 0.05; else the 95 % interval "
                "excludes 0); equivalent: otherwise, and both one-sided tests against ±margin reject; "
                "undetermined: otherwise. Where the test of 0 rejects, the verdict is better or worse even if the "
                "interval also lies inside ±margin: a difference shown to exist is reported as one",
    "what_is_tested": "α(t), this course's stand-in for masks 'regularized to gradually become zeros' (abstract): "
                      "the branch's output weighted by α, which decays to exactly 0 at 75 % of training, then castled",
}

STUDY_49 = Study(
    tokens=49, results="results/study.json",
    design={**RULES,
            "question": "does training with the masked softmax branch, then castling, leave a better model than the "
                        "same recipe without the branch?",
            "margin": 1.0, "margin_why": "declared before the first study with this question ran (history): a point "
                                         "of Fashion-MNIST accuracy, about three times one arm's seed-to-seed sd",
            "mde_target": 1.0, "minimum_seeds": 10, "correction": "Holm across the primary contrasts",
            "seeds": {"primary": 10, "secondary": 5, "diagnostic": 5}, "reference_seeds": 2,
            "seeds_rule": "10 seeds per primary arm, the number the earlier execution's pilot gave (history); the "
                          "exploratory parts' MDEs are reported, not targeted"},
    contrasts=(
        *[branch_contrast(form, "primary") for form in FORMS],
        *[twin_contrast(form, "secondary") for form in FORMS],
        *[contrast(f"castled vs linear-angular alone, {form} form", FASHION, f"castling, {form} form",
                   f"linear-angular alone, {form} form", "secondary", form) for form in FORMS],
        *[contrast(f"α held for half vs default schedule, {form} form", FASHION, f"α held for half, {form} form",
                   f"castling, {form} form", "secondary", form) for form in FORMS],
        contrast("official vs kernel form, castled", FASHION, "castling, official form", "castling, kernel form",
                 "secondary"),
        *[contrast(f"branch on vs off, {same_different_name(noise)}", same_different_name(noise), "castling, kernel form",
                   "branch off, kernel form", "diagnostic", "kernel") for noise in DIAGNOSTIC_NOISES],
    ),
    recipes={"cpu": {FASHION: ("cpu", dict(epochs=5, train_images=20000)),
                     "same-different": ("cpu", dict(epochs=12, train_images=10000, lr=2e-3))},
             "gpu": {FASHION: ("cpu", dict(epochs=30, train_images=None)),
                     "same-different": ("cpu", dict(epochs=30, train_images=50000, lr=2e-3))}},
    history=(
        {"at": "2026-11-21T20:07:21Z", "commit": "081ad21",
         "what": "an earlier study (3 seeds, 6,000 images, unpaired Welch intervals) compared castling with its "
                 "ingredients on Fashion-MNIST and same/different, '+ DWConv 1-D' (branch off) among them, before "
                 "this question, its pairing and its ±1 margin were chosen; its results had been read"},
        {"at": "2026-12-03T05:10:43Z", "commit": "9a167c0",
         "what": "the design first declared: margin ±1, MDE target 1, at least 10 seeds; seeds primary 12, "
                 "secondary 12, diagnostic 5; noise levels 0.0, 0.02, 0.04"},
        {"at": "2026-12-03T05:54:40Z", "commit": "4b6dea8",
         "what": "a pilot of 4 seeds of the primary arms (paired sd 0.36 official, 0.28 kernel) set primary and "
                 "secondary to 10 seeds by the declared rule; the noise levels became 0.03, 0.045, 0.06 after one-seed "
                 "calibration runs that were not recorded; the run folders were named with {:.2f}, which would have "
                 "run 0.045 as 0.04"},
        {"at": "2026-12-03T06:37:26Z", "commit": "23c74b6",
         "what": "the official form's CPU kernel landed while primary runs were under way (the primary part was "
                 "complete by 07:11); the branch entered the kernel at 07:50 (4958b3d) while secondary runs were "
                 "under way"},
        {"at": "2026-12-03T08:23:53Z", "commit": "c220764",
         "what": "secondary cut from 10 seeds to 5 and the diagnostic's references to 2 seeds, for CPU time, after "
                 "the primary part and most of the first five secondary seeds had run; noise 0.06 dropped before any "
                 "of its runs, names formatted with :g"},
        {"at": "2026-12-03T09:37:16Z", "commit": "14cf92f",
         "what": "noise 0.06 restored after the first seeds at 0.03 and 0.04 had run, when linear-angular alone "
                 "reached 91 % at 0.04; every result of that execution was read (record at f58cb3e)"},
        {"at": "2026-12-07", "commit": "this record's design",
         "what": "every run of that execution came from training code that changed under it and does not rerun from "
                 "any commit, so all are run again on one frozen commit. This design keeps the last design of that "
                 "execution (arms, contrasts, seeds, noise levels, margin) unchanged, and is written knowing all its "
                 "results"},
    ),
)

STUDY_196 = Study(
    tokens=196, results="results/study_196.json",
    design={**RULES,
            "question": "at 196 tokens, where ε = 0.02 keeps only weights about four times the uniform one, does "
                        "training with the masked softmax branch, then castling, leave a better model than the same "
                        "recipe without it, in the kernel form, where the branch carries weight?",
            "margin": 0.5, "margin_why": "the MDE target: a difference smaller than half a point is within one arm's "
                                         "seed-to-seed sd at 49 tokens (0.3 to 0.4) and would not pay for the branch's "
                                         "training cost",
            "mde_target": 0.5, "minimum_seeds": 10, "correction": "Holm across the primary contrasts (one)",
            "seeds": {"primary": 10, "secondary": 5},
            "seeds_rule": "10 seeds per primary arm; if the primary MDE (80 % power, two-sided 5 %) is then above 0.5, "
                          "seeds are added until it is not, the first 10 included; the exploratory part's MDEs are "
                          "reported, not targeted",
            "recipe_why": "the 49-token study's recipe with patch 2 instead of 4, so that the two studies differ in "
                          "the number of tokens alone; each epoch's curves on the first 2,000 test images, the final "
                          "accuracies on all 10,000",
            "calibration": "before this design, one run of 'castling, kernel form' with seed 1000 (not a study seed), "
                           "15,000 images and 5 epochs, to time it: 80.02 % castled, 1,052 s with three processes on "
                           "the two cores; no branch-off run was made. The 84 % the course hoped for is out of reach "
                           "within about 150 minutes of this machine for the primary part; the recipe trades it for "
                           "the budget"},
    contrasts=(branch_contrast("kernel", "primary"), branch_contrast("official", "secondary"),
               *[twin_contrast(form, "secondary") for form in FORMS]),
    recipes={"cpu": {FASHION: ("cpu", dict(patch_size=2, epochs=5, train_images=20000, epoch_test_images=2000))},
             "gpu": {FASHION: ("cpu", dict(patch_size=2, epochs=30, train_images=None))}},
)

STUDIES = {49: STUDY_49, 196: STUDY_196}
QUICK = ("smoke", dict(epochs=2, train_images=256, batch_size=64))  # seconds a run: the mechanics, not a result


def parts_contrasts(study: Study, parts) -> list:
    return [c for c in study.contrasts if c["part"] in parts]


def arms_by_dataset(study: Study, parts) -> dict:
    """{dataset: [arm, …]} that the chosen parts' contrasts need, in the order they are first named."""
    needed = {}
    for c in parts_contrasts(study, parts):
        for arm in (c["a"], c["b"]):
            needed.setdefault(c["dataset"], {})[arm] = None
    if "diagnostic" in parts and "diagnostic" in study.parts:  # the dose–response's two references too
        for noise in DIAGNOSTIC_NOISES:
            needed[same_different_name(noise)].update(dict.fromkeys(DIAGNOSTIC_ARMS))
    return {dataset: list(arms) for dataset, arms in needed.items()}


def load_study_dataset(name: str, quick: bool = False):
    """A study dataset by name: Fashion-MNIST, or the same/different task at a noise level; quick runs
    take small generated stand-ins so that a test needs no download."""
    if name.startswith("same-different"):
        noise = float(name.rsplit(" ", 1)[1])
        return same_different(n_train=512, n_test=256, noise=noise) if quick else same_different(noise=noise)
    return stand_in(n_train=512, n_test=256, size=16) if quick else load_dataset(name, progress=False)


@functools.lru_cache(maxsize=None)
def cached_dataset(name: str, quick: bool):
    """A dataset, loaded or generated once per worker process: a worker trains many runs on one."""
    return load_study_dataset(name, quick)


def recipe_for(study: Study, dataset: str, arm: str, seed: int, scale: str, quick: bool) -> dict:
    preset, base = study.recipes[scale]["same-different" if dataset.startswith("same") else dataset]
    if quick:
        preset, base = QUICK[0], {**QUICK[1], **({"patch_size": 2} if "patch_size" in base else {})}
    return dataclasses.asdict(get_recipe(preset, **base, **ARMS[arm], seed=seed))


def slug(name: str) -> str:
    """A folder name: "α held for half, kernel form" → "alpha-held-for-half-kernel-form"."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower().replace("α", "alpha")).strip("-")


def planned(study: Study, parts, seeds: dict) -> list:
    """Every (part, dataset, arm, seed) the parts need, seed by seed, each once (an arm two parts share runs
    for the first part that names it)."""
    runs, seen = [], set()
    for part in (p for p in study.parts if p in parts):
        for seed in range(seeds[part]):
            for dataset, arms in arms_by_dataset(study, [part]).items():
                for arm in arms:
                    if part == "diagnostic" and arm in DIAGNOSTIC_REFERENCES and seed >= study.design["reference_seeds"]:
                        continue
                    if (dataset, arm, seed) not in seen:
                        seen.add((dataset, arm, seed))
                        runs.append((part, dataset, arm, seed))
    return runs


def plan(study: Study, parts, seeds: dict, scale: str, quick: bool, out: Path, threads: int) -> list:
    """Every run the parts need as a task, seed by seed, so an interrupted study stays paired."""
    return [{"dataset": dataset, "arm": arm, "seed": seed, "threads": threads, "quick": quick,
             "recipe": recipe_for(study, dataset, arm, seed, scale, quick),
             "out": str(out / slug(dataset) / slug(arm) / f"seed{seed}"),
             "device": "cpu" if scale == "cpu" else "auto"}
            for _, dataset, arm, seed in planned(study, parts, seeds)]


def completion(study: dict) -> dict:
    """{part: (runs recorded, runs the design plans)} for a study as `read_study` returns it. A part is
    complete when the two agree; until then its contrasts are interim looks, not the study's verdicts."""
    design = study["design"]
    done = {(r["dataset"], r["arm"], r["seed"]) for r in study["runs_recorded"]}
    counts = {}
    for part, dataset, arm, seed in planned(STUDIES[design["tokens"]], design["parts"], design["seeds"]):
        recorded, wanted = counts.get(part, (0, 0))
        counts[part] = (recorded + ((dataset, arm, seed) in done), wanted + 1)
    return counts


def same_recipe(recorded: dict, wanted: dict) -> bool:
    """Whether a recorded run's recipe is `wanted`, read back through today's Recipe, so that a field added
    since, whose default keeps the old behaviour, does not retrain every run."""
    try:
        return dataclasses.asdict(Recipe.from_dict(recorded)) == wanted
    except (TypeError, KeyError):  # a field that no longer exists
        return False


def finished(task: dict, runs: list) -> dict | None:
    """The recorded run of this task with exactly its recipe, else None (it must run)."""
    for run in runs:
        if (run["dataset"], run["arm"], run["seed"]) == (task["dataset"], task["arm"], task["seed"]) and \
                same_recipe(run["recipe"], task["recipe"]):
            return run
    return None


def run_one(task: dict) -> dict:
    """Train, castle and record one run (in a worker): its numbers, curves, times and code."""
    torch.set_num_threads(task["threads"])
    started, started_cpu, code = now(), time.process_time(), code_identity()
    dataset = cached_dataset(task["dataset"], task["quick"])
    metrics = train(Recipe.from_dict(task["recipe"]), task["out"], dataset, device=task["device"], progress=False,
                    quiet=True)
    history = read_history(task["out"])
    curves = {key: [row[key] for row in history] for key in (
        "test_acc", "train_loss", "train_acc", "alpha_end_of_epoch", "mask_density", "branch_share",
        "test_acc_without_branch")}
    record = {"dataset": task["dataset"], "data": dataset.name, "arm": task["arm"], "seed": task["seed"],
              "recipe": task["recipe"], "started_at": started, "ended_at": now(), "code": code,
              "threads": task["threads"], "machine": f"{platform.machine()}, {torch.backends.cpu.get_cpu_capability()}",
              "attention_path": metrics["attention_path"],
              "after": metrics["test_acc_after_castling"], "before": metrics["test_acc_before_castling"],
              "macs_before": metrics["macs_before_castling"], "macs_after": metrics["macs_after_castling"],
              "seconds": metrics["wall_time_s"],
              "cpu_seconds": None if metrics["resumed_from_epoch"] else time.process_time() - started_cpu,
              "sharpness": metrics["attention_sharpness"], "chance": majority_rate(dataset), "curves": curves}
    save_json(Path(task["out"]) / "record.json", record)
    return record


def majority_rate(dataset) -> float:
    """Chance, honestly: the test split's most frequent class as a share of it, in percent."""
    counts = torch.bincount(torch.as_tensor(dataset.y_test))
    return 100.0 * counts.max().item() / len(dataset.y_test)


def train_all(tasks: list, record, workers: int, progress: bool) -> None:
    """Run the tasks not yet in the record, `workers` side by side; append each to the record as it ends."""
    from tqdm.auto import tqdm

    todo = [task for task in tasks if finished(task, record.runs) is None]

    def landed(run):
        record.add_run(run)
        record.save()  # an interrupted study loses no finished run
        bar.update()

    with tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="study runs", disable=not progress) as bar:
        if workers == 1:
            for task in todo:
                landed(run_one(task))
        else:
            with ProcessPoolExecutor(workers) as pool:
                for future in as_completed([pool.submit(run_one, task) for task in todo]):
                    landed(future.result())


def gather(records: list) -> dict:
    """{dataset: {arm: per-seed lists}} from the runs' records, seeds in order."""
    runs = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        entry = runs.setdefault(r["dataset"], {}).setdefault(r["arm"], {
            "seeds": [], "accuracies": [], "accuracies_before": [], "seconds": [], "cpu_seconds": [],
            "sharpness": [], "curves": [], "macs_before": r["macs_before"], "macs_after": r["macs_after"],
            "chance": r["chance"], "data": r["data"]})
        for key, value in (("seeds", r["seed"]), ("accuracies", r["after"]), ("accuracies_before", r["before"]),
                           ("seconds", r["seconds"]), ("cpu_seconds", r["cpu_seconds"]),
                           ("sharpness", r["sharpness"]), ("curves", r["curves"])):
            entry[key].append(value)
    return runs


def interim_why(n: int, planned: int, primary: bool, mde: float, design: dict) -> str:
    """Why a contrast's analysis is an interim look, not the study's verdict, in a few words; empty when it is final.

    Fewer seeds than the design plans; or, for a primary contrast, an MDE still above the design's target
    where the design's declared seeds rule adds seeds until it is not (the 196-token study's does; the
    49-token study's fixed its seeds from a pilot).
    """
    if n < planned:
        return f"{n} of {planned} seeds"
    if primary and mde > design["mde_target"] and "seeds are added" in design.get("seeds_rule", ""):
        return f"MDE {mde:.2f} above the target {design['mde_target']:g}: the seeds rule adds seeds"
    return ""


def compare(runs: dict, contrasts: list, design: dict) -> list:
    """Every contrast whose two arms share at least two seeds, analysed as paired differences.

    Holm's adjustment runs within the primary family, where it decides the verdict, and within each
    exploratory part, where it is reported beside the unadjusted p (p_value_holm_in_part) and decides nothing.
    Each contrast also carries what its data exclude: the interval's bounds (excludes_above, excludes_below),
    and the seeds its design plans (planned_n): with fewer, or a primary MDE still above the design's target
    (interim, interim_why), its verdict is an interim look, not the study's.
    """
    results = []
    for c in contrasts:
        arms = runs.get(c["dataset"], {})
        if c["a"] not in arms or c["b"] not in arms:
            continue
        a, b = arms[c["a"]], arms[c["b"]]
        shared = sorted(set(a["seeds"]) & set(b["seeds"]))
        if len(shared) < 2:
            continue
        pairs = [[a["accuracies"][a["seeds"].index(s)], b["accuracies"][b["seeds"].index(s)]] for s in shared]
        result = stats.paired_difference([p[0] for p in pairs], [p[1] for p in pairs], design["margin"],
                                         1 - design["alpha"], design["power"])
        why = interim_why(len(shared), design["seeds"][c["part"]], c["primary"], result["mde_80"], design)
        results.append({**c, "seeds": shared, "pairs": pairs, **result, "excludes_above": result["interval_95"][1],
                        "excludes_below": result["interval_95"][0], "planned_n": design["seeds"][c["part"]],
                        "interim": bool(why), "interim_why": why})
    for part in PARTS:
        family = [r for r in results if r["part"] == part]
        for key in ("p_value", "p_equivalence"):
            for r, adjusted in zip(family, stats.holm([r[key] for r in family])):
                r[key + ("_holm" if part == "primary" else "_holm_in_part")] = adjusted
    for r in results:
        suffix = "_holm" if r["primary"] else ""
        r["verdict"] = stats.verdict(r["difference"], r["p_value" + suffix], r["p_equivalence" + suffix],
                                     design["alpha"])
        r["seeds_for_mde_target"] = (stats.seeds_needed(r["sd"], design["mde_target"], design["alpha"],
                                                        design["power"], design["minimum_seeds"])
                                     if r["sd"] > 0 else design["minimum_seeds"])
    return results


def declared(study: Study, seeds: dict, scale: str, quick: bool) -> dict:
    """The design this invocation declares: the study's rules, its arms and contrasts (all parts, whichever
    run now), its recipes, and the seeds per part."""
    parts = study.parts
    recipes = {dataset: recipe_for(study, dataset, arms[0], 0, scale, quick)
               for dataset, arms in arms_by_dataset(study, parts).items()}
    return {**study.design, "tokens": study.tokens, "seeds": seeds, "scale": scale, "quick": quick, "parts": list(parts),
            "arms": {arm: ARMS[arm] for arms in arms_by_dataset(study, parts).values() for arm in arms},
            "contrasts": list(study.contrasts),
            "recipes": {d: {k: v for k, v in r.items() if k != "seed"} for d, r in recipes.items()}}


def seeds_in_force(path: Path) -> dict | None:
    """The seeds per part of the design in force in an existing record (its amendments applied), else None: what
    a rerun that names no --seeds asks for, so that resuming an amended study needs no second amendment."""
    import json

    from .record import Record

    try:
        return Record(path, json.loads(path.read_text())).design()["seeds"]
    except (OSError, ValueError, KeyError, TypeError):  # no record yet, or not one: open_record says what is wrong
        return None


def run_study(parts=None, seeds: int | None = None, quick: bool = False, scale: str = "cpu", out="runs/study",
              results=None, workers: int = 2, progress: bool = True, tokens: int = 49, amend: str | None = None) -> dict:
    """Train what the parts need (resuming and extending earlier runs in the record), analyse, write the record."""
    if tokens not in STUDIES:
        raise InputError(f"--tokens {tokens}: the studies are at {sorted(STUDIES)} tokens")
    study = STUDIES[tokens]
    parts = tuple(parts or study.parts)
    unknown = [p for p in parts if p not in study.parts]
    if unknown or scale not in SCALES:
        raise InputError(f"part {unknown} or scale {scale!r} is not this study's: the {tokens}-token study has parts "
                         f"{list(study.parts)}, and the scales are {list(SCALES)}")
    if seeds is not None and seeds < 2:
        raise InputError(f"--seeds {seeds}: a paired interval needs at least 2 seeds")
    path = Path(results or study.results)
    in_force = seeds_in_force(path) or study.design["seeds"]  # a record's amended seeds stay in force on a rerun
    chosen = {part: (seeds if seeds and part in parts else in_force[part]) for part in study.parts}
    record = open_record(path, declared(study, chosen, scale, quick), list(study.history), amend)
    design = record.design()
    threads = max(1, torch.get_num_threads() // workers)
    if scale == "cpu":  # built once here, before the workers start, so that no two compile it at once
        from ..fast import cpu_kernel

        cpu_kernel.build()
    started = time.perf_counter()
    train_all(plan(study, parts, design["seeds"], scale, quick, Path(out) / ("quick" if quick else scale)
                   / f"tokens{tokens}", threads), record, workers, progress)
    runs = gather(record.runs)
    record.content["analysis"] = {
        "at": now(), "code": code_identity(), "contrasts": compare(runs, design["contrasts"], design),
        "setup": {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
                  "workers": workers, "threads_per_run": threads,
                  "minutes_this_invocation": (time.perf_counter() - started) / 60,
                  "minutes_by_part": minutes_by_part(study, runs, workers)}}
    record.save()
    return {**record.content, "design": design, "runs": runs}


def minutes_by_part(study: Study, runs: dict, workers: int) -> dict:
    """Each part's runs' wall time, summed and divided by the runs side by side: its length on this machine."""
    minutes = {}
    for part in study.parts:
        needed = arms_by_dataset(study, [part])
        seconds = sum(sum(runs[d][arm]["seconds"]) for d, arms in needed.items() for arm in arms
                      if arm in runs.get(d, {}))
        minutes[part] = seconds / 60 / workers
    return minutes


def read_study(record) -> dict:
    """A record (its path, or its content as a dict) as analyses use it: the design in force, the runs gathered
    by dataset and arm, the contrasts computed from them."""
    import json

    from .record import Record

    content = record if isinstance(record, dict) else json.loads(Path(record).read_text())
    design = Record(Path("."), content).design()
    runs = gather(content["runs"])
    return {**content, "design": design, "runs": runs, "runs_recorded": content["runs"],
            "contrasts": compare(runs, design["contrasts"], design)}


def reproduce(path, arm: str, seed: int, dataset: str = FASHION, out="runs/reproduce") -> tuple:
    """Train one recorded run again from its recorded recipe; (recorded accuracy, accuracy now, run record)."""
    import json

    content = json.loads(Path(path).read_text())
    matches = [r for r in content["runs"] if (r["dataset"], r["arm"], r["seed"]) == (dataset, arm, seed)]
    if not matches:
        have = sorted({(r["arm"], r["seed"]) for r in content["runs"] if r["dataset"] == dataset})
        raise InputError(f"{path} holds no run of arm {arm!r}, seed {seed} on {dataset!r}; it holds "
                         f"{len(have)} runs there, e.g. {have[:3]}")
    recorded = matches[0]
    task = {"dataset": dataset, "arm": arm, "seed": seed, "threads": recorded.get("threads", 1),
            "quick": content["design"].get("quick", False), "recipe": recorded["recipe"],
            "out": str(Path(out) / slug(dataset) / slug(arm) / f"seed{seed}"), "device": "cpu"}
    import shutil

    shutil.rmtree(task["out"], ignore_errors=True)  # a fresh run, not a resumed one
    again = run_one(task)
    return recorded, again


def token_table(studies: dict, names=None) -> list:
    """One row per (contrast, tokens) for the contrasts the studies {tokens: read_study(...)} share (or `names`):
    {name, tokens, part, n, planned_n, interim, difference, interval_95, interval_90, mde_80, verdict}, each study's rows from its own analysis."""
    shared = names or [c["name"] for c in next(iter(studies.values()))["contrasts"]
                       if all(c["name"] in {d["name"] for d in s["contrasts"]} for s in studies.values())]
    rows = []
    for name in shared:
        for tokens, study in sorted(studies.items()):
            c = next((c for c in study["contrasts"] if c["name"] == name), None)
            if c is not None:
                rows.append({"name": name, "tokens": tokens, "part": c["part"], "n": c["n"],
                             "planned_n": c["planned_n"], "interim": c["interim"], "interim_why": c["interim_why"],
                             "difference": c["difference"],
                             "interval_95": c["interval_95"], "interval_90": c["interval_90"], "mde_80": c["mde_80"], "verdict": c["verdict"]})
    return rows


def epoch_means(study: dict, arm: str, key: str, dataset: str = FASHION) -> list:
    """The mean over seeds, epoch by epoch, of a curve a study's runs recorded (None where none was)."""
    curves = study["runs"][dataset][arm]["curves"]
    means = []
    for epoch in range(len(curves[0][key])):
        values = [c[key][epoch] for c in curves if c[key][epoch] is not None]
        means.append(statistics.mean(values) if values else None)
    return means


SPEED_ARMS = ("softmax twin", "castling, kernel form", "castling, official form")


def trained_speed(path, out="runs/study", scale: str = "cpu", images: int = 2000, rounds: int = 5,
                  threads: int = 1) -> dict:
    """Inference of each seed's trained, castled models against that seed's softmax twin, side by side.

    Loads every seed's model.pt of SPEED_ARMS from the run folders the record's runs were trained in, times
    each on the first `images` test images (batch 1000, `threads` threads, the models taking turns for
    `rounds` rounds) and appends the result to the record as its "speed", with the time and the code.
    Returns it: rows {seed, arm, images_per_s, vs_twin (median over rounds, + _min, _max), macs}.
    """
    import json

    from ..model import ViT, ViTConfig
    from .record import Record
    from .timing import _threads, interleaved_times, ratio_summary

    content = json.loads(Path(path).read_text())
    tokens = content["design"]["tokens"]
    folder = Path(out) / ("quick" if content["design"]["quick"] else scale) / f"tokens{tokens}" / slug(FASHION)
    seeds = sorted({r["seed"] for r in content["runs"] if r["arm"] == "softmax twin" and r["dataset"] == FASHION})
    dataset = load_study_dataset(FASHION, content["design"]["quick"])
    trained_on = content["design"]["recipes"][FASHION]["train_images"]  # normalised as in training
    batches = None
    rows = []
    with _threads(threads), torch.no_grad():
        for seed in seeds:
            models = {}
            for arm in SPEED_ARMS:
                saved = folder / slug(arm) / f"seed{seed}" / "model.pt"
                if not saved.is_file():
                    raise InputError(f"{saved} is missing: the speed of trained models needs the run folders the "
                                     f"record's runs were trained in (--out {out})")
                state = torch.load(saved, map_location="cpu", weights_only=False)
                models[arm] = ViT(ViTConfig(**state["config"])).eval()
                models[arm].load_state_dict(state["model"])
            if batches is None:
                from ..datasets.batches import DeviceData

                training = DeviceData(dataset.x_train[:trained_on], dataset.y_train[:trained_on], "cpu")
                batches = DeviceData(dataset.x_test, dataset.y_test, "cpu", training.mean, training.std).split(
                    1000, images=images)

            def infer(model):
                return lambda: [model(x) for x, _ in batches]

            times = interleaved_times({arm: infer(m) for arm, m in models.items()}, rounds, seconds_per_round=0.5)
            macs = {r["arm"]: r["macs_after"] for r in content["runs"] if r["seed"] == seed and r["arm"] in SPEED_ARMS}
            for arm in SPEED_ARMS:
                ratio = ratio_summary(times, "softmax twin", arm)
                rows.append({"seed": seed, "arm": arm, "images_per_s": images / statistics.median(times[arm]),
                             "vs_twin": ratio["ratio"], "vs_twin_min": ratio["ratio_min"],
                             "vs_twin_max": ratio["ratio_max"], "macs": macs.get(arm)})
    record = Record(Path(path), content)
    record.content["speed"] = {"at": now(), "code": code_identity(), "images": images, "rounds": rounds,
                               "threads": threads, "machine": f"{platform.machine()}, {torch.backends.cpu.get_cpu_capability()}",
                               "rows": rows}
    record.save()
    return record.content["speed"]


def print_speed(speed: dict) -> None:
    """Images per second of each trained model, and its speed-up over the twin of its seed."""
    print(f"inference on {speed['images']:,} test images, {speed['threads']} thread(s), models taking turns "
          f"({speed['rounds']} rounds); speed-up = twin time / model time, median over rounds (range):")
    for row in speed["rows"]:
        print(f"  seed {row['seed']}, {row['arm']:<24} {row['images_per_s']:7.0f} images/s, {row['vs_twin']:.2f}x "
              f"({row['vs_twin_min']:.2f}-{row['vs_twin_max']:.2f}), {row['macs'] / 1e6:.1f}M MACs per image")


def print_study(study: dict) -> None:
    """The contrasts, primary first: pairs, difference, 95 % interval, what it excludes, MDE, verdict."""
    design, runs, analysis = study["design"], study["runs"], study["analysis"]
    print(f"\n{design['tokens']} tokens; {analysis['setup']['machine']}, {analysis['setup']['workers']} runs side by side"
          + (" (quick: the mechanics, not a result)" if design["quick"] else ""))
    for part, minutes in analysis["setup"]["minutes_by_part"].items():
        print(f"  {part}: {minutes:.1f} minutes of runs")
    for dataset, arms in runs.items():
        first = next(iter(arms.values()))
        stand_in = f" (quick: {first['data']} stands in)" if first["data"] != dataset.split(",")[0] else ""
        print(f"\n{dataset}{stand_in}: test accuracy after castling, % (mean ± sd over seeds; chance "
              f"{first['chance']:.1f} %)")
        for arm, entry in arms.items():
            sd = statistics.stdev(entry["accuracies"]) if len(entry["accuracies"]) > 1 else 0.0
            print(f"  {arm:<40} {statistics.mean(entry['accuracies']):6.2f} ± {sd:4.2f}  ({len(entry['seeds'])} seeds)")
    for part in PARTS:
        rows = [c for c in analysis["contrasts"] if c["part"] == part]
        if rows:
            print(f"\n{part} contrasts{'' if part == 'primary' else ' (exploratory)'} (paired by seed; a − b in "
                  f"points; margin ±{design['margin']:g}):")
        for c in rows:
            low, high = c["interval_95"]
            holm = f", Holm p {c['p_value_holm']:.3f}" if c["primary"] else ""
            interim = f" (interim: {c['interim_why']})" if c["interim"] else ""
            print(f"  {c['name']:<52} {c['difference']:+6.2f} [{low:+.2f}, {high:+.2f}]  n {c['n']:>2}, "
                  f"MDE {c['mde_80']:.2f}{holm}: {c['verdict']}{interim}; excludes a − b above {high:+.2f}")
            if c["primary"] and c["mde_80"] > design["mde_target"]:
                print(f"    {c['seeds_for_mde_target']} seeds would bring the MDE to {design['mde_target']} "
                      f"at this spread (sd {c['sd']:.2f})")
