"""Verdicts under two randomness scopes, side by side (docs/randomness.md).

A verdict covers what a repeat's seed varies: under scope ``setup`` the tutorial's own randomness (it holds
for the published dataset), under scope ``data`` also what the tutorial fixed, such as the generator's draw
(it holds for the data-generating process). Only the default scope enters the committed results; the other
is a ``dvc exp run -S <experiment>.randomness.scope=data`` away. ``claims.scope_reference`` names that
run's claims (a DVC experiment, a git revision or a file, read as ``drift.load_reference`` reads them), and
each claim judged under another scope there is shown beside this run's verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What the report shows of each side: the verdict, its label alone, and the effect with its interval.
SHOWN = ("verdict", "verdict_alone", "repeats", "mean", "ci_low", "ci_high", "confidence")


def side(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One claim under one scope: its scope (what it covers) and the numbers the report shows."""
    randomness = entry.get("randomness") or {}
    return {
        "scope": randomness.get("scope"),
        "covers": randomness.get("covers"),
        **{key: entry[key] for key in SHOWN if key in entry},
    }


def compare(
    current: Mapping[str, Mapping[str, Any]], other: Mapping[str, Mapping[str, Any]] | None, source: str
) -> dict[str, Any]:
    """Every claim judged in both evaluations under different scopes, this run's side first; a summary line."""
    if other is None:
        return {"reference": source, "claims": {}, "summary": f"No second scope: {source}."}
    claims = {}
    for claim_id, entry in current.items():
        theirs = other.get(claim_id)
        if theirs is None or "values" not in entry or "values" not in theirs:
            continue
        here, there = side(entry), side(theirs)
        if here["scope"] is None or there["scope"] is None or here["scope"] == there["scope"]:
            continue
        claims[claim_id] = {"here": here, "other": there, "same_verdict": here["verdict"] == there["verdict"]}
    if not claims:
        recorded = any((e.get("randomness") or {}).get("scope") for e in other.values())
        why = "" if recorded else " (it records no randomness scope: it predates them)"
        summary = f"No claim is judged under another randomness scope in {source}{why}."
    else:
        same = sum(c["same_verdict"] for c in claims.values())
        summary = (
            f"Claims judged under a second randomness scope ({source}): {len(claims)}; "
            f"with the same verdict under both: {same}."
        )
    return {"reference": source, "claims": claims, "summary": summary}
