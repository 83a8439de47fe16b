"""Judge the whole registry: every claim's values from the train results, its decisions, the family.

The claims stage (stages/claims.py) calls ``evaluate`` and writes its result to reports/claims_detail.json
and ``metrics_view`` of it to reports/claims.json (small and diffable; the DVC metrics are
metrics/claims/, regbench.claims.publish).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regbench.claims import family, stats, verdict
from regbench.claims.judge import judge, look_levels, schedule
from regbench.claims.measures import _absent_member, member_label, per_repeat, run_name
from regbench.claims.schema import DIRECTIONAL, Registry
from regbench.claims.verdict import NOT_RUN
from regbench.config import Params
from regbench.io import read_json
from regbench.schema import ParamsError, to_plain
from regbench.train import records
from regbench.train.records import Run, load_runs


def evaluate(registry: Registry, params: Params, results_dir: Path) -> dict[str, Any]:
    """Every claim's verdict, family-wise labels (Holm over every decision of every claim), and counts."""
    cache: dict[str, list[Run] | None] = {}

    def runs_of(experiment: str, variant: str) -> list[Run] | None:
        name = run_name(params, experiment, variant)
        if name is None:
            return None
        if name not in cache:
            directory = results_dir / str(name)
            cache[name] = load_runs(directory) if (directory / "runs.json").exists() else None
        return cache[name]

    @functools.cache  # a stage's manifest serves every claim on it
    def randomness_of(name: str) -> dict[str, Any] | None:
        manifest = results_dir / name / "manifest.json"
        return read_json(manifest).get("randomness") if manifest.exists() else None

    detail: dict[str, dict[str, Any]] = {}
    for claim in registry.claims:
        runs = {variant: runs_of(claim.experiment, variant) for variant in claim.variants}
        entry: dict[str, Any] = {
            "experiment": claim.experiment,
            "source": claim.source,
            "statement": claim.statement,
            "published": claim.published,
            "published_value": claim.published_value,
            "measure": {k: v for k, v in vars(claim.measure).items() if v is not None},
            "test": {k: to_plain(v) for k, v in vars(claim.test).items() if v is not None},
            "runs": {v: run_name(params, claim.experiment, v) for v in claim.variants},
        }
        unknown = [v for v in claim.variants if run_name(params, claim.experiment, v) is None]
        missing = [variant for variant, found in runs.items() if found is None]
        if unknown:
            configured = params.experiments.get(claim.experiment)
            if configured is not None and params.claims.on_missing_variant == "error":
                # The experiment is configured but has no such variant: most likely a typo in claims.yaml.
                raise ParamsError(
                    f"claims.yaml: claim {claim.id!r} names {claim.experiment} variant(s) {', '.join(unknown)}, "
                    f"which params.yaml does not define (its variants: {', '.join(configured.variants)}). Fix "
                    "the claim, or, with a trimmed params.yaml, set claims.on_missing_variant: not_run"
                )
            # A shrunk params.yaml (quick runs, tests) leaves experiments or variants out.
            reason = f"{claim.experiment} variant(s) {', '.join(unknown)} not in params.yaml train.runs"
            entry.update({"verdict": NOT_RUN, "reason": reason})
        elif absent := _absent_member(params, claim):
            entry.update({"verdict": NOT_RUN, "reason": absent})
        elif missing:
            entry.update({"verdict": NOT_RUN, "reason": f"no train results for {', '.join(missing)}"})
        else:
            values = {
                term.key: per_repeat(runs[term.variant], claim.measure, member_label(params, claim, term))
                for term in claim.test.terms
            }
            entry.update(judge(claim, values, params.claims, params.decide))
            # What the repeats varied, as the runs' manifests record it: what the verdict holds for.
            entry["randomness"] = randomness_of(run_name(params, claim.experiment, claim.variants[0]))
            # A repeat with a diverged run (records.DIVERGENCE_RULE) is left out of the claim: say which and why.
            left_out: dict[str, dict[int, list[str]]] = {}
            for term in claim.test.terms:
                member = member_label(params, claim, term)  # a grid member, or None for a plain variant
                for seed, reasons in records.diverged_repeats(runs[term.variant], member).items():
                    named = [f"{member} {why}" if member else why for why in reasons]
                    left_out.setdefault(term.variant, {}).setdefault(seed, []).extend(named)
            if left_out:
                entry["diverged_repeats"] = {v: sorted(seeds) for v, seeds in left_out.items()}
                # Why, per variant and seed (a JSON key, so text): its runs' reasons (records.divergence_reason).
                entry["diverged_runs"] = {
                    v: {str(k): r for k, r in sorted(seeds.items())} for v, seeds in left_out.items()
                }
        detail[claim.id] = entry
    settings = params.claims
    alpha = stats.one_sided_alpha(settings.confidence)
    decisions = family.apply(detail, alpha)
    tested = [e for e in detail.values() if e["verdict"] != NOT_RUN]
    directional = [e["repeats"] for e in tested if e["test"]["kind"] in DIRECTIONAL]
    summary = family.summary(detail, decisions, alpha)
    summary["family_caveat"] = family.family_caveat(
        directional,
        decisions or len(directional),  # before any look: no decision made yet, so count the claims
        alpha,
        settings.sign_flip_exact_max,
        look_levels(params.decide, alpha) if params.decide.sequential else None,
    )
    repeats = sorted({e["repeats"] for e in tested if e.get("repeats", 0) >= 2})
    calibration = {
        str(n): stats.calibration(n, settings.confidence, settings.calibration_draws, settings.bootstrap_seed)
        for n in repeats
    }
    published = {e: {v: dict(m) for v, m in variants.items()} for e, variants in registry.published_figures.items()}
    boundaries = None
    if params.decide.sequential:
        looks, levels, increments = schedule(settings, params.decide, 0)
        boundaries = {"looks": list(looks), "levels": list(levels), "spending_increments": list(increments)}
    return {
        "summary": summary,
        "claims": detail,
        "published_figures": published,
        "calibration": calibration,
        "boundaries": boundaries,
    }


def metrics_view(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The small, diffable reports/claims.json: one verdict and its numbers per claim."""
    view: dict[str, Any] = {"summary": evaluation["summary"], "claims": {}}
    for cid, entry in evaluation["claims"].items():
        row: dict[str, Any] = {
            "verdict": entry["verdict"],
            "verdict_code": verdict.LABEL_CODES[entry["verdict"]],
            "verdict_alone": entry["verdict_alone"],
        }
        for key in METRIC_KEYS:
            if key in entry:
                # Six significant digits, not decimals: a p-value of 2.5e-14 must not read as 0.
                row[key] = float(f"{entry[key]:.6g}") if isinstance(entry[key], float) else entry[key]
        if "improvement" in entry:
            row["improvement_share"] = round(entry["improvement"]["share"], 6)
        if "diverged_repeats" in entry:
            row["repeats_left_out_diverged"] = sum(len(r) for r in entry["diverged_repeats"].values())
        view["claims"][cid] = row
    return view


# What reports/claims.json (small and diffable) keeps of each claim; claims_detail.json has everything.
METRIC_KEYS = (
    "decided_by",
    "method",
    "mean",
    "ci_low",
    "ci_high",
    "repeats",
    "p_value",
    "p_holm",
    "p_sign_flip",
    "p_equivalence",
    "margin",
    "distance_to_published",
    "published_plausible",
    "smallest_effect",
    "cohens_dz",
    "mde",
    "repeats_needed",  # the first remaining look whose chance of deciding reaches claims.power
    "confidence",  # only with decide.sequential: the deciding look's interval level
)


def counts_line(summary: Mapping[str, Any]) -> str:
    """The summary in one line: family-wise counts first, the per-claim ones after."""

    def listed(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{n} {label}" for label, n in counts.items() if n)

    return (
        f"{summary['tested']} of {summary['claims']} claims tested; family-wise over {summary['decisions']} "
        f"decisions: {listed(summary['family'])} (each claim alone: {listed(summary['alone'])})"
    )
