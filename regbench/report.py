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

from regbench import records
from regbench.claims import NOT_RUN, Measure, bootstrap_interval, per_repeat, run_name
from regbench.config import Params
from regbench.experiments import registry
from regbench.io import atomic_path, read_json
from regbench.plots import METRIC_LABEL, plot_learning_curves
from regbench.plots import pyplot as _pyplot
from regbench.plots import save as _save
from regbench.records import Run, load_runs

VERDICT_MARK = {
    "reproduced": "✅ reproduced",
    "refuted": "❌ refuted",
    "inconclusive": "❔ inconclusive",
    NOT_RUN: "— not run",
}


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


def interval(values: np.ndarray, params: Params, key: str) -> tuple[float, float, float]:
    """Mean and the seeded bootstrap interval over repeats (the claims stage's method)."""
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high, _ = bootstrap_interval(values, params.claims, key)
    return float(values.mean()), low, high


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
    if "mean" not in entry:
        return "–"
    return f"{_fmt(entry['mean'])} [{_fmt(entry['ci_low'])}, {_fmt(entry['ci_high'])}]"


def _describe_test(entry: Mapping[str, Any]) -> str:
    test, measure = entry["test"], entry["measure"]
    what = measure["kind"].replace("_", " ") + " of " + measure["metric"]
    if "minus" in measure:
        what = f"{measure['metric']} − {measure['minus']} at the last epoch"
    if test["kind"] == "paired":
        side = ">" if test["direction"] == "greater" else "<"
        every = " at every epoch (worst epoch per repeat)" if measure["kind"] == "curve" else ""
        line = _fmt(test.get("line", 0.0))
        return f"{what}: {test['variant']} − {test['versus']}{every}, paired by seed; claim: difference {side} {line}"
    if test["kind"] == "single":
        side = ">" if test["direction"] == "greater" else "<"
        return f"{what} of {test['variant']}; claim: {side} {_fmt(test['line'])}"
    band = f"within ±{_fmt(test['tolerance'])} of the published {_fmt(entry['published_value'])}"
    return f"{what} of {test['variant']}; claim: {band}"


def summary_table(evaluation: Mapping[str, Any]) -> list[str]:
    lines = [
        "| claim | verdict | published | measured mean [95 % interval] | repeats | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for claim_id, entry in evaluation["claims"].items():
        p = _fmt(entry["p_holm"], 3) if "p_holm" in entry else "–"
        if entry["test"]["kind"] == "level" and entry["verdict"] != NOT_RUN:
            p = "level claim"
        lines.append(
            f"| [`{claim_id}`](#{_anchor(claim_id)}) | {VERDICT_MARK[entry['verdict']]} | {entry['published']} | "
            f"{_measured(entry)} | {entry.get('repeats', 0)} | {p} |"
        )
    return lines


def _anchor(claim_id: str) -> str:
    return "claim-" + re.sub(r"[^a-z0-9]+", "-", claim_id.lower())


def claim_section(claim_id: str, entry: Mapping[str, Any]) -> list[str]:
    lines = [
        f'<a id="{_anchor(claim_id)}"></a>',
        f"#### `{claim_id}`: {VERDICT_MARK[entry['verdict']]}",
        "",
        f"> {entry['statement']}",
        "",
        f"- Source: `seeds/{entry['source']}`; published: {entry['published']}"
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
    if "distance_to_published" in entry:
        inside = "inside" if entry["published_in_interval"] else "outside"
        lines.append(
            f"- The published figure lies {inside} the interval; measured minus published = "
            f"{_fmt(entry['distance_to_published'])}"
        )
    if "p_value" in entry:
        lines.append(f"- One-sided bootstrap p = {_fmt(entry['p_value'], 3)}, Holm-adjusted {_fmt(entry['p_holm'], 3)}")
    if entry.get("reason"):
        lines.append(f"- Note: {entry['reason']}")
    return [*lines, ""]


def published_table(
    results: ExperimentResults, published: Mapping[str, Mapping[str, float]], params: Params
) -> list[str]:
    lines = ["| variant | metric | published | measured mean [95 % interval] | repeats |", "|---|---|---|---|---|"]
    for variant in results.runs:
        if len(results.members(variant)) != 1:
            continue
        metrics = list(published.get(variant, {})) or [registry()[results.name].headline_metric]
        for metric in metrics:
            values = results.repeat_finals(variant, variant, metric)
            mean, low, high = interval(values, params, f"{results.name}.{variant}.{metric}")
            lines.append(
                f"| {variant} | {METRIC_LABEL.get(metric, metric)} | {_fmt(published.get(variant, {}).get(metric))} | "
                f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}] | {len(values)} |"
            )
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
    revisions = sorted({m["git_revision"] for m in manifests})
    trained = {m["stage"]: {"members": m["members"], "seeds": m["seeds"], "train": m["train"]} for m in manifests}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()
    lines = [
        f"- Git revision(s) of the training code: {', '.join(f'`{r}`' for r in revisions)}",
        f"- Params digest (sha256 of every trained variant's settings, seeds and train knobs): `{digest[:16]}`",
        f"- Engine: `{first['engine']}`; device: {first['device']}",
        "- Library versions: " + ", ".join(f"{k} {v}" for k, v in sorted(first["library_versions"].items())),
        f"- Trained: {min(m['finished'] for m in manifests)} to {max(m['finished'] for m in manifests)}",
        "- Repeats (seeds) per experiment: "
        + "; ".join(
            f"{name} {list(next(iter(r.manifests.values()))['seeds'])}"
            for name, r in all_results.items()
            if r.manifests
        ),
        f"- Total training time: {sum(m['training_seconds'] for m in manifests):.0f} s over {len(manifests)} stages",
        "",
        "| dataset | source | content digest |",
        "|---|---|---|",
    ]
    for name, results in all_results.items():
        if results.manifests:
            data = next(iter(results.manifests.values()))["data_manifest"]
            lines.append(f"| {name} | {data['source']['source']} | `{data['content_digest'][:16]}…` |")
    lines += [
        "",
        f"MLflow: tracking URI `{first['mlflow']['tracking_uri']}`; open it with "
        "`mlflow ui --backend-store-uri sqlite:///mlflow.db` and look for these experiments and parent runs:",
        "",
        "| stage | MLflow experiment | parent run id |",
        "|---|---|---|",
    ]
    for name, results in all_results.items():
        for manifest in results.manifests.values():
            lines.append(f"| `{manifest['stage']}` | `regbench/{name}` | `{manifest['mlflow']['parent_run_id']}` |")
    return lines


def build(params: Params, evaluation: Mapping[str, Any], results_dir: Path, out_dir: Path, now: str) -> dict[str, Any]:
    """Write report.md, index.html and the figures; return what was written."""
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    published = evaluation.get("published_figures", {})
    all_results = {name: ExperimentResults(params, name, results_dir) for name in params.experiments}
    summary = evaluation["summary"]
    md = [
        f"# {params.report.title}",
        "",
        f"Generated {now}. Every number below is a mean over repeats (seeds) with a seeded bootstrap "
        f"{params.claims.confidence:.0%} interval; see the claims' definitions in `claims.yaml`.",
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
        f"{summary['holm_significant']} stay significant at {1 - params.claims.confidence:.2g} after Holm's correction "
        "for multiple comparisons. With five repeats a bootstrap interval is narrow: read the verdicts as "
        "evidence from five seeds, not as certainty.",
        "",
        *summary_table(evaluation),
        "",
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
        md += ["### Claims", ""]
        for claim_id, entry in evaluation["claims"].items():
            if entry["experiment"] == name:
                md += claim_section(claim_id, entry)
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
