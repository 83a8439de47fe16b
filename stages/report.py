"""DVC stage report: reports/report.md, reports/index.html and reports/figures/ from the claims and train results."""

from __future__ import annotations

from pathlib import Path

from regbench import config
from regbench.claims import decide
from regbench.cli import no_arguments, run_stage
from regbench.io import read_json

DETAIL = Path("reports/claims_detail.json")
RESULTS = Path("results/train")
OUT = Path("reports")


def main(argv: list[str]) -> None:
    no_arguments(argv, "report")
    params = config.load()
    if not DETAIL.exists():
        raise FileNotFoundError(f"{DETAIL} not found: run `dvc repro claims` first")

    from regbench.report.build import build

    rounds = decide.load_rounds(decide.ROUNDS)
    written = build(params, read_json(DETAIL), RESULTS, OUT, rounds=rounds)
    print(f"report: {OUT / 'report.md'} and {OUT / 'index.html'}, {len(written['figures'])} figures")


if __name__ == "__main__":
    run_stage(main)
