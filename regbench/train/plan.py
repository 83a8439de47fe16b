"""Which runs a train stage makes, and on which rows.

A variant's runs are its members x repeats (seeds) x CV folds. ``plan_runs`` lays them out
as ``run.Run`` objects with their rows of the prepared data; how they are trained (stacked
or one at a time, here or on Ray) is the executor's choice (``executor.plan_units``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from regbench.config import ExperimentParams, Member, Params, VariantParams
from regbench.data import datasets
from regbench.data.sparse import BinaryCsr
from regbench.train.run import FitData, Run, binary_targets


def effective_params(member: VariantParams, params: Params) -> VariantParams:
    """The member's settings with the quick-run caps of the train section applied."""
    if params.train.max_epochs is not None and member.epochs > params.train.max_epochs:
        return dataclasses.replace(member, epochs=params.train.max_epochs)
    return member


def _rows(x, index: np.ndarray):
    return x.take(index) if isinstance(x, BinaryCsr) else x[index]


def split(
    data: datasets.PreparedData,
    variant: VariantParams,
    fold: int | None,
    max_train_samples: int | None,
    seed: int,
) -> tuple[FitData, tuple[Any, np.ndarray] | None]:
    """The variant's training and validation arrays, and a separate test set if there is one."""
    x, y = data["x_train"], binary_targets(data["y_train"])
    test = None
    if variant.validation == "cv":
        if "fold" not in data:
            raise ValueError("validation: cv needs a prepared dataset with fold assignments (sonar)")
        held_out = data["fold"] == fold
        train_index, val_index = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    elif variant.validation == "split":
        # Keras' validation_split: the last fraction of the rows, taken before any shuffling.
        split_at = int(math.floor(len(y) * (1.0 - variant.validation_split)))
        train_index, val_index = np.arange(split_at), np.arange(split_at, len(y))
        test = (data["x_test"], binary_targets(data["y_test"]))
    else:
        train_index, val_index = np.arange(len(y)), None
    if max_train_samples is not None and len(train_index) > max_train_samples:
        # A seeded random subset: the prepared rows may be sorted by class.
        chosen = np.random.default_rng([seed, 2]).choice(len(train_index), max_train_samples, replace=False)
        train_index = train_index[np.sort(chosen)]
    # All rows in order: use the arrays as they are (a copy of full MNIST per repeat costs 190 MB).
    whole = len(train_index) == len(y) and bool(np.all(train_index == np.arange(len(y))))
    x_train, y_train = (x, y) if whole else (_rows(x, train_index), y[train_index])
    if val_index is None:
        x_val, y_val = data["x_test"], binary_targets(data["y_test"])
    else:
        x_val, y_val = _rows(x, val_index), y[val_index]
    if data.manifest.get("standardize") and not isinstance(x_train, BinaryCsr):
        # Fitted on this fold's training rows only, so no information leaks from the held-out rows.
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-7
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    return FitData(x_train, y_train, x_val, y_val), test


def cv_folds(experiment: ExperimentParams, data) -> list[int | None]:
    """The folds each repeat trains on: every CV fold of the prepared data, or [None] (one run per repeat).

    Which rows each fold holds out is the repeat's own draw (``datasets.for_repeat``); their number is the
    prepared data's.
    """
    return list(range(int(data.manifest["folds"]))) if experiment.defaults.validation == "cv" else [None]


def plan_runs(params: Params, seeds: tuple[int, ...], members: list[Member], data, folds) -> list[Run]:
    """Every run of the variant, member by member, repeat by repeat, fold by fold, with its rows."""
    runs = []
    for member in members:
        for repeat, seed in enumerate(seeds):
            for fold in folds:
                label = f"{member.label} repeat {repeat + 1}/{len(seeds)}" + (
                    f" fold {fold + 1}/{len(folds)}" if fold is not None else ""
                )
                run = Run(member.label, member.grid_value, member.params, repeat, seed, fold, label)
                runs.append(attach_data(run, data, params.train.max_train_samples))
    return runs


def attach_data(run: Run, data, max_train_samples: int | None) -> Run:
    """The run with its rows of the prepared data (a Ray worker rebuilds them the same way).

    The rows are those of the repeat's own data (``datasets.for_repeat``: its CV folds, or under scope data its
    drawn dataset), a function of the repeat's seed alone, so every variant pairs with every other seed by seed.
    """
    fit_data, test = split(datasets.for_repeat(data, run.seed), run.params, run.fold, max_train_samples, run.seed)
    return dataclasses.replace(run, data=fit_data, test=test)
