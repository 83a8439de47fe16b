"""Screenshots of what users see, taken by Debian's Chromium in headless mode.

    python tools/screenshots.py [--out screenshots] [--experiment sonar] [--store sqlite:///mlflow.db]

Writes, into --out:
- report_top.png, report_full.png: reports/index.html (the summary table, then the whole page);
- dvc_plots.png: the page `dvc plots show` writes with the repository's offline template;
- mlflow_runs.png: the MLflow runs view of regbench/<experiment>, opened by the link the report
  and README give (`mlflow ui` started here on 127.0.0.1 on a free port, stopped afterwards);
- mlflow_parent_run.png: that experiment's first parent run (its summary metrics).

Installs Chromium with apt-get when it is missing and this runs as root. Run after `dvc repro`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regbench.train.tracking import run_url, runs_view_url, tracking_uri  # noqa: E402
from tools.browser import chromium, mlflow_ui, screenshot  # noqa: E402


def ensure_chromium() -> None:
    if chromium() is not None:
        return
    if os.geteuid() != 0:
        sys.exit("chromium is not installed: sudo apt-get update && sudo apt-get install -y chromium")
    print("installing chromium (apt-get)", flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True)


def report_shots(out: Path) -> list[Path]:
    page = (ROOT / "reports" / "index.html").as_uri()
    return [
        screenshot(page, out / "report_top.png", size=(1300, 1500)),
        screenshot(page, out / "report_full.png", size=(1300, 9000)),
    ]


def plots_shot(out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="regbench-plots-") as directory:
        subprocess.run(
            [sys.executable, "-m", "dvc", "plots", "show", "-o", directory], cwd=ROOT, check=True, capture_output=True
        )
        return screenshot(Path(directory, "index.html").as_uri(), out / "dvc_plots.png", (1400, 2400), 30000)


def mlflow_shots(out: Path, store: str, experiment: str) -> list[Path]:
    from mlflow import MlflowClient

    client = MlflowClient(store)
    found = client.get_experiment_by_name(f"regbench/{experiment}")
    if found is None:
        sys.exit(f"{store} has no experiment regbench/{experiment}: run `dvc repro` first")
    parents = client.search_runs(
        [found.experiment_id], filter_string="tags.`regbench.stage` LIKE 'train@%'", max_results=5000
    )
    parent = next(run for run in parents if "mlflow.parentRunId" not in run.data.tags)
    with mlflow_ui(store) as ui:
        print(f"mlflow ui answered after {ui.seconds_to_answer:.1f} s", flush=True)
        return [
            screenshot(runs_view_url(ui.url, found.experiment_id), out / "mlflow_runs.png", (1900, 1000), 20000),
            screenshot(
                run_url(ui.url, parent.info.run_id, found.experiment_id),
                out / "mlflow_parent_run.png",
                (1400, 1300),
                20000,
            ),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--experiment", default="sonar")
    parser.add_argument(
        "--store", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    args = parser.parse_args()
    ensure_chromium()
    store = args.store or tracking_uri()
    if store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
        store = f"sqlite:///{ROOT / store.removeprefix('sqlite:///')}"  # relative to the repository, not the cwd
    shots = [*report_shots(args.out), plots_shot(args.out), *mlflow_shots(args.out, store, args.experiment)]
    for shot in shots:
        print(shot)


if __name__ == "__main__":
    main()
