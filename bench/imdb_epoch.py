"""Seconds per epoch per run and peak RSS on the real IMDB data: plain Keras script vs the suite.

    python bench/imdb_epoch.py [original|bigger] [epochs] [runs]

Each measurement runs in its own process so peak RSS is its own, one after the
other in one invocation. "plain" is what the tutorial does: dense float32 arrays
and model.fit, one run (its median epoch after the first). "compiled" is the
suite's per-run engine training one run on the sparse prepared arrays (after a
warm-up run that traces it). "stage" is what train@imdb-<variant> does:
``regbench.train.variant.train`` on ``runs`` seeds with the stage's op determinism and
params.yaml's train settings (runs side by side, train.stack_parts at once),
without MLflow; its figure is the wall time of training over runs x epochs,
tracing and the final evaluations included.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _stage(params, variant: str, epochs: int, runs: int, started: float) -> dict:
    import tempfile
    from pathlib import Path

    import tensorflow as tf
    import yaml

    from regbench import config
    from regbench.train.variant import train

    if params.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["train"]["max_epochs"] = epochs
    raw["imdb"]["variants"][variant]["seeds"] = list(range(runs))
    shrunk = config.parse(raw)
    with tempfile.TemporaryDirectory() as scratch:
        trained = time.perf_counter()
        train(shrunk, f"imdb-{variant}", Path(scratch) / "out")
        seconds = time.perf_counter() - trained
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": "stage",
        "variant": variant,
        "runs": runs,
        "seconds_per_epoch_per_run": round(seconds / (runs * epochs), 3),
        "peak_rss_mib": round(peak),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def measure(mode: str, variant: str, epochs: int, runs: int = 1) -> dict:
    import dataclasses

    import keras
    import numpy as np

    from regbench import config
    from regbench.data import datasets
    from regbench.train import engine, models

    params = config.load()
    member = params.experiments["imdb"].variants[variant].members[0].params
    member = dataclasses.replace(member, epochs=epochs)
    data = datasets.load("data/prepared/imdb")
    y_train, y_test = engine.binary_targets(data["y_train"]), engine.binary_targets(data["y_test"])
    started = time.perf_counter()
    if mode == "stage":
        return _stage(params, variant, epochs, runs, started)
    if mode == "plain":
        x_train, x_test = data["x_train"].to_dense(), data["x_test"].to_dense()
        keras.utils.set_random_seed(0)
        model = models.compile_model(models.build_model(models.ModelSpec.of(member, 10000, 1)), member)
        times = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        model.fit(
            x_train,
            y_train,
            epochs=epochs,
            batch_size=512,
            validation_data=(x_test, y_test),
            verbose=0,
            callbacks=[Timer()],
        )
        per_epoch = float(np.median(times[1:])) if len(times) > 1 else times[0]
        final = None
    else:
        fit_data = engine.FitData(data["x_train"], y_train, data["x_test"], y_test)
        trainer = engine.make_trainer(mode, member, 10000, 1, sparse=True, chunk_seconds=1.0)
        trainer.train(fit_data, seed=0)  # warm-up: tracing
        history = trainer.train(fit_data, seed=0)
        per_epoch = history.seconds / epochs
        final = history.metrics["val_loss"][-1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "variant": variant,
        "seconds_per_epoch": round(per_epoch, 3),
        "peak_rss_mib": round(peak),
        "wall_s": round(time.perf_counter() - started, 1),
        "final_val_loss": final,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
        return
    variant = sys.argv[1] if len(sys.argv) > 1 else "original"
    epochs = sys.argv[2] if len(sys.argv) > 2 else "4"
    runs = sys.argv[3] if len(sys.argv) > 3 else "4"
    results = {}
    for mode in ("plain", "compiled", "stage"):
        out = subprocess.run(
            [sys.executable, __file__, "--one", mode, variant, epochs, runs], capture_output=True, text=True, check=True
        ).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        print(results[mode], flush=True)
    plain, compiled = results["plain"]["seconds_per_epoch"], results["compiled"]["seconds_per_epoch"]
    print(f"imdb-{variant}: compiled / plain seconds per epoch = {compiled / plain:.2f}")
    stage = results["stage"]["seconds_per_epoch_per_run"]
    print(f"imdb-{variant}: stage ({runs} runs) seconds per epoch per run = {stage:.3f}, / plain = {stage / plain:.2f}")


if __name__ == "__main__":
    main()
