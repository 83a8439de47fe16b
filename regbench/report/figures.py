"""The report's figures (PNG, matplotlib's Agg backend): learning curves, published against measured, grids,
and weight decay against L2. Each function draws one file and says whether it had anything to draw."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from regbench.data.experiments import registry
from regbench.report.load import ExperimentResults, interval
from regbench.train import records
from regbench.train.plots import METRIC_LABEL, plot_learning_curves, plot_side_by_side
from regbench.train.plots import pyplot as _pyplot
from regbench.train.plots import save as _save


def file_name(*parts: str) -> str:
    """A figure's file name from experiment and variant names: letters, digits, '_' and '-' only, so a
    name from params.yaml can never point outside reports/figures."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", "_".join(parts)) + ".png"


def curves(results: ExperimentResults, path: Path, max_points: int) -> bool:
    """Mean over repeats with a min-max band, one colour per variant; grid members are plotted separately."""
    variants = results.single()
    if not variants:
        return False
    data = {
        v: {metric: results.repeat_curves(v, results.members(v)[0], metric) for metric in records.CURVE_METRICS}
        for v in variants
    }
    validation = registry()[results.name].validation_is
    plot_learning_curves(
        data, path, f"{results.name}: learning curves (validation = {validation})", max_points, "variant"
    )
    return True


def published_vs_measured(
    results: ExperimentResults, published: Mapping[str, Mapping[str, float]], confidence: float, path: Path
) -> bool:
    """The headline metric per variant: measured mean with its interval, the published figure as a cross."""
    variants = results.single()
    if not variants:
        return False
    plt = _pyplot()
    metric = registry()[results.name].headline_metric
    figure, axis = plt.subplots(figsize=(max(5, 1.3 * len(variants) + 2), 4))
    for index, variant in enumerate(variants):
        mean, low, high = interval(results.repeat_finals(variant, variant, metric), confidence)
        axis.errorbar([index], [mean], yerr=[[mean - low], [high - mean]], fmt="o", color="tab:blue", capsize=4)
        if metric in published.get(variant, {}):
            axis.plot([index], [published[variant][metric]], "x", color="tab:red", markersize=10, mew=2)
    axis.plot([], [], "o", color="tab:blue", label=f"measured (mean, {confidence:.0%} interval)")
    axis.plot([], [], "x", color="tab:red", label="published")
    axis.set_xticks(range(len(variants)), variants, rotation=20)
    axis.set_ylabel(METRIC_LABEL.get(metric, metric) + " at the last epoch")
    axis.set_title(f"{results.name}: published vs measured")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return True


def grid(results: ExperimentResults, variant: str, confidence: float, path: Path) -> bool:
    """A grid variant: final test and train accuracy against the grid value, with intervals."""
    plt = _pyplot()
    key = results.variants[variant].grid_key
    values_of = {member.label: member.grid[key] for member in results.variants[variant].members}
    members = [m for m in results.members(variant) if m in values_of]
    if not members:
        return False
    figure, axis = plt.subplots(figsize=(7, 4))
    for metric, colour in (("val_accuracy", "tab:blue"), ("train_eval_accuracy", "tab:orange")):
        points = [interval(results.repeat_finals(variant, m, metric), confidence) for m in members]
        means = np.asarray([p[0] for p in points])
        errors = np.asarray([[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]])
        label = {"val_accuracy": "test accuracy", "train_eval_accuracy": "train accuracy"}[metric]
        axis.errorbar(
            [values_of[m] for m in members], means, yerr=errors, fmt="o-", color=colour, capsize=3, label=label
        )
    axis.set_xlabel(key.replace("_", " ") + " rate")
    axis.set_ylabel("accuracy at the last epoch (fraction)")
    axis.set_title(f"{results.name}: accuracy against {key.replace('_', ' ')} rate (mean, {confidence:.0%} interval)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    _save(figure, path)
    return True


def weight_decay(panels: Mapping[str, Mapping[str, np.ndarray]], experiment: str, path: Path, max_points: int) -> None:
    """Same-seed validation loss without the penalty, weight decay against L2, one panel per optimizer."""
    plot_side_by_side(
        panels,
        path,
        f"{experiment}: decoupled weight decay vs L2, validation loss without the penalty term",
        "validation cross-entropy (penalty excluded)",
        max_points,
    )
