"""DVC stage train@<experiment>-<variant>: train all repeats (and folds) and log them to MLflow."""

from __future__ import annotations

from pathlib import Path

from regbench import config
from regbench.cli import one_argument, quiet_tensorflow_import, run_stage
from regbench.io import atomic_directory


def main(argv: list[str]) -> None:
    params = config.load()
    run_name = one_argument(argv, params.train.runs, "run")
    experiment, _ = params.run(run_name)

    with quiet_tensorflow_import():
        import keras

    from regbench.train.tracking import StageKilled, Tracker
    from regbench.train.variant import train

    if params.train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    tracker = Tracker(experiment_name=f"regbench/{experiment.name}")
    out = Path("results/train") / run_name
    try:
        with atomic_directory(out) as out_dir:
            summary = train(params, run_name, out_dir, tracker, reuse_from=out)
    except BaseException as error:
        tracker.end_stage_run("KILLED" if isinstance(error, StageKilled | KeyboardInterrupt) else "FAILED")
        raise
    # Only now are the outputs in place: a kill before this line leaves the run for close_stale_runs.
    tracker.end_stage_run("FINISHED")
    print(f"train@{run_name}: {summary}")


if __name__ == "__main__":
    run_stage(main)
