"""Figures the tutorials share: growth with token count, attention maps, the α schedule."""

import textwrap
from functools import partial

import matplotlib.pyplot as plt

from .bench import crossover
from .study import mean_interval

# One colour per idea across the benchmark and the study figures: softmax (the twin and its SDPA call)
# blue, castling (the castled module, its linear-angular kernel form, the study's reference) red.
TWIN, CASTLING = "tab:blue", "tab:red"
BENCH_COLOURS = {"explicit softmax": "tab:gray", "torch SDPA": TWIN, "linear-angular (official)": "tab:green",
                 "linear-angular (kernel)": CASTLING, "SoftmaxAttention (twin)": TWIN,
                 "CastlingAttention, castled": CASTLING, "CastlingAttention, training (α=1)": "tab:orange"}

LEGIBLE = {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "xtick.labelsize": 11,
           "ytick.labelsize": 11, "legend.fontsize": 10, "figure.titlesize": 14}


def use_legible_style() -> None:
    """Text sizes that stay readable on a projector; tutorials call it through minicastling.setup()."""
    plt.rcParams.update(LEGIBLE)


def plot_scaling(rows, metric="seconds", ax=None, title=None, crossing=None, colours=None):
    """Log–log growth of time or peak memory with token count, one line per method.

    rows: from bench.scaling_sweep. crossing=(fast, slow) marks where `fast` starts to win.
    colours: {method: colour} for the methods that must keep one colour across figures.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    scale = {"seconds": 1e3, "peak_mib": 1.0}[metric]
    for method in dict.fromkeys(r["method"] for r in rows):
        points = [(r["tokens"], r[metric] * scale) for r in rows if r["method"] == method and r[metric]]
        if points:
            ax.plot(*zip(*points), marker="o", label=method, color=(colours or {}).get(method))
    title = title or ""
    if crossing is not None:  # said in the title and marked by a line, so no label sits on the curves
        n = crossover(rows, *crossing, metric=metric)
        if n is not None:
            ax.axvline(n, color="gray", linestyle="--", linewidth=1)
            said = f"dashed: {crossing[0]} faster than {crossing[1]} from N = {n}"
            title += "\n" + "\n".join(textwrap.wrap(said, 60))
    ax.set(xscale="log", yscale="log", xlabel="tokens N",
           ylabel={"seconds": "time per call (ms)", "peak_mib": "peak memory (MiB)"}[metric])
    ax.set_title(title)
    ax.legend(fontsize=10, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_attention_maps(maps: dict, title: str = "", vmax=None):
    """Side-by-side heatmaps of (N, M) attention weight matrices, one per named method."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.0), squeeze=False)
    for ax, (name, weights) in zip(axes[0], maps.items()):
        image = ax.imshow(weights.detach().cpu(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set(title=name, xlabel="key j", ylabel="query i")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_alpha(schedules: dict, ax=None, points: int = 201):
    """α(t) against training progress for each named AlphaSchedule."""
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    progress = [i / (points - 1) for i in range(points)]
    for name, schedule in schedules.items():
        ax.plot(progress, [schedule(t) for t in progress], label=name)
    ax.set(xlabel="fraction of training done t", ylabel="α(t), weight of the softmax branch")
    ax.legend(fontsize=10, loc="center right")  # every schedule is 1 at the left and 0 at the right
    ax.grid(True, alpha=0.3)
    return ax


def plot_images(images, labels, classes, columns: int = 10, title: str = ""):
    """A grid of uint8 images (N, H, W, C) with their class names."""
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
        ax.set_title(classes[int(label)], fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def read_history(path):
    """The per-epoch rows a training run wrote to metrics.jsonl."""
    import json
    from pathlib import Path

    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_history(runs: dict, title: str = "Training curves"):
    """Loss and test accuracy per epoch for each named run (a metrics.jsonl path), α dotted."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, path in runs.items():
        rows = read_history(path)
        epochs = [r["epoch"] for r in rows]
        loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=name)
        acc_ax.plot(epochs, [r["test_acc"] for r in rows], marker="o", label=name)
        if any(r.get("alpha_end_of_epoch", 0) > 0 for r in rows):
            loss_ax.plot([], [], color="black", linestyle=":", label=f"α of '{name}' (right axis of the accuracy panel)")
            alpha_ax = acc_ax.twinx()
            alpha_ax.plot(epochs, [r["alpha_end_of_epoch"] for r in rows], color="black", linestyle=":")
            alpha_ax.set(ylabel=f"α of '{name}' (dotted)", ylim=(0, 1.05))
    loss_ax.set(xlabel="epoch", ylabel="training loss (label-smoothed)", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # epochs are whole numbers
    loss_ax.legend(fontsize=10, loc="upper right")  # one legend, where the falling loss leaves room
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(predictions, labels, classes, title: str = "Confusion matrix"):
    """Counts of (true class, predicted class) pairs, rows normalised to shares."""
    import torch

    n = len(classes)
    counts = torch.zeros(n, n)
    counts.index_put_((torch.as_tensor(labels), torch.as_tensor(predictions)), torch.ones(len(labels)), accumulate=True)
    shares = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(n), classes, fontsize=9)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_benchmark(results):
    """The four panels of `python -m minicastling bench`: time and memory, functions and modules."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    panel = partial(plot_scaling, colours=BENCH_COLOURS)
    panel(results["functions_fwd_bwd"], "seconds", axes[0, 0], "Attention (B=1, 4 heads), fwd+bwd: time",
          crossing=("linear-angular (kernel)", "torch SDPA"))
    panel(results["functions_fwd_bwd"], "peak_mib", axes[0, 1], "Attention (B=1, 4 heads), fwd+bwd: peak memory")
    panel(results["modules_fwd_bwd"], "seconds", axes[1, 0], "Modules (B=1, C=128), fwd+bwd: time",
          crossing=("CastlingAttention, castled", "SoftmaxAttention (twin)"))
    panel(results["modules_fwd_bwd"], "peak_mib", axes[1, 1], "Modules (B=1, C=128), fwd+bwd: peak memory")
    fig.suptitle(results["device"], fontsize=9)
    fig.tight_layout()
    return fig


def plot_study(study: dict, title: str = "What castling buys: test accuracy after castling"):
    """One panel per dataset of a study (study.py): every seed as a dot, the mean as a tick with its 95 %
    t-interval as a line, variants sorted by mean; the castling reference red with its mean dashed, the
    softmax twin blue, as in the benchmark figure."""
    datasets = study["datasets"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 0.45 * max(
        len(d["runs"]) for d in datasets.values()) + 1.8), squeeze=False)
    reference = study["setup"]["reference"]
    for ax, (name, entry) in zip(axes[0], datasets.items()):
        order = sorted(entry["runs"], key=lambda v: entry["summary"][v]["mean"])
        for row, variant in enumerate(order):
            accuracies = entry["runs"][variant]["accuracies"]
            colour = {reference: CASTLING, "softmax twin": TWIN}.get(variant, "tab:gray")
            ax.scatter(accuracies, [row] * len(accuracies), color=colour, s=28, alpha=0.6, zorder=3)
            mean, half = mean_interval(accuracies)
            ax.errorbar(mean, row, xerr=half, fmt="|", markersize=16, markeredgewidth=2.5, color=colour,
                        elinewidth=1.5, capsize=4, zorder=4)
        if reference in entry["summary"]:
            ax.axvline(entry["summary"][reference]["mean"], color=CASTLING, linestyle="--", linewidth=1)
        ax.set_yticks(range(len(order)), order, fontsize=11)
        ax.set(xlabel="test accuracy after castling (%)\ndots: seeds; tick and line: mean, 95 % interval", title=name)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig
