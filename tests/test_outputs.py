"""What a rerun leaves behind (issue 25), on the tiny pipeline: `dvc repro` in a temporary copy of the repo.

A forced rerun of two train stages reproduces every tracked byte (git and DVC both see no change); the
stage output is one line each, progress never passes 100 %; `dvc metrics show` is one row per stage or
claim and a few columns; the claims stage's MLflow run carries every verdict and is linked from the
parent runs it judged.
"""

import json
import os
import re

import pytest
from mlflow import MlflowClient

from regbench.train.tracking import CLAIMS_EXPERIMENT, CLAIMS_RUN_TAG
from tests.conftest import copy_repo, dvc, git, shrunk_params, write_params

pytestmark = pytest.mark.pipeline
RUNS = {"sonar": ["baseline"], "imdb": ["original", "l2"]}
FORCED = ("train@sonar-baseline", "train@imdb-original")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    write_params(repo, shrunk_params(mirror, RUNS, epochs=2, seeds=(0, 1)))
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)  # the default store: mlflow.db in the repo
    os.environ.pop("REGBENCH_MIRROR", None)
    yield repo
    if previous is not None:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="module")
def first_repro(repo):
    return dvc(repo, "repro")


@pytest.fixture(scope="module")
def forced_repro(repo, first_repro):
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first run")
    return dvc(repo, "repro", "-f", *FORCED)


def test_a_forced_rerun_changes_no_tracked_byte(repo, forced_repro):
    assert git(repo, "status", "--porcelain") == ""
    assert "up to date" in dvc(repo, "status").stdout
    # The forced stages did run (their runs read back from the run store), and logged their run records.
    assert forced_repro.stdout.count("0 trained") == len(FORCED)
    for stage in FORCED:
        records = (repo / "logs" / f"{stage.replace('@', '-')}.jsonl").read_text().splitlines()
        assert [json.loads(line)["runs"]["trained"] for line in records][-1] == 0


def test_each_train_stage_prints_one_line_and_progress_never_passes_100_percent(repo, first_repro):
    lines = [line for line in first_repro.stdout.splitlines() if line.startswith("train@")]
    assert len(lines) == sum(len(variants) for variants in RUNS.values())
    assert all("{" not in line and len(line) < 200 for line in lines)
    shown = [int(value) for value in re.findall(r"\| (\d+)% ETA", first_repro.stderr)]
    assert shown and max(shown) <= 100


def test_dvc_metrics_show_is_one_row_per_stage_or_claim_and_fits_160_columns(repo, first_repro):
    shown = dvc(repo, "metrics", "show").stdout
    rows = [line for line in shown.splitlines() if line.strip()]
    assert max(len(line.rstrip()) for line in rows) <= 160, shown
    header = rows[0].split()
    assert {"val_accuracy", "best_val_accuracy", "runs", "diverged", "verdict", "mean"} <= set(header)
    paths = [row.split()[0] for row in rows[1:]]
    assert {f"metrics/{stage}.json" for stage in ("sonar-baseline", "imdb-original", "imdb-l2")} <= set(paths)
    assert any(path.startswith("metrics/claims/") for path in paths)
    # The headline comes first in `dvc exp show`, not the run counts.
    exp_show = dvc(repo, "exp", "show", "--no-pager", "--csv").stdout.splitlines()[0].split(",")
    first_metric = next(name for name in exp_show if name.startswith("metrics/"))
    assert first_metric.endswith(":val_accuracy")


def test_the_claims_run_carries_every_verdict_and_is_linked_from_the_parent_runs(repo, first_repro):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(CLAIMS_EXPERIMENT)
    (claims_run,) = client.search_runs([experiment.experiment_id], max_results=5)
    verdicts = json.loads((repo / "reports/claims.json").read_text())["claims"]
    tags = claims_run.data.tags
    assert {cid: tags[f"verdict.{cid}"] for cid in verdicts} == {cid: e["verdict"] for cid, e in verdicts.items()}
    tested = {cid: e for cid, e in verdicts.items() if e.get("mean") is not None}
    assert tested and all(
        claims_run.data.metrics[f"mean.{cid}"] == pytest.approx(e["mean"], rel=1e-5) for cid, e in tested.items()
    )
    for name in ("regbench/sonar", "regbench/imdb"):
        parents = client.search_runs(
            [client.get_experiment_by_name(name).experiment_id], filter_string="tags.`regbench.variant` != ''"
        )
        # The parent runs the claims stage judged (a forced rerun after it starts new ones, which it did not judge).
        judged = [p for p in parents if p.info.start_time < claims_run.info.start_time]
        assert judged and all(p.data.tags[CLAIMS_RUN_TAG] == claims_run.info.run_id for p in judged)
