"""A train stage's overhead, in its own process (cold) and served by the warm server (regbench/warm.py).

    python bench/stage_overhead.py [run] [repeats]      # default: synthetic-baseline 5

In a temporary copy of this checkout (tracked files and the run's prepared data, a fresh MLflow store),
runs ``python -m stages.train <run>`` ``repeats`` times each way, alternating: cold (``REGBENCH_WARM=0``)
and warm. The first warm run starts the server and is reported apart. The run store is emptied before each
run, so every run trains. Overhead is the stage process' wall time minus the training seconds its manifest
records: start-up, data loading, MLflow, writing outputs and the figure. Prints medians and warm/cold ratios,
and checks that both ways wrote byte-identical histories.
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


def one(checkout: Path, run: str, warm: bool) -> dict:
    out = checkout / "results/train" / run
    shutil.rmtree(out, ignore_errors=True)  # the run store too: every run trains
    environment = {**os.environ, "REGBENCH_WARM": "1" if warm else "0"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "stages.train", run], cwd=checkout, env=environment, check=True, capture_output=True
    )
    wall = time.perf_counter() - started
    training = json.loads((out / "manifest.json").read_text())["training_seconds"]
    histories = hashlib.sha256((out / "histories.csv").read_bytes()).hexdigest()
    return {"wall": wall, "training": training, "overhead": wall - training, "histories": histories}


def main(argv: list[str]) -> None:
    run = argv[0] if argv else "synthetic-baseline"
    repeats = int(argv[1]) if len(argv) > 1 else 5
    sys.path.insert(0, str(ROOT))
    from regbench import warm

    with tempfile.TemporaryDirectory(prefix="stage-overhead-") as scratch:
        checkout = copy_checkout(Path(scratch), run)
        try:
            cold, served = [], []
            first = one(checkout, run, warm=True)  # starts the server
            for _ in range(repeats):
                cold.append(one(checkout, run, warm=False))
                served.append(one(checkout, run, warm=True))
        finally:
            warm.stop(under=checkout.resolve())
    print(f"train@{run}, {repeats} runs each way, alternating; seconds, median (min-max)")
    print("| way | wall | training | overhead |")
    print("|---|---|---|---|")

    def cell(rows: list[dict], field: str) -> str:
        values = [row[field] for row in rows]
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    for name, rows in (("cold", cold), ("warm, the server started", [first]), ("warm", served)):
        print(f"| {name} | {cell(rows, 'wall')} | {cell(rows, 'training')} | {cell(rows, 'overhead')} |")
    ratio = statistics.median(r["overhead"] for r in served) / statistics.median(r["overhead"] for r in cold)
    print(f"overhead warm/cold: {ratio:.2f}")
    digests = {row["histories"] for row in [first, *cold, *served]}
    print(f"histories.csv identical in all {1 + 2 * repeats} runs: {len(digests) == 1}")


if __name__ == "__main__":
    main(sys.argv[1:])
