"""Train every member, repeat and fold of one variant; write its records, metrics and manifest.

``train(params, run_name, out_dir)`` is what the DVC stage calls and what the
tests call directly on a shrunk copy of the real params. The work is done in:
``schedule`` (which runs, on which rows, by which engine), ``progress`` (the
status line), ``tracking`` (MLflow parent and child runs) and ``records``
(histories.csv, runs.json, the fold-then-repeat averages in metrics.json and
curves.csv).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from regbench.config import ExperimentParams, Member, Params, Variant
from regbench.data import datasets
from regbench.io import write_json
from regbench.schema import flatten, to_plain
from regbench.train import provenance, records, runstore
from regbench.train.plan import cv_folds, effective_params, run_specs, train_all
from regbench.train.plots import plot_learning_curves
from regbench.train.progress import Progress
from regbench.train.tracking import (
    ChildRuns,
    StoreUnwritable,
    Tracker,
    append_run_log,
    start_stage_run,
    variant_note,
)

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
MANIFEST = "manifest.json"


def train(
    params: Params, run_name: str, out_dir: Path, tracker: Tracker | None = None, reuse_from: Path | None = None
) -> dict[str, Any]:
    """Train the stage's runs into ``out_dir``; with a tracker, its parent run is left open.

    Runs found in the run store of ``reuse_from`` (the stage's previous outputs) with the same identity
    are read back, not trained: growing a seed list trains only the new seeds (regbench.train.runstore).
    The caller ends the parent run (``tracker.end_stage_run``): FINISHED only once ``out_dir`` is in
    place, else FAILED or KILLED (stages/train.py).
    """
    experiment, variant = params.run(run_name)
    data = datasets.load(Path("data/prepared") / experiment.data)
    stage = f"train@{run_name}"
    folds = cv_folds(experiment, data)
    members = [dataclasses.replace(m, params=effective_params(m.params, params)) for m in variant.members]
    seeds = experiment.seeds_of(variant.name)
    specs = run_specs(params, seeds, members, data, folds)
    identities = _identities(params, experiment.name, specs, data.manifest["content_digest"])
    keys = [runstore.key(identity) for identity in identities]
    stored = runstore.load(reuse_from, keys) if reuse_from is not None else {}
    to_train = [index for index, run_key in enumerate(keys) if run_key not in stored]
    reused = len(specs) - len(to_train)
    progress = Progress(stage, len(to_train))
    # Taken before training: the engines change TensorFlow's thread settings for their own runs, and only
    # when they train, so a rerun that reuses every run would otherwise record other values.
    machine = provenance.machine()
    context = {
        "stage": stage,
        "git_revision": provenance.git_revision(),
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        **provenance.dvc_context(),
    }
    dataset = {"name": experiment.data, "digest": data.manifest["content_digest"], "source": data.manifest["source"]}
    parent = None
    if tracker is not None:
        settings = {
            "engine": params.train.engine,
            "seeds": list(seeds),
            "members": len(members),
            "runs_trained": len(to_train),
            "runs_reused": reused,
            **flatten(to_plain(members[0].params)),
        }
        note = variant_note(
            experiment.name,
            variant.name,
            _differences(experiment, variant, members),
            len(seeds),
            len(folds) if folds[0] is not None else None,
        )
        parent = start_stage_run(tracker, run_name, context, variant.name, settings, note, dataset)
    children = ChildRuns(tracker, parent, context, params.train.mlflow_max_steps, dataset)
    executor: dict[str, Any] = {}
    try:
        trained = train_all(params, [specs[i] for i in to_train], data, children, progress, stage, executor)
    except StoreUnwritable:
        _keep_finished(reuse_from, children, identities, keys, to_train)
        raise
    finally:
        progress.close()
    for index, result in zip(to_train, trained, strict=True):
        stored[keys[index]] = runstore.entry(identities[index], result.history, result.evaluations, result.run_id)
    if children.failure is not None:
        _keep_finished(reuse_from, children, identities, keys, to_train)
        raise children.failure
    out_dir.mkdir(parents=True, exist_ok=True)
    runstore.write(out_dir, {run_key: stored[run_key] for run_key in keys})
    # Every run, new or reused, is read back the same way: both give the same bytes downstream.
    results = [_result(spec, stored[run_key]) for spec, run_key in zip(specs, keys, strict=True)]
    runs = records.to_runs(results)
    records.write(out_dir, runs)
    records.write_curves(out_dir / records.CURVES, runs, [m.label for m in members])
    cv = experiment.defaults.validation == "cv"
    summary = records.summarize(runs, [(m.label, m.grid_value) for m in members], cv)
    write_json(out_dir / METRICS_FILE, summary if len(members) > 1 else next(iter(summary.values())))
    write_json(out_dir / MANIFEST, _manifest(params, experiment, variant, members, data, machine))
    # What changes from run to run goes to the untracked run log, not to the outputs DVC and git track.
    seconds = round(sum(trained_result.history.seconds for trained_result in trained), 2)
    append_run_log(
        stage,
        {
            "runs": {"trained": len(to_train), "reused": reused},
            "training_seconds": seconds,
            "git_revision": context["git_revision"],
            **provenance.dvc_context(),
            "host": socket.gethostname(),
            "mlflow": {
                "tracking_uri": tracker.uri if tracker is not None else None,
                "experiment_id": tracker.experiment_id if tracker is not None else None,
                "parent_run_id": parent,
            },
            # Where the runs trained (the Ray tasks and their nodes); the results do not depend on it.
            "executor": executor,
            "trained": [
                {
                    "key": keys[index],
                    "label": specs[index].label,
                    "seconds": round(result.history.seconds, 3),
                    "mlflow_run_id": result.run_id,
                }
                for index, result in zip(to_train, trained, strict=True)
            ],
        },
    )
    if tracker is not None and parent is not None:
        # The parent run stays RUNNING: the stage ends it FINISHED once these outputs are in place.
        try:
            tracker.log_summary(parent, summary)
            tracker.log_artifact(parent, out_dir / records.HISTORIES)
            with tempfile.TemporaryDirectory() as scratch:
                figure = Path(scratch) / "learning_curves.png"
                curves = {
                    m.label: {k: records.repeat_curves(runs, m.label, k) for k in records.CURVE_METRICS}
                    for m in members
                }
                plot_learning_curves(curves, figure, run_name, params.report.max_curve_points, "member")
                tracker.log_artifact(parent, figure)
        except StoreUnwritable:
            runstore.write(reuse_from or out_dir, {run_key: stored[run_key] for run_key in keys})
            raise
    return summary


def _differences(experiment: ExperimentParams, variant: Variant, members: list[Member]) -> dict[str, Any]:
    """The settings a variant changes from its experiment's defaults (a grid: the grid's values)."""
    defaults = flatten(to_plain(experiment.defaults))
    changed = {k: v for k, v in flatten(to_plain(members[0].params)).items() if defaults.get(k) != v}
    if variant.grid_key is not None:
        changed = {k: v for k, v in changed.items() if k.split(".")[-1] != variant.grid_key.split(".")[-1]}
        changed[variant.grid_key] = "[" + ", ".join(f"{m.grid_value:g}" for m in members) + "]"
    return changed


def _keep_finished(reuse_from: Path | None, children: ChildRuns, identities, keys: list[str], to_train) -> None:
    """Put every run that finished training into the run store in place (results/train/<stage>/runs).

    Called when the stage stops before its outputs are written (a full MLflow store, an error, a kill):
    those outputs are discarded whole, but the next run of the stage reads these runs back instead of
    training them again.
    """
    if reuse_from is None or not children.finished:
        return
    entries = {}
    for position, (history, evaluations) in children.finished.items():
        index = to_train[position]
        entries[keys[index]] = runstore.entry(identities[index], history, evaluations, None)
    try:
        runstore.write(reuse_from, entries)
    except OSError as error:
        log.warning("the %d finished runs could not be kept in %s: %s", len(entries), reuse_from, error)


def _identities(params: Params, experiment: str, specs, data_digest: str) -> list[dict[str, Any]]:
    """Each run's identity (regbench.train.runstore): its own settings, seed and fold, and what all share."""
    versions = provenance.library_versions()
    setup = {
        "data_digest": data_digest,
        "engine": params.train.engine,
        "deterministic": params.train.deterministic,
        "max_train_samples": params.train.max_train_samples,
        "code": runstore.code_digest(),
        "libraries": {name: versions.get(name) for name in runstore.TRAINING_LIBRARIES},
    }
    return [
        runstore.identity(experiment, to_plain(spec.member.params), spec.member.grid_value, spec.seed, spec.fold, setup)
        for spec in specs
    ]


def _result(spec, stored: dict[str, Any]) -> records.RunResult:
    member = spec.member
    history = runstore.history_of(stored)
    return records.RunResult(
        member.label,
        member.grid_value,
        spec.repeat,
        spec.seed,
        spec.fold,
        history,
        stored["evaluations"],
        stored.get("mlflow_run_id"),
    )


def _manifest(
    params: Params, experiment: ExperimentParams, variant: Variant, members: list[Member], data, machine: dict
) -> dict[str, Any]:
    """What produced the stage's results: settings, data, code, libraries, machine.

    A function of the code, params, data and machine only, so a rerun writes the same bytes (issue 25):
    timings, run ids, paths, hosts, timestamps and the git commit are in the run log and MLflow.
    """
    cv = experiment.defaults.validation == "cv"
    return {
        "stage": f"train@{experiment.name}-{variant.name}",
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        "experiment": experiment.name,
        "variant": variant.name,
        "engine": params.train.engine,
        "seeds": list(experiment.seeds_of(variant.name)),
        "folds": None if not cv else int(data.manifest["folds"]),
        "members": [{"label": m.label, "grid_value": m.grid_value, "params": to_plain(m.params)} for m in members],
        "train": {k: v for k, v in to_plain(params.train).items() if k != "runs"},
        "data_manifest": {
            k: data.manifest[k] for k in ("experiment", "source", "content_digest", "shapes", "class_balance")
        },
        # The MLflow experiment; its runs are found by their tags (regbench.train.tracking.stage_parent_runs).
        "mlflow_experiment": f"regbench/{experiment.name}",
        "code_digest": runstore.code_digest(),
        "library_versions": provenance.library_versions(),
        "device": provenance.device(),
        "machine": machine,
    }
