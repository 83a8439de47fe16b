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
  certainty from zero spread. Values that agree to float32 precision are ties (``snap_ties``).
- **Two questions per claim** (``judge_looks``): the direction (one-sided t towards each side of the
  line) and the size (one-sided t that the mean lies below line + smallest effect), each decision a test
  of its own at the look's level; regbench.claims.verdict derives the label from both.
- **Exact group-sequential levels** (``sequential_levels``) for the looks of ``./run.sh decide``, and
  ``group_sequential_p`` for Holm's family over every decision (regbench.claims.family).
- **Prediction interval** (``prediction_interval``): could one published run have come out of this setup?
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


# Values that agree to this relative precision are the same value. A float32 number carries about 7
# significant digits (machine epsilon 1.2e-7), and a contrast of two float32 measures (accuracies near 0.8
# differing by 0.03) loses about 1.5 digits more, so 1e-5 of the sample's largest magnitude merges every
# float32-rounded copy of one value and nothing a measure resolves (a step of one test example of 70 is 0.014).
TIE_TOLERANCE = 1e-5


def snap_ties(sample: np.ndarray, line: float = 0.0) -> np.ndarray:
    """Each row with values that agree within ``TIE_TOLERANCE`` (relative) made exactly equal, order kept.

    Rows are sorted, neighbours closer than the tolerance joined into one group, and every member of a
    group given the group's smallest value; values within the tolerance of ``line`` become ``line``. So
    five identical differences, one of them rounded to float32, are five equal values again: the t
    statistic is undefined and the exact sign-flip test decides (p = 1/32), as for the exact copy.
    """
    sample = np.atleast_2d(np.asarray(sample, float))
    if sample.shape[-1] == 0:
        return sample
    scale = np.maximum(np.max(np.abs(sample), axis=-1, keepdims=True), abs(line))
    tolerance = TIE_TOLERANCE * np.maximum(scale, 1e-300)
    order = np.argsort(sample, axis=-1, kind="stable")
    ordered = np.take_along_axis(sample, order, axis=-1)
    starts = np.concatenate([np.ones_like(ordered[:, :1], bool), np.diff(ordered, axis=-1) > tolerance], axis=-1)
    # Each group's smallest value: the value at its start, the latest start at or before each position.
    group_start = np.maximum.accumulate(np.where(starts, np.arange(ordered.shape[-1]), 0), axis=-1)
    snapped_sorted = np.take_along_axis(ordered, group_start, axis=-1)
    snapped_sorted = np.where(np.abs(snapped_sorted - line) <= tolerance, line, snapped_sorted)
    snapped = np.empty_like(snapped_sorted)
    np.put_along_axis(snapped, order, snapped_sorted, axis=-1)
    return snapped


def _no_spread(sample: np.ndarray) -> np.ndarray:
    """Rows whose values are all equal (after ``snap_ties``): the t statistic is undefined there."""
    return np.ptp(sample, axis=-1) == 0


def one_sided_p(
    sample: np.ndarray, line: float, alternative: str, exact_max: int = 16, seed: Any = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(p, method) per row: the one-sided t p-value, or the exact sign-flip one where a row has no spread.

    Ties are snapped first (``snap_ties``). A row without spread is n copies of one value: every sign
    pattern but the observed one moves the mean towards the line, so the exact sign-flip p is 1/2^n when
    the value lies beyond the line on the tested side and 1 otherwise (scipy.stats.permutation_test gives
    the same; computed directly so that simulations need no permutation run per row).
    """
    sample = snap_ties(sample, line)
    p = _t(sample, line, alternative)
    flat = _no_spread(sample)
    if flat.any():
        p = p.copy()
        beyond = sample[flat, 0] > line if alternative == "greater" else sample[flat, 0] < line
        p[flat] = np.where(beyond, 2.0 ** -sample.shape[-1], 1.0)
    return p, np.where(flat, "sign-flip", "t")


# --- decisions ---------------------------------------------------------------------------------


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
    two-sided interval at ``confidence`` lies within it; contradicted when a one-sided test puts it outside
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
    reproduced = p_equivalence <= alpha
    refuted = ~reproduced & (p_outside <= alpha)
    verdict = np.where(reproduced, "reproduced", np.where(refuted, "contradicted", "undecided"))
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
    inside ±margin, contradicted when it lies wholly outside, undecided when it straddles an edge. Its
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
    """Share of repeats on the claimed side of the line, a tie (to ``snap_ties``) counting one half.

    The interval runs from the Clopper-Pearson lower bound with every tie a loss to the upper bound with
    every tie a win (scipy.stats.binomtest(...).proportion_ci(method='exact')), so it covers whichever way
    the ties are read.
    """
    sign = 1.0 if direction == "greater" else -1.0
    beyond = sign * (snap_ties(sample, line)[0] - line)
    wins, ties, count = int(np.sum(beyond > 0)), int(np.sum(beyond == 0)), len(beyond)
    low = stats.binomtest(wins, count).proportion_ci(confidence_level=confidence, method="exact").low
    high = stats.binomtest(wins + ties, count).proportion_ci(confidence_level=confidence, method="exact").high
    return {"share": (wins + 0.5 * ties) / count, "low": float(low), "high": float(high), "count": wins, "ties": ties}


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
    alpha = one_sided_alpha(confidence)
    rates: dict[str, dict[str, float]] = {}
    for name, sampler in (nulls or NULLS).items():
        sample = sampler(rng, (draws, repeats))
        false = max(
            float(np.mean(judge_looks(sample, 0.0, side, 0.0, (repeats,), (alpha,)).direction == 1))
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
# alpha would inflate the false-verdict rate (each look is another chance of a false decision), so the
# looks spend the one-sided alpha by a spending function f (Lan & DeMets 1983, "Discrete sequential
# boundaries for clinical trials", Biometrika 70:659): the chance of first crossing at look k is
# f(t_k) - f(t_{k-1}) (``look_alphas``), information fraction t_k = n_k / max_repeats, f(1) = alpha. The
# Lan-DeMets functions are as in R gsDesign's sfLDOF / sfLDPocock (https://rdrr.io/pkg/gsDesign/man/sfLDOF.html).
# Each look's nominal level is exact for t statistics (``sequential_levels`` below, by simulation), so the
# whole alpha is spent; every decision of a claim (direction either way, size) is a one-sided test with
# these levels. Across claims, Holm takes each decision's ``group_sequential_p``, valid at every level.

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


# --- exact group-sequential boundaries ---------------------------------------------------------
#
# The looks' nominal levels spend the whole alpha: a_1 = f(t_1) and, for k > 1, a_k is chosen so that the
# chance of first crossing at look k, under no effect, is the spending function's increment f(t_k) - f(t_{k-1})
# (Lan & DeMets 1983). With Student t statistics at 5-20 repeats the joint law of the looks' statistics is
# not the normal one the usual recursive integration (R gsDesign, scipy's multivariate normal) assumes, but
# it is free of the mean and the scale: under no effect it is that of t statistics of cumulative normal
# samples, whatever the sd. So the levels are calibrated by simulating exactly that law (SIMULATION_DRAWS
# normal samples, seeded: the levels are a function of the look schedule alone) and taking, look by look,
# the quantile of the p-values among the samples that have not crossed yet. No library does this for t
# statistics (statsmodels has no group-sequential design; adastop is a permutation step-down for
# comparing agents on a fixed grid of interims): the hand-written part is the ten lines of
# ``sequential_levels``, checked against a fresh simulation in tests/test_stats.py.
# The first look's level is exactly f(t_1): a t p-value is uniform under normal noise. Monte Carlo error of a
# later level: the increment is about 0.005 of 200,000 draws, 1,000 crossings, a relative error of about 3 %
# on that increment, 0.4 % of the total alpha.

SIMULATION_DRAWS = 200_000
SIMULATION_SEED = 20240524


def _t_p_by_look(sample: np.ndarray, looks: tuple[int, ...]) -> np.ndarray:
    """One-sided ("greater", against 0) t p-values of each row's first n_k values, one column per look."""
    first = np.cumsum(sample, axis=-1)
    second = np.cumsum(sample**2, axis=-1)
    columns = []
    for n in looks:
        mean = first[:, n - 1] / n
        variance = np.maximum(second[:, n - 1] - n * mean**2, 0.0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_value = mean / np.sqrt(variance / n)
        columns.append(stats.t.sf(t_value, n - 1))
    return np.stack(columns, axis=-1)


@functools.lru_cache(maxsize=32)
def sequential_levels(
    looks: tuple[int, ...], alpha: float, spending: str, draws: int = SIMULATION_DRAWS, seed: int = SIMULATION_SEED
) -> tuple[float, ...]:
    """The nominal one-sided level of each look's t p-value: crossing first at look k has the spending
    function's increment as its chance under no effect, so the levels spend exactly ``alpha`` in all."""
    increments = look_alphas(looks, alpha, spending)
    if len(looks) == 1:
        return (float(alpha),)
    sample = np.random.default_rng(seed).standard_normal((draws, looks[-1]))
    p = _t_p_by_look(sample, looks)
    levels = [increments[0]]
    alive = p[:, 0] > levels[0]
    for k in range(1, len(looks)):
        crossings = int(round(increments[k] * draws))
        candidates = np.sort(p[alive, k])
        level = float(candidates[crossings - 1]) if crossings >= 1 else 0.0
        levels.append(level)
        alive &= p[:, k] > level
    return tuple(float(v) for v in levels)


def group_sequential_p(p_values: np.ndarray, increments: tuple[float, ...]) -> np.ndarray:
    """The family's p-value of one decision over its looks: ``sequential_p`` with the spending increments.

    Valid at every level whatever the dependence between looks (union bound), so Holm can use it at alpha / m;
    a decision it makes at alpha was also made by the exact levels (a_k >= increment_k).
    """
    return sequential_p(p_values, increments)


@dataclass(frozen=True)
class Looks:
    """The outcome of judging rows of values look by look (rows: simulated samples, or one real claim).

    ``direction``: +1 established (beyond the line on the claimed side), -1 contradicted (wholly on the other
    side), 0 undecided. ``smaller``: the mean shown below line + smallest effect at some look reached.
    ``look``: index of the look whose interval is shown (the one that decided the direction, else the last
    reached; -1 none reached). p-values per decision and look (NaN: not tested at that look).
    """

    direction: np.ndarray
    smaller: np.ndarray
    look: np.ndarray
    p_beyond: np.ndarray  # (rows, looks): one-sided p that the mean lies beyond the line on the claimed side
    p_wrong_side: np.ndarray  # the mean lies on the other side of the line
    p_smaller: np.ndarray  # the mean lies below line + smallest effect (NaN columns when the smallest effect is 0)

    def family_p(self, increments: tuple[float, ...]) -> dict[str, np.ndarray]:
        """Each decision's p over the looks it was tested at (``group_sequential_p``)."""
        return {
            "direction reproduced": group_sequential_p(self.p_beyond, increments),
            "direction contradicted": group_sequential_p(self.p_wrong_side, increments),
            "smaller than the smallest effect": group_sequential_p(self.p_smaller, increments),
        }


def judge_looks(
    sample: np.ndarray,
    line: float,
    direction: str,
    smallest_effect: float,
    looks: tuple[int, ...],
    levels: tuple[float, ...],
    available: int | None = None,
) -> Looks:
    """Direction and size of each row, look by look: look k judges the first n_k values at level a_k.

    The direction is decided when the one-sided t p towards either side reaches a_k (the 1 - 2 a_k interval
    lies beyond the line, or wholly on the other side); the rows stop there. "Smaller" is decided when the
    p that the mean lies below line + smallest effect reaches a_k, at any look before the direction is; a row
    goes on after it, since the direction is the claim (``./run.sh decide`` goes on until the direction is
    decided or the budget ends). Every decision is a one-sided test whose looks cross at most with the spent
    alpha under its null, so each has its own error bound; ``available``: values each row has (default all).
    """
    sample = np.atleast_2d(np.asarray(sample, float))
    rows = sample.shape[0]
    available = sample.shape[-1] if available is None else available
    sign = 1.0 if direction == "greater" else -1.0
    opposite = "less" if direction == "greater" else "greater"
    decided = np.zeros(rows, int)
    smaller = np.zeros(rows, bool)
    shown = np.full(rows, -1)
    p_beyond, p_wrong, p_small = (np.full((rows, len(looks)), np.nan) for _ in range(3))
    for k, (n, level) in enumerate(zip(looks, levels, strict=True)):
        if n > available:
            break
        open_rows = np.flatnonzero(decided == 0)
        if open_rows.size == 0:
            break
        part = sample[open_rows, :n]
        beyond, _ = one_sided_p(part, line, direction)
        wrong, _ = one_sided_p(part, line, opposite)
        p_beyond[open_rows, k], p_wrong[open_rows, k] = beyond, wrong
        if smallest_effect > 0:
            below, _ = one_sided_p(part, line + sign * smallest_effect, opposite)
            p_small[open_rows, k] = below
            smaller[open_rows] |= below <= level
        decided[open_rows] = np.where(beyond <= level, 1, np.where(wrong <= level, -1, 0))
        shown[open_rows] = k
    # Shown on the wrong side of the line: smaller than any positive effect too.
    smaller |= decided == -1
    return Looks(decided, smaller, shown, p_beyond, p_wrong, p_small)


def look_chances(
    sample: np.ndarray,
    line: float,
    direction: str,
    looks: tuple[int, ...],
    levels: tuple[float, ...],
    draws: int = 4000,
    seed: Any = 0,
) -> list[tuple[int, float]]:
    """For an undecided claim: the chance of deciding its direction by each remaining look, given its values.

    The repeats still to come are drawn from a normal law with the observed mean and sd (the usual plug-in
    conditional power), appended to the observed ones, and judged at the design's remaining looks and levels;
    the result is cumulative: (repeats at the look, probability the direction is decided by then).
    """
    sample = np.asarray(sample, float)
    n = sample.size
    remaining = [k for k, at in enumerate(looks) if at > n]
    if not remaining or n < 2:
        return []
    rng = np.random.default_rng(seed)
    future = rng.normal(sample.mean(), sample.std(ddof=1), (draws, looks[-1] - n))
    full = np.concatenate([np.broadcast_to(sample, (draws, n)), future], axis=-1)
    chosen = tuple(looks[k] for k in remaining)
    outcome = judge_looks(full, line, direction, 0.0, chosen, tuple(levels[k] for k in remaining))
    decided_by = np.where(outcome.direction != 0, outcome.look, len(chosen))
    return [(at, float(np.mean(decided_by <= i))) for i, at in enumerate(chosen)]


def prediction_interval(sample: np.ndarray, confidence: float) -> tuple[float, float]:
    """The Student t prediction interval for one more run's value: mean +- t * sd * sqrt(1 + 1/n).

    Exact for normal values (the new value and the sample mean are independent normals; their difference
    over the sample sd is t with n - 1 degrees of freedom). It answers: could a single published run
    have come out of this setup? A published figure is one run, not a mean.
    """
    sample = snap_ties(sample)[0]
    n = sample.size
    mean, spread = float(sample.mean()), float(sample.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * spread * float(np.sqrt(1.0 + 1.0 / n))
    return mean - half, mean + half
