"""The experiment registry: one module in this package per experiment, nothing else to edit.

Each module ``regbench/data/experiments/<name>.py`` defines one ``EXPERIMENT =
Experiment(...)``: the dataclass of its ``prepare.<name>`` params, the fetched
dataset it reads (or none: generated data), the function that turns that into
the prepared arrays, and how the report labels it. Its settings live in
``params.yaml`` (``prepare.<name>``, the ``<name>:`` section, ``train.runs``)
and its claims in ``claims.yaml``.

Each entry also says what a repeat's seed varies (``varies``): per randomness scope
(``<name>.randomness.scope`` in params.yaml), the sources of randomness a verdict
covers, in the words of ``RANDOMNESS_SOURCES``, and, with ``repeat_data``, how a
repeat draws what varies with its data (sonar's CV split, a generated dataset).

Registration is a package scan, not a hand-kept list, so that adding an
experiment is one new file; importing a module registers nothing (it only
defines ``EXPERIMENT``), and ``registry()`` collects them when first asked, in
name order, refusing a module without a well-formed ``EXPERIMENT``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, Any]
# The metrics a report can headline: per-epoch (Keras) and after the last epoch (inference mode).
REPORTABLE_METRICS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "train_eval_loss",
    "train_eval_accuracy",
    "test_loss",
    "test_accuracy",
)


# The sources of randomness a repeat can vary (its seed draws each of them), in the report's words.
RANDOMNESS_SOURCES = {
    "weights": "initial weights",
    "order": "the order of the training rows in each epoch",
    "masks": "dropout masks",
    "split": "which rows train and which are held out (CV folds, train/test split)",
    "data draw": "the dataset itself, drawn anew from its generator",
}
# setup: what the tutorial's own code leaves random, so a verdict holds for the published dataset.
# data: also what the tutorial fixed (a generator's seed, a train/test split), so a verdict holds for the
# data-generating process (Bouthillier et al., "Accounting for variance in machine learning benchmarks",
# MLSys 2021: vary the data split together with the initialisation).
SCOPES = ("setup", "data")
SCOPE_MEANS = {"setup": "holds for the published dataset", "data": "holds for the data-generating process"}


def draw_seed(seed: int, source: str) -> int:
    """The seed a repeat's ``seed`` gives one source of its data (``split``, ``data draw``).

    Independent of the other streams drawn from the same repeat seed, and of the variant: the same repeat
    gets the same folds or dataset in every variant, so variants stay paired seed by seed. An int below
    2**32, as scikit-learn's ``random_state`` takes it. The source's name (crc32) keys the stream.
    """
    if source not in RANDOMNESS_SOURCES:
        raise ValueError(f"unknown randomness source {source!r}; sources are {list(RANDOMNESS_SOURCES)}")
    return int(np.random.SeedSequence([seed, zlib.crc32(source.encode())]).generate_state(1)[0])


class DataError(ValueError):
    """A raw data file is malformed, or does not match what was fetched."""


@dataclass(frozen=True)
class Raw:
    """A fetched dataset as the prepare stage hands it over: the file and its fetch record."""

    file: Path
    # data/raw/<dataset>/source.json: source name, origin, digest kind and digest, fallback_used.
    source: Mapping[str, Any]


@dataclass(frozen=True)
class Experiment:
    """Everything regbench needs to know about one experiment besides its params."""

    name: str
    # The dataclass ``prepare.<name>`` in params.yaml is built into (checked like every section).
    prepare_params: type
    # ``prepare(params, raw) -> (arrays, info)``: the model-ready arrays (``x_train``/``y_train``,
    # ``x_test``/``y_test`` and, for cross-validation, ``fold``) and what goes into the manifest.
    # ``raw`` is None for generated data.
    prepare: Callable[[Any, Raw | None], tuple[Arrays, dict]]
    # The metric the report's published-vs-measured plot and table show first: what the tutorial reports.
    headline_metric: str
    # What the per-epoch validation set is, for the learning-curve titles.
    validation_is: str
    # The ``fetch.datasets`` entry this experiment reads (data/raw/<dataset>), or None for generated data.
    raw_dataset: str | None = None
    # Generated data only: what generates it, recorded as the data's origin.
    generator: str | None = None
    # What the report says beside the data's source, by fetch source name (e.g. a smaller fallback).
    source_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Per randomness scope this experiment supports (``setup`` always): the RANDOMNESS_SOURCES a repeat's
    # seed varies, as the report prints them. The default is Keras' fit on fixed data.
    varies: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: {"setup": ("weights", "order", "masks")}
    )
    # Per scope, what stays fixed in every repeat and why, in words (the report prints it beside ``varies``).
    keeps: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # ``repeat_data(arrays, manifest, seed, scope) -> arrays``: the model-ready arrays of one repeat, for
    # what its seed varies in the data (``split``, ``data draw``); None: every repeat trains on the
    # prepared arrays. A pure function of its arguments, so a run stays a function of its own identity.
    repeat_data: Callable[[Arrays, Mapping[str, Any], int, str], Arrays] | None = None

    def __post_init__(self) -> None:
        where = f"regbench/data/experiments/{self.name}.py"
        if not dataclasses.is_dataclass(self.prepare_params):
            raise TypeError(f"{where}: prepare_params must be a dataclass, got {self.prepare_params!r}")
        if self.headline_metric not in REPORTABLE_METRICS:
            raise TypeError(f"{where}: headline_metric must be one of {list(REPORTABLE_METRICS)}")
        if (self.raw_dataset is None) == (self.generator is None):
            raise TypeError(f"{where}: set exactly one of raw_dataset (fetched data) or generator (generated data)")
        if "setup" not in self.varies or not set(self.varies) <= set(SCOPES):
            raise TypeError(f"{where}: varies must map 'setup' (and optionally 'data') to sources, got {self.varies}")
        for scope, sources in self.varies.items():
            unknown = [s for s in sources if s not in RANDOMNESS_SOURCES]
            if unknown:
                raise TypeError(f"{where}: varies[{scope!r}] names unknown sources {unknown}")
            if {"split", "data draw"} & set(sources) and self.repeat_data is None:
                raise TypeError(f"{where}: varies[{scope!r}] draws {sources} per repeat, which needs repeat_data")
        if "data" in self.varies and not set(self.varies["data"]) > set(self.varies["setup"]):
            raise TypeError(f"{where}: the data scope must vary more than the setup scope, got {self.varies}")

    def randomness(self, scope: str) -> dict[str, Any]:
        """What a repeat's seed varies under ``scope`` and what stays fixed, as the manifests and report show it."""
        if scope not in self.varies:
            raise ValueError(f"{self.name} has no randomness scope {scope!r}; its scopes: {list(self.varies)}")
        return {
            "scope": scope,
            "covers": SCOPE_MEANS[scope],
            "varies": list(self.varies[scope]),
            "keeps": self.keeps.get(scope),
        }

    @property
    def module_path(self) -> str:
        return f"regbench/data/experiments/{self.name}.py"

    @property
    def prepare_input(self) -> str:
        """The path the prepare stage reads besides params: ``prepare.<name>.input`` in params.yaml.

        DVC needs it as data to template the stage's dependencies; generated data names its own module.
        """
        return self.module_path if self.raw_dataset is None else f"data/raw/{self.raw_dataset}"


@functools.cache
def registry() -> Mapping[str, Experiment]:
    """Every experiment module of this package, by name (the module's name)."""
    found = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        experiment = getattr(module, "EXPERIMENT", None)
        if not isinstance(experiment, Experiment):
            raise TypeError(f"{module.__file__}: an experiment module must define EXPERIMENT = Experiment(...)")
        if experiment.name != module_info.name:
            raise TypeError(
                f"{module.__file__}: EXPERIMENT.name is {experiment.name!r}; it must be the module's name "
                f"{module_info.name!r} (stage names, params sections and files share one word)"
            )
        found[experiment.name] = experiment
    return found


def names() -> tuple[str, ...]:
    return tuple(registry())
