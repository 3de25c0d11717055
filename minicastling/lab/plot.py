"""Figures the tutorials share: growth with token count, attention maps, the α schedule."""

import statistics
import textwrap
from functools import partial

import matplotlib.pyplot as plt
import matplotlib.ticker

from .bench import crossover
from ..train import read_history
from .stats import mean_interval, p_text

# One colour per idea across the benchmark and the study figures: softmax (the twin and its SDPA call)
# blue, castling (the castled module, its linear-angular kernel form, the study's reference) red.
TWIN, CASTLING = "tab:blue", "tab:red"
BENCH_COLOURS = {"explicit softmax": "tab:gray", "torch SDPA": TWIN, "linear-angular (official)": "tab:green",
                 "linear-angular (kernel)": CASTLING, "SoftmaxAttention (twin)": TWIN,
                 "CastlingAttention, castled": CASTLING, "CastlingAttention, training (α=1)": "tab:orange"}
BENCH_STYLES = {  # the two linear-angular forms, and castled against twin, can coincide: big hollow under small full
    "linear-angular (official)": {"marker": "s", "markersize": 10, "markerfacecolor": "none", "linewidth": 3},
    "SoftmaxAttention (twin)": {"marker": "s", "markersize": 10, "markerfacecolor": "none", "linewidth": 3},
    "CastlingAttention, training (α=1)": {"marker": "D", "markersize": 5},
}

LEGIBLE = {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "xtick.labelsize": 11,
           "ytick.labelsize": 11, "legend.fontsize": 10, "figure.titlesize": 14}


def use_legible_style() -> None:
    """Text sizes that stay readable on a projector; tutorials call it through minicastling.setup()."""
    plt.rcParams.update(LEGIBLE)


def plot_scaling(rows, metric="seconds", ax=None, title=None, crossing=None, colours=None, styles=None):
    """Log–log growth of time or peak memory with token count, one line per method.

    rows: from bench.scaling_sweep. crossing=(fast, slow) marks where `fast` starts to win.
    colours: {method: colour} for the methods that must keep one colour across figures.
    styles: {method: matplotlib line keywords}, e.g. a marker of its own, so that lines that coincide stay visible.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    scale = {"seconds": 1e3, "peak_mib": 1.0}[metric]
    for method in dict.fromkeys(r["method"] for r in rows):
        points = [(r["tokens"], r[metric] * scale) for r in rows if r["method"] == method and r[metric]]
        if points:
            style = {"marker": "o", **(styles or {}).get(method, {})}
            ax.plot(*zip(*points), label=method, color=(colours or {}).get(method), **style)
    title = title or ""
    if crossing is not None:  # said in the title and marked by a line, so no label sits on the curves
        n = crossover(rows, *crossing, metric=metric)
        if n is not None:
            ax.axvline(n, color="gray", linestyle="--", linewidth=1)
            said = f"dashed: {crossing[0]} at least 10 % faster than {crossing[1]} from N = {n} on"
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
        fig.colorbar(image, ax=ax, fraction=0.046, label="attention weight")
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
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no curve is covered
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


def plot_history(runs: dict, title: str = "Training curves", alpha=None):
    """Loss and test accuracy per epoch for each named run (its --out folder). alpha: the schedule α(t) of a
    run with the softmax branch, drawn step by step (dotted, right axis of the accuracy panel)."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = 0
    for name, path in runs.items():
        rows = read_history(path)
        epochs = max(epochs, len(rows))
        numbers = [r["epoch"] for r in rows]
        loss_ax.plot(numbers, [r["train_loss"] for r in rows], marker="o", label=name)
        acc_ax.plot(numbers, [r["test_acc"] for r in rows], marker="o", label=name)
    if alpha is not None:
        alpha_ax = acc_ax.twinx()
        progress = [i / 400 for i in range(401)]
        alpha_ax.plot([t * epochs for t in progress], [alpha(t) for t in progress], color="black", linestyle=":")
        alpha_ax.set(ylabel="α, the softmax branch's weight (dotted)", ylim=(0, 1.05))
        acc_ax.plot([], [], color="black", linestyle=":", label="α during training (right axis)")
    loss_ax.set(xlabel="epoch", ylabel="training loss (label-smoothed)", title="Training loss")
    acc_ax.set(xlabel="epoch (α: training progress × epochs)", ylabel="test accuracy (%)", ylim=(0, 100),
               title="Test accuracy per epoch, on a full 0–100 % axis")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # epochs are whole numbers
    handles, labels = acc_ax.get_legend_handles_labels()  # one legend for both panels, below them: off every curve
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=10, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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
    panel = partial(plot_scaling, colours=BENCH_COLOURS, styles=BENCH_STYLES)
    panel(results["functions_fwd_bwd"], "seconds", axes[0, 0], "Attention (B=1, 4 heads), fwd+bwd: time",
          crossing=("linear-angular (kernel)", "torch SDPA"))
    panel(results["functions_fwd_bwd"], "peak_mib", axes[0, 1], "Attention (B=1, 4 heads), fwd+bwd: peak memory")
    panel(results["modules_fwd_bwd"], "seconds", axes[1, 0], "Modules (B=1, C=128), fwd+bwd: time",
          crossing=("CastlingAttention, castled", "SoftmaxAttention (twin)"))
    panel(results["modules_fwd_bwd"], "peak_mib", axes[1, 1], "Modules (B=1, C=128), fwd+bwd: peak memory")
    fig.suptitle(results["device"], fontsize=9)
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:purple", "equivalent": "tab:olive",
                   "undetermined": "tab:gray"}


DIFFERENCE_AXIS = "difference in final test accuracy, a − b (points; a model with a branch measured after castling)"


def intervals_said(rows: list, holm: bool = False) -> str:
    """The forest plots' caption: what each mark is, with the interim style and the Holm rule only where they apply."""
    said = ("dot: mean of the paired differences; thin line: its 95 % interval; thick: its 90 % interval (TOST at 5 % "
            "calls equivalent when it lies inside the margin")
    said += ("; where Holm adjusts m primary contrasts, the one it tests first needs its (1 − 0.1/m) interval inside, "
             "the 95 % one for m = 2)" if holm else ")")
    if any(r["interim"] for r in rows):
        said += "; hollow and dashed: an interim look"
    return "\n".join(textwrap.wrap(said, 90))


def draw_interval(ax, c: dict, y: float, colour, bold: bool = True) -> None:
    """One contrast on a forest plot: its mean, its 95 % interval thin and its 90 % interval thick, since the
    test of 0 reads the first and the equivalence test the second; hollow where the look is interim."""
    (low, high), (low90, high90) = c["interval_95"], c["interval_90"]
    ax.plot([low, high], [y, y], color=colour, linewidth=1.2, linestyle="--" if c["interim"] else "-")
    ax.plot([low90, high90], [y, y], color=colour, linewidth=4 if bold else 3, alpha=0.5 if c["interim"] else 1)
    ax.plot(c["difference"], y, "o", color=colour, markersize=8 if bold else 6,
            markerfacecolor="white" if c["interim"] else colour, markeredgewidth=1.5)


def _holm_in_part(c: dict) -> str:
    """An exploratory contrast's Holm p within its part, beside a verdict read at its own 5 %."""
    if c["primary"] or c.get("p_value_holm_in_part") is None or c["verdict"] not in ("better", "worse"):
        return ""  # equivalent and undetermined come from the equivalence test: the test of 0's Holm p would mislead
    return f" at its own 5 % (test of 0, Holm p in its part {p_text(c['p_value_holm_in_part'])})"


def plot_contrasts(study: dict, title: str = "Paired differences, castled test accuracy (a − b)",
                   parts=("primary", "secondary", "diagnostic")):
    """The contrasts of a study's `parts` (lab/study.py) as dots with their paired 95 % intervals, grouped by
    part and coloured by verdict; the ±margin band is where two arms count as equivalent."""
    contrasts = list(reversed([c for c in study["contrasts"] if c["part"] in parts]))
    margin = study["design"]["margin"]
    fig, ax = plt.subplots(figsize=(11, max(4.4, 0.85 * len(contrasts) + 2.2)))  # room for wrapped labels
    ax.axvspan(-margin, margin, color="0.85", alpha=0.6, label=f"±{margin:g} point: the equivalence margin")
    ax.axvline(0, color="black", linewidth=1)
    for row, c in enumerate(contrasts):
        draw_interval(ax, c, row, VERDICT_COLOURS[c["verdict"]], c["primary"])
    for verdict in VERDICT_COLOURS:  # the colour key: one entry for each verdict the plot shows
        if any(c["verdict"] == verdict for c in contrasts):
            ax.plot([], [], "o-", color=VERDICT_COLOURS[verdict], linewidth=3, label=f"verdict: {verdict}")
    labels = ["\n".join(textwrap.wrap(f"{'PRIMARY: ' if c['primary'] else ''}{c['name']} (n={c['n']}): {c['verdict']}"
                                       + (f", interim ({c['interim_why']})" if c["interim"] else "")
                                       + _holm_in_part(c), 40))
              for c in contrasts]
    ax.set_yticks(range(len(contrasts)), labels, fontsize=9)
    ax.set_ylim(-0.7, len(contrasts) - 0.3)  # half a row of room above and below
    holm = sum(c["primary"] for c in contrasts) > 1
    ax.set(xlabel=DIFFERENCE_AXIS + "\n" + intervals_said(contrasts, holm))
    ax.legend(fontsize=9, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, ncol=3)  # above the rows
    ax.set_title(title, pad=48)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _lost_without_branch(curve: dict) -> list:
    """Points of test accuracy lost, at each epoch's end, when α is forced to 0 (None where there is no branch)."""
    return [None if without is None else acc - without
            for acc, without in zip(curve["test_acc"], curve["test_acc_without_branch"])]


CURVES = (  # (what each seed's curve gives per epoch, axis label, panel title)
    (lambda curve: curve["test_acc"], "test accuracy (%)", "a. test accuracy"),
    (lambda curve: curve["train_loss"], "training loss", "b. training loss"),
    (lambda curve: curve["branch_share"], "branch's share, ‖y − y₀‖ / ‖y‖", "c. how much the branch adds, and α"),
    (_lost_without_branch, "points lost with α forced to 0", "d. what forcing α to 0 costs"),
)


def plot_curves(study: dict, dataset: str, arms: list, title: str | None = None):
    """Per-epoch curves of a study's arms, mean over seeds with a band of ±1 sd: when the branch is used,
    when it fades, and what the model loses when α is forced to 0 (accuracy with the branch minus accuracy
    with α = 0, seed by seed). Each arm's α is dotted in its colour on the share panel's right axis; an arm
    without a branch has no share and nothing to force to 0."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.6 * len(CURVES), 4.2))
    twin = axes[2].twinx()
    subset = study["design"]["recipes"].get(dataset, {}).get("epoch_test_images")  # curves on the first images only
    tested_on = f"\n(on the first {subset:,} test images)" if subset else ""
    for colour, arm in zip(("tab:red", "tab:gray", "tab:orange", "tab:blue", "tab:green"), arms):
        curves = study["runs"][dataset][arm]["curves"]
        alpha = curves[0]["alpha_end_of_epoch"]
        for ax, (values_of, label, panel) in zip(axes, CURVES):
            series = [values_of(curve) for curve in curves]
            epochs = [e + 1 for e, v in enumerate(series[0]) if v is not None]
            if values_of is _lost_without_branch and not any(alpha):
                epochs = []  # without a branch, forcing α to 0 changes nothing: no line at 0 to mistake for a result
            ax.set(xlabel="epoch", ylabel=label, title=panel + (tested_on if ax in (axes[0], axes[3]) else ""))
            if not epochs:
                continue
            values = [[seed[e - 1] for seed in series] for e in epochs]
            means = [statistics.mean(v) for v in values]
            spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            ax.plot(epochs, means, marker="o", color=colour, label=f"{arm} ({len(curves)} seed{'s' * (len(curves) > 1)})")
            ax.fill_between(epochs, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)],
                            color=colour, alpha=0.15)
        if any(alpha):  # an arm with a branch: its schedule, dotted
            twin.plot(range(1, len(alpha) + 1), alpha, color=colour, linestyle=":")
    axes[2].set_ylim(bottom=0)  # the share from 0, like α on the right: neither axis flatters the other
    twin.set(ylim=(0, 1.05))
    twin.set_ylabel("α, end of epoch (dotted)", labelpad=2, color="0.35")
    twin.tick_params(axis="y", colors="0.35")  # grey: the right axis is α's, the left the share's
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(arms), fontsize=10,
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.suptitle(f"{title or dataset} (mean over seeds, band ±1 sd)")
    fig.tight_layout(rect=(0, 0.07, 1, 1), w_pad=3.0)
    return fig


def plot_dose_response(study: dict, arms: list, title: str = "Same/different: final accuracy at three noise levels"):
    """Each arm's castled test accuracy at every noise level of the diagnostic task: every seed a dot
    (outcomes here are often all or nothing, which a mean ± interval would hide), each level's mean a bar;
    the levels are not joined, since the references do not order their difficulty; chance (the test split's
    majority class) dashed."""
    levels = sorted((d for d in study["runs"] if d.startswith("same-different")), key=lambda d: float(d.split()[-1]))
    positions = list(range(len(levels)))  # evenly spaced settings, not a numeric axis of doses
    step = 0.06  # arms side by side at a level
    fig, ax = plt.subplots(figsize=(11, 4.8))
    colours = {"softmax twin": TWIN, "castling, kernel form": CASTLING, "branch off, kernel form": "tab:green",
               "linear-angular alone, kernel form": "tab:orange"}
    for i, arm in enumerate(arms):
        shift = (i - (len(arms) - 1) / 2) * step
        present = [(x, study["runs"][d][arm]["accuracies"]) for x, d in zip(positions, levels) if arm in study["runs"][d]]
        colour = colours.get(arm)
        seeds = max(len(a) for _, a in present)
        ax.scatter([x + shift for x, _ in present], [statistics.mean(a) for _, a in present], marker="_", s=300,
                   color=colour, label=f"{arm} (bar: mean of {seeds} seeds; dots: seeds)")
        seeds_x = [x + shift + (k - (len(a) - 1) / 2) * step / 5 for x, a in present for k in range(len(a))]
        ax.scatter(seeds_x, [v for _, a in present for v in a], s=16, color=colour, alpha=0.6)  # seeds side by side
    ax.plot(positions, [study["runs"][d][arms[0]]["chance"] for d in levels], "k--", linewidth=1,
            label="chance: the majority class")
    ax.set(xlabel="setting: pixel noise (standard deviation, images in [0, 1]); positions evenly spaced, levels not",
           ylabel="final test accuracy (%; castled where\nthe arm has a branch)",
           title=title, xticks=positions, xticklabels=[f"noise {d.split()[-1]}" for d in levels])
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


TOKEN_COLOURS = {49: "tab:brown", 196: "tab:cyan"}


def plot_token_table(rows: list, margins: dict, title: str = "Each contrast at 49 and at 196 tokens"):
    """Rows of lab.study.token_table as dots with their paired 95 % intervals, one line per (contrast, tokens), each
    labelled with its verdict and whether it is primary or exploratory in its study, and coloured by the number of
    tokens; each study's ±margin is drawn as a tick on its own lines."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 1.1 * len(names) + 2.4))
    ax.axvline(0, color="black", linewidth=1)
    for y, name in enumerate(reversed(names)):
        for r in [r for r in rows if r["name"] == name]:
            offset = -0.15 if r["tokens"] == 49 else 0.15
            colour = TOKEN_COLOURS[r["tokens"]]
            draw_interval(ax, r, y + offset, colour)
            for edge in (-margins[r["tokens"]], margins[r["tokens"]]):
                ax.plot([edge] * 2, [y + offset - 0.12, y + offset], color=colour, linewidth=1)  # below: the words sit above
            interim = f", interim: {r['interim_why']}" if r["interim"] else ""
            kind = "primary" if r["part"] == "primary" else "exploratory"
            left = r["interval_95"][1] < 0  # beside the end away from 0, so the zero line crosses no word
            ax.annotate("\n".join(textwrap.wrap(f"{r['verdict']} ({kind}, n={r['n']}{interim})", 34)),
                        (r["interval_95"][0 if left else 1], y + offset), xytext=(-6 if left else 6, 3),
                        textcoords="offset points", fontsize=9, color=colour, va="bottom",
                        ha="right" if left else "left", bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    low = min([r["interval_95"][0] for r in rows] + [-m for m in margins.values()])
    high = max([r["interval_95"][1] for r in rows] + list(margins.values()))
    ax.set_xlim(low - 0.3 * (high - low), high + 0.45 * (high - low))  # room for the verdicts on either side
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_yticks(range(len(names)), ["\n".join(textwrap.wrap(name, 20)) for name in reversed(names)], fontsize=10)
    for tokens, colour in TOKEN_COLOURS.items():
        ax.plot([], [], "o-", color=colour, label=f"{tokens} tokens (ticks: that study's ±{margins[tokens]:g} margin)")
    ax.set(xlabel=DIFFERENCE_AXIS + "\n" + intervals_said(rows, holm=True))
    ax.set_title(title, pad=28)
    ax.legend(fontsize=9, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, ncol=2)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_epoch_means(series: dict, ylabel: str, title: str, log: bool = False):
    """Per-epoch means over seeds of several (study, arm) series {label: [per-epoch values]}, one line each."""
    fig, ax = plt.subplots(figsize=(8, 5.0))
    for label, values in series.items():
        epochs = [e + 1 for e, v in enumerate(values) if v is not None]
        colour = TOKEN_COLOURS[49] if label.startswith("49") else TOKEN_COLOURS[196]
        ax.plot(epochs, [v for v in values if v is not None], marker="o", label=label, color=colour,
                linestyle="-" if "kernel" in label else "--")
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log" if log else "linear")
    if log:  # plain numbers on the ticks, 0.03 rather than 3×10⁻²
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 3, 5)))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_title(title, pad=10)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
