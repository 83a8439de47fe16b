"""The experiment registry: a new experiment is one module plus its params.yaml and claims.yaml entries.

The end-to-end test adds a small experiment ("moons") to a temporary copy of the repository exactly as
the README's recipe says, runs `dvc repro` to a report, and checks which files the addition touched.
"""

import json
import textwrap

import pytest
import yaml

from regbench.config import parse
from regbench.data import experiments
from regbench.schema import ParamsError
from tests.conftest import REPO_ROOT, PipelineSpec, git, real_params, write_params

MOONS_MODULE = textwrap.dedent(
    '''
    """moons: two interleaving half circles, half of them for training (a test-only experiment)."""

    from __future__ import annotations

    from dataclasses import dataclass

    import numpy as np

    from regbench.data.experiments import Arrays, Experiment
    from regbench.schema import check, non_negative, positive_int


    @dataclass(frozen=True)
    class MoonsPrepare:
        n_samples: int = check(positive_int, "must be a positive integer")
        noise: float = check(non_negative, "must be 0 or more", default=0.2)
        random_state: int = 0


    def prepare(params: MoonsPrepare, raw: None) -> tuple[Arrays, dict]:
        from sklearn.datasets import make_moons

        x, y = make_moons(n_samples=params.n_samples, noise=params.noise, random_state=params.random_state)
        half = params.n_samples // 2
        arrays = {
            "x_train": x[:half].astype(np.float32),
            "y_train": y[:half].astype(np.float32),
            "x_test": x[half:].astype(np.float32),
            "y_test": y[half:].astype(np.float32),
        }
        return arrays, {"generator": "sklearn.datasets.make_moons"}


    EXPERIMENT = Experiment(
        name="moons",
        prepare_params=MoonsPrepare,
        prepare=prepare,
        generator="scikit-learn",
        headline_metric="train_eval_accuracy",
        validation_is="held-out half of the moons",
    )
    '''
).lstrip()

MOONS_PARAMS = {
    "data": "moons",
    "randomness": {"scope": "setup"},
    "seeds": [0, 1],
    "defaults": {
        "hidden": [8],
        "activation": "relu",
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "loss": "binary_crossentropy",
        "epochs": 3,
        "batch_size": 16,
        "validation": "test",
    },
    "variants": {"baseline": {}, "dropout": {"hidden_dropout": 0.5}},
}

MOONS_CLAIM = {
    "id": "moons.dropout_lowers_train",
    "experiment": "moons",
    "source": "test-only",
    "statement": "Dropout lowers the final train accuracy.",
    "published": "(a test claim)",
    "measure": {"kind": "final", "metric": "train_eval_accuracy"},
    # No published figure: the claim declares its smallest effect of interest (one accuracy point).
    "test": {
        "kind": "paired",
        "variant": "dropout",
        "versus": "baseline",
        "direction": "less",
        "smallest_effect": 0.01,
    },
}


def add_moons(repo) -> None:
    """The README's "Add an experiment" recipe, step by step."""
    (repo / "regbench/data/experiments/moons.py").write_text(MOONS_MODULE)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["prepare"]["moons"] = {"input": "regbench/data/experiments/moons.py", "n_samples": 60}
    raw["moons"] = MOONS_PARAMS
    for variant in MOONS_PARAMS["variants"]:
        raw["train"]["runs"][f"moons-{variant}"] = {"experiment": "moons", "variant": variant}
    write_params(repo, raw)
    registry = yaml.safe_load((repo / "claims.yaml").read_text())
    registry["claims"].append(MOONS_CLAIM)
    (repo / "claims.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))


@pytest.mark.pipeline
def test_a_new_experiment_is_one_module_and_two_yaml_entries(make_pipeline):
    # A shrunk copy of the real params (no experiment trained but the new one), committed
    # first so that only the addition itself shows up as changed.
    pipeline = make_pipeline(PipelineSpec({}, commit=True))
    repo = pipeline.repo

    add_moons(repo)

    touched = sorted(line[3:] for line in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines())
    assert touched == ["claims.yaml", "params.yaml", "regbench/data/experiments/moons.py"]

    stages = pipeline.dvc("stage", "list", "--name-only").stdout.split()
    assert {"prepare@moons", "train@moons-baseline", "train@moons-dropout"} <= set(stages)
    pipeline.dvc("repro")

    prepared = json.loads((repo / "data/prepared/moons/manifest.json").read_text())
    assert prepared["shapes"]["x_train"] == [30, 2] and prepared["source"]["source"] == "generated"
    verdicts = json.loads((repo / "reports/claims.json").read_text())["claims"]
    assert verdicts["moons.dropout_lowers_train"]["repeats"] == 2
    assert verdicts["moons.dropout_lowers_train"]["verdict"] == "undecided"  # 2 repeats < claims.min_repeats
    report = (repo / "reports/report.md").read_text()
    assert "## moons" in report and "#### `moons.dropout_lowers_train`\n" in report
    # The report labels it as its module says: the headline metric heads its published-vs-measured table.
    assert "| baseline | train accuracy (inference mode) |" in report
    assert (repo / "reports/figures/moons_curves.png").is_file()
    assert "Stage 'train@moons-baseline' didn't change" in pipeline.dvc("repro").stdout


def test_the_registry_holds_one_module_per_experiment_in_params_order():
    # No list of experiments here: a new one (README: Add an experiment) must pass this test unchanged.
    names = experiments.names()
    modules = sorted(path.stem for path in (REPO_ROOT / "regbench/data/experiments").glob("[!_]*.py"))
    assert list(names) == modules and len(names) >= 5
    raw = real_params()
    # Every module is configured in params.yaml, and the experiments keep params.yaml's order (the report's).
    assert list(parse(raw).experiments) == [section for section in raw if section in names]
    assert set(parse(raw).experiments) == set(names)
    for name, experiment in experiments.registry().items():
        assert experiment.name == name and experiment.module_path == f"regbench/data/experiments/{name}.py"
    assert experiments.registry()["sonar"].prepare_input == "data/raw/sonar"


def test_a_grid_member_carries_its_setting_as_data():
    grid = parse(real_params()).experiments["circles"].variants["dropout_grid"]
    assert grid.grid_key == "hidden_dropout"
    assert [dict(m.grid) for m in grid.members][:2] == [{"hidden_dropout": 0.0}, {"hidden_dropout": 0.1}]
    assert grid.members[3].grid_value == 0.3
    assert parse(real_params()).experiments["circles"].variants["overfit"].members[0].grid == {}


def test_an_experiment_section_without_a_module_is_refused():
    raw = real_params()
    raw["moons"] = MOONS_PARAMS
    with pytest.raises(ParamsError, match="moons = '...': unknown section"):
        parse(raw)
