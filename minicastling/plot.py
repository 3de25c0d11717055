"""Figures the tutorials share: growth with token count, attention maps, the α schedule."""

import matplotlib.pyplot as plt

from .bench import crossover


def plot_scaling(rows, metric="seconds", ax=None, title=None, crossing=None):
    """Log–log growth of time or peak memory with token count, one line per method.

    rows: from bench.scaling_sweep. crossing=(fast, slow) marks where `fast` starts to win.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    scale = {"seconds": 1e3, "peak_mib": 1.0}[metric]
    for method in dict.fromkeys(r["method"] for r in rows):
        points = [(r["tokens"], r[metric] * scale) for r in rows if r["method"] == method and r[metric]]
        if points:
            ax.plot(*zip(*points), marker="o", label=method)
    if crossing is not None:
        n = crossover(rows, *crossing, metric=metric)
        if n is not None:
            ax.axvline(n, color="gray", linestyle="--", linewidth=1)
            ax.text(n, 0.02, f" {crossing[0]} faster from N={n}", transform=ax.get_xaxis_transform(),
                    rotation=90, va="bottom", ha="right", fontsize=8, color="gray")
    ax.set(xscale="log", yscale="log", xlabel="tokens N",
           ylabel={"seconds": "time per call (ms)", "peak_mib": "peak memory (MiB)"}[metric])
    ax.set_title(title or "")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_attention_maps(maps: dict, title: str = "", vmax=None):
    """Side-by-side heatmaps of (N, M) attention weight matrices, one per named method."""
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.2), squeeze=False)
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
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return ax
