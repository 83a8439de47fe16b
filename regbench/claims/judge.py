"""Judge the tutorials' claims from the train stages' per-repeat histories.

The registry (``claims.yaml``) declares each claim as data: a measure that
reduces one run's history to a number, and a test that compares the
per-repeat values of one variant with another variant (paired by seed), with a
line, or with a published level. Each claim gets a Student t interval of the mean
over repeats, a one-sided p-value (or an equivalence p-value for a level), effect
sizes, power and a verdict: reproduced, refuted or inconclusive, with the rule that
decided it. The methods and why they were chosen are in ``regbench.claims.stats``.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from regbench.claims import stats
from regbench.config import ClaimsParams, DecideParams, Params
from regbench.data.experiments import names as experiment_names
from regbench.io import read_json
from regbench.schema import ParamsError, build, check, check_claim_id, fail, to_plain
from regbench.train import records
from regbench.train.records import EPOCH_METRICS, FINAL_METRICS, Run, load_runs

MeasureKind = Literal[
    "final", "best", "best_epoch", "gap", "rise_after_best", "drop_after_peak", "variability", "curve"
]
VERDICTS = {"reproduced": 1, "inconclusive": 0, "refuted": -1}
# Tests of a side of a line (the others test a band: level, equivalent).
DIRECTIONAL = ("paired", "single", "interaction")
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

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term.variant for term in self.test.terms))


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
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ParamsError(f"{path.name} is not valid YAML: fix the place named here.\n{error}") from None
    try:
        registry = build(Registry, raw, "")
    except ParamsError as error:
        raise ParamsError(str(error).replace("params.yaml:", f"{path.name}:", 1)) from None
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


# --- statistics --------------------------------------------------------------


def smallest_effect(claim: Claim) -> float:
    """The smallest effect of interest beyond the line, on the claimed side (measure units).

    Declared in claims.yaml (``test.smallest_effect``), or by default half the published value's
    distance beyond the line: an interval wholly below it excludes the published effect with room to
    spare, so the claim as published is refuted. Level claims have a band instead.
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


def judge(claim: Claim, values: Mapping[str, dict[int, Any]], settings: ClaimsParams) -> dict[str, Any]:
    """The verdict of one claim from the per-repeat values of its variant(s); the methods are in claims.stats."""
    test = claim.test
    repeats, sample = contrast(claim, values)
    means = {term.key: _mean_of(values[term.key], repeats) for term in test.terms}
    result: dict[str, Any] = {
        "repeats": len(repeats),
        # The seeds of the repeats the verdict rests on: the drift report pairs values by them.
        "repeat_ids": [int(r) for r in repeats],
        "values": [round(float(v), 6) for v in sample],
        "variant_means": means,
    }
    if len(repeats) < 2:
        reason = "no repeat finished without diverging" if not repeats else "one repeat: no spread to test against"
        return {**result, "verdict": "inconclusive", "reason": reason}
    alpha = stats.one_sided_alpha(settings.confidence)
    mean = float(sample.mean())
    spread = float(sample.std(ddof=1))
    seed = [settings.bootstrap_seed, zlib.crc32(claim.id.encode())]
    result.update({"mean": mean, "std": spread, "alpha_one_sided": alpha})
    if test.kind == "level":
        result.update(_judge_level(claim, sample, settings, seed))
    elif test.kind == "equivalent":
        result.update(_judge_equivalent(claim, sample, settings, seed))
    else:
        result.update(_judge_directional(claim, sample, settings, seed))
    result["sign_flip_floor"] = stats.sign_flip_floor(len(sample), settings.sign_flip_exact_max)
    if len(sample) >= settings.bca_min_repeats:
        low, high = stats.bca_interval(sample, settings.confidence, settings.bootstrap_resamples, seed)
        result["bca_interval"] = [low, high]
    if len(repeats) < settings.min_repeats:
        _undecided(result, settings.min_repeats)
        result["reason"] = f"only {len(repeats)} repeats (claims.min_repeats = {settings.min_repeats})"
        result["decided_by"] = "too few repeats"
    return result


def _undecided(result: dict[str, Any], fewest: int) -> None:
    """Make a verdict inconclusive because it rests on fewer than ``fewest`` repeats; its repeats needed are
    then at least ``fewest`` (a decided one: exactly that), not "no number of repeats would decide"."""
    if "repeats_needed" in result:
        needed = result["repeats_needed"]
        if result["verdict"] != "inconclusive":
            result["repeats_needed"] = fewest
        elif needed is not None:
            result["repeats_needed"] = max(needed, fewest)
    result["verdict"] = "inconclusive"


def common_repeats(claim: Claim, values: Mapping[str, dict[int, Any]]) -> list[int]:
    """The repeats (seeds) a claim can use, in order: those every term of its contrast has."""
    return sorted(set.intersection(*(set(values[term.key]) for term in claim.test.terms)))


def judge_sequential(
    claim: Claim, values: Mapping[str, dict[int, Any]], settings: ClaimsParams, decide: DecideParams
) -> dict[str, Any]:
    """The verdict at the first look that decides: look k judges the first n_k common repeats at alpha_k.

    The looks and their alphas come from params alone (regbench.claims.stats.look_schedule, look_alphas), and
    the repeats are taken in order, so the verdict is a function of params and results: a claim grown to
    15 repeats by ./run.sh decide gets the same verdict from a plain dvc repro of the final params.
    Repeats beyond the last look reached are not used (they await the next look).
    """
    schedule = look_levels(decide, stats.one_sided_alpha(settings.confidence))
    looks, alphas = tuple(schedule), tuple(schedule.values())
    available = common_repeats(claim, values)
    history: list[dict[str, Any]] = []
    result: dict[str, Any] | None = None
    for index, (repeats, look_alpha) in enumerate(zip(looks, alphas, strict=True)):
        if repeats > len(available):
            break
        kept = set(available[:repeats])
        restricted = {variant: {r: v for r, v in found.items() if r in kept} for variant, found in values.items()}
        look_settings = dataclasses.replace(settings, confidence=1.0 - 2.0 * look_alpha)
        result = judge(claim, restricted, look_settings)
        history.append(
            {
                "look": index + 1,
                "repeats": repeats,
                "alpha_one_sided": look_alpha,
                "verdict": result["verdict"],
                **{key: result[key] for key in ("mean", "ci_low", "ci_high", "p_value") if key in result},
            }
        )
        if result["verdict"] != "inconclusive":
            break
    sequential = {
        "spending": decide.spending,
        "looks": list(looks),
        "look_alphas": list(alphas),
        "repeats_available": len(available),
        "history": history,
        "decided_at_look": history[-1]["look"] if result and result["verdict"] != "inconclusive" else None,
        "at_max_repeats": bool(history) and history[-1]["repeats"] == looks[-1],
    }
    if result is None:
        # Fewer repeats than the first look: judged as usual for the numbers, but not decided.
        result = judge(claim, values, settings)
        _undecided(result, decide.start)
        result.update(
            {
                "decided_by": "before the first look",
                "reason": f"{len(available)} repeats, fewer than decide.start = {decide.start}",
            }
        )
    elif result["verdict"] == "inconclusive" and sequential["at_max_repeats"]:
        result["reason"] = (
            f"undecided at decide.max_repeats = {looks[-1]} repeats "
            f"(mean effect {result.get('mean', float('nan')):.4g})"
        )
    result["confidence"] = 1.0 - 2.0 * history[-1]["alpha_one_sided"] if history else settings.confidence
    if "p_value" in result:
        # The p-value of the whole procedure (stats.sequential_p), which Holm across claims uses: the deciding
        # look's own p is not valid after stopping at the first decision. Looks forced inconclusive by
        # claims.min_repeats are left out (still valid: fewer looks only raise the minimum), so this p is
        # below alpha exactly when the claim is reproduced. No look reached: no test made, p = 1.
        p_by_look = [math.nan] * len(alphas)
        for look in history:
            if look["repeats"] >= settings.min_repeats and "p_value" in look:
                p_by_look[look["look"] - 1] = look["p_value"]
        result["p_sequential"] = float(stats.sequential_p(p_by_look, alphas)[0])
    result["sequential"] = sequential
    return result


def _judge_directional(claim: Claim, sample: np.ndarray, settings: ClaimsParams, seed: list[int]) -> dict[str, Any]:
    test = claim.test
    alpha = stats.one_sided_alpha(settings.confidence)
    effect_floor = smallest_effect(claim)
    decision = stats.decide_directional(
        sample, test.line, test.direction, effect_floor, settings.confidence, settings.sign_flip_exact_max, seed
    )
    sign = 1.0 if test.direction == "greater" else -1.0
    beyond = sign * (float(sample.mean()) - test.line) + 0.0  # + 0.0: no "-0" for a "less" claim
    spread = float(sample.std(ddof=1))
    # Effects are oriented towards the claim: positive means on the claimed side, for "less" claims too.
    raw_dz = stats.standardized_effect(sample, test.line)
    d_z = None if raw_dz is None else sign * raw_dz + 0.0
    mde = stats.minimum_detectable_effect(len(sample), alpha, settings.power)
    verdict = str(decision.verdict[0])
    result: dict[str, Any] = {
        "verdict": verdict,
        "decided_by": str(decision.decided_by[0]),
        "method": "Student t" if decision.method[0] == "t" else "exact sign-flip (no spread: t undefined)",
        "p_value": float(decision.p_value[0]),
        "p_below_smallest_effect": float(decision.p_smallest_effect[0]),
        "p_sign_flip": float(
            stats.sign_flip_p(sample, test.line, test.direction, settings.sign_flip_exact_max, seed)[0]
        ),
        "ci_low": float(decision.ci_low[0]),
        "ci_high": float(decision.ci_high[0]),
        "line": test.line,
        "smallest_effect": effect_floor,
        "effect_beyond_line": beyond,
        # The largest effect beyond the line the interval allows: "no effect of the published size: at most X".
        "effect_at_most": sign * ((decision.ci_high if sign > 0 else decision.ci_low)[0] - test.line),
        "cohens_dz": d_z,
        "improvement": stats.improvement_share(sample, test.line, test.direction, settings.confidence),
        "power": settings.power,
        "mde_standardized": mde,
        "mde": None if mde is None else mde * spread,
        "repeats_needed": None,
    }
    result["effect_at_most"] = float(result["effect_at_most"])
    # A real effect beyond the line that is still shown smaller than the smallest effect of interest.
    result["below_smallest_effect"] = bool(verdict == "reproduced" and decision.p_smallest_effect[0] < alpha)
    if decision.method[0] != "t":
        result["mde"] = result["mde_standardized"] = None
        if verdict == "inconclusive":
            result["decided_by"] = _no_spread(len(sample))
    if verdict == "inconclusive":
        if spread == 0:
            needed: int | None = stats.sign_flip_repeats(alpha)
        else:
            # Either show the effect beyond the line or show it below the smallest effect of interest,
            # whichever the observed mean and spread make quicker (an estimate: both are noisy at small n).
            candidates = [
                stats.repeats_needed(beyond / spread, alpha, settings.power),
                stats.repeats_needed((effect_floor - beyond) / spread, alpha, settings.power),
            ]
            found = [n for n in candidates if n is not None]
            needed = min(found) if found else None
        result["repeats_needed"] = needed
    return result


def _judge_level(claim: Claim, sample: np.ndarray, settings: ClaimsParams, seed: list[int]) -> dict[str, Any]:
    value, tolerance = float(claim.published_value), float(claim.test.tolerance)
    decision = stats.decide_level(
        sample, value - tolerance, value + tolerance, settings.confidence, settings.sign_flip_exact_max, seed
    )
    result = _band_verdict(decision, sample, settings, tolerance - abs(float(sample.mean()) - value))
    return {
        **result,
        "published_in_interval": bool(result["ci_low"] <= value <= result["ci_high"]),
        "distance_to_published": float(sample.mean()) - value,
        "band": [value - tolerance, value + tolerance],
    }


def _judge_equivalent(claim: Claim, sample: np.ndarray, settings: ClaimsParams, seed: list[int]) -> dict[str, Any]:
    """Sameness within ±margin: TOST on the per-repeat contrast (stats.decide_equivalence)."""
    margin = float(claim.test.margin)
    decision = stats.decide_equivalence(sample, margin, settings.confidence, settings.sign_flip_exact_max, seed)
    result = _band_verdict(decision, sample, settings, margin - abs(float(sample.mean())))
    return {**result, "margin": margin, "band": [-margin, margin]}


def _band_verdict(decision: stats.Level, sample: np.ndarray, settings: ClaimsParams, inside: float) -> dict[str, Any]:
    """The verdict of an equivalence test (level or sameness); ``inside``: how far the mean lies inside the band
    (negative: outside), from which the repeats an inconclusive verdict needs are estimated."""
    alpha = stats.one_sided_alpha(settings.confidence)
    spread = float(sample.std(ddof=1))
    verdict = str(decision.verdict[0])
    needed = None
    if verdict == "inconclusive":
        # Inside the band: show it is inside (the nearer edge decides); outside: show it is outside.
        needed = (
            stats.sign_flip_repeats(alpha)
            if spread == 0
            else stats.repeats_needed(abs(inside) / spread, alpha, settings.power)
        )
    flat = decision.method[0] != "t"
    return {
        "verdict": verdict,
        "decided_by": _no_spread(len(sample)) if flat and verdict == "inconclusive" else str(decision.decided_by[0]),
        "method": "TOST, exact sign-flip (no spread)" if flat else "TOST, Student t",
        "p_equivalence": float(decision.p_equivalence[0]),
        "p_outside": float(decision.p_outside[0]),
        "ci_low": float(decision.ci_low[0]),
        "ci_high": float(decision.ci_high[0]),
        "repeats_needed": needed,
    }


def _no_spread(repeats: int) -> str:
    return f"no spread: the exact sign-flip p cannot go below 1/2^{repeats} = {2.0**-repeats:.4g}"


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
        f"Holm's first threshold over {family} directional claims is {alpha:g}/{family} = {alpha / family:.4g}"
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
            if params.decide.sequential:
                entry.update(judge_sequential(claim, values, params.claims, params.decide))
            else:
                entry.update(judge(claim, values, params.claims))
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
    # Holm over the directional claims at the full alpha. With sequential looks each claim enters with the
    # p-value of its whole sequential procedure (stats.sequential_p), valid after stopping at the first decision.
    p_values = {cid: e.get("p_sequential", e["p_value"]) for cid, e in detail.items() if "p_value" in e}
    adjusted = holm(p_values)
    for cid, p_holm in adjusted.items():
        detail[cid]["p_holm"] = p_holm
    tested = [e for e in detail.values() if e["verdict"] != NOT_RUN]
    repeats = sorted({e["repeats"] for e in tested if e.get("repeats", 0) >= 2})
    summary = {
        "claims": len(detail),
        "tested": len(tested),
        **{name: sum(e["verdict"] == name for e in tested) for name in VERDICTS},
        "directional_tested": len(p_values),
        "alpha_one_sided": alpha,
        "holm_significant": sum(p < alpha for p in adjusted.values()),
        "family_caveat": family_caveat(
            [detail[c]["repeats"] for c in p_values],
            len(p_values),
            alpha,
            settings.sign_flip_exact_max,
            look_levels(params.decide, alpha) if params.decide.sequential else None,
        ),
    }
    calibration = {
        str(n): stats.calibration(n, settings.confidence, settings.calibration_draws, settings.bootstrap_seed)
        for n in repeats
    }
    published = {e: {v: dict(m) for v, m in variants.items()} for e, variants in registry.published_figures.items()}
    return {"summary": summary, "claims": detail, "published_figures": published, "calibration": calibration}


def look_levels(decide: DecideParams, alpha: float) -> dict[int, float]:
    """The repeats at each look -> its one-sided alpha (stats.look_schedule, stats.look_alphas)."""
    looks = stats.look_schedule(decide.start, decide.batch, decide.max_repeats)
    return dict(zip(looks, stats.look_alphas(looks, alpha, decide.spending), strict=True))


def metrics_view(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The small, diffable DVC metrics file: one verdict and its numbers per claim."""
    view: dict[str, Any] = {"summary": evaluation["summary"], "claims": {}}
    for cid, entry in evaluation["claims"].items():
        row: dict[str, Any] = {"verdict": entry["verdict"], "verdict_code": VERDICTS.get(entry["verdict"])}
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


# What reports/claims.json (the DVC metrics file) keeps of each claim; claims_detail.json has everything.
METRIC_KEYS = (
    "decided_by",
    "method",
    "mean",
    "ci_low",
    "ci_high",
    "repeats",
    "p_value",
    "p_sequential",  # only with decide.sequential: the p-value of the whole sequential procedure, Holm's input
    "p_holm",
    "p_sign_flip",
    "p_equivalence",
    "margin",
    "distance_to_published",
    "smallest_effect",
    "cohens_dz",
    "mde",
    "repeats_needed",
    "confidence",  # only with decide.sequential: the deciding look's interval level
)


def tag_mlflow_runs(evaluation: Mapping[str, Any], results_dir: Path) -> int:
    """Tag each train stage's MLflow parent run with the ids of the claims that use it.

    Done here, not in the train stage, so that editing the registry never reruns training.
    A run missing from the current tracking store (another MLFLOW_TRACKING_URI) is skipped.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from regbench.train.tracking import tracking_uri

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
