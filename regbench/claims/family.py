"""Every decision of every claim in one family: Holm's step-down over all their p-values.

Each claim contributes its decisions (regbench.claims.judge): direction reproduced, direction contradicted
and smaller than the smallest effect of interest (directional claims), inside and outside the band (band
claims). Each decision's p-value is that of its whole sequential procedure (stats.group_sequential_p),
valid at every level whatever the dependence between looks, so Holm's step-down over all of them keeps
the chance of any false decision in the whole report at most alpha (Holm 1979, valid under any dependence).
The family-wise label of a claim comes from the decisions that survive; it is the headline. The same
rule, each decision at alpha on its own, gives the label alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from regbench.claims import stats, verdict
from regbench.claims.judge import BEYOND, INSIDE, OUTSIDE, SMALLER, WRONG_SIDE


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone)."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    count = len(ordered)
    adjusted, running = {}, 0.0
    for rank, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[key] = running
    return adjusted


def family_caveat(
    repeats: Sequence[int],
    family: int,
    alpha: float,
    exact_max: int,
    look_alphas: Mapping[int, float] | None = None,
) -> str | None:
    """In words, which claims the distribution-free test cannot make family-wise significant at their n.

    ``repeats``: each directional claim's repeats. With sequential looks, ``look_alphas`` maps the repeats
    at each look to its share of alpha: a claim judged at look k enters Holm with its sequential p
    (stats.sequential_p), which the sign-flip test cannot bring below 1/2^n_k * alpha / alpha_k, so Holm's
    first threshold alpha / family asks for 1/2^n_k < alpha_k / family.
    """
    if family == 0 or not repeats:
        return None

    def level(n: int) -> float | None:
        return alpha if look_alphas is None else look_alphas.get(n)

    judged = [n for n in repeats if level(n) is not None]
    if not judged:
        return (
            f"No directional claim has reached the first look ({min(look_alphas or [0])} repeats, decide.start), "
            "so none is tested yet and none can be family-wise significant."
        )
    blocked = sorted({n for n in judged if stats.sign_flip_floor(n, exact_max) * family >= level(n)})
    if not blocked:
        return None
    fewest = blocked[0]
    floor = stats.sign_flip_floor(fewest, exact_max)
    text = (
        f"With {fewest} repeats the exact sign-flip test cannot give a p-value below {floor:.4g} (1/2^{fewest}); "
        f"Holm's first threshold over {family} decisions is {alpha:g}/{family} = {alpha / family:.4g}"
    )
    if look_alphas is None:
        needed = f"at least {stats.sign_flip_repeats(alpha / family)} repeats"
    else:
        at = level(fewest)
        text += (
            f", and a verdict at the look of {fewest} repeats, which spends {at:.4g} of the alpha, needs a p-value "
            f"below {at:.4g}/{family} = {at / family:.4g} for it"
        )
        reach = [n for n, a in sorted(look_alphas.items()) if stats.sign_flip_floor(n, exact_max) * family < a]
        needed = (
            f"the look at {reach[0]} repeats (1/2^{reach[0]} below its alpha_k/{family})"
            if reach
            else f"more repeats than the last look ({max(look_alphas)})"
        )
    count = sum(n in blocked for n in judged)
    who = (
        "no claim"
        if count == len(judged)
        else f"none of the {count} of {len(judged)} claims judged at {', '.join(map(str, blocked))} repeats"
    )
    return (
        f"{text}, so {who} can be family-wise significant without the t test's assumption of a roughly normal "
        f"mean; the distribution-free test needs {needed} for that."
    )


def apply(detail: dict[str, dict[str, Any]], alpha: float) -> int:
    """Holm over every decision of every tested claim; sets each entry's family-wise label, its ``decision``
    (the Verdict, as a dict) and ``p_holm``. Returns the number of decisions in the family."""
    p_values = {
        (claim_id, name): decision["p_family"]
        for claim_id, entry in detail.items()
        for name, decision in entry.get("decisions", {}).items()
    }
    adjusted = holm({f"{c}\x00{n}": p for (c, n), p in p_values.items()})
    for (claim_id, name), _ in p_values.items():
        decision = detail[claim_id]["decisions"][name]
        decision["p_holm"] = adjusted[f"{claim_id}\x00{name}"]
        decision["decided"] = bool(decision["p_holm"] <= alpha)
    for claim_id, entry in detail.items():
        entry["decision"] = make_verdict(claim_id, entry).to_dict()
        entry["verdict"] = entry["decision"]["label"]
        entry["verdict_alone"] = entry["decision"]["label_alone"]
        if entry["decision"]["p_family"] is not None:
            entry["p_holm"] = entry["decision"]["p_family"]
        elif "p_value" in entry:
            entry["p_holm"] = 1.0  # shown, but no test made (before the first look): nothing to adjust
    return len(p_values)


def make_verdict(claim_id: str, entry: Mapping[str, Any]) -> verdict.Verdict:
    """The claim's Verdict from its judged entry, after ``apply`` has set the family-wise decisions."""
    if entry.get("verdict") == verdict.NOT_RUN and "decisions" not in entry:
        return verdict.Verdict(
            claim_id,
            verdict.NOT_RUN,
            verdict.NOT_RUN,
            None,
            f"Not run: {entry.get('reason', '')}.",
            "not run",
            verdict.NOT_TESTED,
            verdict.NOT_TESTED,
            "",
            "",
            0,
            published=entry.get("published", ""),
            reason=entry.get("reason", ""),
        )
    decisions = entry.get("decisions", {})
    made = {name for name, d in decisions.items() if d.get("decided")}
    band = INSIDE in decisions or entry["test"]["kind"] in ("level", "equivalent")
    if band:
        label = verdict.band_label(INSIDE in made, OUTSIDE in made)
        direction = size = verdict.NOT_TESTED
    else:
        direction = (
            verdict.ESTABLISHED if BEYOND in made else verdict.WRONG_SIDE if WRONG_SIDE in made else (verdict.OPEN)
        )
        size = (
            verdict.SHOWN_SMALLER
            if SMALLER in made or WRONG_SIDE in made
            else verdict.NOT_SMALLER
            if SMALLER in decisions
            else verdict.NOT_TESTED
        )
        label = verdict.directional_label(direction, size)
    p_holm = [d["p_holm"] for d in decisions.values() if "p_holm" in d]
    improvement = entry.get("improvement")
    prediction = entry.get("prediction_interval") or [None, None]
    return verdict.Verdict(
        claim_id=claim_id,
        label=label,
        label_alone=entry["verdict_alone"],
        code=verdict.LABEL_CODES[label],
        why=why(entry, label),
        kind="band" if band else "directional",
        direction=direction,
        size=size,
        statistic=_statistic_words(entry, band),
        unit=entry.get("unit", ""),
        repeats=int(entry.get("repeats", 0)),
        mean=entry.get("mean"),
        ci_low=entry.get("ci_low"),
        ci_high=entry.get("ci_high"),
        confidence=entry.get("confidence"),
        line=entry.get("line"),
        smallest_effect=entry.get("smallest_effect"),
        published_value=entry.get("published_value"),
        published=entry.get("published", ""),
        prediction_low=prediction[0],
        prediction_high=prediction[1],
        published_plausible=entry.get("published_plausible"),
        improvement=None if improvement is None else improvement["share"],
        p_family=min(p_holm) if p_holm else None,
        stopped=entry.get("stopped", ""),
        look_chances=tuple((int(n), float(p)) for n, p in entry.get("look_chances", [])),
        reason=_reason(entry, label, p_holm),
    )


def _reason(entry: Mapping[str, Any], label: str, p_holm: list[float]) -> str:
    """Why a claim is not decided: its own reason, or, when it is decided alone but not family-wise, that."""
    alone = entry.get("verdict_alone")
    if label == alone:
        return entry.get("reason", "") if label in (verdict.UNDECIDED, verdict.NO_SIZE) else ""
    return (
        f"alone, each decision at alpha, it is {alone}; in the family of every claim's decisions (Holm) its "
        f"smallest adjusted p is {min(p_holm):.3g}, so that decision is not made family-wise"
    )


def _statistic_words(entry: Mapping[str, Any], band: bool) -> str:
    if band:
        return "equivalence (TOST, Student t)"
    kind = entry["test"]["kind"]
    what = {"paired": "mean difference", "single": "mean value", "interaction": "mean difference of differences"}
    if entry.get("statistic") == "log_ratio":
        return "log ratio (Student t on log values)"
    return f"{what.get(kind, 'mean')} (Student t)"


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def why(entry: Mapping[str, Any], label: str) -> str:
    """One sentence for a reader: what was measured, over how many seeds, and the published figure's place."""
    if "mean" not in entry:
        return f"Not decided: {entry.get('reason', 'no usable repeats')}."
    level = entry.get("confidence") or 0.95
    text = (
        f"Mean {_num(entry['mean'])} ({entry.get('unit', '')}) over {entry['repeats']} seeds "
        f"({100 * level:.3g} % interval {_num(entry['ci_low'])} to {_num(entry['ci_high'])})"
    )
    if "band" in entry and "line" not in entry:
        low, high = entry["band"]
        text += f", against the band {_num(low)} to {_num(high)}"
    else:
        text += f", against the line {_num(entry.get('line'))}"
        if entry.get("smallest_effect"):
            text += f" and a smallest effect of interest of {_num(entry['smallest_effect'])} beyond it"
    plausible = entry.get("published_plausible")
    if plausible is not None:
        low, high = entry["prediction_interval"]
        text += (
            f"; the published {_num(entry.get('published_value'))} is "
            + ("within" if plausible else "outside")
            + f" what one run of ours gives ({_num(low)} to {_num(high)})"
        )
    alone = entry.get("verdict_alone")
    if alone and alone != label:
        return text + f": {label} over the whole report ({alone} for this claim alone)."
    return text + f": {label}."


def summary(detail: Mapping[str, Mapping[str, Any]], decisions: int, alpha: float) -> dict[str, Any]:
    """The counts the report leads with (family-wise) and the per-claim ones (secondary)."""
    tested = [e for e in detail.values() if e["verdict"] != verdict.NOT_RUN]
    count = lambda key: {label: sum(e[key] == label for e in tested) for label in verdict.LABELS[:-1]}  # noqa: E731
    return {
        "claims": len(detail),
        "tested": len(tested),
        "family": count("verdict"),
        "alone": count("verdict_alone"),
        "decisions": decisions,
        "alpha_one_sided": alpha,
    }
