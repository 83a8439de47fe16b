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
import tempfile
from pathlib import Path
from typing import Any

from regbench.config import ExperimentParams, Member, Params, Variant
from regbench.data import datasets
from regbench.data.experiments import registry
from regbench.io import write_json
from regbench.schema import flatten, to_plain
from regbench.train import provenance, records, runstore
from regbench.train.plan import cv_folds, effective_params, run_specs, train_all
from regbench.train.plots import plot_learning_curves
from regbench.train.progress import Progress
from regbench.train.tracking import ChildRuns, Tracker, start_stage_run, tracking_uri

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
    data = datasets.load(Path("data/prepared") / experiment.data, randomness=experiment.randomness.scope)
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
    context = {
        "stage": stage,
        "git_revision": provenance.git_revision(),
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        **provenance.dvc_context(),
    }
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
        parent = start_stage_run(tracker, run_name, context, variant.name, settings)
    children = ChildRuns(tracker, parent, context, params.train.mlflow_max_steps)
    executor: dict[str, Any] = {}
    try:
        trained = train_all(params, [specs[i] for i in to_train], data, children, progress, stage, executor)
    finally:
        progress.close()
    for index, result in zip(to_train, trained, strict=True):
        stored[keys[index]] = runstore.entry(identities[index], result.history, result.evaluations, result.run_id)
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
    seconds = round(sum(results[i].history.seconds for i in to_train), 2)
    experiment_id = tracker.experiment_id if tracker is not None else None
    manifest = _manifest(params, experiment, variant, members, data, context, parent, experiment_id, seconds)
    # Where the runs trained (the Ray tasks and their nodes); the results do not depend on it.
    manifest["executor"] = executor
    manifest["runs"] = {"trained": len(to_train), "reused": reused}
    write_json(out_dir / MANIFEST, manifest)
    if tracker is not None and parent is not None:
        # The parent run stays RUNNING: the stage ends it FINISHED once these outputs are in place.
        tracker.log_summary(parent, summary)
        tracker.log_artifact(parent, out_dir / records.HISTORIES)
        with tempfile.TemporaryDirectory() as scratch:
            figure = Path(scratch) / "learning_curves.png"
            curves = {
                m.label: {k: records.repeat_curves(runs, m.label, k) for k in records.CURVE_METRICS} for m in members
            }
            plot_learning_curves(curves, figure, run_name, params.report.max_curve_points, "member")
            tracker.log_artifact(parent, figure)
    return summary


def _identities(params: Params, experiment: str, specs, data_digest: str) -> list[dict[str, Any]]:
    """Each run's identity (regbench.train.runstore): its own settings, seed and fold, and what all share."""
    versions = provenance.library_versions()
    setup = {
        "data_digest": data_digest,
        "engine": params.train.engine,
        "deterministic": params.train.deterministic,
        "max_train_samples": params.train.max_train_samples,
        # What the seed varies: under scope data a repeat trains on its own drawn dataset (regbench.data.datasets).
        "randomness": params.experiments[experiment].randomness.scope,
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
        stored["mlflow_run_id"],
    )


def _manifest(
    params: Params,
    experiment: ExperimentParams,
    variant: Variant,
    members: list[Member],
    data,
    context: dict[str, str],
    parent_run: str | None,
    experiment_id: str | None,
    training_seconds: float,
) -> dict[str, Any]:
    """What produced the stage's results: settings, data, code, libraries, device, MLflow run."""
    cv = experiment.defaults.validation == "cv"
    return {
        **context,
        "experiment": experiment.name,
        "variant": variant.name,
        "engine": params.train.engine,
        "seeds": list(experiment.seeds_of(variant.name)),
        "folds": None if not cv else int(data.manifest["folds"]),
        # What the seeds varied (weights, order, masks, split, data draw) and what stayed fixed.
        "randomness": registry()[experiment.data].randomness(experiment.randomness.scope),
        "members": [{"label": m.label, "grid_value": m.grid_value, "params": to_plain(m.params)} for m in members],
        "train": {k: v for k, v in to_plain(params.train).items() if k != "runs"},
        "data_manifest": {
            k: data.manifest[k] for k in ("experiment", "source", "content_digest", "shapes", "class_balance")
        },
        # The experiment id lets the report link to the experiment's runs view (regbench.train.tracking.runs_view_url).
        "mlflow": {"tracking_uri": tracking_uri(), "experiment_id": experiment_id, "parent_run_id": parent_run},
        "library_versions": provenance.library_versions(),
        "device": provenance.device(),
        "machine": provenance.machine(),
        "finished": provenance.now(),
        "training_seconds": training_seconds,
    }
