"""Which runs a train stage makes, on which rows, and which engine trains them.

A variant's runs are its members x repeats (seeds) x CV folds. ``run_specs`` lays
them out with their data; ``train_all`` hands them to an engine: the stacked
engine (``stacked.train_jobs``) when every run can share one program and the
stacked engine implements every setting, else one trainer per member
(``engine.make_trainer``), reused across its repeats and folds.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from regbench.config import ExperimentParams, Member, Params, VariantParams
from regbench.data import datasets
from regbench.data.sparse import BinaryCsr
from regbench.schema import flatten, to_plain
from regbench.train import records
from regbench.train.engine import FitData, binary_targets, make_trainer, one_thread_per_op, side_by_side
from regbench.train.progress import Progress
from regbench.train.records import RunResult
from regbench.train.stacked import Job, evaluation_sets, train_jobs, unsupported
from regbench.train.tracking import ChildRuns

log = logging.getLogger(__name__)


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


def run_seed(seed: int, fold: int | None) -> int:
    """Each fold of a repeat gets its own initial weights; fold None keeps the repeat's seed."""
    return seed if fold is None else seed * 100 + fold


def cv_folds(experiment: ExperimentParams, data) -> list[int | None]:
    """The folds each repeat trains on: every CV fold of the prepared data, or [None] (one run per repeat).

    Which rows each fold holds out is the repeat's own draw (``datasets.for_repeat``); their number is the
    prepared data's.
    """
    return list(range(int(data.manifest["folds"]))) if experiment.defaults.validation == "cv" else [None]


@dataclass
class RunSpec:
    """Where a job sits in the variant: member, repeat, seed and fold."""

    member: Member
    repeat: int
    seed: int
    fold: int | None
    label: str
    job: Job


def run_specs(params: Params, seeds: tuple[int, ...], members: list[Member], data, folds) -> list[RunSpec]:
    specs = []
    for member in members:
        for repeat, seed in enumerate(seeds):
            for fold in folds:
                label = f"{member.label} repeat {repeat + 1}/{len(seeds)}" + (
                    f" fold {fold + 1}/{len(folds)}" if fold is not None else ""
                )
                job = make_job(data, member.params, seed, fold, params.train.max_train_samples)
                specs.append(RunSpec(member, repeat, seed, fold, label, job))
    return specs


def make_job(data, params: VariantParams, seed: int, fold: int | None, max_train_samples: int | None) -> Job:
    """One run's job: its rows of the prepared data, its seed and settings (a Ray worker rebuilds it the same way).

    The rows are those of the repeat's own data (``datasets.for_repeat``: its CV folds, or under scope data its
    drawn dataset), a function of the repeat's seed alone, so every variant pairs with every other seed by seed.
    """
    fit_data, test = split(datasets.for_repeat(data, seed), params, fold, max_train_samples, seed)
    return Job(fit_data, run_seed(seed, fold), params, test)


def train_single(trainer, job: Job, progress: Progress | None):
    """Train one run with a per-run trainer; its history and, when it did not diverge, its evaluations."""
    history = trainer.train(job.data, job.seed, progress)
    return history, _evaluate(trainer, job, history)


def _evaluate(trainer, job: Job, history) -> dict[str, float]:
    """Inference-mode metrics on the run's evaluation sets, when it did not diverge."""
    evaluations = {}
    if history.status == "ok":
        for prefix, arrays in evaluation_sets(job).items():
            metrics = trainer.final_metrics(*arrays)
            evaluations.update({f"{prefix}_{k}": v for k, v in metrics.items()})
    return evaluations


class _Collector:
    """Gathers each finished run's result, and keeps its MLflow child run and the progress line in step."""

    def __init__(self, specs: list[RunSpec], children: ChildRuns, progress: Progress, stage: str):
        self.specs, self.children, self.progress, self.stage = specs, children, progress, stage
        self.results: dict[int, RunResult] = {}

    def open(self, index: int) -> str | None:
        spec = self.specs[index]
        settings = {"grid_value": spec.member.grid_value, **flatten(to_plain(spec.member.params))}
        return self.children.open(index, spec.member.label, spec.repeat, spec.seed, spec.fold, settings)

    def done(self, index: int, history, evaluations: dict[str, float]) -> None:
        spec = self.specs[index]
        run_id = self.open(index)
        # The engines stop a run at a NaN; a finite blow-up is judged here, before anything records the run.
        records.mark_divergence(history, spec.job.data.output_dim)
        if history.status == "diverged":
            why = records.divergence_reason(history.status, history.diverged_epoch, history.epochs)
            log.warning("%s %s diverged (%s); the other runs go on", self.stage, spec.label, why)
        self.children.close(index, history, evaluations)
        member = spec.member
        self.results[index] = RunResult(
            member.label, member.grid_value, spec.repeat, spec.seed, spec.fold, history, evaluations, run_id
        )
        self.progress.run_done()


def train_all(
    params: Params,
    specs: list[RunSpec],
    data,
    children: ChildRuns,
    progress: Progress,
    stage: str,
    executor_record: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Train every run with the engine ``params.train.engine`` names; results in ``specs`` order.

    ``executor_record`` (when given) receives what the executor reports about where the runs trained.
    """
    if not specs:
        return []  # nothing to train: every run of the stage was read back from its run store
    collector = _Collector(specs, children, progress, stage)
    try:
        if params.train.executor == "ray":
            # Imported here: Ray is only loaded by stages that use it.
            from regbench.train.executor import train_on_ray

            record = train_on_ray(params, specs, data, collector, progress, stage)
        else:
            _dispatch(params, specs, data, collector, progress, stage)
            record = {"kind": "local"}
        if executor_record is not None:
            executor_record.update(record)
    except BaseException as error:
        children.abort(error)
        raise
    return [collector.results[index] for index in range(len(specs))]


def _dispatch(params: Params, specs: list[RunSpec], data, collector: _Collector, progress: Progress, stage) -> None:
    sparse = isinstance(data["x_train"], BinaryCsr)
    input_dim = data["x_train"].shape[1]
    output_dim = 1 if data["y_train"].ndim == 1 else data["y_train"].shape[1]
    jobs = [spec.job for spec in specs]
    if params.train.engine == "compiled":
        reason = unsupported(jobs)
        if reason is None:

            def progress_for(indices: list[int]):
                first = specs[indices[0]]
                progress.begin(
                    f"{first.member.label}: {len(indices)} runs together", first.job.params.epochs, len(indices)
                )
                return progress

            train_jobs(
                jobs,
                input_dim,
                output_dim,
                params.train.chunk_seconds,
                progress_for,
                collector.done,
                parts=params.train.stack_parts,
            )
            return
        log.info("%s: runs train one at a time, not stacked: %s", stage, reason)
    workers = min(params.train.stack_parts, len(specs), usable_cores())
    if params.train.engine == "compiled" and workers > 1:
        _side_by_side(params, specs, collector, progress, workers, (input_dim, output_dim, sparse))
        return
    trainer, trainer_member = None, None
    for index, spec in enumerate(specs):
        if spec.member is not trainer_member:
            # One trainer per member: the compiled engine is traced once and reused across repeats and folds.
            trainer_member = spec.member
            trainer = make_trainer(
                params.train.engine, spec.job.params, input_dim, output_dim, sparse, params.train.chunk_seconds
            )
        progress.begin(spec.label, spec.job.params.epochs)
        collector.open(index)
        history, evaluations = train_single(trainer, spec.job, progress)
        collector.done(index, history, evaluations)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _side_by_side(
    params: Params, specs: list[RunSpec], collector: _Collector, progress: Progress, workers: int, shapes
) -> None:
    """Train the runs one at a time per worker thread, ``workers`` at once, one thread per op each.

    A per-run trainer keeps about one core busy: its ops run one after another, and the widest
    (imdb-bigger's segment sums) use one thread. Measured on 2 cores, imdb-bigger took 2.2 s per
    epoch with one thread per op, 3.0 s with TensorFlow's pool, and identical histories either way
    (tests/test_models_engine.py checks the threads do not change a run's bits). Each worker keeps
    one trainer per member, traced once; resets take the engine's lock on Keras' random state, so a
    run's initial weights depend on its own seed only.
    """
    one_thread_per_op()
    input_dim, output_dim, sparse = shapes
    lock = threading.Lock()
    pending = list(range(len(specs)))
    walls: dict[int, float] = {}

    def next_index(cancel: threading.Event) -> int | None:
        with lock:
            return pending.pop(0) if pending and not cancel.is_set() else None

    def work(worker: int, cancel: threading.Event) -> None:
        trainers: dict[int, Any] = {}
        while (index := next_index(cancel)) is not None:
            spec = specs[index]
            trainer = trainers.get(id(spec.member))
            if trainer is None:
                trainer = make_trainer(
                    "compiled", spec.job.params, input_dim, output_dim, sparse, params.train.chunk_seconds
                )
                trainer.trace()
                trainers[id(spec.member)] = trainer
            reporter = None
            with lock:
                collector.open(index)
                if worker == 0:
                    progress.begin(f"{spec.label} ({workers} runs side by side)", spec.job.params.epochs, workers)
                    reporter = progress
            started = time.perf_counter()
            history = trainer.train(spec.job.data, spec.job.seed, reporter, cancel)
            evaluations = _evaluate(trainer, spec.job, history)
            with lock:
                walls[index] = time.perf_counter() - started
                collector.done(index, history, evaluations)

    started = time.perf_counter()
    side_by_side([functools.partial(work, worker) for worker in range(workers)], workers)
    # A run's seconds: its share of the wall time, so the stage's training seconds add up to the wall time.
    scale = (time.perf_counter() - started) / max(sum(walls.values()), 1e-9)
    for index, result in collector.results.items():
        result.history.seconds = walls[index] * scale
