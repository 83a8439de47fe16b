"""DVC stage train@<experiment>-<variant>: train all repeats (and folds) and log them to MLflow.

Writes results/train/<run>/ (the records) and metrics/<run>.json (the few numbers `dvc metrics show`
and `dvc exp show` compare), and prints one line.
"""

from __future__ import annotations

from pathlib import Path

from regbench import config
from regbench.cli import one_argument, run_stage
from regbench.io import atomic_directory, write_json

HEADLINES = Path("metrics")


def main(argv: list[str]) -> None:
    params = config.load()
    run_name = one_argument(argv, params.train.runs, "run")
    experiment, _ = params.run(run_name)

    # TensorFlow is imported (by regbench.train.variant) only when a run trains: a stage that reads every run
    # back from its run store, after an edit to code that only presents them, starts in a second, not five.
    from regbench.train import records
    from regbench.train.identity import retrain_requested
    from regbench.train.tracking import StageKilled, Tracker, read_run_log
    from regbench.train.variant import train

    out = Path("results/train") / run_name
    # REGBENCH_RETRAIN=1 (with `dvc repro -f`, which DVC does not pass on): train every run again, reuse none.
    reuse_from = None if retrain_requested() else out
    tracker = Tracker(experiment_name=f"regbench/{experiment.name}")
    try:
        # SIGTERM and SIGINT arrive as StageKilled (regbench.cli.run_stage), so the runs close as KILLED.
        # Entered before training: it puts back a folder a killed writer left aside before the run store in it
        # is read, or written as runs finish (runstore.Keeper).
        with atomic_directory(out) as out_dir:
            summary = train(params, run_name, out_dir, tracker, reuse_from=reuse_from)
    except BaseException as error:
        tracker.end_stage_run("KILLED" if isinstance(error, StageKilled | KeyboardInterrupt) else "FAILED")
        raise
    headline = records.headline(summary)
    write_json(HEADLINES / f"{run_name}.json", headline)
    # Only now are the outputs in place: a kill before this line leaves the run for close_stale_runs.
    tracker.end_stage_run("FINISHED")
    print(summary_line(f"train@{run_name}", headline, (read_run_log(f"train@{run_name}") or [{}])[-1]))


def summary_line(stage: str, headline: dict, logged: dict) -> str:
    """The stage's one line: runs trained and reused, time, and the headline numbers."""
    counts = logged.get("runs", {})
    done = f"{headline['runs']} runs"
    if counts:
        done += f" ({counts['trained']} trained, {counts['reused']} reused, {logged.get('training_seconds', 0):.1f} s)"
    numbers = ", ".join(
        f"{key} {headline[key]:.4f}"
        for key in ("val_accuracy", "best_val_accuracy", "test_accuracy")
        if key in headline
    )
    grid = f" (best grid value {headline['grid_best']:g})" if "grid_best" in headline else ""
    return f"{stage}: {done}; {numbers}{grid}; diverged {headline['diverged']}"


if __name__ == "__main__":
    run_stage(main)
