"""Measures: a run's history reduced to the number a claim is about, and a claim's per-repeat contrast.

One run (a variant, a seed, a CV fold) becomes one number (``measure``); folds are averaged into the
repeat's value (records.per_repeat); the claim's contrast is the signed sum of its terms' values seed by
seed (``contrast``), on the scale of the claim's statistic (logs for a log ratio).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from regbench.claims.schema import Claim, Measure, Term
from regbench.config import Params
from regbench.schema import ParamsError
from regbench.train import records
from regbench.train.records import FINAL_METRICS, Run


def measure(run: Run, spec: Measure) -> float | np.ndarray:
    """Reduce one run to the number (or, for ``curve``, the series) the claim is about."""

    def series(metric: str) -> np.ndarray:
        values = run.curves[metric]
        if len(values) == 0:
            raise ValueError(f"run {run.member} repeat {run.repeat} has no epochs of {metric}")
        return values

    def last(metric: str) -> float:
        if metric in FINAL_METRICS:
            if metric not in run.finals:
                raise ValueError(
                    f"run {run.member} repeat {run.repeat} has no {metric}: the train stage records it "
                    "after the last epoch (test_* only where the experiment has a separate test set)"
                )
            return run.finals[metric]
        return float(series(metric)[-1])

    if spec.kind == "final":
        return last(spec.metric)
    if spec.kind == "gap":
        return last(spec.metric) - last(spec.minus)
    values = series(spec.metric)
    if spec.kind == "curve":
        # E.g. val_loss - reg_loss: the validation loss without the penalty term, epoch by epoch.
        return values if spec.minus is None else values - series(spec.minus)
    best_index = int(np.argmin(values) if spec.mode == "min" else np.argmax(values))
    if spec.kind == "best":
        return float(values[best_index])
    if spec.kind == "best_epoch":
        return float(best_index + 1)
    if spec.kind == "rise_after_best":
        low = int(np.argmin(values))
        after = len(values) - 1 - low
        return 0.0 if after == 0 else float((values[-1] - values[low]) / after)
    if spec.kind == "drop_after_peak":
        return float(np.max(values) - values[-1])
    if spec.kind == "variability":
        return float(np.mean(np.abs(np.diff(values, n=2)))) if len(values) > 2 else 0.0
    raise ValueError(f"unknown measure kind {spec.kind!r}")


def per_repeat(runs: Sequence[Run], spec: Measure, member: str | None = None) -> dict[int, Any]:
    """The measure of each repeat, averaged over its CV folds; repeats with a diverged run are left out."""
    return records.per_repeat(runs, lambda run: measure(run, spec), member)


def smallest_effect(claim: Claim) -> float:
    """The smallest effect of interest beyond the line, on the claimed side (measure units).

    Declared in claims.yaml (``test.smallest_effect``), or by default half the published value's
    distance beyond the line: an interval wholly below it excludes the published effect with room to
    spare: the effect is smaller than published. Level claims have a band instead.
    """
    test = claim.test
    if test.smallest_effect is not None:
        return float(test.smallest_effect)
    if claim.published_value is None:
        raise ParamsError(
            f"claims.yaml: claim {claim.id}: no published_value, so test.smallest_effect must be declared"
        )
    sign = 1.0 if test.direction == "greater" else -1.0
    return max(0.0, sign * (claim.published_value - test.line)) / 2.0


def contrast(claim: Claim, values: Mapping[str, dict[int, Any]]) -> tuple[list[int], np.ndarray]:
    """The repeats every term has, and each one's value of the claim's contrast.

    The contrast is the signed sum of the terms' values repeat by repeat (same seeds): a variant's own
    value, a paired difference, or a difference of paired differences (an interaction). For a curve
    measure the sum is taken epoch by epoch, then reduced to the repeat's worst epoch: for a directional
    claim the epoch least on the claimed side (it must hold at every epoch), for an equivalence claim
    the largest absolute difference (the curves must stay within the margin at every epoch).
    """
    terms = claim.test.terms
    repeats = common_repeats(claim, values)
    if claim.statistic == "log_ratio":
        # Logs first: the sum of signed logs is the log of the ratio (a single value: its log, judged
        # against the log of the line).
        values = {key: {r: _log(claim, key, r, v) for r, v in found.items()} for key, found in values.items()}
    if claim.measure.kind != "curve":
        return repeats, np.asarray([sum(t.sign * values[t.key][r] for t in terms) for r in repeats], float)
    sample = []
    for r in repeats:
        length = min(len(values[t.key][r]) for t in terms)
        combined = sum(t.sign * np.asarray(values[t.key][r][:length], float) for t in terms)
        if claim.test.kind == "equivalent":
            sample.append(float(np.max(np.abs(combined))))
        else:
            worst = np.min if claim.test.direction == "greater" else np.max
            sample.append(float(worst(combined)))
    return repeats, np.asarray(sample, float)


def _log(claim: Claim, key: str, repeat: int, value: Any) -> Any:
    if np.any(np.asarray(value) <= 0):
        raise ValueError(
            f"claim {claim.id}: {key} repeat {repeat} has a measure of {value!r}; a log_ratio statistic needs "
            "positive values: use statistic mean for this measure kind in claims.yaml `statistics`"
        )
    return np.log(value)


def scaled(claim: Claim, value: float | None) -> float | None:
    """A line or published value in the units the claim's statistic judges (logs for a log ratio)."""
    if value is None or claim.statistic != "log_ratio":
        return value
    if claim.test.kind == "single":
        return math.log(value)
    # A paired or interaction line is 0 (validated: the ratio 1); a published difference has no log.
    return 0.0 if value == 0 else None


def common_repeats(claim: Claim, values: Mapping[str, dict[int, Any]]) -> list[int]:
    """The repeats (seeds) a claim can use, in order: those every term of its contrast has."""
    return sorted(set.intersection(*(set(values[term.key]) for term in claim.test.terms)))


def run_name(params: Params, experiment: str, variant: str) -> str | None:
    for name, ref in params.train.runs.items():
        if ref.experiment == experiment and ref.variant == variant:
            return name
    return None


class MissingMember(ParamsError):
    """A claim names a grid member params.yaml's grid does not have (a typo, or a deliberately trimmed grid)."""


def _absent_member(params: Params, claim: Claim) -> str | None:
    """Why a claim's grid member is not in params.yaml: an error, or with claims.on_missing_variant: not_run
    (a trimmed grid), the reason it is not run. None when every member it names is configured."""
    try:
        for term in claim.test.terms:
            member_label(params, claim, term)
    except MissingMember as error:
        if params.claims.on_missing_variant == "error":
            raise ParamsError(
                f"{error}. Fix the claim, or, with a trimmed params.yaml, set claims.on_missing_variant: not_run"
            ) from None
        return str(error).removeprefix("claims.yaml: ")
    return None


def member_label(params: Params, claim: Claim, term: Term) -> str | None:
    """The member of ``term.variant`` the term names: the one member of a plain variant (None: all runs), or
    the grid member whose grid setting has the value ``term.at`` gives (compared as numbers, not as labels)."""
    variant = params.experiments[claim.experiment].variants[term.variant]
    if variant.grid_key is None:
        if term.at:
            raise ParamsError(
                f"claims.yaml: claim {claim.id!r} names a member {dict(term.at)} of {term.variant}, which is no grid "
                "variant; remove the '_at' key"
            )
        return None
    values = [member.grid_value for member in variant.members]
    if not term.at:
        raise ParamsError(
            f"claims.yaml: claim {claim.id!r} names grid variant {term.variant} without a member: add "
            f"variant_at (or versus_at): {{{variant.grid_key}: <one of {values}>}}"
        )
    ((key, value),) = term.at.items()
    if key != variant.grid_key:
        raise ParamsError(
            f"claims.yaml: claim {claim.id!r}: {term.variant} is a grid over {variant.grid_key}, not {key}; "
            f"write {{{variant.grid_key}: <one of {values}>}}"
        )
    for member in variant.members:
        if math.isclose(member.grid_value, value, rel_tol=1e-9, abs_tol=1e-12):
            return member.label
    raise MissingMember(
        f"claims.yaml: claim {claim.id!r}: {term.variant} has no member with {key} = {value}; its values: {values}"
    )
