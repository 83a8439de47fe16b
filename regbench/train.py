"""Train every member, repeat and fold of one variant; write its history, metrics and manifest.

``train(params, run_name, out_dir)`` is what the DVC stage calls and what the
tests call directly on a shrunk copy of the real params.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from regbench import datasets, provenance
from regbench.config import ExperimentParams, Member, Params, VariantParams
from regbench.engine import METRICS, FitData, History, binary_targets, make_trainer
from regbench.io import atomic_path, write_json
from regbench.schema import flatten, to_plain
from regbench.sparse import BinaryCsr
from regbench.stacked import Job, evaluation_sets, stackable, train_jobs
from regbench.tracking import STAGE_TAG, StageKilled, Tracker, tracking_uri

log = logging.getLogger(__name__)
HISTORIES = "histories.csv"
METRICS_FILE = "metrics.json"
CURVES = "curves.csv"
MANIFEST = "manifest.json"
RUNS = "runs.json"


@dataclass
class RunResult:
    member: str
    grid_value: float | None
    repeat: int
    seed: int
    fold: int | None
    history: History
    # Inference-mode metrics after the last epoch: ``train_eval_*`` on the training rows (what the
    # tutorials' model.evaluate(trainX) prints) and ``test_*`` on a separate test set if there is one.
    evaluations: dict[str, float]
    run_id: str | None = None


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


class Progress:
    """One compact status line per stage: rewritten in place on a terminal, throttled in a log."""

    def __init__(self, stage: str, total_runs: int, stream: TextIO = sys.stderr):
        self.stage, self.total_runs, self.stream = stage, total_runs, stream
        self.interactive = stream.isatty()
        self.started = time.perf_counter()
        self.last = 0.0
        self.done_runs = 0
        self.context, self.epochs, self.runs = "", 1, 1

    def begin(self, context: str, epochs: int, runs: int = 1) -> None:
        """The runs now training (several when they train together) and their epoch count."""
        self.context, self.epochs, self.runs = context, epochs, runs

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        if now - self.last < (0.5 if self.interactive else 15.0) and epoch < self.epochs:
            return
        self.last = now
        fraction = (self.done_runs + self.runs * epoch / self.epochs) / self.total_runs
        elapsed = now - self.started
        # The first chunk includes tracing: an ETA from it would be wildly off.
        eta = f"{elapsed / fraction - elapsed:.0f}s" if fraction > 0.02 and elapsed > 5 else "?"
        line = (
            f"{self.stage} {self.context} epoch {epoch}/{self.epochs} "
            f"val_loss {logs.get('val_loss', float('nan')):.4f} val_acc {logs.get('val_accuracy', float('nan')):.4f} "
            f"| {100 * fraction:.0f}% ETA {eta}"
        )
        self.stream.write(("\r" + line.ljust(110)) if self.interactive else line + "\n")
        self.stream.flush()

    def run_done(self) -> None:
        self.done_runs += 1

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
        self.stream.write(f"{self.stage}: {self.done_runs} runs in {time.perf_counter() - self.started:.1f}s\n")
        self.stream.flush()


def run_seed(seed: int, fold: int | None) -> int:
    """Each fold of a repeat gets its own initial weights; fold None keeps the repeat's seed."""
    return seed if fold is None else seed * 100 + fold


def cv_folds(experiment: ExperimentParams, data) -> list[int | None]:
    """The folds each repeat trains on: every CV fold of the prepared data, or [None] (one run per repeat)."""
    return list(range(int(data.manifest["folds"]))) if experiment.defaults.validation == "cv" else [None]


def train(params: Params, run_name: str, out_dir: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    experiment, variant = params.run(run_name)
    data = datasets.load(Path("data/prepared") / experiment.data)
    stage = f"train@{run_name}"
    folds = cv_folds(experiment, data)
    members = [dataclasses.replace(m, params=effective_params(m.params, params)) for m in variant.members]
    total = len(members) * len(experiment.seeds) * len(folds)
    progress = Progress(stage, total)
    context = {
        "stage": stage,
        "git_revision": provenance.git_revision(),
        "data_digest": data.manifest["content_digest"],
        "data_source": data.manifest["source"]["source"],
        **provenance.dvc_context(),
    }
    parent = None
    if tracker is not None:
        tracker.close_stale_runs(stage)
        parent = tracker.start(
            run_name,
            tags={
                STAGE_TAG: stage,
                "regbench.git_revision": context["git_revision"],
                "regbench.data_digest": context["data_digest"],
                "regbench.data_source": context["data_source"],
                "regbench.variant": variant.name,
                **_dvc_tags(context),
            },
            params={
                "engine": params.train.engine,
                "seeds": list(experiment.seeds),
                "members": len(members),
                **flatten(to_plain(members[0].params)),
            },
        )
    specs = run_specs(params, experiment, members, data, folds)
    recorder = _Recorder(specs, progress, tracker, parent, context, params.train.mlflow_max_steps)
    status = "FAILED"
    try:
        _train_all(params, specs, data, recorder, progress)
        status = "FINISHED"
    except StageKilled:
        status = "KILLED"
        raise
    finally:
        progress.close()
        if tracker is not None and parent is not None:
            tracker.end(parent, status=status)
    results = [recorder.results[index] for index in range(len(specs))]
    experiment_id = tracker.experiment_id if tracker is not None else None
    summary = write_outputs(
        out_dir, params, experiment, variant, members, results, data, context, parent, experiment_id
    )
    if tracker is not None and parent is not None:
        tracker.log_summary(parent, summary)
        tracker.log_artifact(parent, out_dir / HISTORIES)
        curve_png = out_dir / "learning_curves.png"
        plot_learning_curves(results, curve_png, run_name)
        tracker.log_artifact(parent, curve_png)
        curve_png.unlink()
    return summary


def _dvc_tags(context: dict[str, str]) -> dict[str, str]:
    return {"dvc.exp_name": context["DVC_EXP_NAME"]} if "DVC_EXP_NAME" in context else {}


@dataclass
class RunSpec:
    """Where a job sits in the variant: member, repeat, seed and fold."""

    member: Member
    repeat: int
    seed: int
    fold: int | None
    label: str
    job: Job


def run_specs(params: Params, experiment: ExperimentParams, members: list[Member], data, folds) -> list[RunSpec]:
    specs = []
    for member in members:
        for repeat, seed in enumerate(experiment.seeds):
            for fold in folds:
                fit_data, test = split(data, member.params, fold, params.train.max_train_samples, seed)
                label = f"{member.label} repeat {repeat + 1}/{len(experiment.seeds)}" + (
                    f" fold {fold + 1}/{len(folds)}" if fold is not None else ""
                )
                job = Job(fit_data, run_seed(seed, fold), member.params, test)
                specs.append(RunSpec(member, repeat, seed, fold, label, job))
    return specs


class _Recorder:
    """Opens, fills and closes the MLflow child run of each job, and collects the results."""

    def __init__(
        self, specs: list[RunSpec], progress: Progress, tracker: Tracker | None, parent, context, max_steps: int
    ):
        self.specs, self.progress, self.tracker, self.parent, self.context = specs, progress, tracker, parent, context
        self.max_steps = max_steps
        self.children: dict[int, str] = {}
        self.results: dict[int, RunResult] = {}

    def open(self, index: int) -> None:
        if self.tracker is None or index in self.children:
            return
        spec = self.specs[index]
        self.children[index] = self.tracker.start(
            f"{spec.member.label}-r{spec.repeat}" + (f"-f{spec.fold}" if spec.fold is not None else ""),
            tags={
                STAGE_TAG: self.context["stage"],
                "regbench.member": spec.member.label,
                "regbench.repeat": str(spec.repeat),
                "regbench.seed": str(spec.seed),
                "regbench.fold": "" if spec.fold is None else str(spec.fold),
                **_dvc_tags(self.context),
            },
            params={
                "seed": spec.seed,
                "repeat": spec.repeat,
                "fold": spec.fold,
                "grid_value": spec.member.grid_value,
                **flatten(to_plain(spec.member.params)),
            },
            parent=self.parent,
        )

    def done(self, index: int, history: History, evaluations: dict[str, float]) -> None:
        spec = self.specs[index]
        self.open(index)
        child = self.children.get(index)
        if history.status == "diverged":
            log.warning(
                "%s %s diverged at epoch %d (non-finite loss); the other runs go on",
                self.context["stage"],
                spec.label,
                history.diverged_epoch,
            )
        if self.tracker is not None:
            final = {f"final_{k}": v[-1] for k, v in history.metrics.items() if v}
            final.update(evaluations)
            self.tracker.log_history(child, history.metrics, final, self.max_steps)
            if history.status == "diverged":
                tags = {"regbench.status": "diverged", "regbench.diverged_epoch": str(history.diverged_epoch)}
                self.tracker.set_tags(child, tags)
            self.tracker.end(child, status="FINISHED" if history.status == "ok" else "FAILED")
        self.results[index] = RunResult(
            spec.member.label, spec.member.grid_value, spec.repeat, spec.seed, spec.fold, history, evaluations, child
        )
        self.progress.run_done()

    def abort(self, error: BaseException) -> None:
        """Any error, not only a kill, must close the open child runs: RUNNING forever misleads the UI."""
        if self.tracker is None:
            return
        for index, child in self.children.items():
            if index not in self.results:
                self.tracker.end(child, status="KILLED" if isinstance(error, StageKilled) else "FAILED")


def _train_all(params: Params, specs: list[RunSpec], data, recorder: _Recorder, progress: Progress) -> None:
    sparse = isinstance(data["x_train"], BinaryCsr)
    input_dim = data["x_train"].shape[1]
    output_dim = 1 if data["y_train"].ndim == 1 else data["y_train"].shape[1]
    jobs = [spec.job for spec in specs]
    try:
        if params.train.engine == "compiled" and stackable(jobs):

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
                recorder.done,
                parts=params.train.stack_parts,
            )
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
            recorder.open(index)
            history = trainer.train(spec.job.data, spec.job.seed, progress)
            evaluations = {}
            if history.status == "ok":
                for prefix, arrays in evaluation_sets(spec.job).items():
                    metrics = trainer.final_metrics(*arrays)
                    evaluations.update({f"{prefix}_{k}": v for k, v in metrics.items()})
            recorder.done(index, history, evaluations)
    except BaseException as error:
        recorder.abort(error)
        raise


def _final(result: RunResult) -> dict[str, float]:
    metrics = result.history.metrics
    if not metrics["loss"]:
        return {}
    val_loss = np.asarray(metrics["val_loss"])
    best = int(np.argmin(val_loss))
    final = {f"final_{k}": metrics[k][-1] for k in METRICS}
    final.update(
        {
            "best_val_loss": float(val_loss[best]),
            "best_val_loss_epoch": best + 1,
            "best_val_accuracy": float(np.max(metrics["val_accuracy"])),
        }
    )
    final.update(result.evaluations)
    return final


def summarize(members: list[Member], results: list[RunResult], cv: bool) -> dict[str, Any]:
    """Per member: mean and std over repeats (fold-averaged first for CV) of the final metrics."""
    summary: dict[str, Any] = {}
    for member in members:
        runs = [r for r in results if r.member == member.label]
        per_repeat: dict[int, list[dict[str, float]]] = {}
        for run in runs:
            if run.history.status == "ok":
                per_repeat.setdefault(run.repeat, []).append(_final(run))
        repeat_means = [
            {key: float(np.mean([f[key] for f in finals])) for key in finals[0]} for finals in per_repeat.values()
        ]
        entry: dict[str, Any] = {
            "runs": len(runs),
            "diverged": sum(r.history.status == "diverged" for r in runs),
            "repeats_ok": len(repeat_means),
            "status": "ok" if all(r.history.status == "ok" for r in runs) else "diverged",
        }
        if member.grid_value is not None:
            entry["grid_value"] = member.grid_value
        if repeat_means:
            for key in repeat_means[0]:
                values = [m[key] for m in repeat_means]
                entry[key] = round(float(np.mean(values)), 6)
                entry[f"{key}_std"] = round(float(np.std(values)), 6)
            if cv:
                entry["cv_accuracy"] = entry["final_val_accuracy"]
        summary[member.label] = entry
    return summary


def write_outputs(
    out_dir, params, experiment, variant, members, results, data, context, parent_run, experiment_id=None
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / HISTORIES) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["member", "grid_value", "repeat", "seed", "fold", "epoch", *METRICS])
        for r in results:
            for epoch in range(r.history.epochs):
                writer.writerow(
                    [
                        r.member,
                        "" if r.grid_value is None else r.grid_value,
                        r.repeat,
                        r.seed,
                        "" if r.fold is None else r.fold,
                        epoch + 1,
                        *(f"{r.history.metrics[m][epoch]:.7g}" for m in METRICS),
                    ]
                )
    _write_curves(out_dir / CURVES, members, results)
    cv = experiment.defaults.validation == "cv"
    summary = summarize(members, results, cv)
    write_json(out_dir / METRICS_FILE, summary if len(members) > 1 else next(iter(summary.values())))
    write_json(
        out_dir / RUNS,
        [
            {
                "member": r.member,
                "grid_value": r.grid_value,
                "repeat": r.repeat,
                "seed": r.seed,
                "fold": r.fold,
                "status": r.history.status,
                "diverged_epoch": r.history.diverged_epoch,
                "epochs": r.history.epochs,
                "seconds": round(r.history.seconds, 3),
                "mlflow_run_id": r.run_id,
                **_final(r),
            }
            for r in results
        ],
    )
    write_json(
        out_dir / MANIFEST,
        {
            **context,
            "experiment": experiment.name,
            "variant": variant.name,
            "engine": params.train.engine,
            "seeds": list(experiment.seeds),
            "folds": None if not cv else int(data.manifest["folds"]),
            "members": [{"label": m.label, "grid_value": m.grid_value, "params": to_plain(m.params)} for m in members],
            "train": {k: v for k, v in to_plain(params.train).items() if k != "runs"},
            "data_manifest": {
                k: data.manifest[k] for k in ("experiment", "source", "content_digest", "shapes", "class_balance")
            },
            # The experiment id lets the report link to the experiment's runs view (regbench.tracking.runs_view_url).
            "mlflow": {"tracking_uri": tracking_uri(), "experiment_id": experiment_id, "parent_run_id": parent_run},
            "library_versions": provenance.library_versions(),
            "device": provenance.device(),
            "finished": provenance.now(),
            "training_seconds": round(sum(r.history.seconds for r in results), 2),
        },
    )
    return summary


def _write_curves(path: Path, members: list[Member], results: list[RunResult]) -> None:
    """Mean over repeats (and folds) per epoch: the DVC plot of this stage (x = epoch)."""
    columns, series = ["epoch"], []
    for member in members:
        runs = [r for r in results if r.member == member.label and r.history.status == "ok"]
        if not runs:
            continue
        epochs = min(r.history.epochs for r in runs)
        suffix = "" if len(members) == 1 else f"[{member.label.split('[', 1)[-1].rstrip(']')}]"
        for metric in ("loss", "val_loss", "accuracy", "val_accuracy"):
            columns.append(metric + suffix)
            series.append(np.mean([r.history.metrics[metric][:epochs] for r in runs], axis=0))
    length = min((len(s) for s in series), default=0)
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for epoch in range(length):
            writer.writerow([epoch + 1, *(f"{s[epoch]:.6g}" for s in series)])


def plot_learning_curves(results: list[RunResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, axis in zip(("loss", "accuracy"), axes, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            curves = [r.history.metrics[prefix + metric] for r in results if r.history.status == "ok"]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean = np.mean([c[:length] for c in curves], axis=0)
            axis.plot(
                np.arange(1, length + 1),
                mean,
                style,
                label=f"{'validation' if prefix else 'train'} (mean)",
            )
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
