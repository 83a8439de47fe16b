"""End to end: `dvc repro` of the real dvc.yaml in a temporary copy of the repo, on fixture data.

Also what a rerun leaves behind (issue 25): a forced rerun of two train stages reproduces every tracked byte
(git and DVC both see no change); one line per stage, progress never past 100 %; `dvc metrics show` one row
per stage or claim in a few columns; the claims stage's MLflow run carries every verdict and is linked from
the parent runs it judged.
"""

import json
import re

import pytest
import yaml
from mlflow import MlflowClient

from regbench.train.tracking import CLAIMS_EXPERIMENT, CLAIMS_RUN_TAG
from tests.conftest import PipelineSpec, git

pytestmark = pytest.mark.pipeline
RUNS = {"sonar": ["baseline", "hidden_dropout"], "imdb": ["original", "l2"]}
PIPELINE = PipelineSpec(RUNS, epochs=2, seeds=(0, 1))
FORCED = ("train@sonar-baseline", "train@imdb-original")


@pytest.fixture(scope="module")
def repo(pipeline):
    return pipeline.repo


@pytest.fixture(scope="module")
def first_repro(pipeline):
    return pipeline.dvc("repro")


@pytest.fixture(scope="module")
def forced_repro(pipeline, repo, first_repro):
    """The first results committed, then two train stages forced: what a rerun leaves behind (issue 25)."""
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first run")
    return pipeline.dvc("repro", "-f", *FORCED)


def test_repro_writes_parseable_metrics_plots_and_manifests(repo, first_repro):
    for run in ("sonar-baseline", "sonar-hidden_dropout", "imdb-original", "imdb-l2"):
        out = repo / "results" / "train" / run
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["repeats_ok"] == 2 and metrics["status"] == "ok"
        header, *rows = (out / "curves.csv").read_text().splitlines()
        assert header.startswith("epoch,") and len(rows) == 2
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["stage"] == f"train@{run}" and manifest["seeds"] == [0, 1]
        assert manifest["data_manifest"]["content_digest"] and manifest["library_versions"]["keras"]
    sonar_runs = json.loads((repo / "results/train/sonar-baseline/runs.json").read_text())
    assert len(sonar_runs) == 4  # 2 repeats x 2 folds
    assert json.loads((repo / "results/train/imdb-l2/metrics.json").read_text())["final_reg_loss"] > 0
    prepared = json.loads((repo / "data/prepared/imdb/manifest.json").read_text())
    assert prepared["source"]["origin"].startswith("mirror:") and prepared["vocabulary_size"] == 12


def test_dvc_metrics_and_plots_see_the_outputs(pipeline, repo, first_repro):
    shown = pipeline.dvc("metrics", "show", "--json").stdout
    assert "metrics/imdb-original.json" in shown
    # dvc.yaml's top-level plots: per experiment, training and validation loss and accuracy of every variant.
    plots = json.loads(pipeline.dvc("plots", "show", "--json").stdout)["data"]
    assert {"sonar-dropout-loss", "sonar-dropout-accuracy", "imdb-size-loss", "imdb-penalty-accuracy"} <= set(plots)
    sonar_loss = json.dumps(plots["sonar-dropout-loss"])
    assert "sonar-baseline/curves.csv::loss" in sonar_loss and "sonar-baseline/curves.csv::val_loss" in sonar_loss


def test_mlflow_holds_parent_and_child_runs_with_epoch_histories(pipeline, first_repro):
    client = MlflowClient(pipeline.tracking_uri)
    experiment = client.get_experiment_by_name("regbench/sonar")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.info.run_name for r in parents} == {"sonar-baseline", "sonar-hidden_dropout"}
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in runs)
    child = children[0]
    assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 2
    assert child.data.params["epochs"] == "2" and child.data.tags["regbench.stage"].startswith("train@sonar")
    assert {"regbench.git_revision", "regbench.data_digest"} <= set(parents[0].data.tags)


def test_claims_and_report_cover_every_claim_of_the_experiments_that_ran(pipeline, repo, first_repro):
    assert "metrics/claims/sonar.hidden_dropout_raises.json" in pipeline.dvc("metrics", "show", "--json").stdout
    verdicts = json.loads((repo / "reports/claims.json").read_text())["claims"]
    report = (repo / "reports/report.md").read_text()
    for claim_id, entry in verdicts.items():
        assert f"`{claim_id}`" in report
        experiment = claim_id.split(".")[0]
        if experiment not in RUNS:
            assert entry["verdict"] == "not run"
    # Both variants of these claims were trained; two repeats are fewer than claims.min_repeats.
    for claim_id in ("sonar.baseline_accuracy", "sonar.hidden_dropout_raises", "imdb.l2_resists_overfitting"):
        assert verdicts[claim_id]["repeats"] == 2 and verdicts[claim_id]["verdict"] == "undecided"
    assert verdicts["sonar.input_dropout_lowers"]["verdict"] == "not run"  # its variant is not in params
    assert (repo / "reports/index.html").read_text().startswith("<!DOCTYPE html>")


def test_a_forced_rerun_changes_no_tracked_byte(pipeline, repo, forced_repro):
    assert git(repo, "status", "--porcelain") == ""
    assert "up to date" in pipeline.dvc("status").stdout
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


def test_dvc_metrics_show_is_one_row_per_stage_or_claim_and_fits_160_columns(pipeline, forced_repro):
    # (after forced_repro: `dvc exp show` needs a commit)
    shown = pipeline.dvc("metrics", "show").stdout
    rows = [line for line in shown.splitlines() if line.strip()]
    assert max(len(line.rstrip()) for line in rows) <= 160, shown
    header = rows[0].split()
    assert {"val_accuracy", "best_val_accuracy", "runs", "diverged", "verdict", "mean"} <= set(header)
    paths = [row.split()[0] for row in rows[1:]]
    assert {f"metrics/{stage}.json" for stage in ("sonar-baseline", "imdb-original", "imdb-l2")} <= set(paths)
    assert any(path.startswith("metrics/claims/") for path in paths)
    # The headline comes first in `dvc exp show`, not the run counts.
    exp_show = pipeline.dvc("exp", "show", "--no-pager", "--csv").stdout.splitlines()[0].split(",")
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


def test_second_repro_does_nothing_and_one_changed_variant_reruns_alone(pipeline, repo, first_repro):
    assert "Stage 'train@imdb-l2' didn't change" in pipeline.dvc("repro").stdout
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["imdb"]["variants"]["l2"]["epochs"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    status = pipeline.dvc("status", "--json").stdout
    assert set(json.loads(status)) == {"train@imdb-l2"}
    rerun = pipeline.dvc("repro").stdout
    assert "Running stage 'train@imdb-l2'" in rerun
    assert "Running stage 'train@imdb-original'" not in rerun and "Running stage 'prepare@imdb'" not in rerun
    assert len((repo / "results/train/imdb-l2/curves.csv").read_text().splitlines()) == 4


def test_editing_a_claim_reruns_claims_and_report_never_training(pipeline, repo, first_repro):
    pipeline.dvc("repro")
    registry = yaml.safe_load((repo / "claims.yaml").read_text())
    registry["claims"][8]["test"]["tolerance"] = 0.5  # sonar.baseline_accuracy
    (repo / "claims.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    assert set(json.loads(pipeline.dvc("status", "--json").stdout)) == {"claims"}
    rerun = pipeline.dvc("repro").stdout
    assert "Running stage 'claims'" in rerun and "Running stage 'report'" in rerun
    assert "Running stage 'train@" not in rerun


def test_a_bad_param_stops_the_stage_with_the_key_path(pipeline, repo, first_repro):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["sonar"]["variants"]["baseline"]["hidden_dropout"] = 1.2
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = pipeline.dvc("repro", "train@sonar-baseline", check=False)
    assert result.returncode != 0
    assert (
        "sonar.variants.baseline.hidden_dropout = 1.2: must be a dropout rate in [0, 1)"
        in result.stderr + result.stdout
    )
    # The stage stopped before training: no half-written output, and the previous results are all still there.
    assert not list((repo / "results/train").glob(".*.part"))
    assert {p.name for p in (repo / "results/train/sonar-baseline").iterdir()} >= {
        "histories.csv",
        "runs.json",
        "manifest.json",
        "metrics.json",
        "curves.csv",
    }
