"""The Ray executor's plan: the same units the local executor trains as one program (no cluster needed)."""

import copy

import numpy as np
import pytest

from regbench import config
from regbench.data import datasets
from regbench.train.executor import plan_units
from regbench.train.plan import cv_folds, plan_runs
from regbench.train.stacked import MIN_RUNS_PER_PART, plan_parts
from tests.conftest import real_params, without_variant_seeds


def specs_for(engine: str, seeds: int, variant: str = "dropout_grid"):
    raw = without_variant_seeds(copy.deepcopy(real_params()))
    raw["circles"]["seeds"] = list(range(seeds))
    raw["train"]["engine"] = engine
    params = config.parse(raw)
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 2)).astype(np.float32),
        "y_train": (rng.random(40) > 0.5).astype(np.float32),
        "x_test": rng.normal(size=(20, 2)).astype(np.float32),
        "y_test": (rng.random(20) > 0.5).astype(np.float32),
    }
    data = datasets.PreparedData(arrays, {})
    experiment = params.experiments["circles"]
    members = list(experiment.variants[variant].members)
    return params, plan_runs(params, experiment.seeds_of(variant), members, data, cv_folds(experiment, data))


# The 9-member dropout grid: 9 runs make one part (fewer than 2 x MIN_RUNS_PER_PART), 27 runs two (stack_parts).
@pytest.mark.parametrize(("seeds", "parts"), [(1, 1), (3, 2)])
def test_stacked_stages_are_sent_as_the_local_parts(seeds, parts):
    assert MIN_RUNS_PER_PART == 10
    params, specs = specs_for("compiled", seeds)
    units = plan_units(params, specs)
    assert all(unit.stacked for unit in units)
    # Every run once, in order, in contiguous parts: the parts stacked.train_parts trains locally.
    assert [i for unit in units for i in unit.indices] == list(range(len(specs)))
    assert len(units) == parts
    assert [list(unit.indices) for unit in units] == plan_parts(specs, params.train.stack_parts)


def test_per_run_engines_send_one_task_per_run():
    params, specs = specs_for("fit", 2)
    units = plan_units(params, specs)
    assert [unit.indices for unit in units] == [(i,) for i in range(len(specs))]
    assert not any(unit.stacked for unit in units)
