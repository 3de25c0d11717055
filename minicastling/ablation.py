"""Ablations: what each piece of Castling-ViT buys, each variant a real run of the same recipe.

Every variant changes one field of the same Recipe (same data, budget and seed), is trained by
minicastling.train, and is recorded with its accuracy before and after castling, its MACs, the data
and the hardware. `python -m minicastling ablate` runs them; tutorial 07 plots the results.
"""

import dataclasses
import platform
from pathlib import Path

import torch

from .data import load_dataset
from .files import save_json
from .runtime import describe, pick_device
from .train import get_recipe, train

VARIANTS = {
    "softmax twin": dict(attention="softmax"),
    "linear-angular only": dict(attention="linear-angular"),
    "+ DWConv 1-D": dict(conv="1d", alpha0=0.0),
    "+ DWConv 2-D": dict(conv="2d", alpha0=0.0),
    "+ DWConv 1-D + softmax branch (castling)": dict(),
    "castling, α linear": dict(alpha_shape="linear"),
    "castling, α step": dict(alpha_shape="step"),
    "castling, official form": dict(form="official"),
    "ReLU + DWConv 1-D": dict(attention="relu"),
    "ELU+1 + DWConv 1-D": dict(attention="elu"),
    "Performer + DWConv 1-D": dict(attention="performer"),
    "FLatten + DWConv 1-D": dict(attention="flatten"),
}


def run_ablations(preset="cpu", epochs=3, train_images=4000, data="auto", out="runs/ablations",
                  results="results/ablations.json", device="auto", variants=None) -> dict:
    """Train every variant with the same recipe; write and return {setup, rows}."""
    dataset = load_dataset(data)
    chosen = variants or list(VARIANTS)
    rows = []
    for name in chosen:
        print(f"\n=== {name}")
        recipe = get_recipe(preset, epochs=epochs, train_images=train_images, **VARIANTS[name])
        metrics = train(recipe, Path(out) / name.replace(" ", "_").replace("/", "-"), dataset, device=device,
                        restart=True, progress=False)
        rows.append({"variant": name, **{k: metrics[k] for k in (
            "test_acc_before_castling", "test_acc_after_castling", "macs_before_castling",
            "macs_after_castling", "parameters", "wall_time_s")}, "recipe": dataclasses.asdict(recipe)})
    summary = {"setup": {"dataset": dataset.name, "preset": preset, "epochs": epochs, "train_images": train_images,
                         "device": describe(pick_device(device)), "torch": torch.__version__,
                         "machine": platform.machine()}, "rows": rows}
    save_json(Path(results), summary)
    print_table(summary)
    return summary


def print_table(summary: dict) -> None:
    setup = summary["setup"]
    print(f"\n{setup['dataset']}, {setup['preset']} preset, {setup['epochs']} epochs on {setup['train_images']} images; "
          f"{setup['device']}")
    print(f"{'variant':<42} {'acc before':>10} {'acc after':>9} {'MACs train':>10} {'MACs infer':>10}")
    for r in summary["rows"]:
        print(f"{r['variant']:<42} {r['test_acc_before_castling']:9.2f}% {r['test_acc_after_castling']:8.2f}% "
              f"{r['macs_before_castling'] / 1e6:9.1f}M {r['macs_after_castling'] / 1e6:9.1f}M")
