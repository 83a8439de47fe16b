"""Incremental seeds: growing a variant's seeds trains only the new runs. Wall time of the train stage, side by side.

    python bench/incremental_seeds.py [--stage circles-dropout] [--from 5] [--to 10]

Needs the stage's prepared data (data/prepared/<experiment>, e.g. `dvc repro prepare@circles`). Works in a
temporary copy of the stage's inputs, with its own MLflow store; each timing is one `python -m stages.train`
process, as DVC runs it:

1. from scratch with the first `--from` seeds (the reference),
2. grown to `--to` seeds, reusing the runs of 1 (only the new seeds train),
3. from scratch with the `--to` seeds, for the cost without the run store;

and checks that 2 and 3 wrote the same histories.csv, metrics.json and curves.csv bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = ("histories.csv", "metrics.json", "curves.csv")


def stage_run(work: Path, stage: str, seeds: list[int]) -> float:
    params = yaml.safe_load((work / "params.yaml").read_text())
    run = params["train"]["runs"][stage]
    params[run["experiment"]]["variants"][run["variant"]]["seeds"] = seeds
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.train", stage], cwd=work, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in RESULT_FILES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default="circles-dropout")
    parser.add_argument("--from", dest="start", type=int, default=5)
    parser.add_argument("--to", dest="end", type=int, default=10)
    args = parser.parse_args()
    experiment = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["runs"][args.stage]["experiment"]
    with tempfile.TemporaryDirectory(prefix="regbench-incremental-") as scratch:
        work = Path(scratch)
        for name in ("params.yaml", "claims.yaml", "regbench", "stages"):
            source = ROOT / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, work / name)
        shutil.copytree(ROOT / "data/prepared" / experiment, work / "data/prepared" / experiment)
        out = work / "results/train" / args.stage
        first = stage_run(work, args.stage, list(range(args.start)))
        grown = stage_run(work, args.stage, list(range(args.end)))
        manifest = json.loads((out / "manifest.json").read_text())
        incremental = digests(out)
        shutil.rmtree(out)
        scratch_time = stage_run(work, args.stage, list(range(args.end)))
        same = digests(out) == incremental
    result = {
        "stage": args.stage,
        f"from_scratch_{args.start}_seeds_s": round(first, 1),
        f"grown_{args.start}_to_{args.end}_s": round(grown, 1),
        f"from_scratch_{args.end}_seeds_s": round(scratch_time, 1),
        "grown_runs": manifest["runs"],
        "grown_over_scratch_small": round(grown / first, 2),
        "same_bytes_as_from_scratch": same,
    }
    print(json.dumps(result, indent=2))
    if not same:
        sys.exit("the grown stage's results differ from a from-scratch run: run identity is broken")


if __name__ == "__main__":
    main()
