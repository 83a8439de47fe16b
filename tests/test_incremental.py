"""Incremental seeds, end to end with the real DVC: growing a seed list trains only the new seeds."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml

from tests.conftest import PipelineSpec

pytestmark = pytest.mark.pipeline
RUNS = {"circles": ["dropout"], "sonar": ["hidden_dropout"]}
STAGES = ("circles-dropout", "sonar-hidden_dropout")
# The train stages and what they need (fetch, prepare), not claims and report: faster, and all that is tested.
TARGETS = [f"train@{stage}" for stage in STAGES]
RESULTS = ("histories.csv", "metrics.json", "curves.csv")


def digests(repo, stage: str) -> dict[str, str]:
    folder = repo / "results/train" / stage
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in RESULTS}


def set_seeds(repo, seeds: list[int]) -> None:
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for experiment, variants in RUNS.items():
        for variant in variants:
            raw[experiment]["variants"][variant]["seeds"] = seeds
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def runs_of(repo, stage: str) -> dict[str, int]:
    # The run log (untracked, beside the repository): the counts change from run to run, so not in the manifest.
    last = (repo / "logs" / f"train-{stage}.jsonl").read_text().splitlines()[-1]
    return json.loads(last)["runs"]


def test_growing_seeds_trains_only_the_new_runs_and_gives_the_from_scratch_bytes(make_pipeline):
    pipeline = make_pipeline(PipelineSpec(RUNS, epochs=3, seeds=(0, 1, 2), repro=tuple(TARGETS)))
    repo = pipeline.repo
    folds = 2  # shrunk_params: sonar's CV has 2 folds
    assert runs_of(repo, "sonar-hidden_dropout") == {"trained": 3 * folds, "reused": 0}

    set_seeds(repo, [0, 1, 2, 3, 4])
    pipeline.dvc("repro", *TARGETS)
    assert runs_of(repo, "circles-dropout") == {"trained": 2, "reused": 3}
    assert runs_of(repo, "sonar-hidden_dropout") == {"trained": 2 * folds, "reused": 3 * folds}
    grown = {stage: digests(repo, stage) for stage in STAGES}
    assert "Data and pipelines are up to date" in pipeline.dvc("status", *TARGETS).stdout

    # From scratch with the final seed list: no run store to read from, the same bytes.
    for stage in STAGES:
        shutil.rmtree(repo / "results/train" / stage)
        pipeline.dvc("repro", "-f", "-s", f"train@{stage}")
        assert runs_of(repo, stage)["reused"] == 0
        assert digests(repo, stage) == grown[stage]

    # Shrinking trains nothing, and the store keeps exactly the runs in use (what dvc.lock records).
    set_seeds(repo, [0, 1])
    pipeline.dvc("repro", *TARGETS)
    assert runs_of(repo, "circles-dropout") == {"trained": 0, "reused": 2}
    assert len(list((repo / "results/train/circles-dropout/runs").glob("*.json"))) == 2
    assert len(list((repo / "results/train/sonar-hidden_dropout/runs").glob("*.json"))) == 2 * folds
    assert "Data and pipelines are up to date" in pipeline.dvc("status", *TARGETS).stdout


def trained_under(repo, stage: str) -> list[dict]:
    return json.loads((repo / "results/train" / stage / "manifest.json").read_text())["trained_under"]


def append_comment(repo, path: str) -> None:
    with (repo / path).open("a") as file:
        file.write("\n# an edit that changes no behaviour\n")


def test_one_declaration_decides_what_retrains_and_retraining_is_explicit(make_pipeline, monkeypatch):
    """regbench/train/identity.py: presentation edits rerun the stage and reuse its runs; engine edits,
    REGBENCH_RETRAIN=1 and a numeric environment setting retrain them; the manifest says what they ran under."""
    for name in ("TF_ENABLE_ONEDNN_OPTS", "REGBENCH_RETRAIN"):
        monkeypatch.delenv(name, raising=False)
    pipeline = make_pipeline(PipelineSpec({"circles": ["dropout"]}, epochs=2, seeds=(0, 1)))
    repo = pipeline.repo
    stage, target = "circles-dropout", "train@circles-dropout"
    pipeline.dvc("repro", target)
    assert runs_of(repo, stage) == {"trained": 2, "reused": 0}
    first = digests(repo, stage)

    # Code that writes or presents the numbers: DVC reruns the stage (fresh outputs), the runs are read back.
    append_comment(repo, "regbench/train/tracking.py")
    assert "regbench/train/tracking.py" in pipeline.dvc("status", target).stdout
    pipeline.dvc("repro", target)
    assert runs_of(repo, stage) == {"trained": 0, "reused": 2}
    assert digests(repo, stage) == first

    # Code that computes them: every run trains again (to the same bytes: a comment changes no arithmetic).
    append_comment(repo, "regbench/train/engine.py")
    pipeline.dvc("repro", target)
    assert runs_of(repo, stage) == {"trained": 2, "reused": 0}
    assert digests(repo, stage) == first

    # `dvc repro -f` cannot tell the stage it was forced (it reuses every run): REGBENCH_RETRAIN=1 retrains.
    pipeline.dvc("repro", "-f", "-s", target, REGBENCH_RETRAIN="1")
    assert runs_of(repo, stage) == {"trained": 2, "reused": 0}

    # The numeric environment: runs trained with oneDNN off are not reused under the default, and the
    # manifest names the setting each set of runs was trained under.
    pipeline.dvc("repro", "-f", "-s", target, TF_ENABLE_ONEDNN_OPTS="0")
    assert runs_of(repo, stage) == {"trained": 2, "reused": 0}
    assert [s["environment"]["TF_ENABLE_ONEDNN_OPTS"] for s in trained_under(repo, stage)] == ["0"]
    pipeline.dvc("repro", "-f", "-s", target)
    assert runs_of(repo, stage) == {"trained": 2, "reused": 0}
    assert [s["environment"]["TF_ENABLE_ONEDNN_OPTS"] for s in trained_under(repo, stage)] == [None]
