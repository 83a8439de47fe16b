"""Circles and sonar: the suite's compiled (stacked) engine against the tutorials' own loops, side by side.

    python bench/small_experiments.py [--torch-python PATH] [--fit-epochs N]

Needs `dvc repro prepare@circles prepare@sonar` first (it reads data/prepared/).

- circles: every variant and repeat of params.yaml (13 members x 5 repeats,
  4000 epochs), trained by the suite as the train stages do (no MLflow), against
  `model.fit` on one circles model for --fit-epochs epochs, scaled to 4000.
  Each variant, and the reference, runs in its own process, as each stage does
  under DVC.
- sonar: the three published variants x 10 folds x 1 repeat, trained by the
  suite, against the tutorial's PyTorch loop (300 epochs, batch 16, SGD) run
  by --torch-python, an interpreter with torch installed (torch is not a
  project dependency: `python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The published PyTorch loop (seed 003), timed per variant; data and folds are the suite's repeat 0's (repeat_folds).
TORCH_LOOP = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch, torch.nn as nn, torch.optim as optim
    torch.set_num_threads(2)
    data = np.load(sys.argv[1])
    X = torch.tensor(data["x_train"], dtype=torch.float32)
    y = torch.tensor(data["y_train"], dtype=torch.float32).reshape(-1, 1)
    folds = data["fold"]

    def make(variant):
        layers = [nn.Dropout(0.2)] if variant == "input_dropout" else []
        layers += [nn.Linear(60, 60), nn.ReLU()]
        layers += [nn.Dropout(0.2)] if variant == "hidden_dropout" else []
        layers += [nn.Linear(60, 30), nn.ReLU()]
        layers += [nn.Dropout(0.2)] if variant == "hidden_dropout" else []
        return nn.Sequential(*layers, nn.Linear(30, 1), nn.Sigmoid())

    def model_train(model, X_train, y_train, X_val, y_val, n_epochs=300, batch_size=16):
        loss_fn = nn.BCELoss()
        optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.8)
        batch_start = torch.arange(0, len(X_train), batch_size)
        model.train()
        for epoch in range(n_epochs):
            for start in batch_start:
                X_batch = X_train[start:start+batch_size]
                y_batch = y_train[start:start+batch_size]
                y_pred = model(X_batch)
                loss = loss_fn(y_pred, y_batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        y_pred = model(X_val)
        return float((y_pred.round() == y_val).float().mean())

    results = {}
    for variant in ("baseline", "input_dropout", "hidden_dropout"):
        torch.manual_seed(0)
        started = time.perf_counter()
        accuracies = []
        for fold in range(int(folds.max()) + 1):
            train, test = folds != fold, folds == fold
            accuracies.append(model_train(make(variant), X[train], y[train], X[test], y[test]))
        results[variant] = {"seconds": time.perf_counter() - started, "cv_accuracy": float(np.mean(accuracies))}
    print(json.dumps(results))
    """
)


def suite_runs(run_names: list[str], seeds: tuple[int, ...] | None = None) -> dict[str, dict[str, float]]:
    """Train the named train-stage runs as the stages do, each in its own process as under DVC."""
    results = {}
    for name in run_names:
        command = [sys.executable, __file__, "--suite-run", name]
        if seeds is not None:
            command += ["--seeds", ",".join(map(str, seeds))]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        print(f"  suite {name}: {results[name]['runs']} runs in {results[name]['seconds']:.1f} s", flush=True)
    return results


def suite_run(name: str, seeds: tuple[int, ...] | None) -> dict[str, float]:
    """One train stage's training (stacked when it can), without MLflow."""
    from regbench import config
    from regbench.data import datasets
    from regbench.train import plan as schedule
    from regbench.train import stacked

    params = config.load()
    experiment, variant = params.run(name)
    seeds = seeds if seeds is not None else experiment.seeds_of(variant.name)
    data = datasets.load(Path("data/prepared") / experiment.data)
    members = [dataclasses.replace(m, params=schedule.effective_params(m.params, params)) for m in variant.members]
    runs = schedule.plan_runs(params, tuple(seeds), members, data, schedule.cv_folds(experiment, data))
    finished: dict[int, object] = {}
    started = time.perf_counter()
    stacked.train_parts(
        runs,
        stacked.plan_parts(runs, params.train.stack_parts),
        params.train.chunk_seconds,
        None,
        lambda index, history, evaluations: finished.__setitem__(index, history),
        threads=params.train.stack_parts,
    )
    seconds = time.perf_counter() - started
    accuracy = sum(h.metrics["val_accuracy"][-1] for h in finished.values()) / len(finished)
    return {"seconds": seconds, "runs": len(runs), "mean_final_val_accuracy": accuracy}


def repeat_folds(prepared: str, seed: int) -> Path:
    """The rows and the folds the suite's repeat ``seed`` trains on (each repeat draws its own), as an npz."""
    import tempfile

    import numpy as np

    from regbench.data import datasets

    data = datasets.for_repeat(datasets.load(prepared), seed)
    path = Path(tempfile.mkdtemp()) / "sonar_repeat.npz"
    np.savez(path, x_train=data["x_train"], y_train=data["y_train"], fold=data["fold"])
    return path


def fit_reference(epochs: int) -> float:
    """Seconds per epoch of model.fit on one circles model (the overfit variant)."""
    import keras

    from regbench import config
    from regbench.data import datasets
    from regbench.train import engine, models
    from regbench.train import plan as schedule

    params = config.load()
    experiment, variant = params.run("circles-overfit")
    member = dataclasses.replace(variant.members[0].params, epochs=epochs)
    data = datasets.load("data/prepared/circles")
    fit_data, _ = schedule.split(data, member, None, None, 0)
    keras.utils.set_random_seed(0)
    history = engine.fit_model(models.build_model(models.ModelSpec.of(member, 2, 1)), member, fit_data, seed=0)
    return history.seconds / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", help="an interpreter with torch, for the published sonar loop")
    parser.add_argument("--fit-epochs", type=int, default=200, help="epochs of the model.fit circles reference")
    parser.add_argument("--fit-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--suite-run", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Each measurement runs in its own process, as each stage does under DVC: TensorFlow's thread
    # pool is fixed per process, and stacked parts set it to one thread per op.
    if args.fit_only:
        print(fit_reference(args.fit_epochs))
        return
    if args.suite_run:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
        print(json.dumps(suite_run(args.suite_run, seeds)))
        return
    from regbench import config

    params = config.load()
    report: dict[str, object] = {}

    print("circles: all variants and repeats", flush=True)
    circles = [name for name, ref in params.train.runs.items() if ref.experiment == "circles"]
    suite = suite_runs(circles)
    total = sum(r["seconds"] for r in suite.values())
    runs = sum(r["runs"] for r in suite.values())
    fit_only = [sys.executable, __file__, "--fit-only", "--fit-epochs", str(args.fit_epochs)]
    per_epoch = float(subprocess.run(fit_only, capture_output=True, text=True, check=True).stdout.split()[-1])
    fit_total = per_epoch * params.experiments["circles"].defaults.epochs * runs
    report["circles"] = {
        "suite_seconds": round(total, 1),
        "runs": runs,
        "fit_seconds_per_epoch": round(per_epoch, 4),
        "fit_estimated_seconds": round(fit_total),
        "speedup": round(fit_total / total, 1),
    }
    print(
        f"circles: suite {total:.1f} s for {runs} runs; "
        f"model.fit about {fit_total:.0f} s ({per_epoch * 1000:.1f} ms/epoch)"
    )

    print("sonar: three published variants x 10 folds x 1 repeat", flush=True)
    published = ["sonar-baseline", "sonar-input_dropout", "sonar-hidden_dropout"]
    suite = suite_runs(published, seeds=(0,))
    report["sonar_suite"] = suite
    if args.torch_python:
        out = subprocess.run(
            [args.torch_python, "-c", TORCH_LOOP, str(repeat_folds("data/prepared/sonar", seed=0))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        torch_results = json.loads(out.strip().splitlines()[-1])
        report["sonar_torch"] = torch_results
        for name in published:
            variant = name.split("-", 1)[1]
            ratio = suite[name]["seconds"] / torch_results[variant]["seconds"]
            print(
                f"sonar {variant}: suite {suite[name]['seconds']:.1f} s, PyTorch loop "
                f"{torch_results[variant]['seconds']:.1f} s, ratio {ratio:.2f} (target <= 0.5)"
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
