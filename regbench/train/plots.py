"""Learning-curve figures, drawn the same way for the report and for a train stage's MLflow run.

Matplotlib's non-interactive Agg backend, imported on first use (never at import).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from regbench.io import atomic_path

PANELS = {(0, 0): "loss", (0, 1): "val_loss", (1, 0): "accuracy", (1, 1): "val_accuracy"}
# Line style and markers (at staggered epochs, line_style) tell lines apart where their curves coincide
# (circles: overfit and maxnorm end on the same curve).
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
METRIC_LABEL = {
    "loss": "training loss",
    "accuracy": "training accuracy",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "train_eval_accuracy": "train accuracy (inference mode)",
    "train_eval_loss": "train loss (inference mode)",
    "test_accuracy": "test accuracy",
    "test_loss": "test loss",
}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def thin(length: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` evenly spaced indices of a series (long curves: circles has 4000 epochs)."""
    if length <= max_points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, max_points).round().astype(int))


def line_style(index: int, lines: int, points: int) -> dict:
    """Colour, dash pattern and markers of line ``index`` of ``lines`` drawn over ``points`` points.

    Markers go at staggered points, each line's shifted from the others' (about 8 per line, fewer when
    there are more lines than points between two markers: imdb's 10 variants over 20 epochs get 2), so
    lines whose curves coincide stay told apart: circles' overfit and maxnorm, imdb's SGD weight decay
    and L2 pair.
    """
    every = max(1, points // 8, min(lines, points // 2))
    return {
        "color": pyplot().get_cmap("tab10")(index % 10),
        "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
        "marker": MARKERS[index % len(MARKERS)],
        "markersize": 4,
        "markevery": ((index * every) // max(1, lines), every),
    }


def save(figure, path: Path) -> None:
    plt = pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)


def plot_learning_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]], path: Path, title: str, max_points: int, legend: str
) -> None:
    """Four panels (training/validation loss and accuracy), one colour per line of ``curves``.

    ``curves[line][metric]`` is a (repeats, epochs) array (records.repeat_curves): the mean over
    repeats is drawn, with a min-max band.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    for (row, column), metric in PANELS.items():
        axis = axes[row][column]
        spans = []
        for index, (line, by_metric) in enumerate(curves.items()):
            repeats = by_metric[metric]
            if repeats.size == 0:
                continue
            keep = thin(repeats.shape[1], max_points)
            epochs = keep + 1
            style = line_style(index, len(curves), len(keep))
            axis.plot(epochs, repeats.mean(axis=0)[keep], linewidth=1.4, label=line, **style)
            axis.fill_between(
                epochs, repeats.min(axis=0)[keep], repeats.max(axis=0)[keep], color=style["color"], alpha=0.15
            )
            spans.append(repeats)
        if metric.endswith("loss") and spans:
            low = min(float(c.min()) for c in spans)
            high = max(float(c.max()) for c in spans)
            if low > 0 and high / low > 100:
                axis.set_yscale("log")
        axis.set_title(METRIC_LABEL[metric])
        axis.set_ylabel("binary/categorical cross-entropy" if metric.endswith("loss") else "accuracy (fraction)")
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if row == 1:
            axis.set_xlabel("epoch")
    axes[0][0].legend(loc="best", fontsize=8, title=f"{legend} (mean, band = min-max over repeats)", title_fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    save(figure, path)


def plot_side_by_side(
    panels: Mapping[str, Mapping[str, np.ndarray]], path: Path, title: str, ylabel: str, max_points: int
) -> None:
    """One panel per entry of ``panels``, side by side on a shared y axis; ``panels[panel][line]`` is a
    (repeats, epochs) array whose mean over repeats is drawn, with a min-max band (as plot_learning_curves)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True, squeeze=False)
    for axis, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for index, (line, repeats) in enumerate(lines.items()):
            if repeats.size == 0:
                continue
            keep = thin(repeats.shape[1], max_points)
            style = line_style(index, len(lines), len(keep))
            axis.plot(keep + 1, repeats.mean(axis=0)[keep], label=line, **style)
            axis.fill_between(
                keep + 1, repeats.min(axis=0)[keep], repeats.max(axis=0)[keep], color=style["color"], alpha=0.15
            )
        axis.set_title(panel)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(loc="best", fontsize=8, title="mean, band = min-max over repeats", title_fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    figure.suptitle(title)
    figure.tight_layout()
    save(figure, path)
