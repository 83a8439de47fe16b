"""The claims registry's schema: ``claims.yaml`` read into typed, validated dataclasses.

A claim names a measure (how one run's history becomes a number), a test (how the per-repeat values are
judged against another variant, a line or a published level) and, per measure kind, the statistic the
test uses (``Registry.statistics``): a mean (Student t) for most measures, a log ratio for positive,
right-skewed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from regbench.data.experiments import names as experiment_names
from regbench.schema import ParamsError, build, check, check_claim_id, fail
from regbench.train.records import EPOCH_METRICS, FINAL_METRICS

MeasureKind = Literal[
    "final", "best", "best_epoch", "gap", "rise_after_best", "drop_after_peak", "variability", "curve"
]
# Tests of a side of a line (the others test a band: level, equivalent).
DIRECTIONAL = ("paired", "single", "interaction")
# The statistic a test uses, per measure kind (claims.yaml `statistics`; a kind not named there: "mean").
#   mean       Student t on the per-repeat values (or paired differences), in the measure's units.
#   log_ratio  Student t on the logs: log(variant / versus) per seed (a single value: log(value / line)), for
#              positive, right-skewed measures whose spread grows with their size (jitter, a loss near 0);
#              its line and smallest effect are in natural-log units (0.2 = a ratio of e^0.2 = 1.22).
Statistic = Literal["mean", "log_ratio"]


def _metric_name(value: str) -> bool:
    return value in EPOCH_METRICS + FINAL_METRICS


@dataclass(frozen=True)
class Measure:
    kind: MeasureKind
    metric: str = check(_metric_name, f"must be one of {list(EPOCH_METRICS + FINAL_METRICS)}")
    minus: str | None = check(_metric_name, f"must be one of {list(EPOCH_METRICS + FINAL_METRICS)}", default=None)
    mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        if self.kind == "gap" and self.minus is None:
            raise ParamsError("claims.yaml: measure 'gap': 'minus' is required (metric - minus at the last epoch)")
        if self.kind not in ("gap", "curve") and self.minus is not None:
            raise ParamsError(
                f"claims.yaml: measure {self.kind!r}: 'minus' is for gap (at the last epoch) and curve (epoch by "
                "epoch) only"
            )
        if self.kind == "curve" and self.minus in FINAL_METRICS:
            raise ParamsError(
                f"claims.yaml: measure 'curve': minus {self.minus!r} is measured once; use a per-epoch metric "
                f"{list(EPOCH_METRICS)}"
            )
        if self.kind not in ("final", "gap") and self.metric in FINAL_METRICS:
            raise ParamsError(
                f"claims.yaml: measure {self.kind!r} needs a per-epoch metric {list(EPOCH_METRICS)}, "
                f"not {self.metric!r} (measured once, after the last epoch)"
            )


@dataclass(frozen=True)
class Term:
    """One variant's per-repeat values in a claim's contrast, with the sign it enters with.

    ``at``: for a grid variant, the member by its grid setting and value (``{hidden_dropout: 0.1}``),
    matched against the member params of params.yaml, never against member labels.
    """

    variant: str
    sign: float
    at: Mapping[str, float] | None = None

    @property
    def key(self) -> str:
        """The name the term's values go by in the claim's results (unique within a claim)."""
        if not self.at:
            return self.variant
        return self.variant + "[" + ", ".join(f"{k}={v:g}" for k, v in self.at.items()) + "]"


@dataclass(frozen=True)
class Test:
    kind: Literal["paired", "single", "level", "equivalent", "interaction"]
    variant: str
    versus: str | None = None
    # Grid members: the member of a grid variant by its grid setting and value, e.g. {hidden_dropout: 0.1}.
    variant_at: Mapping[str, float] | None = None
    versus_at: Mapping[str, float] | None = None
    # Interaction: (variant - versus) - (base - base_versus), repeat by repeat.
    base: str | None = None
    base_versus: str | None = None
    direction: Literal["greater", "less"] | None = None
    line: float = 0.0
    tolerance: float | None = check(lambda v: v > 0, "must be a positive tolerance", default=None)
    # Equivalence: the largest difference (for a curve: at any epoch) still called "the same".
    margin: float | None = check(lambda v: v > 0, "must be a positive margin", default=None)
    # The smallest effect of interest beyond the line (directional tests); default: half the published one.
    smallest_effect: float | None = check(lambda v: v >= 0, "must be 0 or more", default=None)

    def __post_init__(self) -> None:
        kind = self.kind
        compared = kind in ("paired", "equivalent", "interaction")
        if compared != (self.versus is not None):
            raise ParamsError(
                f"claims.yaml: test {kind!r}: 'versus' is required for paired, equivalent and interaction tests "
                "and only for them"
            )
        if (kind == "interaction") != (self.base is not None and self.base_versus is not None):
            raise ParamsError(
                f"claims.yaml: test {kind!r}: 'base' and 'base_versus' are required for an interaction test (it "
                "judges (variant - versus) - (base - base_versus)) and only for one"
            )
        if kind != "interaction" and (self.base is not None or self.base_versus is not None):
            raise ParamsError(f"claims.yaml: test {kind!r}: 'base' and 'base_versus' belong to interaction tests")
        if self.versus_at is not None and self.versus is None:
            raise ParamsError(f"claims.yaml: test {kind!r}: 'versus_at' names a member of 'versus', which is not set")
        for name in ("variant_at", "versus_at"):
            at = getattr(self, name)
            if at is not None and len(at) != 1:
                raise ParamsError(
                    f"claims.yaml: test {name} = {dict(at)!r}: name one grid setting and its value, "
                    "e.g. {hidden_dropout: 0.1}"
                )
        if (kind == "level") != (self.tolerance is not None):
            raise ParamsError(f"claims.yaml: test {kind!r}: 'tolerance' is required for level and only for level")
        if (kind == "equivalent") != (self.margin is not None):
            raise ParamsError(
                f"claims.yaml: test {kind!r}: 'margin' is required for equivalent and only for equivalent"
            )
        if (kind in ("level", "equivalent")) == (self.direction is not None):
            raise ParamsError(
                f"claims.yaml: test {kind!r}: 'direction' is required unless the test is level or equivalent"
            )
        if kind in ("level", "equivalent") and self.smallest_effect is not None:
            raise ParamsError(
                f"claims.yaml: test {kind!r}: its band is the tolerance or margin; 'smallest_effect' is for "
                "directional tests"
            )
        if kind == "equivalent" and self.line != 0.0:
            raise ParamsError("claims.yaml: test 'equivalent': the band is ±margin around 0; remove 'line'")

    @property
    def terms(self) -> tuple[Term, ...]:
        """The per-repeat value the test judges, as a signed sum of variants' values (a contrast)."""
        terms = [Term(self.variant, 1.0, self.variant_at)]
        if self.versus is not None:
            terms.append(Term(self.versus, -1.0, self.versus_at))
        if self.base is not None and self.base_versus is not None:
            terms += [Term(self.base, -1.0), Term(self.base_versus, 1.0)]
        return tuple(terms)


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
    # Filled from the registry's per-kind `statistics` when the registry is loaded, not written per claim.
    statistic: Statistic = "mean"

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term.variant for term in self.test.terms))


@dataclass(frozen=True)
class Registry:
    claims: tuple[Claim, ...] = field(default_factory=tuple)
    # The tutorials' per-variant figures, shown beside the measured ones: experiment -> variant -> metric -> value.
    published_figures: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    # Measure kind -> the statistic its tests use (see Statistic); kinds not named use "mean".
    statistics: Mapping[MeasureKind, Statistic] = field(default_factory=dict)


def load_registry(path: str | Path) -> Registry:
    """Read and validate ``claims.yaml``.

    Variants are matched against params.yaml when the claims are judged: a claim whose
    variants are not configured (a shrunk params.yaml) is reported as not run.
    """
    path = Path(path)
    with path.open() as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ParamsError(f"{path.name} is not valid YAML: fix the place named here.\n{error}") from None
    try:
        registry = build(Registry, raw, "")
    except ParamsError as error:
        raise ParamsError(str(error).replace("params.yaml:", f"{path.name}:", 1)) from None
    claims = []
    for claim in registry.claims:
        statistic = registry.statistics.get(claim.measure.kind, "mean")
        claims.append(dataclasses.replace(claim, statistic=statistic))
    registry = dataclasses.replace(registry, claims=tuple(claims))
    seen: set[str] = set()
    for index, claim in enumerate(registry.claims):
        where = f"claims[{index}]"
        check_claim_id(f"{where}.id", claim.id, source=path.name)
        if claim.id in seen:
            _fail(path, f"{where}.id", claim.id, "is listed twice; ids must be unique")
        seen.add(claim.id)
        if claim.experiment not in experiment_names():
            _fail(path, f"{where}.experiment", claim.experiment, f"must be one of {list(experiment_names())}")
        if claim.test.kind == "level" and claim.published_value is None:
            _fail(path, f"{where}.published_value", None, "a level test needs the published value")
        if claim.test.kind == "single" and "line" not in raw["claims"][index]["test"]:
            # A paired difference has a natural line (0); a single value has none, so it must be stated.
            _fail(path, f"{where}.test.line", None, "a single test needs the line its value is compared with")
        if claim.test.kind in DIRECTIONAL and claim.test.smallest_effect is None and claim.published_value is None:
            _fail(
                path,
                f"{where}.test.smallest_effect",
                None,
                "declare the smallest effect of interest (no published_value to take half of)",
            )
        if claim.statistic == "log_ratio":
            _check_log_ratio(path, where, claim)
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


def _check_log_ratio(path: Path, where: str, claim: Claim) -> None:
    """A log-ratio test compares ratios: paired tests against ratio 1 (line 0), single ones against a positive
    line, its smallest effect declared in log units; no level or band test."""
    test = claim.test
    if test.kind not in DIRECTIONAL:
        _fail(path, f"{where}.test.kind", test.kind, "a log_ratio statistic takes paired, single or interaction tests")
    if test.kind == "single" and test.line <= 0:
        _fail(path, f"{where}.test.line", test.line, "a log_ratio test of a single value needs a positive line")
    if test.kind != "single" and test.line != 0.0:
        _fail(path, f"{where}.test.line", test.line, "a log_ratio comparison is against the ratio 1: line 0")
    if test.smallest_effect is None:
        _fail(path, f"{where}.test.smallest_effect", None, "declare it in natural-log units for a log_ratio test")


def _fail(path: Path, key: str, value: Any, allowed: str) -> None:
    try:
        fail(key, value, allowed)
    except ParamsError as error:
        raise ParamsError(str(error).replace("params.yaml:", f"{path.name}:", 1)) from None
