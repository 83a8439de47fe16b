"""The memory `mlflow ui --workers 1` takes, with MLflow 3's job execution on (its default) and off.

    python bench/mlflow_ui_memory.py [--store sqlite:///mlflow.db] [--settle 20] [--repeats 2]

MLflow 3's server starts a job runner and Huey consumer processes for its GenAI jobs (scorers,
trace rollups) unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (mlflow/environment_variables.py,
mlflow/server/__init__.py); regbench uses none of them. Each setting starts `mlflow ui` on 127.0.0.1,
waits until the page and the REST API answer, lets it settle, then sums the proportional set size
(PSS: shared pages split between the processes that share them, so the sum is what the tree costs)
and the RSS of the server's whole process tree, and counts its processes. Settings alternate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.browser import MLFLOW_UI_WORKERS, mlflow_ui  # noqa: E402

SWITCH = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
SETTINGS = {"job execution on (default)": None, f"{SWITCH}=false": "false"}


def tree_memory(pid: int) -> tuple[float, float, int]:
    """PSS and RSS (GiB) summed over the process and its descendants, and how many processes."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    pss = rss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += info.pss
        rss += info.rss
    return pss / 2**30, rss / 2**30, len(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db")
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for repeat in range(args.repeats):
        for name, value in SETTINGS.items():
            if value is None:
                os.environ.pop(SWITCH, None)
            else:
                os.environ[SWITCH] = value
            with mlflow_ui(args.store, workers=MLFLOW_UI_WORKERS) as ui:
                time.sleep(args.settle)
                pss, rss, count = tree_memory(ui.pid)
            print(
                f"repeat {repeat + 1}: {name}: PSS {pss:.2f} GiB, RSS {rss:.2f} GiB, {count} processes "
                f"(answered after {ui.seconds_to_answer:.1f} s)",
                flush=True,
            )
    os.environ.pop(SWITCH, None)


if __name__ == "__main__":
    main()
