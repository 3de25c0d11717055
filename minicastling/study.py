"""What castling buys, measured: variants × seeds × datasets, with intervals, in one command.

`python -m minicastling study` trains every variant below with several seeds on Fashion-MNIST and
on the diagnostic same/different task (synthetic.same_different), castles each model, and writes
results/study.json: per dataset and variant the per-seed test accuracies after castling
(`accuracies`) and before, MACs, wall time, the auxiliary mask's density per epoch, and how sharp
the trained attention is. `summary` holds mean ± std per variant and, for each variant against the
castling model, the difference of means with a 95 % Welch t-interval and a verdict in words.
Tutorial 07 reads the committed file. Every variant changes one thing of the same recipe.
"""

import dataclasses
import functools
import json
import math
import platform
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .files import save_json

REFERENCE = "castling (ε = 0.02)"
VARIANTS = {
    "softmax twin": dict(attention="softmax"),
    "linear-angular only": dict(attention="linear-angular"),
    "+ DWConv 1-D": dict(conv="1d", alpha0=0.0),
    "+ DWConv 2-D": dict(conv="2d", alpha0=0.0),
    REFERENCE: dict(),
    "castling, mask above ½ · 1/N": dict(mask="relative", threshold=0.5),
    "castling, official form": dict(form="official"),
}
INGREDIENTS = {  # the gpu recipe's ingredients, each added alone to the castling model: help or hurt?
    "+ TrivialAugment": dict(augment=1.0),
    "+ mixup": dict(mixup=0.8),
    "+ cutmix": dict(cutmix=1.0),
    "+ drop path 0.1": dict(drop_path=0.1),
    "+ weight average": dict(ema=0.995),
}
VARIANTS.update(INGREDIENTS)
SUITES = {  # name: (variants, datasets)
    "castling": (tuple(v for v in VARIANTS if v not in INGREDIENTS), ("fashion-mnist", "same-different")),
    "ingredients": ((REFERENCE, *INGREDIENTS), ("fashion-mnist",)),
}
DATASET_RECIPES = {  # the recipe each dataset is studied with (the cpu recipe, shorter); variants change one field
    "fashion-mnist": dict(model="cpu", epochs=4, train_images=6000, test_every_epoch=False),
    "same-different": dict(model="cpu", epochs=5, train_images=10000, lr=2e-3, crop_padding=0, test_every_epoch=False),
}
QUICK = dict(model="smoke", epochs=2, train_images=1024, batch_size=64)  # seconds a run: the mechanics, not a result
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # two-sided 95 % quantiles of Student's t


def t_quantile(df: float) -> float:
    """The two-sided 95 % t quantile for `df` degrees of freedom, rounded down to a tabulated df (wider)."""
    known = [k for k in T_95 if k <= max(df, 1)]
    return T_95[max(known)] if df < 60 else 1.96


def welch_interval(a: list, b: list) -> tuple:
    """mean(a) − mean(b) and its 95 % Welch t-interval (no equal-variance assumption)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return difference, (difference, difference)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(df) * math.sqrt(va + vb)
    return difference, (difference - half, difference + half)


def mean_interval(values: list) -> tuple:
    """mean(values) and the half-width of its 95 % t-interval: t(n − 1) · std / √n (0 for one value)."""
    if len(values) < 2:
        return statistics.mean(values), 0.0
    return statistics.mean(values), t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def summarise(runs: dict) -> dict:
    """Per variant: mean and std of the accuracies after castling, and the difference from REFERENCE."""
    reference = runs.get(REFERENCE, {}).get("accuracies")
    summary = {}
    for variant, entry in runs.items():
        accuracies = entry["accuracies"]
        row = {"mean": statistics.mean(accuracies), "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
               "seeds": len(accuracies)}
        if reference and variant != REFERENCE and len(accuracies) > 1 and len(reference) > 1:
            difference, (low, high) = welch_interval(accuracies, reference)
            row.update(difference=difference, interval_95=[low, high], verdict=verdict(variant, difference, low, high))
        summary[variant] = row
    return summary


def verdict(variant: str, difference: float, low: float, high: float) -> str:
    if low > 0:
        return f"{variant} is better than {REFERENCE} by {difference:.1f} points (95 % interval {low:.1f} to {high:.1f})"
    if high < 0:
        return f"{variant} is worse than {REFERENCE} by {-difference:.1f} points (95 % interval {low:.1f} to {high:.1f})"
    return f"{variant} and {REFERENCE} differ by {difference:+.1f} points, within noise (95 % interval {low:.1f} to {high:.1f})"


@functools.lru_cache(maxsize=None)
def dataset_named(name: str):
    """A dataset, loaded or generated once per process: a worker trains many runs on the same one."""
    from .data import load_dataset

    return load_dataset(name, progress=False)


def run_one(task: dict) -> dict:
    """One training run, in this process or a worker: train and castle; return what the study keeps."""
    from .train import Recipe, train

    torch.set_num_threads(task["threads"])
    dataset = dataset_named(task["dataset"])
    metrics = train(Recipe(**task["recipe"]), task["out"], dataset, device="cpu", progress=False, quiet=True)
    history = [json.loads(line) for line in (Path(task["out"]) / "metrics.jsonl").read_text().splitlines()]
    return {**{k: task[k] for k in ("dataset", "variant", "seed")},
            "after": metrics["test_acc_after_castling"], "before": metrics["test_acc_before_castling"],
            "macs_before": metrics["macs_before_castling"], "macs_after": metrics["macs_after_castling"],
            "seconds": metrics["wall_time_s"], "sharpness": metrics["attention_sharpness"],
            "test_acc_per_epoch": [row["test_acc"] for row in history],
            "mask_density_per_epoch": [row["mask_density"] for row in history]}


def slug(variant: str) -> str:
    """A folder name for a variant: "castling (ε = 0.02)" → "castling-e-0-02"."""
    return re.sub(r"[^a-z0-9]+", "-", variant.lower().replace("ε", "e").replace("½", "half")).strip("-")


def tasks_for(datasets, variants, seeds, quick: bool, out: Path, threads: int) -> list:
    from .train import get_recipe

    tasks = []
    for dataset in datasets:
        base = QUICK if quick else DATASET_RECIPES[dataset]
        for variant in variants:
            for seed in range(seeds):
                recipe = get_recipe(base["model"], **{**base, **VARIANTS[variant], "seed": seed})
                tasks.append({"dataset": dataset, "variant": variant, "seed": seed, "threads": threads,
                              "recipe": dataclasses.asdict(recipe),
                              "out": str(out / dataset / slug(variant) / f"seed{seed}")})
    return tasks


def reusable(previous: dict | None, tasks: list) -> dict:
    """{(dataset, REFERENCE): runs entry} of an earlier study that these tasks would repeat exactly: the
    reference recipe (setup.recipes) and seeds 0 … n − 1, so training them again gives the same numbers."""
    found = {}
    for dataset, entry in (previous or {}).get("datasets", {}).items():
        recipe, run = previous["setup"]["recipes"].get(dataset), entry["runs"].get(REFERENCE)
        mine = [t for t in tasks if t["dataset"] == dataset and t["variant"] == REFERENCE]
        if run and mine and sorted(t["seed"] for t in mine) == list(range(len(run["accuracies"]))) and all(
                {k: v for k, v in t["recipe"].items() if k != "seed"} == recipe for t in mine):
            found[dataset, REFERENCE] = run
    return found


def run_study(datasets=tuple(DATASET_RECIPES), variants=tuple(VARIANTS), seeds: int = 3, quick: bool = False,
              out="runs/study", results="results/study.json", workers: int = 2, progress: bool = True,
              previous: dict | None = None) -> dict:
    """Train every (dataset, variant, seed), `workers` runs side by side; write and return the study.

    Runs that `previous` (an earlier study's results) already holds with the same recipe and seeds are
    taken from it rather than trained again (the ingredients suite reuses the castling study's reference).
    """
    from tqdm.auto import tqdm

    unknown = [v for v in variants if v not in VARIANTS] + [d for d in datasets if d not in DATASET_RECIPES]
    if unknown:
        raise ValueError(f"unknown variant or dataset {unknown}; variants: {list(VARIANTS)}, datasets: "
                         f"{list(DATASET_RECIPES)}")
    threads = max(1, torch.get_num_threads() // workers)
    tasks = tasks_for(datasets, variants, seeds, quick, Path(out), threads)
    reused = reusable(previous, tasks)
    all_tasks, tasks = tasks, [t for t in tasks if (t["dataset"], t["variant"]) not in reused]
    started = time.perf_counter()
    with tqdm(total=len(tasks), desc="study runs", disable=not progress) as bar:
        if workers == 1:
            records = []
            for task in tasks:
                records.append(run_one(task))
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(run_one, task) for task in tasks]
                for future in futures:
                    future.result()
                    bar.update()
                records = [future.result() for future in futures]
    recipes = {task["dataset"]: {k: v for k, v in task["recipe"].items() if k != "seed"} for task in all_tasks
               if task["variant"] == REFERENCE or REFERENCE not in variants}
    study = {"setup": {"recipes": recipes, "quick": quick,
                       "seeds": seeds, "workers": workers, "threads_per_run": threads, "reference": REFERENCE,
                       "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
                       "minutes": (time.perf_counter() - started) / 60},
             "datasets": {}}
    for dataset in datasets:
        runs = {}
        for variant in variants:
            if (dataset, variant) in reused:
                runs[variant] = {**reused[dataset, variant], "reused": True}
                continue
            mine = sorted((r for r in records if r["dataset"] == dataset and r["variant"] == variant),
                          key=lambda r: r["seed"])
            runs[variant] = {"accuracies": [r["after"] for r in mine], "accuracies_before": [r["before"] for r in mine],
                             "macs_before": mine[0]["macs_before"], "macs_after": mine[0]["macs_after"],
                             "seconds": [r["seconds"] for r in mine], "test_acc_per_epoch": [r["test_acc_per_epoch"] for r in mine],
                             "mask_density_per_epoch": [r["mask_density_per_epoch"] for r in mine],
                             "sharpness": [r["sharpness"] for r in mine]}
        study["datasets"][dataset] = {"runs": runs, "summary": summarise(runs)}
    save_json(Path(results), study)
    return study


def print_study(study: dict) -> None:
    """The summary tables: mean ± std per variant, the difference from castling and its interval."""
    setup = study["setup"]
    print(f"\n{setup['seeds']} seeds per variant, {setup['minutes']:.1f} minutes on {setup['machine']}"
          f"{' (quick: mechanics only)' if setup['quick'] else ''}")
    for dataset, entry in study["datasets"].items():
        print(f"\n{dataset}: test accuracy after castling, % (difference from '{REFERENCE}', 95 % interval)")
        for variant, row in entry["summary"].items():
            sharp = [seed["max_weight_x_n"] for seed in entry["runs"][variant]["sharpness"]]
            detail = "" if "difference" not in row else \
                f"  {row['difference']:+6.2f} [{row['interval_95'][0]:+.2f}, {row['interval_95'][1]:+.2f}]"
            sharpness = "" if None in sharp else f"   max weight {statistics.mean(sharp):.2f}/N"
            print(f"  {variant:<28} {row['mean']:6.2f} ± {row['std']:4.2f}{detail}{sharpness}")
        for row in entry["summary"].values():
            if "verdict" in row:
                print(f"    {row['verdict']}")
