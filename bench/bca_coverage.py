"""Coverage of the BCa bootstrap interval of a mean at small n: why it is only shown from claims.bca_min_repeats on.

    nice -n 10 python bench/bca_coverage.py [--draws 500] [--resamples 2000]

For each null distribution of regbench.claims.stats.NULLS and n = 5, 10, 20, 30: the share of ``--draws`` samples
whose 95 % BCa interval (scipy.stats.bootstrap, method='BCa', as the claims stage computes it) covers the
true mean 0, beside the Student t interval's coverage on the same samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regbench.claims import stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 30])
    args = parser.parse_args()
    rng = np.random.default_rng(4)
    print(f"95 % intervals, {args.draws} samples per row, {args.resamples} bootstrap resamples each\n")
    print("| values drawn from | repeats | BCa coverage | t coverage |\n|---|---|---|---|")
    for name, sampler in stats.NULLS.items():
        for n in args.sizes:
            sample = sampler(rng, (args.draws, n))
            covered = 0
            for row in sample:
                if np.ptp(row) == 0:  # BCa is undefined without spread; count it as not covering
                    continue
                low, high = stats.bca_interval(row, 0.95, args.resamples, rng)
                covered += low <= 0 <= high
            t_low, t_high = stats.t_interval(sample, 0.95)
            t_cover = np.mean((t_low <= 0) & (t_high >= 0))
            print(f"| {name} | {n} | {covered / args.draws:.1%} | {t_cover:.1%} |", flush=True)


if __name__ == "__main__":
    main()
