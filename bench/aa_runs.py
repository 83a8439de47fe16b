"""A/A benchmark: the claims' verdicts on real training noise, where the true effect is zero.

    nice -n 10 python bench/aa_runs.py [--seeds 20] [--draws 2000] [--out bench/aa_runs.md]

Needs `dvc repro prepare@circles prepare@synthetic` first (it reads data/prepared/).

The same variant (circles `overfit`, synthetic `baseline`) is trained by the real training code
(``regbench.train.variant.train`` on the real params.yaml, only the seeds replaced, no MLflow) under two
disjoint seed sets, A and B, ``--seeds`` each. A and B differ only by seed, so every difference the
claims code finds between them is noise. The claims code then judges B against A as if they were two
variants, ``--draws`` times over resampled halves: each draw picks ``n`` of A's repeats and ``n`` of B's
(without replacement) and pairs them in order, as a claim pairs repeats by seed; a second set of draws
splits the 2 x ``--seeds`` runs pooled at random instead (exact exchangeability in every draw). Measures and tests
are those of the real claims on these experiments:

- paired, both directions, line 0: circles final val_accuracy (``circles.dropout_raises_test``) and
  train_eval_accuracy (``circles.dropout_lowers_train``), synthetic final test_accuracy
  (``synthetic.dropout_vs_baseline``); a false "reproduced" is a verdict in either direction.
- level: synthetic final test_accuracy against a band of ± 0.025 (``synthetic.test_accuracy``) around
  the mean of all of B's repeats; a "refuted" is false (A's true mean is B's).

The percentile bootstrap the claims used before issue 11 is judged on the same draws, for comparison.
The draws share 2 x ``--seeds`` training runs, so the rates are conditional on those runs: their Monte
Carlo error understates the uncertainty (the binomial interval shown is for the draws only).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regbench import config  # noqa: E402
from regbench.claims import judge as judging
from regbench.claims import measures, schema
from regbench.train import variant as train  # noqa: E402
from regbench.train.records import Run, load_runs

SIDE_A, SIDE_B = 1000, 2000  # first seed of each side: disjoint from each other and from the pipeline's 0-4


def train_sides(params: config.Params, run_name: str, seeds: int) -> dict[str, list[Run]]:
    """Train ``run_name`` once under seeds A + B (one stacked job), split the runs by side."""
    experiment, _ = params.run(run_name)
    all_seeds = tuple(range(SIDE_A, SIDE_A + seeds)) + tuple(range(SIDE_B, SIDE_B + seeds))
    replaced = dataclasses.replace(
        params, experiments={**params.experiments, experiment.name: dataclasses.replace(experiment, seeds=all_seeds)}
    )
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        train.train(replaced, run_name, Path(directory))
        print(f"{run_name}: {2 * seeds} seeds trained in {time.perf_counter() - started:.0f} s", flush=True)
        runs = load_runs(Path(directory))
    # Run.repeat is the index into the seeds: A's seeds come first.
    return {"A": [r for r in runs if r.repeat < seeds], "B": [r for r in runs if r.repeat >= seeds]}


def values_of(runs: list[Run], metric: str) -> np.ndarray:
    by_repeat = measures.per_repeat(runs, schema.Measure(kind="final", metric=metric))
    return np.asarray([value for _, value in sorted(by_repeat.items())])


def claim(claim_id: str, experiment: str, metric: str, test: schema.Test, published: float | None = None):
    measure = schema.Measure(kind="final", metric=metric)
    return schema.Claim(claim_id, experiment, "aa", "A/A", "A/A", measure, test, published)


def old_bootstrap_verdict(sample: np.ndarray, direction: str, rng: np.random.Generator, resamples: int = 2000) -> str:
    """The rule before issue 11: a 95 % percentile bootstrap interval of the mean beyond the line."""
    means = sample[rng.integers(0, len(sample), size=(resamples, len(sample)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    if direction == "less":
        low, high = -high, -low
    return "reproduced" if low > 0 else ("refuted" if high <= 0 else "inconclusive")


def judge_draws(
    a: np.ndarray, b: np.ndarray, n: int, draws: int, settings, rng, pooled: bool
) -> dict[str, dict[str, float]]:
    """Paired A/A claims on ``draws`` resampled halves of ``n`` repeats: verdict rates per rule.

    ``pooled``: both sides of a draw come from A and B's repeats pooled (a random split), so the two
    sides are exchangeable in every draw; otherwise each side comes from its own seed set, and every
    draw shares the (noise) difference between the two fixed sets of 20 runs.
    """
    counts = {"t, greater": {}, "t, less": {}, "old bootstrap, greater": {}, "old bootstrap, less": {}}
    pool = np.concatenate([a, b])
    for _ in range(draws):
        if pooled:
            picks = rng.choice(len(pool), 2 * n, replace=False)
            side_a, side_b = pool[picks[:n]], pool[picks[n:]]
        else:
            side_a, side_b = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        values = {"b": dict(enumerate(side_b)), "a": dict(enumerate(side_a))}
        for direction in ("greater", "less"):
            test = schema.Test(kind="paired", variant="b", versus="a", direction=direction, smallest_effect=0.0)
            verdict = judging.judge(claim("aa.paired", "circles", "val_accuracy", test), values, settings)[
                "verdict_alone"
            ]
            _count(counts[f"t, {direction}"], verdict)
            old = old_bootstrap_verdict(side_b - side_a, direction, rng)
            _count(counts[f"old bootstrap, {direction}"], old)
    return {rule: {v: c / draws for v, c in tally.items()} for rule, tally in counts.items()}


def judge_level(a: np.ndarray, b: np.ndarray, n: int, draws: int, settings, rng) -> dict[str, float]:
    test = schema.Test(kind="level", variant="a", tolerance=0.025)
    level_claim = claim("aa.level", "synthetic", "test_accuracy", test, float(b.mean()))
    tally: dict[str, int] = {}
    for _ in range(draws):
        pick = rng.choice(len(a), n, replace=False)
        _count(tally, judging.judge(level_claim, {"a": dict(enumerate(a[pick]))}, settings)["verdict_alone"])
    return {v: c / draws for v, c in tally.items()}


def _count(tally: dict[str, int], verdict: str) -> None:
    tally[verdict] = tally.get(verdict, 0) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="repeats per side")
    parser.add_argument("--draws", type=int, default=2000, help="resampled halves per sample size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap the epochs (a smoke run, not the benchmark)")
    args = parser.parse_args()
    params = config.load()
    if args.max_epochs:
        params = dataclasses.replace(params, train=dataclasses.replace(params.train, max_epochs=args.max_epochs))
    settings = params.claims
    rng = np.random.default_rng(20261123)
    circles = train_sides(params, "circles-overfit", args.seeds)
    synthetic = train_sides(params, "synthetic-baseline", args.seeds)
    measures = {
        "circles overfit, final val_accuracy": (circles, "val_accuracy"),
        "circles overfit, final train_eval_accuracy": (circles, "train_eval_accuracy"),
        "synthetic baseline, final test_accuracy": (synthetic, "test_accuracy"),
    }
    alpha = 1 - settings.confidence
    bound = scipy_stats.binom.ppf(0.999, args.draws, alpha / 2) / args.draws
    lines = [
        f"A/A on real training noise: {args.seeds} seeds per side, {args.draws} resampled halves per row; "
        f"nominal false 'reproduced' rate per direction {alpha / 2:g} (99.9 % Monte Carlo bound {bound:.4f}).",
        "",
    ]
    for name, (sides, metric) in measures.items():
        a, b = values_of(sides["A"], metric), values_of(sides["B"], metric)
        lines.append(
            f"- {name}: A mean {a.mean():.4f} (sd {a.std(ddof=1):.4f}), B mean {b.mean():.4f} (sd {b.std(ddof=1):.4f})"
        )
    lines += [
        "",
        "Sides: 'seed sets' draws each side from its own 20 seeds (every draw shares the noise difference of the "
        "two fixed sets); 'pooled' draws both sides from the 40 runs pooled (a random split: exchangeable).",
        "",
        "| measure | sides | repeats | rule | direction | false 'reproduced' |"
        " 'refuted' (wrong side of the line: also false) | inconclusive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (sides, metric) in measures.items():
        a, b = values_of(sides["A"], metric), values_of(sides["B"], metric)
        for pooled in (False, True):
            for n in args.sizes:
                rates = judge_draws(a, b, n, args.draws, settings, rng, pooled)
                for rule, verdicts in rates.items():
                    method, direction = rule.split(", ")
                    lines.append(
                        f"| {name} | {'pooled' if pooled else 'seed sets'} | {n} | {method} | {direction} | "
                        f"{verdicts.get('reproduced', 0):.2%} | {verdicts.get('refuted', 0):.2%} | "
                        f"{verdicts.get('inconclusive', 0):.2%} |"
                    )
    a, b = values_of(synthetic["A"], "test_accuracy"), values_of(synthetic["B"], "test_accuracy")
    lines += [
        "",
        f"Level check (synthetic baseline test_accuracy, band ± 0.025 around B's mean {b.mean():.4f}; "
        "a 'refuted' is false):",
        "",
        "| repeats | reproduced | refuted (false) | inconclusive |",
        "|---|---|---|---|",
    ]
    for n in args.sizes:
        rates = judge_level(a, b, n, args.draws, settings, rng)
        lines.append(
            f"| {n} | {rates.get('reproduced', 0):.2%} | {rates.get('refuted', 0):.2%} | "
            f"{rates.get('inconclusive', 0):.2%} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
