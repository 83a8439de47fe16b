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
    return json.loads((repo / "results/train" / stage / "manifest.json").read_text())["runs"]


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
