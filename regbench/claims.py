"""Judge the tutorials' claims from the train stages' per-repeat histories.

The registry (``claims.yaml``) declares each claim as data: a measure that
reduces one run's history to a number, and a test that compares the
per-repeat values of one variant with another variant (paired by seed), with a
line, or with a published level. Each claim gets a seeded bootstrap interval of
the mean over repeats and a verdict: reproduced, refuted or inconclusive.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from regbench import records
from regbench.config import ClaimsParams, Params
from regbench.experiments import names as experiment_names
from regbench.io import read_json
from regbench.records import EPOCH_METRICS, FINAL_METRICS, Run, load_runs
from regbench.schema import ParamsError, build, check, fail

MeasureKind = Literal[
    "final", "best", "best_epoch", "gap", "rise_after_best", "drop_after_peak", "variability", "curve"
]
VERDICTS = {"reproduced": 1, "inconclusive": 0, "refuted": -1}
NOT_RUN = "not run"


def _metric_name(value: str) -> bool:
    return value in EPOCH_METRICS + FINAL_METRICS


@dataclass(frozen=True)
class Measure:
    kind: MeasureKind
    metric: str = check(_metric_name, f"must be one of {list(EPOCH_METRICS + FINAL_METRICS)}")
    minus: str | None = check(_metric_name, f"must be one of {list(EPOCH_METRICS + FINAL_METRICS)}", default=None)
    mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        if (self.kind == "gap") != (self.minus is not None):
            raise ParamsError(f"claims.yaml: measure {self.kind!r}: 'minus' is required for gap and only for gap")
        if self.kind not in ("final", "gap") and self.metric in FINAL_METRICS:
            raise ParamsError(
                f"claims.yaml: measure {self.kind!r} needs a per-epoch metric {list(EPOCH_METRICS)}, "
                f"not {self.metric!r} (measured once, after the last epoch)"
            )


@dataclass(frozen=True)
class Test:
    kind: Literal["paired", "single", "level"]
    variant: str
    versus: str | None = None
    direction: Literal["greater", "less"] | None = None
    line: float = 0.0
    tolerance: float | None = check(lambda v: v > 0, "must be a positive tolerance", default=None)

    def __post_init__(self) -> None:
        if (self.kind == "paired") != (self.versus is not None):
            raise ParamsError(f"claims.yaml: test {self.kind!r}: 'versus' is required for paired and only for paired")
        if (self.kind == "level") != (self.tolerance is not None):
            raise ParamsError(f"claims.yaml: test {self.kind!r}: 'tolerance' is required for level and only for level")
        if (self.kind == "level") == (self.direction is not None):
            raise ParamsError(f"claims.yaml: test {self.kind!r}: 'direction' is required unless the test is level")


@dataclass(frozen=True)
class Claim:
    id: str
    experiment: str
    source: str
    statement: str
    published: str
    measure: Measure
    test: Test
    published_value: float | None = None

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.test.variant,) + ((self.test.versus,) if self.test.versus else ())


@dataclass(frozen=True)
class Registry:
    claims: tuple[Claim, ...] = field(default_factory=tuple)
    # The tutorials' per-variant figures, shown beside the measured ones: experiment -> variant -> metric -> value.
    published_figures: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)


def load_registry(path: str | Path) -> Registry:
    """Read and validate ``claims.yaml``.

    Variants are matched against params.yaml when the claims are judged: a claim whose
    variants are not configured (a shrunk params.yaml) is reported as not run.
    """
    path = Path(path)
    with path.open() as handle:
        raw = yaml.safe_load(handle)
    try:
        registry = build(Registry, raw, "")
    except ParamsError as error:
        raise ParamsError(str(error).replace("params.yaml:", f"{path.name}:", 1)) from None
    seen: set[str] = set()
    for index, claim in enumerate(registry.claims):
        where = f"claims[{index}]"
        if claim.id in seen:
            _fail(path, f"{where}.id", claim.id, "is listed twice; ids must be unique")
        seen.add(claim.id)
        if claim.experiment not in experiment_names():
            _fail(path, f"{where}.experiment", claim.experiment, f"must be one of {list(experiment_names())}")
        if claim.test.kind == "level" and claim.published_value is None:
            _fail(path, f"{where}.published_value", None, "a level test needs the published value")
    for experiment, variants in registry.published_figures.items():
        for variant, figures in variants.items():
            where = f"published_figures.{experiment}.{variant}"
            if experiment not in experiment_names():
                _fail(path, where, "...", f"names no experiment; experiments are {list(experiment_names())}")
            for metric in figures:
                if not _metric_name(metric):
                    _fail(
                        path,
                        f"{where}.{metric}",
                        figures[metric],
                        f"unknown metric; use {list(EPOCH_METRICS + FINAL_METRICS)}",
                    )
    return registry


def _fail(path: Path, key: str, value: Any, allowed: str) -> None:
    try:
        fail(key, value, allowed)
    except ParamsError as error:
        raise ParamsError(str(error).replace("params.yaml:", f"{path.name}:", 1)) from None


# --- runs and measures -------------------------------------------------------


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
        return values
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


# --- statistics --------------------------------------------------------------


def bootstrap_means(values: np.ndarray, resamples: int, seed: int, claim_id: str) -> np.ndarray:
    """Means of resamples (with replacement) of the repeats.

    The stream is seeded by the claim id too, so adding a claim leaves every other claim's interval as it was.
    """
    rng = np.random.default_rng([seed, zlib.crc32(claim_id.encode())])
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[picks].mean(axis=1)


def bootstrap_interval(values: np.ndarray, settings: ClaimsParams, key: str) -> tuple[float, float, np.ndarray]:
    """The seeded bootstrap interval (at ``settings.confidence``) of the mean, and the resampled means."""
    boot = bootstrap_means(values, settings.bootstrap_resamples, settings.bootstrap_seed, key)
    alpha = 1.0 - settings.confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), boot


def directional_verdict(low: float, high: float, line: float, direction: str) -> str:
    """Reproduced: the interval lies on the claimed side of the line; refuted: on the other side or on it."""
    if direction == "less":
        low, high, line = -high, -low, -line
    if low > line:
        return "reproduced"
    if high <= line:
        return "refuted"
    return "inconclusive"


def level_verdict(low: float, high: float, value: float, tolerance: float) -> str:
    """Reproduced: the interval lies within value +/- tolerance; refuted: it lies wholly outside."""
    if value - tolerance <= low and high <= value + tolerance:
        return "reproduced"
    if high < value - tolerance or low > value + tolerance:
        return "refuted"
    return "inconclusive"


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone)."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    count = len(ordered)
    adjusted, running = {}, 0.0
    for rank, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[key] = running
    return adjusted


def judge(claim: Claim, values: Mapping[str, dict[int, Any]], settings: ClaimsParams) -> dict[str, Any]:
    """The verdict of one claim from the per-repeat values of its variant(s)."""
    test = claim.test
    a = values[test.variant]
    if test.kind == "paired":
        b = values[test.versus]
        repeats = sorted(set(a) & set(b))
        if claim.measure.kind == "curve":
            # Holds at every epoch: the repeat's worst epoch for the claim must still be on its side.
            worst = np.min if test.direction == "greater" else np.max
            diffs = [float(worst(a[r][: len(b[r])] - b[r][: len(a[r])])) for r in repeats]
        else:
            diffs = [a[r] - b[r] for r in repeats]
        sample = np.asarray(diffs, float)
        means = {
            test.variant: _mean_of(a, repeats),
            test.versus: _mean_of(b, repeats),
        }
    else:
        repeats = sorted(a)
        sample = np.asarray([a[r] for r in repeats], float)
        means = {test.variant: _mean_of(a, repeats)}
    result: dict[str, Any] = {
        "repeats": len(repeats),
        "values": [round(float(v), 6) for v in sample],
        "variant_means": means,
    }
    if len(repeats) == 0:
        return {**result, "verdict": "inconclusive", "reason": "no repeat finished without diverging"}
    mean = float(sample.mean())
    low, high, boot = bootstrap_interval(sample, settings, claim.id)
    spread = float(sample.std(ddof=1)) if len(sample) > 1 else 0.0
    result.update({"mean": mean, "ci_low": low, "ci_high": high, "std": spread})
    if test.kind == "level":
        value, tolerance = float(claim.published_value), float(test.tolerance)
        verdict = level_verdict(low, high, value, tolerance)
        result.update(
            {
                "published_in_interval": bool(low <= value <= high),
                "distance_to_published": mean - value,
                "band": [value - tolerance, value + tolerance],
            }
        )
    else:
        verdict = directional_verdict(low, high, test.line, test.direction)
        wrong_side = boot <= test.line if test.direction == "greater" else boot >= test.line
        # One-sided bootstrap p-value for "the mean is on the claimed side of the line".
        result["p_value"] = float((1 + np.count_nonzero(wrong_side)) / (len(boot) + 1))
        result["line"] = test.line
    if len(repeats) < settings.min_repeats:
        result["reason"] = f"only {len(repeats)} repeats (claims.min_repeats = {settings.min_repeats})"
        verdict = "inconclusive"
    result["verdict"] = verdict
    return result


def _mean_of(values: Mapping[int, Any], repeats: Sequence[int]) -> float | None:
    if not repeats:
        return None
    picked = [values[r] for r in repeats]
    if isinstance(picked[0], np.ndarray):
        return float(np.mean([p[-1] for p in picked]))
    return float(np.mean(picked))


# --- the whole registry ------------------------------------------------------


def run_name(params: Params, experiment: str, variant: str) -> str | None:
    for name, ref in params.train.runs.items():
        if ref.experiment == experiment and ref.variant == variant:
            return name
    return None


def evaluate(registry: Registry, params: Params, results_dir: Path) -> dict[str, Any]:
    """Every claim's verdict, Holm-adjusted p-values over the directional ones, and counts."""
    cache: dict[str, list[Run] | None] = {}

    def runs_of(experiment: str, variant: str) -> list[Run] | None:
        name = run_name(params, experiment, variant)
        if name is None:
            return None
        if name not in cache:
            directory = results_dir / str(name)
            cache[name] = load_runs(directory) if (directory / "runs.json").exists() else None
        return cache[name]

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
            "test": {k: v for k, v in vars(claim.test).items() if v is not None},
            "runs": {v: run_name(params, claim.experiment, v) for v in claim.variants},
        }
        unknown = [v for v in claim.variants if run_name(params, claim.experiment, v) is None]
        missing = [variant for variant, found in runs.items() if found is None]
        if unknown:
            # A shrunk params.yaml (quick runs, tests) leaves experiments out; a typo lands here too.
            reason = f"{claim.experiment} variant(s) {', '.join(unknown)} not in params.yaml train.runs"
            entry.update({"verdict": NOT_RUN, "reason": reason})
        elif missing:
            entry.update({"verdict": NOT_RUN, "reason": f"no train results for {', '.join(missing)}"})
        else:
            values = {variant: per_repeat(found, claim.measure) for variant, found in runs.items()}
            entry.update(judge(claim, values, params.claims))
        detail[claim.id] = entry
    p_values = {cid: e["p_value"] for cid, e in detail.items() if "p_value" in e}
    adjusted = holm(p_values)
    for cid, p_holm in adjusted.items():
        detail[cid]["p_holm"] = p_holm
    tested = [e for e in detail.values() if e["verdict"] != NOT_RUN]
    summary = {
        "claims": len(detail),
        "tested": len(tested),
        **{name: sum(e["verdict"] == name for e in tested) for name in VERDICTS},
        "directional_tested": len(p_values),
        "holm_significant": sum(p < 1 - params.claims.confidence for p in adjusted.values()),
    }
    published = {e: {v: dict(m) for v, m in variants.items()} for e, variants in registry.published_figures.items()}
    return {"summary": summary, "claims": detail, "published_figures": published}


def metrics_view(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The small, diffable DVC metrics file: one verdict and its numbers per claim."""
    view: dict[str, Any] = {"summary": evaluation["summary"], "claims": {}}
    for cid, entry in evaluation["claims"].items():
        row: dict[str, Any] = {"verdict": entry["verdict"], "verdict_code": VERDICTS.get(entry["verdict"])}
        for key in ("mean", "ci_low", "ci_high", "repeats", "p_holm", "distance_to_published"):
            if key in entry:
                row[key] = round(entry[key], 6) if isinstance(entry[key], float) else entry[key]
        view["claims"][cid] = row
    return view


def tag_mlflow_runs(evaluation: Mapping[str, Any], results_dir: Path) -> int:
    """Tag each train stage's MLflow parent run with the ids of the claims that use it.

    Done here, not in the train stage, so that editing the registry never reruns training.
    A run missing from the current tracking store (another MLFLOW_TRACKING_URI) is skipped.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from regbench.tracking import tracking_uri

    ids_by_run: dict[str, list[str]] = {}
    for claim_id, entry in evaluation["claims"].items():
        for name in entry["runs"].values():
            if name is not None:
                ids_by_run.setdefault(name, []).append(claim_id)
    client = MlflowClient(tracking_uri())
    tagged = 0
    for name, claim_ids in ids_by_run.items():
        manifest = results_dir / name / "manifest.json"
        run_id = read_json(manifest).get("mlflow", {}).get("parent_run_id") if manifest.exists() else None
        if not run_id:
            continue
        try:
            client.set_tag(run_id, "regbench.claims", ",".join(sorted(claim_ids)))
        except MlflowException:
            continue
        tagged += 1
    return tagged
