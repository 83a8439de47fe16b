"""Small-sample statistics for the claims: tests, intervals, effect sizes, power, calibration.

Every claim is judged on a handful of repeats (seeds), so each method is chosen for its error rate at
n = 3 to 20, and checked by simulation (``calibration``, run by the claims stage at the repeats in use
and by tests/test_stats.py at n = 3, 5, 10, 20):

- **Student t** (``scipy.stats.ttest_1samp``) on the paired differences (or the single values) drives
  every verdict. Its interval and its one-sided p-value are the same test: the two-sided interval at
  ``confidence`` excludes a line exactly when the one-sided p-value towards the claimed side is below
  ``alpha = (1 - confidence) / 2`` (0.025 at 95 %). It assumes the mean over repeats is roughly normal,
  which holds for symmetric per-repeat values even when heavy-tailed or on a coarse accuracy grid; for
  skewed single values it is anti-conservative on the side opposite the skew (measured by
  ``calibration`` and stated in the report). Paired differences of two variants that do not differ are
  symmetric by exchangeability, so paired claims are not exposed to that.
- **Exact sign-flip permutation test** (``scipy.stats.permutation_test``, ``permutation_type='samples'``)
  is the distribution-free companion: exact (all 2**n sign patterns) up to ``sign_flip_exact_max``
  repeats, so its p-value can never be below 1 / 2**n (1/32 at 5 repeats). It drives the verdict only
  when the t statistic is undefined (every repeat gives the same value), where the t test would claim
  certainty from zero spread.
- **BCa bootstrap** (``scipy.stats.bootstrap``, ``method='BCa'``) is reported, for comparison only, from
  ``bca_min_repeats`` (20) repeats on. It drives nothing: ``bench/bca_coverage.md`` simulates a nominal
  95 % BCa interval covering 85 % at 5 repeats, 90 % at 10, 91 % at 20 and 93 % at 30 for normal values
  (79-89 % for t with 3 df), while the t interval covers 93-97 %; only for strongly skewed single values
  does BCa catch up with t (92 % vs 93 % at 20), which is where its skew correction is worth a look.
- **Power** from the noncentral t (``scipy.stats.nct``): the exact power of the one-sided t test at
  level alpha under normality, used for the minimum detectable effect and the repeats needed.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

REPEATS_SEARCH_LIMIT = 10_000


def one_sided_alpha(confidence: float) -> float:
    """The error rate of each one-sided decision: half of what the two-sided interval leaves out."""
    return round((1.0 - confidence) / 2.0, 12)  # 0.025, not 0.025000000000000022


def _mean(sample: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(sample, axis=axis)


def sign_flip_p(sample: np.ndarray, line: float, alternative: str, exact_max: int, seed: Any) -> np.ndarray:
    """One-sided sign-flip p-value of the mean of each row of ``sample`` against ``line``.

    Exact (every one of the 2**n sign patterns, so the smallest possible value is 1 / 2**n) when
    n <= ``exact_max``; beyond, ``2**exact_max`` random sign patterns, seeded, whose smallest value is
    1 / (2**exact_max + 1). scipy's permutation_test with one sample and permutation_type='samples'
    flips signs; n_resamples >= 2**n makes it exact (scipy.stats.permutation_test docs).
    """
    sample = np.atleast_2d(np.asarray(sample, float)) - line
    return stats.permutation_test(
        (sample,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        axis=-1,
        alternative=alternative,
        n_resamples=2**exact_max,
        rng=np.random.default_rng(seed),
    ).pvalue


def sign_flip_floor(repeats: int, exact_max: int) -> float:
    """The smallest p-value the sign-flip test can give at this many repeats."""
    return 1.0 / 2**repeats if repeats <= exact_max else 1.0 / (2**exact_max + 1)


def _t(sample: np.ndarray, line: float, alternative: str) -> np.ndarray:
    """The one-sided t p-value of each row (rows without spread are replaced by the caller)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # scipy warns about catastrophic cancellation for rows with (nearly) zero spread; those rows
        # are decided by the sign-flip test instead (see decide_* below).
        warnings.simplefilter("ignore", RuntimeWarning)
        one_sided = stats.ttest_1samp(sample, line, axis=-1, alternative=alternative).pvalue
    return np.asarray(one_sided, float)


def t_interval(sample: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided Student t interval of the mean of each row (a point when a row has no spread)."""
    sample = np.atleast_2d(np.asarray(sample, float))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_1samp(sample, 0.0, axis=-1).confidence_interval(confidence)
    low, high = np.asarray(interval.low, float), np.asarray(interval.high, float)
    flat = _no_spread(sample)
    mean = sample.mean(axis=-1)
    return np.where(flat, mean, low), np.where(flat, mean, high)


def _no_spread(sample: np.ndarray) -> np.ndarray:
    """Rows whose values are all equal (to rounding): the t statistic is undefined there."""
    scale = np.maximum(np.abs(sample).max(axis=-1), 1e-300)
    return np.ptp(sample, axis=-1) <= 1e-12 * scale


def one_sided_p(
    sample: np.ndarray, line: float, alternative: str, exact_max: int, seed: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(p, method) per row: the one-sided t p-value, or the exact sign-flip one where a row has no spread."""
    sample = np.atleast_2d(np.asarray(sample, float))
    p = _t(sample, line, alternative)
    flat = _no_spread(sample)
    if flat.any():
        p = p.copy()
        p[flat] = sign_flip_p(sample[flat], line, alternative, exact_max, seed)
    return p, np.where(flat, "sign-flip", "t")


# --- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directional:
    """Per-row arrays of a directional decision (rows: simulated samples; one row for a real claim)."""

    verdict: np.ndarray
    decided_by: np.ndarray
    p_value: np.ndarray  # one-sided, towards the claimed side of the line: drives "reproduced"
    p_smallest_effect: np.ndarray  # one-sided, that the effect is below the smallest effect of interest
    method: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def decide_directional(
    sample: np.ndarray,
    line: float,
    direction: str,
    smallest_effect: float,
    confidence: float,
    exact_max: int = 16,
    seed: Any = 0,
) -> Directional:
    """Reproduced, refuted or inconclusive for "the mean lies on the ``direction`` side of ``line``".

    Reproduced when the one-sided p towards the claimed side is below alpha (the interval lies beyond
    the line); refuted when the effect beyond the line is shown smaller than ``smallest_effect`` at the
    same alpha (the interval lies below line + smallest effect on the claimed side, which includes an
    interval on the wrong side of the line). Both can hold when the whole interval sits between the line
    and the smallest effect (a real effect, smaller than the smallest of interest): the claim's
    direction is then reproduced, and the claims stage records that the effect is small.
    """
    sample = np.atleast_2d(np.asarray(sample, float))
    alpha = one_sided_alpha(confidence)
    sign = 1.0 if direction == "greater" else -1.0
    opposite = "less" if direction == "greater" else "greater"
    p, method = one_sided_p(sample, line, direction, exact_max, seed)
    threshold = line + sign * smallest_effect
    p_small, _ = one_sided_p(sample, threshold, opposite, exact_max, seed)
    low, high = t_interval(sample, confidence)
    mean = sample.mean(axis=-1)
    reproduced = p < alpha
    refuted = ~reproduced & (p_small < alpha)
    wrong_side = sign * (mean - line) <= 0
    verdict = np.where(reproduced, "reproduced", np.where(refuted, "refuted", "inconclusive"))
    decided_by = np.where(
        reproduced,
        "interval beyond the line",
        np.where(
            refuted & wrong_side & (smallest_effect == 0),
            "interval on the wrong side of the line",
            np.where(
                refuted,
                "interval below the smallest effect of interest",
                "interval contains the line and reaches the smallest effect of interest",
            ),
        ),
    )
    return Directional(verdict, decided_by, p, p_small, method, low, high)


@dataclass(frozen=True)
class Level:
    verdict: np.ndarray
    decided_by: np.ndarray
    p_equivalence: np.ndarray  # TOST: the larger of the two one-sided p-values
    p_outside: np.ndarray  # the smaller one-sided p that the mean lies outside the band
    method: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def decide_level(
    sample: np.ndarray, low_bound: float, high_bound: float, confidence: float, exact_max: int = 16, seed: Any = 0
) -> Level:
    """Equivalence (two one-sided tests, TOST) of the mean with a band, at alpha per side.

    Reproduced when both one-sided tests put the mean inside the band (p_equivalence < alpha), i.e. the
    two-sided interval at ``confidence`` lies within it; refuted when a one-sided test puts it outside
    (the interval lies wholly beyond a bound). TOST at alpha = 0.025 per side is stricter than the
    textbook 5 % TOST (a 90 % interval): it keeps one interval and one error rate for every claim.
    """
    sample = np.atleast_2d(np.asarray(sample, float))
    alpha = one_sided_alpha(confidence)
    above_low, method = one_sided_p(sample, low_bound, "greater", exact_max, seed)
    below_high, _ = one_sided_p(sample, high_bound, "less", exact_max, seed)
    under_low, _ = one_sided_p(sample, low_bound, "less", exact_max, seed)
    over_high, _ = one_sided_p(sample, high_bound, "greater", exact_max, seed)
    p_equivalence = np.maximum(above_low, below_high)
    p_outside = np.minimum(under_low, over_high)
    low, high = t_interval(sample, confidence)
    reproduced = p_equivalence < alpha
    refuted = ~reproduced & (p_outside < alpha)
    verdict = np.where(reproduced, "reproduced", np.where(refuted, "refuted", "inconclusive"))
    decided_by = np.where(
        reproduced,
        "interval inside the band",
        np.where(refuted, "interval outside the band", "interval straddles a band edge"),
    )
    return Level(verdict, decided_by, p_equivalence, p_outside, method, low, high)


def decide_equivalence(
    sample: np.ndarray, margin: float, confidence: float, exact_max: int = 16, seed: Any = 0
) -> Level:
    """Sameness: TOST of the mean (of a paired difference) against the band [-margin, +margin].

    The same two one-sided tests as ``decide_level``, each at alpha: reproduced when the interval lies
    inside ±margin, refuted when it lies wholly outside, inconclusive when it straddles an edge. Its
    error rates (simulated in tests/test_stats.py): a mean on an edge is called the same in at most alpha
    of samples, and a mean inside the margin is called different in at most alpha (Schuirmann's TOST;
    Lakens 2017, "Equivalence tests", Social Psychological and Personality Science 8(4)).
    """
    decision = decide_level(sample, -margin, margin, confidence, exact_max, seed)
    words = {
        "interval inside the band": "interval inside ±margin",
        "interval outside the band": "interval outside ±margin",
        "interval straddles a band edge": "interval straddles a margin edge",
    }
    decided_by = np.vectorize(words.get, otypes=[object])(decision.decided_by)
    return dataclasses.replace(decision, decided_by=decided_by)


# --- effect sizes and power --------------------------------------------------------------------


def standardized_effect(sample: np.ndarray, line: float) -> float | None:
    """Cohen's d_z: (mean - line) / standard deviation of the (paired) values; None without spread."""
    spread = float(np.std(sample, ddof=1)) if len(sample) > 1 else 0.0
    return None if spread == 0 else float((np.mean(sample) - line) / spread)


def improvement_share(sample: np.ndarray, line: float, direction: str, confidence: float) -> dict[str, float]:
    """Share of repeats on the claimed side of the line (ties count against), Clopper-Pearson interval.

    scipy.stats.binomtest(...).proportion_ci(method='exact') is the Clopper-Pearson interval.
    """
    sign = 1.0 if direction == "greater" else -1.0
    wins = int(np.count_nonzero(sign * (np.asarray(sample) - line) > 0))
    interval = stats.binomtest(wins, len(sample)).proportion_ci(confidence_level=confidence, method="exact")
    return {"share": wins / len(sample), "low": float(interval.low), "high": float(interval.high), "count": wins}


def power(effect: float, repeats: int, alpha: float) -> float:
    """Power of the one-sided one-sample t test at level alpha for a standardized effect (noncentral t)."""
    if repeats < 2:
        return 0.0
    freedom = repeats - 1
    critical = stats.t.ppf(1.0 - alpha, freedom)
    return float(stats.nct.sf(critical, freedom, effect * np.sqrt(repeats)))


@functools.lru_cache(maxsize=256)  # depends on n only: the same for every claim, and for every draw of a simulation
def minimum_detectable_effect(repeats: int, alpha: float, target: float) -> float | None:
    """The standardized effect the one-sided t test detects with probability ``target`` at this n."""
    if repeats < 2:
        return None
    return float(optimize.brentq(lambda d: power(d, repeats, alpha) - target, 1e-9, 1e3))


def repeats_needed(effect: float | None, alpha: float, target: float) -> int | None:
    """The fewest repeats whose t test reaches power ``target`` at this standardized effect (None: never)."""
    if effect is None or not np.isfinite(effect) or effect <= 0:
        return None
    low, high = 2, 2
    while power(effect, high, alpha) < target:
        if high >= REPEATS_SEARCH_LIMIT:
            return None
        low, high = high, min(2 * high, REPEATS_SEARCH_LIMIT)
    while low < high:
        middle = (low + high) // 2
        if power(effect, middle, alpha) >= target:
            high = middle
        else:
            low = middle + 1
    return high


def sign_flip_repeats(alpha: float) -> int:
    """The fewest repeats at which the exact sign-flip test can go below alpha at all (1 / 2**n < alpha)."""
    return int(np.floor(np.log2(1.0 / alpha))) + 1


def bca_interval(sample: np.ndarray, confidence: float, resamples: int, seed: Any) -> tuple[float, float]:
    """The BCa bootstrap interval of the mean (scipy.stats.bootstrap, method='BCa'), seeded."""
    result = stats.bootstrap(
        (np.asarray(sample, float),),
        np.mean,
        method="BCa",
        confidence_level=confidence,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# --- calibration by simulation -----------------------------------------------------------------

# Null distributions with mean 0 and unit scale, drawn as (draws, repeats) arrays.
NullSampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


def _accuracy_steps(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # The difference of two accuracies on a 70-example test set (circles): multiples of 1/70.
    return (rng.binomial(70, 0.8, shape) - rng.binomial(70, 0.8, shape)) / 70.0


NULLS: dict[str, NullSampler] = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "heavy-tailed (t, 3 df)": lambda rng, shape: rng.standard_t(3, shape),
    "accuracy steps of 1/70": _accuracy_steps,
    # Paired difference of a skewed measure between two variants that do not differ.
    "skewed, paired (exponential - exponential)": lambda rng, shape: (
        rng.exponential(1, shape) - rng.exponential(1, shape)
    ),
    # A skewed single value against a line (no pairing to symmetrize it): the t test's weak spot.
    "skewed, single (exponential - 1)": lambda rng, shape: rng.exponential(1, shape) - 1.0,
}


def calibration(
    repeats: int, confidence: float, draws: int, seed: int, nulls: dict[str, NullSampler] | None = None
) -> dict[str, dict[str, float]]:
    """Simulated error rates of the verdict rules at this many repeats, under no effect.

    Per null distribution: the false "reproduced" rate of a directional claim whose true mean lies on
    the line, for each side (the larger is reported), the two-sided coverage of the t interval, and the
    false "reproduced" rate of a level claim whose true mean lies just outside its band.
    """
    rng = np.random.default_rng([seed, repeats])
    rates: dict[str, dict[str, float]] = {}
    for name, sampler in (nulls or NULLS).items():
        sample = sampler(rng, (draws, repeats))
        false = max(
            float(np.mean(decide_directional(sample, 0.0, side, 0.0, confidence).verdict == "reproduced"))
            for side in ("greater", "less")
        )
        low, high = t_interval(sample, confidence)
        coverage = float(np.mean((low <= 0) & (high >= 0)))
        level = float(np.mean(decide_level(sample, 0.0, 100.0, confidence).verdict == "reproduced"))
        rates[name] = {"false_reproduced": false, "coverage": coverage, "level_false_reproduced": level}
    return rates


# --- sequential looks (adaptive repeats) -------------------------------------------------------
#
# ``./run.sh decide`` adds repeats to undecided claims and looks again. Judging every look at the full
# alpha would inflate the false-verdict rate (each look is another chance of a false decision), so each
# look k gets its own share alpha_k of the one-sided alpha from an alpha-spending function f
# (Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials", Biometrika 70:659):
# alpha_k = f(t_k) - f(t_{k-1}) with information fraction t_k = n_k / max_repeats and f(1) = alpha. The two
# Lan-DeMets functions are as in R gsDesign's sfLDOF / sfLDPocock (https://rdrr.io/pkg/gsDesign/man/sfLDOF.html).
# Each look is the ordinary fixed-n decision (Student t / TOST above) at alpha_k, and the union
# (Bonferroni) bound P(any false decision) <= sum_k alpha_k = alpha holds whatever the dependence between
# looks, so the procedure needs no joint distribution of t statistics with estimated variances (which
# exact group-sequential boundaries would, and which is not well approximated at 5-20 repeats). The
# price is some conservatism against exact boundaries; tests/test_stats.py measures the error rate.
# The same alpha_k guards "refuted" decisions (their one-sided tests are at the same alpha_k), so both
# error rates are bounded.

SPENDING_FUNCTIONS = ("pocock", "obrien-fleming", "linear")


def spent_alpha(fraction: float, alpha: float, spending: str) -> float:
    """Cumulative one-sided alpha spent by information fraction ``fraction`` (in (0, 1])."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    if fraction == 0.0:
        return 0.0
    if spending == "pocock":  # Lan-DeMets Pocock type: alpha * ln(1 + (e - 1) t); spends early
        return float(alpha * np.log1p((np.e - 1.0) * fraction))
    if spending == "obrien-fleming":  # Lan-DeMets O'Brien-Fleming type: 2 - 2 Phi(z_{1-alpha/2} / sqrt t)
        return float(2.0 * stats.norm.sf(stats.norm.isf(alpha / 2.0) / np.sqrt(fraction)))
    if spending == "linear":  # alpha * t: an even split over equally spaced looks
        return float(alpha * fraction)
    raise ValueError(f"spending = {spending!r}: must be one of {', '.join(SPENDING_FUNCTIONS)}")


def look_schedule(start: int, batch: int, max_repeats: int) -> tuple[int, ...]:
    """Repeats at each look: start, start + batch, ..., max_repeats (the last step may be shorter)."""
    if not 2 <= start <= max_repeats or batch < 1:
        raise ValueError(
            f"look schedule start={start}, batch={batch}, max_repeats={max_repeats}: need 2 <= start <= max_repeats "
            "and batch >= 1"
        )
    looks = list(range(start, max_repeats, batch))
    return tuple([*looks, max_repeats])


def look_alphas(looks: tuple[int, ...], alpha: float, spending: str) -> tuple[float, ...]:
    """The one-sided alpha of each look: the increments of the spending function; they sum to ``alpha``."""
    last = looks[-1]
    spent = [spent_alpha(n / last, alpha, spending) for n in looks]
    increments = [spent[0]] + [b - a for a, b in zip(spent, spent[1:], strict=False)]
    return tuple(float(a) for a in increments)


def sequential_p(p_values: np.ndarray, alphas: tuple[float, ...]) -> np.ndarray:
    """The p-value of the whole sequential procedure from each look's fixed-n one-sided p-value.

    ``p_values``: one column per look of the schedule whose ``alphas`` are given (NaN where a row
    stopped earlier or was not tested); fewer columns than looks: the later looks were not reached.
    The result is min over the looks reached of p_k * alpha / alpha_k, capped at 1, with alpha the sum
    of the ``alphas``. It is a valid p-value by the same union bound as the verdicts:
    P(p <= u) <= sum_k P(p_k <= u alpha_k / alpha) <= sum_k u alpha_k / alpha = u under the null, for
    every u and whatever the dependence between looks (looks not reached only make the minimum larger).
    It is below alpha exactly when some look's p_k was below its alpha_k, i.e. when the claim was
    reproduced, so Holm across claims can use it at the full alpha without contradicting a verdict.
    The deciding look's own fixed-n p is not valid after data-dependent stopping: undecided claims can
    end with alpha_k <= p < alpha, and at Holm's smaller thresholds it errs too often (Pocock, 5/10/15/20
    repeats: below alpha / 5 in about 1.2 % of null claims instead of 0.5 %; tests/test_stats.py).
    """
    p_values = np.atleast_2d(np.asarray(p_values, float))
    alpha = float(sum(alphas))
    weights = alpha / np.asarray(alphas[: p_values.shape[-1]], float)
    with np.errstate(invalid="ignore"):
        weighted = np.where(np.isnan(p_values), np.inf, p_values * weights)
    return np.minimum(1.0, weighted.min(axis=-1))


def sequential_directional(
    sample: np.ndarray,
    line: float,
    direction: str,
    smallest_effect: float,
    looks: tuple[int, ...],
    alphas: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verdict, look index, sequential p) per row when each row is looked at after its first n_k values,
    alpha_k at look k.

    The first look whose verdict is not inconclusive decides; rows undecided at the last look stay
    inconclusive (look index -1). The sequential p (``sequential_p``) is over the looks each row
    reached. Rows must hold at least ``looks[-1]`` values.
    """
    sample = np.atleast_2d(np.asarray(sample, float))
    verdict = np.full(sample.shape[0], "inconclusive", dtype=object)
    decided_at = np.full(sample.shape[0], -1)
    p_by_look = np.full((sample.shape[0], len(looks)), np.nan)
    for index, (repeats, alpha) in enumerate(zip(looks, alphas, strict=True)):
        open_rows = decided_at < 0
        if not open_rows.any():
            break
        look = decide_directional(sample[open_rows, :repeats], line, direction, smallest_effect, 1.0 - 2.0 * alpha)
        rows = np.flatnonzero(open_rows)
        p_by_look[rows, index] = look.p_value
        decided = look.verdict != "inconclusive"
        verdict[rows[decided]] = look.verdict[decided]
        decided_at[rows[decided]] = index
    return verdict.astype(str), decided_at, sequential_p(p_by_look, alphas)
