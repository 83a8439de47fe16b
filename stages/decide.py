"""./run.sh decide: adaptive repeats (regbench/claims/decide.py). Not a DVC stage: it runs dvc repro in a loop.

Usage: python -m stages.decide [--max-rounds N]
"""

from __future__ import annotations

from regbench import config
from regbench.claims import decide
from regbench.cli import run_stage


def main(argv: list[str]) -> None:
    max_rounds = None
    if argv:
        if len(argv) != 2 or argv[0] != "--max-rounds" or not argv[1].isdigit() or int(argv[1]) < 1:
            raise ValueError(f"usage: ./run.sh decide [--max-rounds N] (N a positive integer); got {argv}")
        max_rounds = int(argv[1])
    history = decide.run(config.load, max_rounds=max_rounds)
    last = history["rounds"][-1]
    verdicts = [claim.get("verdict_alone", claim["verdict"]) for claim in last["claims"].values()]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    print(f"decide: stopped after round {last['round']}: {history['stopped']}; each claim alone: {counts}")
    budget = [c for c, claim in last["claims"].items() if "no more repeats were run" in claim.get("stopped", "")]
    if budget:
        print(f"decide: stopped on the budget, before their last look: {', '.join(budget)}")


if __name__ == "__main__":
    run_stage(main)  # a driver of dvc repro: it imports little and trains nothing
