"""End to end: `dvc repro` of the real dvc.yaml in a temporary copy of the repo, on fixture data."""

import json

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import PipelineSpec

pytestmark = pytest.mark.pipeline
RUNS = {"sonar": ["baseline", "hidden_dropout"], "imdb": ["original", "l2"]}
PIPELINE = PipelineSpec(RUNS, epochs=2, seeds=(0, 1))


@pytest.fixture(scope="module")
def repo(pipeline):
    return pipeline.repo


@pytest.fixture(scope="module")
def first_repro(pipeline):
    return pipeline.dvc("repro")


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
