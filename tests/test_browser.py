"""What users see, rendered by headless Chromium: the MLflow runs view and the offline DVC plots page.

The report's rendered page is checked in tests/test_report.py (it reuses that module's trained results).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from regbench.train.tracking import Tracker, run_url, runs_view_url, start_stage_run
from tests.conftest import copy_repo
from tools.browser import chromium, dump_dom, mlflow_ui

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)"),
]
REPEATS = 3
OLDER_CHILDREN = 100  # the runs table loads 100 runs at a time


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store written by the suite's own tracking code: an older variant with more child runs than the runs
    table loads at once (100), then a newer one whose repeats have learning curves."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracker = Tracker("regbench/demo", uri)

    def parent_run(variant: str) -> str:
        context = {"stage": f"train@demo-{variant}", "git_revision": "r", "data_digest": "d", "data_source": "s"}
        return start_stage_run(tracker, f"demo-{variant}", context, variant, params={"epochs": 3})

    older = parent_run("dropout")
    for repeat in range(OLDER_CHILDREN):
        tracker.end(tracker.start(f"dropout-r{repeat}", tags={}, params={"seed": repeat}, parent=older))
    tracker.end(older)
    tracker.log_summary(older, {"dropout": {"repeats_ok": OLDER_CHILDREN, "final_val_accuracy": 0.62}})
    parent = parent_run("baseline")
    children = []
    for repeat in range(REPEATS):
        child = tracker.start(f"baseline-r{repeat}", tags={}, params={"seed": repeat}, parent=parent)
        history = {
            "loss": [0.9, 0.6, 0.4],
            "val_loss": [0.9, 0.7, 0.65],
            "val_accuracy": [0.5, 0.6, 0.7 + repeat / 100],
        }
        tracker.log_history(child, history, {"final_val_accuracy": 0.7 + repeat / 100, "test_accuracy": 0.69}, 50)
        tracker.end(child)
        children.append(child)
    tracker.end(parent)
    tracker.log_summary(
        parent, {"baseline": {"repeats_ok": REPEATS, "final_val_accuracy": 0.71, "best_val_loss": 0.65}}
    )
    return uri, tracker.experiment_id, parent, children


def test_mlflow_link_opens_the_runs_view_with_every_variant_first_and_the_child_runs(store):
    uri, experiment_id, parent, children = store
    with mlflow_ui(uri) as ui:
        runs_view = dump_dom(runs_view_url(ui.url, experiment_id))
        parent_page = dump_dom(run_url(ui.url, parent, experiment_id))
        child_page = dump_dom(run_url(ui.url, children[0]))
    text = text_of(runs_view)
    # The "Model training" runs table, not MLflow 3's GenAI overview (traces, latency, "Detect Issues").
    assert "demo-baseline" in text and "Detect Issues" not in text and "Latency" not in text
    assert f"#/experiments/{experiment_id}/runs/{parent}" in runs_view
    # The older variant's parent run is in the first page of 100 runs too (newest first, it would be
    # behind "Load more", after its own child runs), and the child runs are listed after the parents.
    assert "demo-dropout" in text and "baseline-r0" in text
    assert text.index("demo-dropout") < text.index("baseline-r0")
    # The shared view's columns: the parents' summary metrics in the table, no "Columns" picking first.
    assert "final_val_accuracy" in text and "best_val_loss" in text
    assert all(value in text for value in ("0.71", "0.65", "0.62"))
    parent_text = text_of(parent_page)
    assert "final_val_accuracy" in parent_text and "best_val_loss" in parent_text  # summary metrics
    assert all(f"baseline-r{repeat}" in parent_text for repeat in range(REPEATS))  # its child runs, linked
    assert "Evaluations" not in parent_text  # shown as a training run, not a GenAI evaluation run
    child_text = text_of(child_page)
    assert "baseline-r0" in child_text and "val_loss" in child_text
    assert "final_val_accuracy" not in child_text  # no one-bar chart repeating the curve's last epoch


def test_dvc_plots_page_renders_offline_with_the_repository_template(tmp_path):
    repo = copy_repo(tmp_path / "repo")  # with the committed curves.csv of every train stage
    out = tmp_path / "plots"
    subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "imdb-size-loss", "sonar-dropout-accuracy", "-o", str(out)],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "regbench: DVC plots" in page
    dom = dump_dom(Path(out / "index.html").as_uri(), budget_ms=20000)
    # vega-embed replaces each plot's div content (its spec script) by a drawing and an actions menu:
    # offline without the inlined libraries, the scripts would stay and nothing would be drawn.
    assert dom.count("<canvas") == 2 and "vegaEmbed(" not in dom
