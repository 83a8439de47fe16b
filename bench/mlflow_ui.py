"""How long `mlflow ui` takes to answer: MLflow's default workers against the README's `--workers 1`.

    python bench/mlflow_ui.py [--store sqlite:///mlflow.db] [--repeats 3]

Each setting starts `mlflow ui` on 127.0.0.1 on a free port and times, from the start of the
process, until the UI page and the REST API (experiments/search) both answer, then the time of
one search over the runs of every experiment (what the runs view asks for). Settings alternate,
so background load hits both alike; the load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.browser import MLFLOW_UI_WORKERS, mlflow_ui  # noqa: E402

SETTINGS = {"default workers (4)": None, f"--workers {MLFLOW_UI_WORKERS}": MLFLOW_UI_WORKERS}


def search_seconds(url: str) -> float:
    """One POST runs/search over every experiment, as the runs view sends it."""
    with urllib.request.urlopen(url + "/ajax-api/2.0/mlflow/experiments/search?max_results=1000", timeout=60) as r:
        ids = [e["experiment_id"] for e in json.load(r).get("experiments", [])]
    body = json.dumps({"experiment_ids": ids, "max_results": 100}).encode()
    request = urllib.request.Request(
        url + "/ajax-api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    answer: dict[str, list[float]] = {name: [] for name in SETTINGS}
    search: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats):
        for name, workers in SETTINGS.items():
            load = os.getloadavg()[0]
            with mlflow_ui(args.store, workers=workers) as ui:
                answer[name].append(ui.seconds_to_answer)
                search[name].append(search_seconds(ui.url))
            print(
                f"repeat {repeat + 1}: {name}: answered after {answer[name][-1]:.1f} s, "
                f"runs search {search[name][-1]:.2f} s (load average {load:.1f})",
                flush=True,
            )
    print(f"\n{'setting':<22} {'answer (median, s)':>19} {'min':>6} {'max':>6} {'runs search (s)':>16}")
    for name in SETTINGS:
        print(
            f"{name:<22} {statistics.median(answer[name]):>19.1f} {min(answer[name]):>6.1f} "
            f"{max(answer[name]):>6.1f} {statistics.median(search[name]):>16.2f}"
        )
    default, recommended = (statistics.median(answer[name]) for name in SETTINGS)
    print(f"default / --workers {MLFLOW_UI_WORKERS}: {default / recommended:.2f}x on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
