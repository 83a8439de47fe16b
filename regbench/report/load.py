"""What the report reads: each experiment's train results, the tutorials' names, and each claim's result.

``Finding`` is the one typed view of a claim's entry in reports/claims_detail.json that the report's first
page reads; the statistics' detail (p-values, looks, effect sizes) is read by regbench/report/sections.py.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from regbench.claims import stats
from regbench.claims.judge import Measure, per_repeat, run_name
from regbench.config import Params
from regbench.io import read_json
from regbench.report.text import Md, escape, fmt
from regbench.train import records
from regbench.train.records import Run, load_runs

# A variant "did not learn" when its mean final validation accuracy and its inference-mode train
# accuracy are both within this margin (fraction) of the majority-class rate of their labels:
# it is as good as always answering the most frequent class.
NOT_LEARNED_MARGIN = 0.02


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

    def single(self) -> list[str]:
        """The trained variants that are one model each (not grids)."""
        return [variant for variant in self.runs if len(self.members(variant)) == 1]

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
        balance = self.manifests[variant].get("data_manifest", {}).get("class_balance") or {}
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
                f"validation accuracy {fmt(means['validation'])} against a majority-class rate of "
                f"{fmt(chance['validation'])}, train accuracy (inference mode) {fmt(means['train'])} against "
                f"{fmt(chance['train'])}: no better than always answering the most frequent class"
            )
        return None


def interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean and the Student t interval over repeats (the claims stage's method)."""
    if len(values) < 2:
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, float("nan"), float("nan")
    low, high = stats.t_interval(values, confidence)
    return float(values.mean()), float(low[0]), float(high[0])


# --- the tutorials -------------------------------------------------------------------


@dataclass(frozen=True)
class Tutorial:
    experiment: str
    title: str
    site: str
    url: str | None
    seed: str | None


@functools.cache
def _tutorials() -> dict[str, dict[str, Any]]:
    text = resources.files("regbench.report").joinpath("tutorials.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["tutorials"]


def tutorial(experiment: str, seed: str | None = None) -> Tutorial:
    """The tutorial an experiment reproduces, by name (regbench/report/tutorials.yaml); an experiment
    added without an entry there is named by itself and its claims' seed file."""
    known = _tutorials().get(experiment)
    if known is None:
        return Tutorial(experiment, f"the {experiment} experiment", "", None, seed)
    return Tutorial(experiment, known["title"], known["site"], known.get("url"), known.get("seed", seed))


# --- a claim's result, as the first page reads it ---------------------------------------

# Units of a claim's number, by the metric it measures (accuracies are fractions of examples).
_METRIC_UNITS = {"accuracy": "accuracy (fraction of examples)", "loss": "cross-entropy"}


def unit(measure: Mapping[str, Any], test: Mapping[str, Any]) -> str:
    """The unit the measured and published numbers of a claim are in, in words."""
    kind = measure.get("kind", "")
    base = _METRIC_UNITS["accuracy" if "accuracy" in measure.get("metric", "") else "loss"]
    if kind == "best_epoch":
        base = "epochs"
    elif kind == "rise_after_best":
        base = base + " per epoch"
    elif kind == "variability":
        base = base + ", mean epoch-to-epoch jitter"
    elif kind in ("gap", "drop_after_peak"):
        base = base.replace("accuracy (fraction", "accuracy points (fraction") if "accuracy" in base else base
    if test.get("kind") in ("paired", "equivalent"):
        return f"difference in {base}"
    if test.get("kind") == "interaction":
        return f"difference of differences in {base}"
    return base


@dataclass(frozen=True)
class Finding:
    """One claim's result in a reader's terms: what was claimed, the label, published against ours, why."""

    claim_id: str
    experiment: str
    statement: str
    published: str
    published_value: float | None
    label: str
    mean: float | None
    low: float | None
    high: float | None
    level: float | None
    repeats: int
    unit: str
    why: str
    # The range one run of ours falls in (a prediction interval), where the claims stage gives it.
    one_run_low: float | None = None
    one_run_high: float | None = None


def finding(claim_id: str, entry: Mapping[str, Any], nominal_confidence: float) -> Finding:
    """Read one claims_detail.json entry into a ``Finding``.

    The claims stage's typed verdict (``entry["decision"]``, regbench.claims.verdict.Verdict as a dict:
    label, why, unit, mean, ci_low/ci_high at confidence, repeats, prediction_low/high) is read when present;
    an entry written before it existed is read from its flat keys (verdict, mean, ci_low, ci_high, confidence).
    """
    decision = entry.get("decision")
    if decision:
        return Finding(
            claim_id=claim_id,
            experiment=entry["experiment"],
            statement=entry["statement"],
            published=decision.get("published") or entry.get("published", ""),
            published_value=decision.get("published_value"),
            label=decision["label"],
            mean=decision.get("mean"),
            low=decision.get("ci_low"),
            high=decision.get("ci_high"),
            level=decision.get("confidence"),
            repeats=int(decision.get("repeats") or 0),
            unit=decision.get("unit") or unit(entry.get("measure", {}), entry.get("test", {})),
            why=decision.get("why")
            or why({**entry, "reason": entry.get("reason") or decision.get("reason")}, decision["label"]),
            one_run_low=decision.get("prediction_low"),
            one_run_high=decision.get("prediction_high"),
        )
    test, measure = entry.get("test", {}), entry.get("measure", {})
    return Finding(
        claim_id=claim_id,
        experiment=entry["experiment"],
        statement=entry["statement"],
        published=entry.get("published", ""),
        published_value=entry.get("published_value"),
        label=entry["verdict"],
        mean=entry.get("mean"),
        low=entry.get("ci_low"),
        high=entry.get("ci_high"),
        level=entry.get("confidence", nominal_confidence) if "ci_low" in entry else None,
        repeats=int(entry.get("repeats", 0)),
        unit=unit(measure, test),
        why=why(entry, entry["verdict"]),
    )


def why(entry: Mapping[str, Any], verdict: str) -> Md:
    """One sentence of why, from the numbers the claims stage judged (used when it gives none itself)."""
    return Md(_why(entry, verdict))


def _why(entry: Mapping[str, Any], verdict: str) -> str:
    if "mean" not in entry or "ci_low" not in entry:
        reason = escape(entry.get("reason") or "the variants it compares were not trained in this run")
        return f"Not run: {reason.rstrip('.')}."
    low, high = fmt(entry["ci_low"]), fmt(entry["ci_high"])
    test = entry["test"]
    if test["kind"] == "equivalent":
        margin = fmt(test["margin"])
        if verdict == "reproduced":
            return f"The interval [{low}, {high}] lies inside the sameness margin ±{margin}."
        if verdict in ("refuted", "contradicted"):
            return f"The interval [{low}, {high}] lies wholly outside the sameness margin ±{margin}."
        return f"The interval [{low}, {high}] straddles an edge of the sameness margin ±{margin}."
    if test["kind"] == "level":
        band = entry.get("band") or [None, None]
        where = f"[{fmt(band[0])}, {fmt(band[1])}]"
        if verdict == "reproduced":
            return f"The interval [{low}, {high}] lies inside the band {where} around the published figure."
        if verdict in ("refuted", "contradicted"):
            return f"The interval [{low}, {high}] lies wholly outside the band {where} around the published figure."
        return f"The interval [{low}, {high}] overlaps an edge of the band {where} around the published figure."
    line = fmt(entry.get("line", test.get("line", 0.0)))
    side = "above" if test.get("direction") == "greater" else "below"
    other = "below" if side == "above" else "above"
    smallest = entry.get("smallest_effect")
    if verdict == "reproduced" and entry.get("below_smallest_effect"):
        return (
            f"The interval [{low}, {high}] lies {side} {line}, as claimed, but the effect is at most "
            f"{fmt(entry.get('effect_at_most'))} beyond it, less than the smallest effect of interest {fmt(smallest)}."
        )
    if verdict.startswith("reproduced"):
        return f"The interval [{low}, {high}] lies {side} {line}, on the claimed side."
    value = entry.get("line", test.get("line", 0.0))
    wrong_side = entry["ci_high"] < value if side == "above" else entry["ci_low"] > value
    if verdict == "contradicted" or (verdict == "refuted" and wrong_side):
        return f"The interval [{low}, {high}] lies {other} {line}: the opposite of the claim."
    if verdict in ("refuted", "no effect of the published size"):
        return (
            f"The interval [{low}, {high}] excludes an effect of the published size: at most "
            f"{fmt(entry.get('effect_at_most'))} beyond {line}, below the smallest effect of interest {fmt(smallest)}."
        )
    return f"The interval [{low}, {high}] still includes {line}: more repeats are needed to tell."
