"""circles (tutorial 000): make_circles, the first rows train and the rest test, as published."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from regbench.data.experiments import Arrays, DataError, Experiment, draw_seed
from regbench.schema import check, non_negative, positive_int


@dataclass(frozen=True)
class CirclesPrepare:
    n_samples: int = check(positive_int, "must be a positive integer")
    noise: float = check(non_negative, "must be 0 or more")
    random_state: int = 1
    n_train: int = check(positive_int, "must be a positive integer", default=30)


def prepare(params: CirclesPrepare, raw: None) -> tuple[Arrays, dict]:
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=params.n_samples, noise=params.noise, random_state=params.random_state)
    if not 0 < params.n_train < params.n_samples:
        raise DataError(f"prepare.circles.n_train must be in (0, {params.n_samples}), got {params.n_train}")
    # As published: the first rows train, the rest test, no shuffling.
    n = params.n_train
    arrays = {
        "x_train": x[:n].astype(np.float32),
        "y_train": y[:n].astype(np.float32),
        "x_test": x[n:].astype(np.float32),
        "y_test": y[n:].astype(np.float32),
    }
    return arrays, {"generator": "sklearn.datasets.make_circles"}


def repeat_data(arrays: Arrays, manifest: dict, seed: int, scope: str) -> Arrays:
    """setup: the published draw (random_state 1) for every repeat; data: the repeat's own draw, split alike."""
    if scope == "setup":
        return arrays
    published = CirclesPrepare(**manifest["params"])
    return prepare(dataclasses.replace(published, random_state=draw_seed(seed, "data draw")), None)[0]


EXPERIMENT = Experiment(
    name="circles",
    prepare_params=CirclesPrepare,
    prepare=prepare,
    generator="scikit-learn",
    headline_metric="val_accuracy",
    validation_is="test set",
    # Keras' fit shuffles the rows every epoch; the tutorial seeds nothing but the generator.
    varies={"setup": ("weights", "order", "masks"), "data": ("weights", "order", "masks", "data draw")},
    keeps={
        "setup": "the published draw, make_circles(random_state=1), first 30 rows train",
        "data": "the generator's settings (100 points, noise 0.1); its first 30 points train",
    },
    repeat_data=repeat_data,
)
