"""Judge one claim from its per-repeat values: each decision, look by look, and the claim's own label.

A directional claim gets three one-sided decisions (regbench.claims.stats.judge_looks): its direction
established, its direction contradicted, its mean effect smaller than the smallest effect of interest; a
band claim (level, equivalent) two: inside the band, outside it. With ``decide.sequential`` every decision
is tested at the looks start, start + batch, ..., max_repeats, at the exact group-sequential levels
(stats.sequential_levels), on the first n_k common seeds, so the verdict is a function of params and
results; otherwise once, at alpha, on every repeat. The claim's label alone follows from its decisions
(regbench.claims.verdict); the family-wise label, over every decision of every claim, is made by
regbench.claims.family. The methods and why they were chosen are in ``regbench.claims.stats``.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from regbench.claims import stats, verdict
from regbench.claims.measures import contrast, per_repeat, run_name, scaled, smallest_effect
from regbench.claims.schema import DIRECTIONAL, Claim, Measure
from regbench.claims.verdict import NOT_RUN
from regbench.config import ClaimsParams, DecideParams

__all__ = ["NOT_RUN", "Measure", "judge", "look_levels", "per_repeat", "run_name", "schedule"]

# Decision names: the keys of an entry's "decisions" (each one p-value in the family).
BEYOND, WRONG_SIDE, SMALLER = "direction reproduced", "direction contradicted", "smaller than the smallest effect"
INSIDE, OUTSIDE = "inside the band", "outside the band"


def schedule(
    settings: ClaimsParams, decide: DecideParams | None, available: int
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """(repeats at each look, each look's nominal level, each look's spending increment).

    Without sequential looks: one look at every available repeat, at alpha.
    """
    alpha = stats.one_sided_alpha(settings.confidence)
    if decide is None or not decide.sequential:
        return (available,), (alpha,), (alpha,)
    looks = stats.look_schedule(decide.start, decide.batch, decide.max_repeats)
    return (
        looks,
        stats.sequential_levels(looks, alpha, decide.spending),
        stats.look_alphas(looks, alpha, decide.spending),
    )


def look_levels(decide: DecideParams, alpha: float) -> dict[int, float]:
    """The repeats at each look -> its spending increment (what the family p-values weigh looks by)."""
    looks = stats.look_schedule(decide.start, decide.batch, decide.max_repeats)
    return dict(zip(looks, stats.look_alphas(looks, alpha, decide.spending), strict=True))


def _unit(claim: Claim) -> str:
    if claim.statistic == "log_ratio":
        return "log ratio" if claim.test.kind != "single" else "log of the value"
    metric, kind = claim.measure.metric, claim.measure.kind
    if kind == "best_epoch":
        return "epochs"
    if kind == "rise_after_best":
        return f"{metric} per epoch"
    return metric.replace("_", " ")


def judge(
    claim: Claim, values: Mapping[str, dict[int, Any]], settings: ClaimsParams, decide: DecideParams | None = None
) -> dict[str, Any]:
    """One claim's numbers, decisions (with their family p-values) and label alone; see the module docstring."""
    test = claim.test
    repeats, sample = contrast(claim, values)
    available = len(repeats)
    looks, levels, increments = schedule(settings, decide, available)
    reached = [k for k, n in enumerate(looks) if n <= available]
    sequential = decide is not None and decide.sequential
    # The look schedule, the same whether or not a look has been reached yet.
    schedule_record = (
        {
            "spending": decide.spending,
            "looks": list(looks),
            "look_levels": list(levels),
            "look_alphas": list(increments),
            "repeats_available": available,
        }
        if sequential
        else {}
    )
    result: dict[str, Any] = {
        "statistic": claim.statistic,
        "unit": _unit(claim),
        "alpha_one_sided": stats.one_sided_alpha(settings.confidence),
    }
    if available < max(2, settings.min_repeats) or not reached:
        if sequential and not reached:
            reason = f"{available} repeats, fewer than decide.start = {looks[0]}: before the first look"
        elif not available:
            reason = "no repeat finished without diverging"
        else:
            reason = f"only {available} repeats (claims.min_repeats = {settings.min_repeats})"
        if available >= 2:
            # Too few repeats, or before the first look: the numbers of a fixed-n judgement are shown (a t
            # interval needs two), but nothing is decided.
            result = judge(claim, values, dataclasses.replace(settings, min_repeats=2), None)
        else:
            result.update(_identity(claim, values, repeats, sample))
        result.update(
            verdict_alone=verdict.UNDECIDED,
            reason=reason,
            decisions={},
            decided_by="before the first look" if sequential else "too few repeats",
            stopped="before the first look" if sequential else "",
            look_chances=[],
        )
        if sequential:
            result["sequential"] = {
                **schedule_record,
                "history": [],
                "decided_at_look": None,
                "at_max_repeats": False,
                "open": True,
            }
        return result
    seed = [settings.bootstrap_seed, zlib.crc32(claim.id.encode())]
    if test.kind in DIRECTIONAL:
        outcome = _directional(claim, sample, looks, levels, increments, available)
    else:
        outcome = _band(claim, sample, looks, levels, increments, available)
    shown = outcome.pop("look")
    used = sample[: looks[shown]]
    kept = repeats[: looks[shown]]
    result.update(_identity(claim, values, kept, used))
    result.update(_describe(claim, used, settings, float(1 - 2 * levels[shown])))
    result.update(outcome)
    result["sign_flip_floor"] = stats.sign_flip_floor(len(used), settings.sign_flip_exact_max)
    if len(used) >= settings.bca_min_repeats and np.ptp(stats.snap_ties(used)) > 0:
        low, high = stats.bca_interval(used, settings.confidence, settings.bootstrap_resamples, seed)
        result["bca_interval"] = [low, high]
    open_ = result["verdict_alone"] in (verdict.UNDECIDED, verdict.NO_SIZE)
    at_max = looks[shown] == looks[-1]
    if sequential:
        result["sequential"] = {
            **schedule_record,
            "history": outcome_history(result, looks, levels, shown),
            "decided_at_look": None if open_ else shown + 1,
            "at_max_repeats": at_max,
            "open": open_ and not at_max,
        }
    result["stopped"] = _stopped(sequential, open_, at_max, looks, shown)
    result["look_chances"] = []
    result["repeats_needed"] = None
    if open_ and sequential and not at_max and test.kind in DIRECTIONAL:
        chances = stats.look_chances(used, scaled(claim, test.line), test.direction, looks, levels, seed=seed)
        result["look_chances"] = [[n, round(p, 4)] for n, p in chances]
        result["repeats_needed"] = next((n for n, p in chances if p >= settings.power), None)
    if open_ and not result.get("reason"):
        result["reason"] = "the interval contains the line" + (
            " and reaches the smallest effect of interest" if test.kind in DIRECTIONAL else ""
        )
    return result


def outcome_history(result: Mapping[str, Any], looks, levels, shown: int) -> list[dict[str, Any]]:
    """Each look reached: its repeats, level and the p-values of the decisions tested there."""
    history = []
    for k in range(shown + 1):
        entry = {"look": k + 1, "repeats": looks[k], "level": levels[k]}
        for name, decision in result["decisions"].items():
            p = decision["p_by_look"][k]
            if p is not None:
                entry[name] = p
        history.append(entry)
    return history


def _stopped(sequential: bool, open_: bool, at_max: bool, looks, shown: int) -> str:
    if not sequential:
        return ""
    if not open_:
        return f"decided at look {shown + 1} of {len(looks)} ({looks[shown]} repeats)"
    if at_max:
        return f"undecided at the last look (decide.max_repeats = {looks[-1]} repeats)"
    return (
        f"stopped at {looks[shown]} repeats, before the look at {looks[shown + 1]} (of decide.max_repeats = "
        f"{looks[-1]}): no more repeats were run (./run.sh decide stopped on its budget, or was not run)"
    )


def _identity(claim: Claim, values, repeats, sample) -> dict[str, Any]:
    means = {}
    for term in claim.test.terms:
        picked = [values[term.key][r] for r in repeats]
        if not picked:
            means[term.key] = None
        elif isinstance(picked[0], np.ndarray):
            means[term.key] = float(np.mean([p[-1] for p in picked]))
        else:
            means[term.key] = float(np.mean(picked))
    return {
        "repeats": len(repeats),
        # The seeds of the repeats the verdict rests on: the drift report pairs values by them.
        "repeat_ids": [int(r) for r in repeats],
        "values": [round(float(v), 6) for v in sample],
        "variant_means": means,
    }


def _describe(claim: Claim, sample: np.ndarray, settings: ClaimsParams, confidence: float) -> dict[str, Any]:
    """The numbers shown beside the decisions: mean, interval at the look's level, one run's prediction
    interval, effect sizes, improvement share (directional claims)."""
    test = claim.test
    snapped = stats.snap_ties(sample)[0]
    low, high = stats.t_interval(snapped, confidence)
    predict_low, predict_high = stats.prediction_interval(sample, settings.confidence)
    published = scaled(claim, claim.published_value)
    described: dict[str, Any] = {
        "mean": float(sample.mean()),
        "std": float(sample.std(ddof=1)),
        "ci_low": float(low[0]),
        "ci_high": float(high[0]),
        "confidence": confidence,
        "prediction_interval": [predict_low, predict_high],
        "published_plausible": None
        if published is None
        else bool(predict_low - _rounding(claim) <= published <= predict_high + _rounding(claim)),
    }
    if test.kind in DIRECTIONAL:
        line = scaled(claim, test.line)
        sign = 1.0 if test.direction == "greater" else -1.0
        raw_dz = stats.standardized_effect(snapped, line)
        alpha = stats.one_sided_alpha(settings.confidence)
        mde = stats.minimum_detectable_effect(len(sample), alpha, settings.power)
        described.update(
            {
                "line": line,
                "smallest_effect": smallest_effect(claim),
                "effect_beyond_line": sign * (float(sample.mean()) - line) + 0.0,
                "effect_at_most": float(sign * ((high if sign > 0 else low)[0] - line)),
                "cohens_dz": None if raw_dz is None else sign * raw_dz + 0.0,
                "improvement": stats.improvement_share(sample, line, test.direction, settings.confidence),
                "power": settings.power,
                "mde_standardized": mde,
                "mde": None if mde is None or raw_dz is None else mde * float(snapped.std(ddof=1)),
                "p_sign_flip": float(
                    stats.sign_flip_p(snapped, line, test.direction, settings.sign_flip_exact_max, 0)[0]
                ),
            }
        )
    elif test.kind == "level":
        value = float(claim.published_value)
        described.update(
            {
                "published_in_interval": bool(low[0] <= value <= high[0]),
                "distance_to_published": float(sample.mean()) - value,
                "band": [value - test.tolerance, value + test.tolerance],
            }
        )
    else:
        described.update({"margin": float(test.margin), "band": [-float(test.margin), float(test.margin)]})
    return described


def _rounding(claim: Claim) -> float:
    """Half a unit of the published figure's last digit: -0.033 stands for anything in [-0.0335, -0.0325]."""
    text = repr(float(claim.published_value))
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return 0.0 if claim.statistic == "log_ratio" else 0.5 * 10.0**-decimals


def _decision(p_by_look: np.ndarray, increments, alpha: float, decided: bool) -> dict[str, Any]:
    p_by_look = np.asarray(p_by_look, float).reshape(-1)
    p_family = float(stats.group_sequential_p(p_by_look, increments)[0]) if np.isfinite(p_by_look).any() else 1.0
    return {
        "decided_alone": bool(decided),
        "p_family": p_family,
        "p_by_look": [None if not np.isfinite(p) else float(p) for p in p_by_look],
    }


def _directional(claim: Claim, sample, looks, levels, increments, available: int) -> dict[str, Any]:
    test = claim.test
    line, floor = scaled(claim, test.line), smallest_effect(claim)
    outcome = stats.judge_looks(sample, line, test.direction, floor, looks, levels, available)
    alpha = sum(increments)
    direction = int(outcome.direction[0])
    smaller = bool(outcome.smaller[0])
    decisions = {
        BEYOND: _decision(outcome.p_beyond, increments, alpha, direction == 1),
        WRONG_SIDE: _decision(outcome.p_wrong_side, increments, alpha, direction == -1),
    }
    if floor > 0:
        decisions[SMALLER] = _decision(outcome.p_smaller, increments, alpha, smaller and direction != -1)
    shown = int(outcome.look[0])
    answer = {1: verdict.ESTABLISHED, -1: verdict.WRONG_SIDE, 0: verdict.OPEN}[direction]
    size = verdict.SHOWN_SMALLER if smaller else verdict.NOT_SMALLER if floor > 0 else verdict.NOT_TESTED
    label = verdict.directional_label(answer, size)
    p_shown = outcome.p_beyond[0, shown]
    return {
        "look": shown,
        "decisions": decisions,
        "direction_alone": answer,
        "size_alone": size,
        "verdict_alone": label,
        "below_smallest_effect": bool(direction == 1 and smaller),
        "p_value": float(p_shown),
        "p_below_smallest_effect": None if floor == 0 else float(outcome.p_smaller[0, shown]),
        "method": "Student t" if np.ptp(stats.snap_ties(sample[: looks[shown]])) > 0 else "exact sign-flip (no spread)",
        "decided_by": {
            verdict.REPRODUCED: "interval beyond the line",
            verdict.SMALLER: "interval beyond the line and below the smallest effect of interest",
            verdict.NO_SIZE: "interval contains the line and lies below the smallest effect of interest",
            verdict.CONTRADICTED: "interval on the wrong side of the line",
            verdict.UNDECIDED: "interval contains the line and reaches the smallest effect of interest",
        }[label],
    }


def _band(claim: Claim, sample, looks, levels, increments, available: int) -> dict[str, Any]:
    test = claim.test
    if test.kind == "level":
        value, half = float(claim.published_value), float(test.tolerance)
        low_bound, high_bound = value - half, value + half
    else:
        low_bound, high_bound = -float(test.margin), float(test.margin)
    p_inside, p_outside = np.full((1, len(looks)), np.nan), np.full((1, len(looks)), np.nan)
    inside = outside = False
    shown = 0
    for k, (n, level) in enumerate(zip(looks, levels, strict=True)):
        if n > available:
            break
        shown = k
        decision = stats.decide_level(sample[:n], low_bound, high_bound, 1.0 - 2.0 * level)
        p_inside[0, k], p_outside[0, k] = decision.p_equivalence[0], decision.p_outside[0]
        inside, outside = decision.verdict[0] == "reproduced", decision.verdict[0] == "contradicted"
        if inside or outside:
            break
    alpha = sum(increments)
    label = verdict.band_label(inside, outside)
    flat = np.ptp(stats.snap_ties(sample[: looks[shown]])) == 0
    return {
        "look": shown,
        "decisions": {
            INSIDE: _decision(p_inside, increments, alpha, inside),
            OUTSIDE: _decision(p_outside, increments, alpha, outside),
        },
        "direction_alone": verdict.NOT_TESTED,
        "size_alone": verdict.NOT_TESTED,
        "verdict_alone": label,
        "p_equivalence": float(p_inside[0, shown]),
        "p_outside": float(p_outside[0, shown]),
        "method": "TOST, exact sign-flip (no spread)" if flat else "TOST, Student t",
        "decided_by": {
            verdict.REPRODUCED: "interval inside the band",
            verdict.CONTRADICTED: "interval outside the band",
            verdict.UNDECIDED: "interval straddles a band edge",
        }[label],
    }
