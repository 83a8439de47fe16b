"""The comparison report: claims with verdicts, learning curves, published vs measured, provenance.

``build(params, evaluation, results_dir, out_dir)`` writes ``report.md``,
``index.html`` (one self-contained file: styles inline, figures embedded) and
``figures/*.png``. Plots use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from regbench.claims import stats
from regbench.claims.judge import NOT_RUN, Measure, look_levels, per_repeat, run_name
from regbench.config import Params
from regbench.data.experiments import registry
from regbench.io import atomic_path, read_json
from regbench.train import records
from regbench.train.plots import METRIC_LABEL, plot_learning_curves, plot_side_by_side
from regbench.train.plots import pyplot as _pyplot
from regbench.train.plots import save as _save
from regbench.train.records import Run, load_runs
from regbench.train.tracking import mlflow_ui_command

# Verdicts as words in a styled badge: icon glyphs render as empty boxes without an emoji font.
VERDICTS = ("reproduced", "refuted", "inconclusive", NOT_RUN)
# The seed tutorials, relative to reports/ (report.md and index.html): the repository's parent
# holds shared/ (README: "../shared/experiments.md"), as in a clone with shared/ beside it.
SEEDS_LINK = "../../shared/seeds/"
# `mlflow ui` serves here by default; with a local store (sqlite, file) the report links to it.
MLFLOW_UI_DEFAULT = "http://127.0.0.1:5000"
# A variant "did not learn" when its mean final validation accuracy and its inference-mode train
# accuracy are both within this margin (fraction) of the majority-class rate of their labels:
# it is as good as always answering the most frequent class.
NOT_LEARNED_MARGIN = 0.02


# --- data ----------------------------------------------------------------------


class ExperimentResults:
    """The train results of one experiment: runs and manifest per variant (those that were trained)."""

    def __init__(self, params: Params, name: str, results_dir: Path):
        self.name = name
        self.variants = params.experiments[name].variants
        self.runs: dict[str, list[Run]] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        for variant in params.experiments[name].variants:
            directory = results_dir / str(run_name(params, name, variant))
            if (directory / "runs.json").exists() and (directory / "manifest.json").exists():
                self.runs[variant] = load_runs(directory)
                self.manifests[variant] = read_json(directory / "manifest.json")

    def members(self, variant: str) -> list[str]:
        return list(dict.fromkeys(run.member for run in self.runs[variant]))

    def repeat_curves(self, variant: str, member: str, metric: str) -> np.ndarray:
        """(repeats, epochs): each repeat's curve, averaged over its folds."""
        return records.repeat_curves(self.runs[variant], member, metric)

    def repeat_finals(self, variant: str, member: str, metric: str) -> np.ndarray:
        """Each repeat's final value of ``metric``, as the claims stage computes it (folds averaged,
        repeats with a diverged run left out)."""
        values = per_repeat(self.runs[variant], Measure(kind="final", metric=metric), member)
        return np.asarray([value for _, value in sorted(values.items())])

    def did_not_learn(self, variant: str) -> str | None:
        """Why ``variant`` counts as not having learned (see NOT_LEARNED_MARGIN), or None."""
        balance = self.manifests[variant]["data_manifest"].get("class_balance") or {}
        # Validation labels: the test split, or for CV the training labels the held-out folds come from.
        validation = balance.get("y_test") or balance.get("y_train")
        training = balance.get("y_train")
        if not validation or not training or len(self.members(variant)) != 1:
            return None
        chance = {
            name: max(counts.values()) / sum(counts.values())
            for name, counts in (("validation", validation), ("train", training))
        }
        measured = {
            "validation": self.repeat_finals(variant, variant, "val_accuracy"),
            "train": self.repeat_finals(variant, variant, "train_eval_accuracy"),
        }
        if any(len(values) == 0 for values in measured.values()):
            return None
        means = {name: float(values.mean()) for name, values in measured.items()}
        if all(means[name] <= chance[name] + NOT_LEARNED_MARGIN for name in means):
            return (
                f"validation accuracy {_fmt(means['validation'])} against a majority-class rate of "
                f"{_fmt(chance['validation'])}, train accuracy (inference mode) {_fmt(means['train'])} against "
                f"{_fmt(chance['train'])}: no better than always answering the most frequent class"
            )
        return None


def interval(values: np.ndarray, params: Params, key: str) -> tuple[float, float, float]:
    """Mean and the Student t interval over repeats (the claims stage's method; ``key`` kept for callers)."""
    if len(values) < 2:
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, float("nan"), float("nan")
    low, high = stats.t_interval(values, params.claims.confidence)
    return float(values.mean()), float(low[0]), float(high[0])


# --- figures -----------------------------------------------------------------------


def plot_curves(results: ExperimentResults, path: Path, max_points: int) -> bool:
    """Mean over repeats with a min-max band, one colour per variant; grid members are plotted separately."""
    variants = [v for v in results.runs if len(results.members(v)) == 1]
    if not variants:
        return False
    curves = {
        v: {metric: results.repeat_curves(v, results.members(v)[0], metric) for metric in records.CURVE_METRICS}
        for v in variants
    }
    validation = registry()[results.name].validation_is
    title = f"{results.name}: learning curves (validation = {validation})"
    plot_learning_curves(curves, path, title, max_points, "variant")
    return True


def plot_published_vs_measured(
    results: ExperimentResults, published: Mapping[str, Mapping[str, float]], params: Params, path: Path
) -> bool:
    """The headline metric per variant: measured mean with its interval, the published figure as a cross."""
    plt = _pyplot()
    metric = registry()[results.name].headline_metric
    variants = [v for v in results.runs if len(results.members(v)) == 1]
    if not variants:
        return False
    figure, axis = plt.subplots(figsize=(max(5, 1.3 * len(variants) + 2), 4))
    for index, variant in enumerate(variants):
        mean, low, high = interval(
            results.repeat_finals(variant, variant, metric), params, f"{results.name}.{variant}.{metric}"
        )
        axis.errorbar([index], [mean], yerr=[[mean - low], [high - mean]], fmt="o", color="tab:blue", capsize=4)
        if metric in published.get(variant, {}):
            axis.plot([index], [published[variant][metric]], "x", color="tab:red", markersize=10, mew=2)
    axis.plot([], [], "o", color="tab:blue", label=f"measured (mean, {params.claims.confidence:.0%} interval)")
    axis.plot([], [], "x", color="tab:red", label="published")
    axis.set_xticks(range(len(variants)), variants, rotation=20)
    axis.set_ylabel(METRIC_LABEL.get(metric, metric) + " at the last epoch")
    axis.set_title(f"{results.name}: published vs measured")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return True


def plot_grid(results: ExperimentResults, variant: str, params: Params, path: Path) -> bool:
    """A grid variant: final test and train accuracy against the grid value, with intervals."""
    plt = _pyplot()
    key = results.variants[variant].grid_key
    grid = {member.label: member.grid[key] for member in results.variants[variant].members}
    members = [m for m in results.members(variant) if m in grid]
    values = [grid[m] for m in members]
    figure, axis = plt.subplots(figsize=(7, 4))
    for metric, colour in (("val_accuracy", "tab:blue"), ("train_eval_accuracy", "tab:orange")):
        points = [
            interval(results.repeat_finals(variant, m, metric), params, f"{results.name}.{m}.{metric}") for m in members
        ]
        means = np.asarray([p[0] for p in points])
        errors = np.asarray([[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]])
        label = {"val_accuracy": "test accuracy", "train_eval_accuracy": "train accuracy"}[metric]
        axis.errorbar(values, means, yerr=errors, fmt="o-", color=colour, capsize=3, label=label)
    axis.set_xlabel(key.replace("_", " ") + " rate")
    axis.set_ylabel("accuracy at the last epoch (fraction)")
    axis.set_title(
        f"{results.name}: accuracy against {key.replace('_', ' ')} rate (mean, {params.claims.confidence:.0%} interval)"
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    _save(figure, path)
    return True


# --- weight decay and L2 -------------------------------------------------------------

# Same-seed curves "first differ" at the first epoch they are this far apart (validation cross-entropy):
# float rounding alone keeps two exactly-equivalent runs orders of magnitude closer at first.
SAME_SEED_TOLERANCE = 1e-4
DATA_LOSS = Measure(kind="curve", metric="val_loss", minus="reg_loss")


def weight_decay_pairs(params: Params, experiment: str, evaluation: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(claim id, weight-decay variant, L2 variant) of each sameness claim of ``experiment`` that compares
    decoupled weight decay with an L2 penalty (told apart by their settings, not by names)."""
    variants = params.experiments[experiment].variants
    pairs = []
    for claim_id, entry in evaluation["claims"].items():
        test = entry["test"]
        if entry["experiment"] != experiment or test["kind"] != "equivalent":
            continue
        if test["variant"] not in variants or test["versus"] not in variants:
            continue
        decayed, penalized = (variants[test[key]].members[0].params for key in ("variant", "versus"))
        if decayed.optimizer.weight_decay > 0 and decayed.l2 == 0 and penalized.l2 > 0:
            pairs.append((claim_id, test["variant"], test["versus"]))
    return pairs


def weight_decay_section(
    results: ExperimentResults, params: Params, evaluation: Mapping[str, Any], figures_dir: Path
) -> tuple[list[str], list[str]]:
    """The identity claims in words, the curves side by side, and where same-seed curves part."""
    pairs = weight_decay_pairs(params, results.name, evaluation)
    if not pairs:
        return [], []
    lines = [
        "### Weight decay and L2: one identity, two optimizers",
        "",
        "An L2 penalty λ·Σw² on the hidden kernels adds 2λ·w to each kernel weight's gradient g. Keras' decoupled "
        "weight decay (the optimizers' `weight_decay` d) leaves the gradient alone and shrinks the same weights "
        "directly before each step, w ← w − η·d·w, from the same weights the gradient was taken at (η: the learning "
        "rate). Under **plain SGD** the L2 step is w ← w − η·(g + 2λ·w) = w − η·g − η·2λ·w: with d = 2λ (the factor "
        "2 is the derivative of the square; the learning rate multiplies both) the two updates are the same in "
        "exact arithmetic, step after step, so from the same initial weights and batches the weights are the same "
        "at every epoch. Under **RMSprop** the step is w ← w − η·(g + 2λ·w) / (√v + ε), v being the running mean of "
        "that weight's squared gradient: the optimizer rescales the penalty's gradient per weight, so a weight "
        "with small gradients (a rare word's first-layer weight) is pulled towards zero far harder than η·2λ·w, "
        "while the decoupled decay shrinks every weight by the same η·d. The identity the tutorial states holds "
        "for SGD, not for the optimizer it trains with. (Momentum breaks it too: the penalty's gradient "
        "accumulates in the velocity, the decoupled decay does not.)",
        "",
        "Compared on what both report alike: the validation loss without the penalty term (the L2 model's "
        "reported loss includes λ·Σw²; the weight-decay model has no penalty). In exact arithmetic the SGD pair "
        "is identical; in float arithmetic rounding differences (about 1e-7 of a weight) are amplified by "
        "training, so same-seed curves can part after some epochs. That parting is shown below, but the claim is "
        "judged over seeds, paired by seed, with a stated margin.",
        "",
    ]
    panels: dict[str, dict[str, np.ndarray]] = {}
    for claim_id, decayed, penalized in pairs:
        entry = evaluation["claims"][claim_id]
        settings = {v: results.variants[v].members[0].params for v in (decayed, penalized)}
        optimizer = settings[decayed].optimizer
        lines.append(
            f"- [`{claim_id}`](#{_anchor(claim_id)}) ({badge(entry['verdict'])}): `{decayed}` "
            f"({optimizer.name}, learning rate {_fmt(optimizer.learning_rate)}, weight_decay "
            f"{_fmt(optimizer.weight_decay)}) against `{penalized}` ({settings[penalized].optimizer.name}, L2 "
            f"{_fmt(settings[penalized].l2)}; 2λ = {_fmt(2 * settings[penalized].l2)}); measured "
            f"{_measured(entry)} against the margin ±{_fmt(entry['test']['margin'])}."
        )
        if decayed not in results.runs or penalized not in results.runs:
            continue
        curves = {v: per_repeat(results.runs[v], DATA_LOSS, v) for v in (decayed, penalized)}
        shared = sorted(set(curves[decayed]) & set(curves[penalized]))
        parted = []
        for repeat in shared:
            a, b = curves[decayed][repeat], curves[penalized][repeat]
            gap = np.abs(a[: len(b)] - b[: len(a)])
            beyond = np.flatnonzero(gap > SAME_SEED_TOLERANCE)
            first = f"epoch {beyond[0] + 1}" if len(beyond) else "never"
            parted.append(f"repeat {repeat}: {first} (largest {_fmt(float(gap.max()))})")
        if parted:
            lines.append(
                f"  Same-seed curves first differ by more than {SAME_SEED_TOLERANCE:g}: " + "; ".join(parted) + "."
            )
        length = min(len(c) for v in curves for c in curves[v].values()) if shared else 0
        panels[f"{optimizer.name}: {decayed} vs {penalized}"] = {
            v: np.asarray([curves[v][r][:length] for r in shared]) for v in (decayed, penalized)
        }
    lines.append("")
    if not panels:
        return lines, []
    path = figures_dir / f"{results.name}_weight_decay_vs_l2.png"
    plot_side_by_side(
        panels,
        path,
        f"{results.name}: decoupled weight decay vs L2, validation loss without the penalty term",
        "validation cross-entropy (penalty excluded)",
        params.report.max_curve_points,
    )
    return [*lines, f"![{results.name} weight decay vs L2](figures/{path.name})", ""], [path.name]


# --- text ----------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
        )
    return str(value)


def _measured(entry: Mapping[str, Any]) -> str:
    return f"{_fmt(entry['mean'])} {_interval_text(entry)}" if "mean" in entry else "–"


def _interval_text(entry: Mapping[str, Any]) -> str:
    """[low, high]; a claim judged at sequential looks adds its look's level (1 - 2 alpha_k, above 95 %)."""
    level = f" at {entry['confidence']:.1%}" if "confidence" in entry else ""
    return f"[{_fmt(entry['ci_low'])}, {_fmt(entry['ci_high'])}]{level}"


def _side(test: Mapping[str, Any], role: str) -> str:
    """A variant as a claim names it: a grid member with its grid setting."""
    at = test.get(f"{role}_at")
    name = test[role]
    return name if not at else name + "[" + ", ".join(f"{k}={_fmt(float(v))}" for k, v in at.items()) + "]"


def _describe_test(entry: Mapping[str, Any]) -> str:
    test, measure = entry["test"], entry["measure"]
    what = measure["kind"].replace("_", " ") + " of " + measure["metric"]
    if "minus" in measure:
        when = "epoch by epoch" if measure["kind"] == "curve" else "at the last epoch"
        what = f"{measure['metric']} − {measure['minus']} {when}"
    side = ">" if test.get("direction") == "greater" else "<"
    if test["kind"] == "paired":
        every = " at every epoch (worst epoch per repeat)" if measure["kind"] == "curve" else ""
        line = _fmt(test.get("line", 0.0))
        return (
            f"{what}: {_side(test, 'variant')} − {_side(test, 'versus')}{every}, paired by seed; "
            f"claim: difference {side} {line}"
        )
    if test["kind"] == "interaction":
        return (
            f"{what}: ({test['variant']} − {test['versus']}) − ({test['base']} − {test['base_versus']}), a "
            f"difference of paired differences seed by seed; claim: {side} {_fmt(test.get('line', 0.0))}"
        )
    if test["kind"] == "equivalent":
        every = " (per repeat: the largest absolute difference over the epochs)" if measure["kind"] == "curve" else ""
        return (
            f"{what}: {_side(test, 'variant')} − {_side(test, 'versus')}, paired by seed{every}; claim: the same "
            f"within ±{_fmt(test['margin'])} (equivalence, TOST)"
        )
    if test["kind"] == "single":
        return f"{what} of {test['variant']}; claim: {side} {_fmt(test['line'])}"
    band = f"within ±{_fmt(test['tolerance'])} of the published {_fmt(entry['published_value'])}"
    return f"{what} of {test['variant']}; claim: {band}"


def badge(verdict: str) -> str:
    """The verdict as a word in a coloured box (plain text where HTML is not rendered)."""
    return f'<span class="verdict verdict-{re.sub(r"[^a-z]+", "-", verdict)}">{html.escape(verdict)}</span>'


def summary_table(evaluation: Mapping[str, Any]) -> list[str]:
    # `published` is the published figure as the claim's measure, in the measured column's unit
    # (fractions, differences, epochs); the figure as printed in the tutorial is in each claim's section.
    nominal = f"{1 - 2 * evaluation['summary']['alpha_one_sided']:.0%}"
    lines = [
        f"| claim | verdict | published (as measured) | measured mean [t interval, {nominal} unless stated] | repeats |"
        " p (one-sided) | p (Holm) | effect size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim_id, entry in evaluation["claims"].items():
        p = _fmt(entry["p_value"], 3) if "p_value" in entry else "–"
        p_holm = _fmt(entry["p_holm"], 3) if "p_holm" in entry else "–"
        if "p_equivalence" in entry:
            kind = "sameness claim" if entry["test"]["kind"] == "equivalent" else "level claim"
            p, p_holm = f"{_fmt(entry['p_equivalence'], 3)} (TOST)", kind
        published = _fmt(entry.get("published_value"))
        lines.append(
            f"| [`{claim_id}`](#{_anchor(claim_id)}) | {_verdict_text(entry)} | {published} | "
            f"{_measured(entry)} | {entry.get('repeats', 0)} | {p} | {p_holm} | {_effect_text(entry)} |"
        )
    return lines


def _verdict_text(entry: Mapping[str, Any]) -> str:
    """The verdict, and for an inconclusive one how far it is from a decision."""
    text = badge(entry["verdict"])
    if entry["verdict"] == "inconclusive" and "repeats" in entry:
        needed = entry.get("repeats_needed")
        more = f"; about {needed} needed" if needed else "; no number of repeats would decide at the observed effect"
        last_look = (entry.get("sequential") or {}).get("looks", [None])[-1]
        if needed and last_look is not None and needed > last_look:
            more += f" (more than decide.max_repeats = {last_look})"
        text += f" at {entry['repeats']} repeats{more if 'repeats_needed' in entry else ''}"
    return text


def _effect_text(entry: Mapping[str, Any]) -> str:
    if "improvement" not in entry:
        return "–"
    share = entry["improvement"]
    d_z = f"d_z {_fmt(entry['cohens_dz'], 2)}; " if entry.get("cohens_dz") is not None else ""
    return f"{d_z}{share['count']}/{entry['repeats']} repeats on the claimed side"


def _anchor(claim_id: str) -> str:
    return "claim-" + re.sub(r"[^a-z0-9]+", "-", claim_id.lower())


def claim_section(claim_id: str, entry: Mapping[str, Any]) -> list[str]:
    lines = [
        f'<a id="{_anchor(claim_id)}"></a>',
        f"#### `{claim_id}`: {badge(entry['verdict'])}",
        "",
        f"> {entry['statement']}",
        "",
        f"- Source: [`seeds/{entry['source']}`]({SEEDS_LINK}{entry['source']}); published: {entry['published']}"
        + (f" (as a number: {_fmt(entry['published_value'])})" if entry.get("published_value") is not None else ""),
        f"- Test: {_describe_test(entry)}",
    ]
    if "mean" in entry:
        lines.append(
            f"- Measured: {_measured(entry)} over {entry['repeats']} repeats; per repeat: "
            + ", ".join(_fmt(v) for v in entry["values"])
        )
        means = ", ".join(f"{variant} {_fmt(value)}" for variant, value in entry["variant_means"].items())
        lines.append(f"- Mean per variant: {means}")
    if "diverged_runs" in entry:
        left_out = "; ".join(f"{variant}: {_left_out(seeds)}" for variant, seeds in entry["diverged_runs"].items())
        rests_on = ", ".join(map(str, entry.get("repeat_ids", []))) or "none"
        lines.append(
            f"- Rests on seeds {rests_on} only; left out because a run of theirs diverged: {left_out}. "
            f"Diverged means {records.DIVERGENCE_RULE}."
        )
    if "distance_to_published" in entry:
        inside = "inside" if entry["published_in_interval"] else "outside"
        low, high = entry["band"]
        lines.append(
            f"- The published figure lies {inside} the interval; measured minus published = "
            f"{_fmt(entry['distance_to_published'])}. Equivalence with the band [{_fmt(low)}, {_fmt(high)}] "
            f"({entry['method']}, two one-sided tests at {_fmt(entry['alpha_one_sided'])} each): "
            f"p = {_fmt(entry['p_equivalence'], 3)}; p that the mean lies outside it = {_fmt(entry['p_outside'], 3)}."
        )
    if "margin" in entry:
        lines.append(
            f"- Sameness within ±{_fmt(entry['margin'])} ({entry['method']}, two one-sided tests at "
            f"{_fmt(entry['alpha_one_sided'])} each): p = {_fmt(entry['p_equivalence'], 3)}; p that the difference "
            f"lies outside the margin = {_fmt(entry['p_outside'], 3)}."
        )
    if "p_value" in entry:
        lines += _directional_lines(entry)
    if "decided_by" in entry:
        lines.append(f"- Decided by: {entry['decided_by']}" + _needed_text(entry))
    if "bca_interval" in entry:
        low, high = entry["bca_interval"]
        lines.append(f"- BCa bootstrap interval (for comparison): [{_fmt(low)}, {_fmt(high)}]")
    if entry.get("reason"):
        lines.append(f"- Note: {entry['reason']}")
    return [*lines, ""]


def _directional_lines(entry: Mapping[str, Any]) -> list[str]:
    side = "above" if entry["test"]["direction"] == "greater" else "below"
    floor = entry["sign_flip_floor"]
    lines = [
        f"- {entry['method']}: one-sided p = {_fmt(entry['p_value'], 3)} that the mean lies {side} "
        f"{_fmt(entry['line'])} (decides at {_fmt(entry['alpha_one_sided'])}), "
        + (
            f"over its looks (sequential p, the smallest p_k × alpha / alpha_k) {_fmt(entry['p_sequential'], 3)}, "
            if "p_sequential" in entry
            else ""
        )
        + f"Holm-adjusted over the directional claims {_fmt(entry['p_holm'], 3)}; exact sign-flip p = "
        f"{_fmt(entry['p_sign_flip'], 3)} (its smallest possible value at {entry['repeats']} repeats: "
        f"{_fmt(floor, 3)})",
    ]
    improvement = entry["improvement"]
    d_z = (
        f"Cohen's d_z towards the claim = {_fmt(entry['cohens_dz'], 3)}; " if entry.get("cohens_dz") is not None else ""
    )
    lines.append(
        f"- Effect beyond the line {_fmt(entry['line'])}: {_fmt(entry['effect_beyond_line'])} "
        f"(its interval is the measured one, shifted by the line); {d_z}{improvement['count']} of "
        f"{entry['repeats']} repeats on the "
        f"claimed side ({improvement['share']:.0%}, Clopper-Pearson {_fmt(improvement['low'], 2)}–"
        f"{_fmt(improvement['high'], 2)})"
    )
    smallest = entry["smallest_effect"]
    if entry["verdict"] == "refuted" and smallest > 0:
        lines.append(
            f"- No effect of the published size: at most {_fmt(entry['effect_at_most'])} beyond the line, below "
            f"the smallest effect of interest {_fmt(smallest)}"
        )
    elif entry.get("below_smallest_effect"):
        lines.append(
            f"- The effect is real but smaller than the smallest effect of interest {_fmt(smallest)}: "
            f"at most {_fmt(entry['effect_at_most'])}"
        )
    else:
        lines.append(f"- Smallest effect of interest: {_fmt(smallest)} beyond the line")
    if entry.get("mde") is not None:
        lines.append(
            f"- These {entry['repeats']} repeats detect an effect of {_fmt(entry['mde'])} "
            f"(d_z {_fmt(entry['mde_standardized'], 2)}) with {entry['power']:.0%} power (noncentral t)"
        )
    return lines


def _needed_text(entry: Mapping[str, Any]) -> str:
    if entry["verdict"] != "inconclusive" or "repeats_needed" not in entry:
        return ""
    if entry["repeats_needed"] is None:
        return "; no number of repeats would decide at the observed effect"
    return f"; about {entry['repeats_needed']} repeats would decide it at the observed mean and spread (estimate)"


def how_to_read(evaluation: Mapping[str, Any], params: Params) -> list[str]:
    """The methods, their assumptions and the simulated error rates at the repeats in use."""
    settings = params.claims
    alpha = stats.one_sided_alpha(settings.confidence)
    summary = evaluation["summary"]
    lines = [
        "## How to read the verdicts",
        "",
        f"- **Interval and p-value.** Each claim's per-repeat values (paired differences, repeat by repeat, for "
        f"a comparison of two variants) get a Student t {settings.confidence:.0%} interval of their mean and the "
        f"one-sided t p-value towards the claimed side. They are one test: the interval lies beyond the line "
        f"exactly when that p is below {_fmt(alpha)} = (1 − {settings.confidence:g}) / 2. The t test assumes the "
        "mean over repeats is roughly normal: true for symmetric values, even heavy-tailed or on a coarse "
        "accuracy grid, and for paired differences of variants that do not differ (symmetric by exchangeability).",
        *_sequential_lines(params, alpha),
        "- **Reproduced** when the interval lies beyond the line on the claimed side. **Refuted** when it lies "
        "below the line plus the claim's smallest effect of interest (declared in `claims.yaml`; by default half "
        "the published effect): then the published effect is excluded ('no effect of the published size: at most "
        "X'), and an interval on the wrong side of the line is refuted too. **Inconclusive** otherwise; the table "
        "says about how many repeats would decide it at the observed mean and spread (noncentral t power "
        f"{settings.power:.0%}; an estimate, as noisy as the spread it is computed from).",
        f"- **Level claims** ('about 0.85') are equivalence tests: two one-sided t tests against the published "
        f"value ± tolerance, each at {_fmt(alpha)}; reproduced when the {settings.confidence:.0%} interval lies "
        "inside the band, refuted when it lies wholly outside.",
        f"- **Sameness claims** ('minimal effect', 'identical') are equivalence tests of a paired difference: "
        f"two one-sided t tests against ± the claim's margin (declared in `claims.yaml`), each at {_fmt(alpha)}; "
        "reproduced when the interval lies inside ±margin, refuted when it lies wholly outside, inconclusive when "
        "it straddles an edge. For a curve, each repeat contributes its largest absolute per-epoch difference. A "
        "true difference on the margin's edge is called 'the same' at most at the nominal rate (simulated in "
        "tests/test_stats.py); they are not in Holm's family, which is for directional claims.",
        "- **Interaction claims** ('dropout helps a larger network more') judge a difference of paired "
        "differences, (A − B) − (C − D), seed by seed, with the same t interval as a paired claim: what each seed "
        "shares across the four variants cancels.",
        "- **Distribution-free companion.** The exact sign-flip permutation test (every one of the 2^n sign "
        "patterns) is shown beside each t p-value. It cannot go below 1/2^n (1/32 at 5 repeats), so on its own "
        f"it could never decide at {_fmt(alpha)} with 5 repeats. It decides instead of t only when every repeat "
        "gives the same value (the t statistic is then undefined).",
        f"- **BCa bootstrap** intervals are shown, for comparison only, from {settings.bca_min_repeats} repeats on: "
        "at a handful of repeats they cover far less than nominal (simulated, `bench/bca_coverage.md`: 85 % at 5 "
        "repeats, 90 % at 10, 91 % at 20 for normal values and a nominal 95 %; the t interval 93-96 %).",
        "- **Effect sizes**: the mean difference with its interval, Cohen's d_z (mean beyond the line / standard "
        "deviation of the per-repeat values, positive on the claimed side) and the share of repeats on the "
        "claimed side with a Clopper-Pearson interval. The minimum detectable effect is the one these repeats "
        f"find with {settings.power:.0%} power.",
        f"- **Multiple comparisons**: each verdict is at the per-claim level; Holm's step-down correction over the "
        f"{summary['directional_tested']} directional claims "
        + ("(their sequential p-values) " if params.decide.sequential else "")
        + f"leaves {summary['holm_significant']} significant at {_fmt(alpha)}.",
    ]
    if summary.get("family_caveat"):
        lines.append(f"- **Caveat**: {summary['family_caveat']}")
    lines += [
        "",
        "Simulated error rates of these rules at the repeats used here, with no true effect "
        f"({settings.calibration_draws} draws per row, seeded; nominal false 'reproduced' rate {_fmt(alpha)}, "
        f"nominal coverage {settings.confidence:.0%}):",
        "",
        "| repeats | values drawn from | false 'reproduced' (directional) | t interval coverage |"
        " false 'reproduced' (level, mean on the band's edge) |",
        "|---|---|---|---|---|",
    ]
    for repeats, rates in evaluation.get("calibration", {}).items():
        for name, rate in rates.items():
            lines.append(
                f"| {repeats} | {name} | {rate['false_reproduced']:.1%} | {rate['coverage']:.1%} | "
                f"{rate['level_false_reproduced']:.1%} |"
            )
    lines += [
        "",
        "The last distribution is the weak spot: a strongly skewed single value (not a paired difference) "
        "against a line is falsely reproduced more often than nominal on the side opposite the skew. No test of a "
        "mean is exact for every distribution at a handful of repeats; read single-value claims on skewed measures "
        "(losses near zero, gaps near a bound) with that in mind.",
        "",
    ]
    return lines


def _sequential_lines(params: Params, alpha: float) -> list[str]:
    """How sequential looks change the reading (decide.sequential); nothing without them."""
    decide = params.decide
    if not decide.sequential:
        return []
    schedule = look_levels(decide, alpha)
    looks, alphas = list(schedule), list(schedule.values())
    return [
        f"- **Sequential looks** (`decide.sequential`). A claim is judged at {', '.join(map(str, looks))} repeats "
        f"(its first common seeds), look k at its own one-sided alpha_k ({', '.join(_fmt(a, 3) for a in alphas)}; "
        f"{decide.spending} alpha spending, summing to {_fmt(alpha)}), and the first look that decides gives the "
        "verdict, so a claim's interval is at that look's level, 1 − 2 alpha_k, wider than a fixed 95 % one. "
        "Holm across claims uses each claim's sequential p-value: the smallest over its looks of "
        f"p_k × {_fmt(alpha)} / alpha_k, valid by the same union bound however the looks stopped, and below "
        f"{_fmt(alpha)} exactly when the claim is reproduced (the deciding look's own p is not: a claim still "
        "undecided can end with a p between alpha_k and alpha). The table below simulates single looks at the "
        "full alpha; the whole sequential procedure's false-verdict rates are simulated in tests/test_stats.py.",
    ]


def published_table(
    results: ExperimentResults, published: Mapping[str, Mapping[str, float]], params: Params
) -> list[str]:
    lines = [
        "| variant | metric | published | measured mean [95 % interval] | repeats | learned? |",
        "|---|---|---|---|---|---|",
    ]
    for variant in results.runs:
        if len(results.members(variant)) != 1:
            continue
        learned = "**no**: see below" if results.did_not_learn(variant) else "yes"
        metrics = list(published.get(variant, {})) or [registry()[results.name].headline_metric]
        for metric in metrics:
            values = results.repeat_finals(variant, variant, metric)
            mean, low, high = interval(values, params, f"{results.name}.{variant}.{metric}")
            lines.append(
                f"| {variant} | {METRIC_LABEL.get(metric, metric)} | {_fmt(published.get(variant, {}).get(metric))} | "
                f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}] | {len(values)} | {learned} |"
            )
    return lines


def not_learned(all_results: Mapping[str, ExperimentResults]) -> dict[str, str]:
    """``experiment-variant`` -> why it did not learn, for every trained variant that did not."""
    flags = {}
    for name, results in all_results.items():
        for variant in results.runs:
            if reason := results.did_not_learn(variant):
                flags[f"{name}-{variant}"] = reason
    return flags


def not_learned_lines(flags: Mapping[str, str], experiment: str | None = None) -> list[str]:
    chosen = {run: why for run, why in flags.items() if experiment is None or run.startswith(experiment + "-")}
    if not chosen:
        return []
    rule = (
        f"(rule: mean final validation accuracy and inference-mode train accuracy both within "
        f"{NOT_LEARNED_MARGIN:g} of the majority-class rate of their labels)"
    )
    return [
        f"**Did not learn** {rule}:",
        "",
        *(f"- `{run}`: {why}." for run, why in chosen.items()),
        "",
    ]


def claim_uses_not_learned(entry: Mapping[str, Any], flags: Mapping[str, str]) -> list[str]:
    used = [entry["test"].get("variant"), entry["test"].get("versus")]
    runs = [f"{entry['experiment']}-{v}" for v in used if v and f"{entry['experiment']}-{v}" in flags]
    return [f"- **Warning**: `{run}` did not learn ({flags[run]}).\n" for run in runs]


def _left_out(seeds: Mapping[Any, list[str]], shown: int = 2) -> str:
    """``seed 2 (fold 3: loss NaN or infinite at epoch 12)`` per seed; a seed's many runs cut to ``shown``."""
    parts = []
    for seed, reasons in seeds.items():
        why = ", ".join(reasons[:shown]) + (f" and {len(reasons) - shown} more" if len(reasons) > shown else "")
        parts.append(f"seed {seed} ({why})")
    return ", ".join(parts)


def diverged_lines(results: ExperimentResults) -> list[str]:
    """Per variant with a diverged run: how many runs diverged, which repeats are left out and why."""
    lines = []
    for variant, runs in results.runs.items():
        for member in results.members(variant):
            left_out = records.diverged_repeats(runs, member)
            if not left_out:
                continue
            own = [run for run in runs if run.member == member]
            repeats = len({run.seed for run in own})
            name = f"{results.name}-{variant}" + ("" if member == variant else f" {member}")
            lines.append(
                f"- `{name}`: {sum(run.status != 'ok' for run in own)} of {len(own)} runs diverged; "
                f"{len(left_out)} of {repeats} repeats left out of every mean, curve and verdict: "
                f"{_left_out(left_out)}."
            )
    if not lines:
        return []
    return [f"**Diverged runs** ({records.DIVERGENCE_RULE}):", "", *lines, ""]


def drift_lines(evaluation: Mapping[str, Any]) -> list[str]:
    """This run's per-repeat values against the reference run's (regbench.claims.drift), seed by seed."""
    drift = evaluation.get("drift")
    if not drift:
        return []
    lines = [
        "## Drift against the reference run",
        "",
        f"{drift['summary']} Reference: {drift['reference']}.",
        "",
        "Each claim's per-repeat values are compared with the reference's for the same seeds: the mean absolute "
        "difference in units of the reference's seed-to-seed standard deviation. The same code and seeds give "
        "0 on one machine (bit-identical); another CPU's kernels round differently, which training amplifies, "
        "so expect small non-zero numbers there. What matters is whether a verdict changed.",
        "",
    ]
    moved = {
        claim_id: entry
        for claim_id, entry in drift["claims"].items()
        if entry["verdict_changed"] or (entry["compared"] and not entry["identical"])
    }
    if moved:
        lines += [
            "| claim | repeats compared | drift (seed-to-seed sd) | largest difference | verdict: reference -> now |",
            "|---|---|---|---|---|",
        ]
        for claim_id, entry in moved.items():
            compared = entry["compared"]
            lines.append(
                f"| `{claim_id}` | {compared} | {_fmt(entry['drift_in_seed_sd']) if compared else '–'} | "
                f"{_fmt(entry['max_abs_difference']) if compared else '–'} | "
                f"{entry['reference_verdict']} -> {entry['verdict']} |"
            )
        lines.append("")
    return lines


def data_sources(all_results: Mapping[str, ExperimentResults]) -> list[str]:
    lines = []
    for name, results in all_results.items():
        if not results.manifests:
            continue
        manifest = next(iter(results.manifests.values()))
        source = manifest["data_manifest"]["source"]
        origin = source.get("origin") or source.get("url") or source.get("package") or ""
        fallback = " (**fallback**: the declared first choice was not reachable)" if source.get("fallback_used") else ""
        shapes = manifest["data_manifest"]["shapes"]
        train_rows = shapes.get("x_train", ["?"])[0]
        note = registry()[name].source_notes.get(source["source"])
        subset = f" ({note})" if note else ""
        lines.append(
            f"- **{name}**: `{source['source']}`{subset} from `{origin}`{fallback}; {train_rows} training rows"
        )
    return lines


def provenance(all_results: Mapping[str, ExperimentResults], params: Params) -> list[str]:
    manifests = [m for r in all_results.values() for m in r.manifests.values()]
    if not manifests:
        return ["No train results."]
    first = manifests[0]
    digests = sorted({m.get("code_digest", "?")[:16] for m in manifests})
    trained = {m["stage"]: {"members": m["members"], "seeds": m["seeds"], "train": m["train"]} for m in manifests}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()
    lines = [
        f"- Code digest(s) of the training code: {', '.join(f'`{d}`' for d in digests)}",
        f"- Params digest (sha256 of every trained variant's settings, seeds and train knobs): `{digest[:16]}`",
        f"- Engine: `{first['engine']}`; device: {first['device']}",
        "- Library versions: " + ", ".join(f"{k} {v}" for k, v in sorted(first["library_versions"].items())),
        "- Repeats (seeds) per experiment: "
        + "; ".join(
            f"{name} {list(next(iter(r.manifests.values()))['seeds'])}"
            for name, r in all_results.items()
            if r.manifests
        ),
        "",
        "| dataset | source | content digest |",
        "|---|---|---|",
    ]
    for name, results in all_results.items():
        if results.manifests:
            data = next(iter(results.manifests.values()))["data_manifest"]
            lines.append(f"| {name} | {data['source']['source']} | `{data['content_digest'][:16]}…` |")
    # Run ids, timings and store paths differ from run to run and clone to clone: they are in the run log
    # (logs/<stage>.jsonl) and in MLflow, where each stage's parent run carries the tag regbench.stage.
    lines += [
        "",
        "MLflow: each train stage's runs are in the experiment below of the tracking store "
        "(`MLFLOW_TRACKING_URI`, default `mlflow.db` in the repository), its parent run tagged "
        f"`regbench.stage = train@<stage>`; open a local store with `{mlflow_ui_command('sqlite:///mlflow.db')}`.",
        "",
        "| stage | MLflow experiment |",
        "|---|---|",
    ]
    for name, results in all_results.items():
        for manifest in results.manifests.values():
            lines.append(f"| `{manifest['stage']}` | `{manifest.get('mlflow_experiment', f'regbench/{name}')}` |")
    return lines


def mlflow_server(tracking_uri: str) -> str:
    """Where a browser finds the runs: the tracking server itself, or `mlflow ui` for a local store."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else MLFLOW_UI_DEFAULT


def adaptive_lines(rounds: Mapping[str, Any] | None, evaluation: Mapping[str, Any], params: Params) -> list[str]:
    """The rounds of ./run.sh decide (reports/decide_rounds.json) and each claim's looks; none without rounds."""
    if not rounds or not rounds.get("rounds"):
        return []
    decide = params.decide
    schedule = look_levels(decide, stats.one_sided_alpha(params.claims.confidence))
    looks, alphas = list(schedule), list(schedule.values())
    lines = [
        "## Adaptive repeats",
        "",
        f"`./run.sh decide` added seeds to the variants of undecided claims in {len(rounds['rounds'])} rounds "
        f"and stopped: {rounds.get('stopped') or 'still running'}. Each claim is judged at the looks "
        f"{', '.join(map(str, looks))} repeats (its first common seeds, in seed order), look k at one-sided "
        f"alpha_k ({', '.join(_fmt(a, 3) for a in alphas)}; {decide.spending} alpha spending, Lan-DeMets), and the "
        "first look that decides gives the verdict. By the union bound the chance of any false verdict over all "
        f"looks is at most {_fmt(sum(alphas), 3)}, so adding seeds until a claim is decided does not inflate false "
        "verdicts; the intervals shown at a look are at that look's confidence, 1 - 2 alpha_k.",
        "",
        "| round | dvc repro (s) | runs added | reproduced | refuted | inconclusive | claims grown |",
        "|---|---|---|---|---|---|---|",
    ]
    for record in rounds["rounds"]:
        verdicts = [c["verdict"] for c in record["claims"].values()]
        grown = ", ".join(f"`{c}` to {step['next_look']}" for c, step in record["plan"].items()) or "none"
        if not record.get("seeds_added"):
            grown = f"none (stopped) {grown if record['plan'] else ''}".strip()
        lines.append(
            f"| {record['round']} | {record['repro_seconds']:.0f} | {record.get('runs_added', 0)} | "
            f"{verdicts.count('reproduced')} | {verdicts.count('refuted')} | {verdicts.count('inconclusive')} | "
            f"{grown} |"
        )
    lines += ["", "| claim | verdict | repeats | look | mean | interval | note |", "|---|---|---|---|---|---|---|"]
    for claim_id, entry in evaluation["claims"].items():
        sequential = entry.get("sequential")
        if sequential is None:
            continue
        interval_text = _interval_text(entry) if "ci_low" in entry else ""
        lines.append(
            f"| [`{claim_id}`](#{_anchor(claim_id)}) | {badge(entry['verdict'])} | {entry.get('repeats', 0)} of "
            f"{sequential['repeats_available']} | {sequential['decided_at_look'] or '–'} | {_fmt(entry.get('mean'))} | "
            f"{interval_text} | "
            f"{entry.get('reason', '') if entry['verdict'] == 'inconclusive' else ''} |"
        )
    return [*lines, ""]


def build(
    params: Params,
    evaluation: Mapping[str, Any],
    results_dir: Path,
    out_dir: Path,
    now: str,
    rounds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.md, index.html and the figures; return what was written."""
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    published = evaluation.get("published_figures", {})
    all_results = {name: ExperimentResults(params, name, results_dir) for name in params.experiments}
    flags = not_learned(all_results)
    summary = evaluation["summary"]
    md = [
        f"# {params.report.title}",
        "",
        f"Generated {now}. Every number below is a mean over repeats (seeds) with a Student t "
        f"{params.claims.confidence:.0%} interval"
        + (
            " (a claim judged at sequential looks: at its look's level, stated beside it)"
            if any("confidence" in entry for entry in evaluation["claims"].values())
            else ""
        )
        + "; see the claims' definitions in `claims.yaml` and [How to read the verdicts](#how-to-read-the-verdicts).",
        "",
        "**Data used** (as fetched and verified by the pipeline):",
        "",
        *data_sources(all_results),
        "",
        "## Summary",
        "",
        f"{summary['tested']} of {summary['claims']} claims tested: **{summary['reproduced']} reproduced**, "
        f"**{summary['refuted']} refuted**, **{summary['inconclusive']} inconclusive**. "
        f"{summary['directional_tested']} of them are directional claims with a p-value; across those, "
        f"{summary['holm_significant']} stay significant at {_fmt(stats.one_sided_alpha(params.claims.confidence))} "
        "(one-sided) after Holm's correction for multiple comparisons."
        + (f" {summary['family_caveat']}" if summary.get("family_caveat") else ""),
        "",
        *summary_table(evaluation),
        "",
        *not_learned_lines(flags),
        *how_to_read(evaluation, params),
    ]
    figures: list[str] = []
    for name, results in all_results.items():
        if not results.runs:
            continue
        md += [f"## {name}", ""]
        curves = figures_dir / f"{name}_curves.png"
        if plot_curves(results, curves, params.report.max_curve_points):
            figures.append(curves.name)
            md += [f"![{name} learning curves](figures/{curves.name})", ""]
        comparison = figures_dir / f"{name}_published_vs_measured.png"
        if plot_published_vs_measured(results, published.get(name, {}), params, comparison):
            figures.append(comparison.name)
            md += [f"![{name} published vs measured](figures/{comparison.name})", ""]
        for variant in results.runs:
            if len(results.members(variant)) > 1:
                grid = figures_dir / f"{name}_{variant}.png"
                plot_grid(results, variant, params, grid)
                figures.append(grid.name)
                md += [f"![{name} {variant}](figures/{grid.name})", ""]
        md += ["### Published vs measured", "", *published_table(results, published.get(name, {}), params), ""]
        md += not_learned_lines(flags, name)
        md += diverged_lines(results)
        identity, drawn = weight_decay_section(results, params, evaluation, figures_dir)
        md += identity
        figures += drawn
        md += ["### Claims", ""]
        for claim_id, entry in evaluation["claims"].items():
            if entry["experiment"] == name:
                section = claim_section(claim_id, entry)
                md += section[:-1] + claim_uses_not_learned(entry, flags) + section[-1:]
    md += adaptive_lines(rounds, evaluation, params)
    md += drift_lines(evaluation)
    md += ["## Provenance", "", *provenance(all_results, params), ""]
    text = "\n".join(md)
    with atomic_path(out_dir / "report.md") as temporary:
        temporary.write_text(text, encoding="utf-8")
    with atomic_path(out_dir / "index.html") as temporary:
        temporary.write_text(to_html(text, params.report.title, out_dir), encoding="utf-8")
    for stale in figures_dir.glob("*.png"):
        if stale.name not in figures:
            stale.unlink()
    return {"figures": figures, "claims": len(evaluation["claims"])}


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:left}th{background:#f3f3f3}code{background:#f5f5f5;padding:0 .2em}img{max-width:100%}
blockquote{margin:.5em 0;padding:.2em 1em;border-left:4px solid #ddd;color:#555}h2{border-bottom:1px solid #ddd}
.verdict{display:inline-block;padding:.05em .55em;border-radius:.8em;font-size:.85em;font-weight:600;
white-space:nowrap;border:1px solid}
.verdict-reproduced{background:#e6f4ea;color:#1e6b34;border-color:#8cc79c}
.verdict-refuted{background:#fce8e6;color:#a52714;border-color:#e6a098}
.verdict-inconclusive{background:#fef7e0;color:#7a5900;border-color:#e8cf7a}
.verdict-not-run{background:#f1f3f4;color:#555;border-color:#ccc}
"""


def to_html(markdown_text: str, title: str, base: Path) -> str:
    """One self-contained page: the Markdown rendered, styles inline, figures embedded as data URIs."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": True}).enable("table")
    body = renderer.render(markdown_text)

    def embed(match: re.Match) -> str:
        data = base64.b64encode((base / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', embed, body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
