"""A train stage's overhead: start-up, data loading, MLflow and writing outputs, around its training.

    python bench/stage_overhead.py [run] [repeats]      # default: synthetic-baseline 5

In a temporary copy of this checkout (tracked files and the run's prepared data, a fresh MLflow store),
runs ``python -m stages.train <run>`` ``repeats`` times. The run store is emptied before each run, so every
run trains. Overhead is the stage process' wall time minus the training seconds its run log records:
start-up, data loading, MLflow, writing outputs and the figure. Peak PSS is the memory of the stage process
(bench/memory.py). Prints medians, and checks that every run wrote byte-identical histories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import Sampler  # noqa: E402


def copy_checkout(destination: Path, run: str) -> Path:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    experiment = run.split("-", 1)[0]
    prepared = ROOT / "data/prepared" / experiment
    if not prepared.is_dir():
        raise SystemExit(f"{prepared} is missing: run `dvc repro prepare@{experiment}` first")
    shutil.copytree(prepared, destination / "data/prepared" / experiment)
    return destination


def one(checkout: Path, run: str) -> dict:
    out = checkout / "results/train" / run
    shutil.rmtree(out, ignore_errors=True)  # the run store too: every run trains
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", run],
        cwd=checkout,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with Sampler(process.pid) as sampler:
        _, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"train@{run} failed:\n{stderr.decode()}")
    # The stage's run record (untracked run log; the manifest holds nothing that changes from run to run).
    logged = (checkout / "logs" / f"train-{run}.jsonl").read_text().splitlines()
    training = json.loads(logged[-1])["training_seconds"]
    histories = hashlib.sha256((out / "histories.csv").read_bytes()).hexdigest()
    pss = sampler.peaks["pss"] / 1024**3
    return {"wall": wall, "training": training, "overhead": wall - training, "pss": pss, "histories": histories}


def main(argv: list[str]) -> None:
    run = argv[0] if argv else "synthetic-baseline"
    repeats = int(argv[1]) if len(argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="stage-overhead-") as scratch:
        checkout = copy_checkout(Path(scratch), run)
        runs = [one(checkout, run) for _ in range(repeats)]
    print(f"train@{run}, {repeats} runs; seconds, median (min-max)")
    print("| way | wall | training | overhead | peak PSS, GiB |")
    print("|---|---|---|---|---|")

    def cell(rows: list[dict], field: str) -> str:
        values = [row[field] for row in rows]
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    fields = ("wall", "training", "overhead", "pss")
    print("| plain process | " + " | ".join(cell(runs, field) for field in fields) + " |")
    digests = {row["histories"] for row in runs}
    print(f"histories.csv identical in all {repeats} runs: {len(digests) == 1}")


if __name__ == "__main__":
    main(sys.argv[1:])
