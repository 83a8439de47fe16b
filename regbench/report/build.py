"""The comparison report: reports/report.md, reports/index.html (self-contained, safe) and reports/figures/.

``build(params, evaluation, results_dir, out_dir)`` loads the train results (load.py), draws the figures
(figures.py), fills the Markdown templates (templates/, via render.py) with the tables and lines of
sections.py, and renders the same Markdown into the HTML page (render.py). Both files are a function of
code, params and data only: no timestamps, absolute paths, hosts or MLflow run ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regbench.claims import stats
from regbench.config import Params
from regbench.io import atomic_path
from regbench.report import figures, render, sections
from regbench.report.load import ExperimentResults, finding, tutorial
from regbench.report.text import Md, code, escape, fmt, percent, slug

TEMPLATE = "report.md.j2"
# MLflow names whose home is regbench/train/tracking.py (STAGE_TAG, and mlflow_ui_command of the default
# store, DEFAULT_STORE); tests/test_report.py checks they agree. Importing that module would import MLflow,
# about 4 of the 9 s this package takes to import, for two strings.
STAGE_TAG = "regbench.stage"
UI_COMMAND = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///mlflow.db --workers 1"


def build(
    params: Params,
    evaluation: Mapping[str, Any],
    results_dir: Path,
    out_dir: Path,
    rounds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.md, index.html and the figures; return what was written."""
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    all_results = {name: ExperimentResults(params, name, results_dir) for name in params.experiments}
    experiments, drawn = experiment_sections(params, evaluation, all_results, figures_dir)
    text = render.markdown(TEMPLATE, **context(params, evaluation, all_results, experiments, rounds))
    with atomic_path(out_dir / "report.md") as temporary:
        temporary.write_text(text, encoding="utf-8")
    with atomic_path(out_dir / "index.html") as temporary:
        temporary.write_text(render.page(text, params.report.title, out_dir), encoding="utf-8")
    for stale in figures_dir.glob("*.png"):
        if stale.name not in drawn:
            stale.unlink()
    return {"figures": drawn, "claims": len(evaluation["claims"])}


def first_page(params: Params, evaluation: Mapping[str, Any], detailed: set[str]) -> list[dict[str, Any]]:
    """Per tutorial (experiment, in params.yaml's order), its name and each claim's finding; a claim of an
    experiment in ``detailed`` (one with a section: it was trained) links to its section."""
    by_experiment: dict[str, list] = {}
    for claim_id, entry in evaluation["claims"].items():
        by_experiment.setdefault(entry["experiment"], []).append(finding(claim_id, entry, params.claims.confidence))
    order = [name for name in params.experiments if name in by_experiment]
    order += [name for name in by_experiment if name not in order]
    pages = []
    for name in order:
        findings = by_experiment[name]
        seeds = [evaluation["claims"][f.claim_id].get("source") for f in findings]
        pages.append(
            {
                "tutorial": tutorial(name, seeds[0] if seeds else None),
                "experiment": name,
                "findings": [
                    {
                        "claim": f,
                        "published": sections.published(f),
                        "ours": sections.ours(f),
                        "details": Md(f" [Details](#{slug(f.claim_id)})") if name in detailed else Md(""),
                    }
                    for f in findings
                ],
            }
        )
    return pages


def experiment_sections(
    params: Params,
    evaluation: Mapping[str, Any],
    all_results: Mapping[str, ExperimentResults],
    figures_dir: Path,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per trained experiment: its figures (drawn here), tables, flags and claims, for the template."""
    published = evaluation.get("published_figures", {})
    confidence = params.claims.confidence
    flags = sections.not_learned(all_results)
    out, drawn = [], []

    def figure(path: Path, alt: str) -> dict[str, Any]:
        drawn.append(path.name)
        return {"alt": escape(alt), "path": Md(f"figures/{path.name}")}

    for name, results in all_results.items():
        if not results.runs:
            continue
        shown = []
        curves = figures_dir / figures.file_name(name, "curves")
        if figures.curves(results, curves, params.report.max_curve_points):
            shown.append(figure(curves, f"{name} learning curves"))
        comparison = figures_dir / figures.file_name(name, "published_vs_measured")
        if figures.published_vs_measured(results, published.get(name, {}), confidence, comparison):
            shown.append(figure(comparison, f"{name} published vs measured"))
        for variant in results.runs:
            grid = figures_dir / figures.file_name(name, variant)
            if len(results.members(variant)) > 1 and figures.grid(results, variant, confidence, grid):
                shown.append(figure(grid, f"{name} {variant}"))
        bullets, panels = sections.weight_decay_pairs_text(results, params, evaluation)
        decay_figure = None
        if panels:
            path = figures_dir / figures.file_name(name, "weight_decay_vs_l2")
            figures.weight_decay(panels, name, path, params.report.max_curve_points)
            decay_figure = figure(path, f"{name} weight decay vs L2")
        claims = [
            {
                "id": claim_id,
                "label": entry["verdict"],
                "statement": entry["statement"],
                "lines": sections.claim_lines(entry, flags),
                "scope": sections.scope_lines(evaluation.get("scopes"), claim_id),
            }
            for claim_id, entry in evaluation["claims"].items()
            if entry["experiment"] == name
        ]
        out.append(
            {
                "name": name,
                "randomness": sections.randomness_line(results),
                "figures": shown,
                "published_table": sections.published_table(results, published.get(name, {}), confidence),
                "not_learned": sections.not_learned_lines(flags, name),
                "diverged": sections.diverged_lines(results),
                "weight_decay": bullets,
                "weight_decay_figure": decay_figure,
                "claims": claims,
            }
        )
    return out, drawn


def context(
    params: Params,
    evaluation: Mapping[str, Any],
    all_results: Mapping[str, ExperimentResults],
    experiments: list[dict[str, Any]],
    rounds: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Everything the report template reads."""
    settings = params.claims
    alpha = stats.one_sided_alpha(settings.confidence)
    looks, look_alphas = sections.looks(params)
    drift = evaluation.get("drift")
    scopes = evaluation.get("scopes")
    return {
        "title": params.report.title,
        "confidence": percent(settings.confidence, 0),
        "confidence_value": Md(f"{settings.confidence:g}"),
        "alpha": fmt(alpha),
        "power": percent(settings.power, 0),
        "bca_min_repeats": settings.bca_min_repeats,
        "calibration_draws": settings.calibration_draws,
        "any_sequential": any("confidence" in entry for entry in evaluation["claims"].values()),
        "sequential": params.decide.sequential,
        "spending": escape(params.decide.spending),
        "looks": Md(", ".join(map(str, looks))),
        "look_alphas": Md(", ".join(fmt(a, 3) for a in look_alphas)),
        "look_alphas_sum": fmt(sum(look_alphas), 3),
        # The claims stage's exact group-sequential levels per look, where it writes them.
        "boundary_levels": Md(
            ", ".join(fmt(level, 3) for level in (evaluation.get("boundaries") or {}).get("levels", []))
        ),
        "stopped": stop_reason(rounds),
        "summary": evaluation["summary"],
        "summary_text": sections.summary_text(evaluation["summary"], alpha),
        # The claims stage's typed verdicts (regbench.claims.verdict): five labels, one Holm family.
        "family_labels": "family" in evaluation["summary"],
        "first_page": first_page(params, evaluation, {experiment["name"] for experiment in experiments}),
        "scope_note": sections.scope_note(evaluation),
        "data_sources": sections.data_sources(all_results),
        "summary_table": sections.summary_table(evaluation),
        "not_learned": sections.not_learned_lines(sections.not_learned(all_results)),
        "calibration_rows": sections.calibration_rows(evaluation),
        "experiments": experiments,
        "rounds": rounds if rounds and rounds.get("rounds") else None,
        "rounds_table": sections.rounds_table(rounds) if rounds and rounds.get("rounds") else Md(""),
        "looks_table": sections.looks_table(evaluation),
        "drift": drift,
        "drift_table": sections.drift_table(drift) if drift else Md(""),
        # Claims also judged under a second randomness scope (claims.scope_reference), side by side.
        "scopes": scopes if scopes and scopes.get("claims") else None,
        "scopes_table": sections.scopes_table(scopes) if scopes and scopes.get("claims") else Md(""),
        "provenance": sections.provenance(all_results, STAGE_TAG),
        "mlflow_ui": code(UI_COMMAND),
    }


def stop_reason(rounds: Mapping[str, Any] | None) -> Md:
    """Why ./run.sh decide stopped, without its timings (the committed report holds none: issue 25)."""
    reason = (rounds or {}).get("stopped") or "still running"
    return escape(re.sub(r":\s*[\d.]+ s of dvc repro spent", " (the time budget was spent)", reason))


def drift_lines(evaluation: Mapping[str, Any]) -> list[str]:
    """The drift section alone (templates/drift.md.j2), as lines; none without a drift report."""
    drift = evaluation.get("drift")
    if not drift:
        return []
    text = render.markdown("drift.md.j2", drift=drift, drift_table=sections.drift_table(drift))
    return text.strip("\n").split("\n")
