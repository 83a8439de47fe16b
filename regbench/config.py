"""Typed, validated view of ``params.yaml``, loaded once per stage.

Sections: one per stage (``fetch``, ``prepare``, ``train``, ``claims``,
``report``) and one per experiment registered in ``regbench/data/experiments/``
(``circles``, ``synthetic``, ``mnist``, ``sonar``, ``imdb``). An experiment section holds ``defaults`` (the published
settings) and ``variants`` that override some of them; a variant with a
``grid`` expands into one member per grid value.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from regbench.data.experiments import registry
from regbench.schema import (
    SEED_LIMIT,
    ParamsError,
    build,
    check,
    check_name,
    fail,
    non_negative,
    positive,
    positive_int,
    rate,
)

STAGE_SECTIONS = ("fetch", "prepare", "train", "claims", "report")
DigestKind = Literal["sha256", "imdb-content", "sonar-normalized"]


# --- fetch -----------------------------------------------------------------


@dataclass(frozen=True)
class SourceParams:
    """One place a dataset file can come from, and how to verify it."""

    file: str
    digest_kind: DigestKind
    digest: str = check(
        lambda v: len(v) == 64 and all(c in "0123456789abcdef" for c in v),
        "must be 64 lowercase hex digits (a sha256)",
    )
    url: str | None = None
    # A file shipped inside an installed Python package (usable offline).
    package: str | None = None
    package_path: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.package is None):
            raise ParamsError(f"params.yaml: source {self.file!r} must set exactly one of 'url' or 'package'")


@dataclass(frozen=True)
class DatasetFetchParams:
    use: str
    sources: Mapping[str, SourceParams]
    # Source to fall back to when ``use`` cannot be reached (no mirror copy, no network).
    fallback: str | None = None


@dataclass(frozen=True)
class FetchParams:
    datasets: Mapping[str, DatasetFetchParams]
    # Directory holding upstream files under their upstream names; REGBENCH_MIRROR overrides.
    mirror: str | None = None
    timeout_s: float = check(positive, "must be a positive number of seconds", default=60.0)
    retries: int = check(non_negative, "must be 0 or more", default=4)
    backoff_s: float = check(non_negative, "must be 0 or more seconds", default=2.0)


# --- prepare ---------------------------------------------------------------


def _build_prepare(raw: Any) -> Mapping[str, Any]:
    """``prepare.<experiment>``: each registered experiment's own params dataclass.

    Besides its params, each entry names its ``input`` (what DVC's prepare@<experiment> depends on):
    dvc.yaml templates the stage from this section, so the entry must agree with the experiment module.
    """
    if not isinstance(raw, Mapping):
        fail("prepare", raw, "must be a mapping of experiment names to their prepare params")
    registered = registry()
    built = {}
    for name, section in raw.items():
        path = f"prepare.{name}"
        if name not in registered:
            fail(path, "...", f"names no registered experiment; experiments are {list(registered)}")
        experiment = registered[name]
        if not isinstance(section, Mapping):
            fail(path, section, "must be a mapping of settings")
        section = dict(section)
        expected = experiment.prepare_input
        if section.pop("input", None) != expected:
            fail(f"{path}.input", raw[name].get("input"), f"must be {expected!r} (what prepare@{name} reads)")
        built[name] = build(experiment.prepare_params, section, path)
    for name in registered:
        if name not in built:
            fail(f"prepare.{name}", None, "missing; every registered experiment needs its section (input: ...)")
    return types.MappingProxyType(built)


# --- experiments -------------------------------------------------------------


@dataclass(frozen=True)
class DecayParams:
    """A learning-rate decay schedule over optimizer steps (batches), as Keras' learning-rate schedules:

    ``inverse_time``: learning_rate / (1 + rate * step / steps) (keras.optimizers.schedules.InverseTimeDecay,
    the old Keras ``decay`` argument with steps = 1); ``exponential``: learning_rate * rate ** (step / steps)
    (ExponentialDecay), so its rate is the factor per ``steps`` steps and must lie in (0, 1).
    """

    kind: Literal["inverse_time", "exponential"]
    rate: float = check(positive, "must be a positive number")
    steps: int = check(positive_int, "must be a positive number of optimizer steps (batches)")

    def __post_init__(self) -> None:
        if self.kind == "exponential" and not self.rate < 1:
            raise ValueError(
                f"an exponential decay multiplies the learning rate by rate = {self.rate} every {self.steps} "
                "steps, so it must lie in (0, 1) to decay; for 1 / (1 + rate * step / steps) use kind: inverse_time"
            )


@dataclass(frozen=True)
class OptimizerParams:
    name: Literal["adam", "sgd", "rmsprop"]
    learning_rate: float = check(positive, "must be a positive number")
    momentum: float = check(lambda v: 0 <= v < 1, "must be in [0, 1)", default=0.0)
    # Decoupled weight decay (the Keras optimizers' ``weight_decay``): before each step the hidden kernels
    # (the weights L2 and L1 apply to) shrink by learning_rate * weight_decay * weight. Under plain SGD this
    # is the gradient step of an L2 penalty l2 * sum(w**2) with weight_decay = 2 * l2; other optimizers
    # rescale the penalty's gradient but not this decay, so there the two differ.
    weight_decay: float = check(non_negative, "must be 0 (off) or a positive decay factor", default=0.0)
    # A learning-rate schedule; null: the learning rate stays constant.
    decay: DecayParams | None = None

    def __post_init__(self) -> None:
        if self.momentum and self.name != "sgd":
            # Keras' Adam has no momentum and RMSprop's is not wired through: refuse rather than ignore it.
            raise ValueError(
                f"momentum {self.momentum} is given to {self.name}, but only sgd takes a momentum here; "
                "remove it (or set momentum: 0 where a variant inherits it from the defaults)"
            )


@dataclass(frozen=True)
class VariantParams:
    """Everything that defines one trained model; defaults are the published settings."""

    hidden: tuple[int, ...] = check(
        lambda v: len(v) > 0 and all(n > 0 for n in v), "must be a non-empty list of positive ints"
    )
    activation: Literal["relu", "linear", "tanh", "sigmoid"]
    optimizer: OptimizerParams
    loss: Literal["binary_crossentropy", "categorical_crossentropy"]
    epochs: int = check(positive_int, "must be a positive integer")
    batch_size: int = check(positive_int, "must be a positive integer")
    # ``test``: the test set is the per-epoch validation set; ``split``: the last
    # ``validation_split`` of the training rows (Keras' validation_split); ``cv``: the held-out fold.
    validation: Literal["test", "split", "cv"]
    input_dropout: float = check(rate, "must be a dropout rate in [0, 1)", default=0.0)
    hidden_dropout: float = check(rate, "must be a dropout rate in [0, 1)", default=0.0)
    l2: float = check(non_negative, "must be 0 (off) or a positive L2 factor", default=0.0)
    # L1 penalty factor on the hidden kernels (Keras' L1: factor * sum of absolute values); with l2, L1L2.
    l1: float = check(non_negative, "must be 0 (off) or a positive L1 factor", default=0.0)
    max_norm: float | None = check(positive, "must be a positive norm, or null for none", default=None)
    shuffle: bool = True
    validation_split: float = check(lambda v: 0 < v < 1, "must be in (0, 1)", default=0.2)


@dataclass(frozen=True)
class Member:
    """One model configuration of a variant: a grid variant has several."""

    label: str
    params: VariantParams
    # A grid member's grid setting and value, e.g. {"hidden_dropout": 0.3}; empty otherwise.
    grid: Mapping[str, float] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def grid_value(self) -> float | None:
        return next(iter(self.grid.values()), None)


@dataclass(frozen=True)
class Variant:
    name: str
    members: tuple[Member, ...]
    grid_key: str | None = None
    # <experiment>.variants.<variant>.seeds: this variant's own seeds (./run.sh decide grows them); None:
    # the experiment's. Minimal form of issue 12's per-variant seeds (engineer A's branch owns the rest).
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class RandomnessParams:
    """``<experiment>.randomness``: what a repeat's seed varies (regbench/data/experiments: ``varies``).

    ``setup``: what the tutorial's code leaves random (a verdict holds for the published dataset);
    ``data``: also what it fixed, a generator's seed or a train/test split (it holds for the
    data-generating process). Only the experiment's own train stages depend on it.
    """

    scope: Literal["setup", "data"] = "setup"


@dataclass(frozen=True)
class ExperimentParams:
    name: str
    data: str
    seeds: tuple[int, ...]
    defaults: VariantParams
    variants: Mapping[str, Variant]
    randomness: RandomnessParams = field(default_factory=RandomnessParams)  # params.yaml must set it

    def seeds_of(self, variant: str) -> tuple[int, ...]:
        """The seeds a variant trains: its own list, or the experiment's."""
        return self.variants[variant].seeds or self.seeds


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _build_experiment(name: str, raw: Any) -> ExperimentParams:
    check_name(name, name)
    if not isinstance(raw, Mapping):
        fail(name, raw, "must be a mapping with keys data, randomness, seeds, defaults, variants")
    # randomness is required like the others: dvc.yaml's train stages depend on it.
    allowed = {"data", "randomness", "seeds", "defaults", "variants"}
    for key in raw:
        if key not in allowed:
            fail(f"{name}.{key}", raw[key], f"unknown key; allowed keys here: {sorted(allowed)}")
    for key in sorted(allowed):
        if key not in raw:
            fail(f"{name}.{key}", None, "missing; this key is required")
    if raw["data"] not in registry():
        fail(f"{name}.data", raw["data"], f"must be one of {list(registry())}")
    seeds = _seeds(f"{name}.seeds", raw["seeds"])
    defaults_raw = raw["defaults"]
    defaults = build(VariantParams, defaults_raw, f"{name}.defaults")
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, Mapping) or not variants_raw:
        fail(f"{name}.variants", variants_raw, "must be a non-empty mapping of variant names")
    variants = {}
    for variant_name, override in variants_raw.items():
        check_name(f"{name}.variants.{variant_name}", variant_name)
        variants[variant_name] = _build_variant(
            f"{name}.variants.{variant_name}", variant_name, defaults_raw, override or {}
        )
    randomness = _randomness(name, raw["data"], raw["randomness"])
    return ExperimentParams(
        name=name, data=raw["data"], seeds=tuple(seeds), defaults=defaults, variants=variants, randomness=randomness
    )


def _randomness(name: str, data: str, raw: Any) -> RandomnessParams:
    """``<name>.randomness``, refused for a scope the experiment's data cannot vary (e.g. imdb's published split)."""
    randomness = build(RandomnessParams, raw, f"{name}.randomness")
    experiment = registry()[data]
    if randomness.scope not in experiment.varies:
        fail(
            f"{name}.randomness.scope",
            randomness.scope,
            f"{data} supports only {list(experiment.varies)}: every scope keeps {experiment.keeps.get('setup')}",
        )
    return randomness


def _seeds(path: str, seeds: Any) -> tuple[int, ...]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        fail(path, seeds, "must be a non-empty list of distinct integers in [0, 2**32)")
    for i, seed in enumerate(seeds):
        if not 0 <= seed < SEED_LIMIT:
            fail(
                f"{path}[{i}]",
                seed,
                f"must be in [0, 2**32) = [0, {SEED_LIMIT}): NumPy and TensorFlow seeds are 32-bit",
            )
    return tuple(seeds)


def _build_variant(path: str, name: str, defaults_raw: Mapping, override: Any) -> Variant:
    if not isinstance(override, Mapping):
        fail(path, override, "must be a mapping of settings that override the defaults")
    override = dict(override)
    seeds = _seeds(f"{path}.seeds", override.pop("seeds")) if "seeds" in override else None
    grid = override.pop("grid", None)
    if grid is None:
        params = build(VariantParams, _deep_merge(defaults_raw, override), path)
        return Variant(name=name, members=(Member(label=name, params=params),), seeds=seeds)
    if not isinstance(grid, Mapping) or len(grid) != 1:
        fail(f"{path}.grid", grid, "must map exactly one setting to a list of values")
    ((grid_key, values),) = grid.items()
    scalar_fields = {"input_dropout", "hidden_dropout", "l2", "l1", "max_norm", "epochs", "batch_size"}
    if grid_key not in scalar_fields:
        fail(f"{path}.grid", grid_key, f"a grid can vary one of {sorted(scalar_fields)}")
    if not isinstance(values, list) or not values:
        fail(f"{path}.grid.{grid_key}", values, "must be a non-empty list of values")
    for i, value in enumerate(values):
        # Equal values (0.1 and 0.10 too) would be one member trained twice as often as the others.
        if any(value == earlier for earlier in values[:i]):
            fail(f"{path}.grid.{grid_key}[{i}]", value, "repeats an earlier value; each grid value must be listed once")
    members = []
    for i, value in enumerate(values):
        merged = _deep_merge(defaults_raw, {**override, grid_key: value})
        try:
            params = build(VariantParams, merged, path)
        except ParamsError as error:
            raise ParamsError(str(error).replace(f"{path}.{grid_key}", f"{path}.grid.{grid_key}[{i}]")) from None
        grid_setting = types.MappingProxyType({grid_key: float(value)})
        members.append(Member(label=f"{name}[{grid_key}={value}]", params=params, grid=grid_setting))
    return Variant(name=name, members=tuple(members), grid_key=grid_key, seeds=seeds)


# --- train, claims, report -------------------------------------------------


@dataclass(frozen=True)
class RunRef:
    experiment: str
    variant: str


@dataclass(frozen=True)
class RayParams:
    """How the ``ray`` executor sends runs to a Ray cluster (regbench/train/executor.py)."""

    # Ray retries a task whose worker process or node died this many times (on any node); an error
    # raised by the training code itself is never retried: it would fail the same way again.
    max_retries: int = check(lambda v: v >= 0, "must be 0 or a positive integer", default=3)
    # Declared per task: Ray starts a task only where these are free.
    task_cpus: float = check(positive, "must be a positive number of CPUs", default=1.0)
    # null: one GPU per task when the cluster has GPUs, none otherwise.
    task_gpus: float | None = check(lambda v: v is None or v >= 0, "must be 0 or more, or null", default=None)


@dataclass(frozen=True)
class TrainParams:
    runs: Mapping[str, RunRef]
    engine: Literal["compiled", "fit"] = "compiled"
    # Quick runs: cap the training rows and epochs (null = as published).
    max_train_samples: int | None = check(positive_int, "must be a positive integer or null", default=None)
    max_epochs: int | None = check(positive_int, "must be a positive integer or null", default=None)
    # The compiled engine runs this much wall time of epochs per call before it reports progress.
    chunk_seconds: float = check(positive, "must be a positive number of seconds", default=3.0)
    deterministic: bool = True
    # Per-epoch metrics sent to MLflow per run: longer histories are sampled evenly (first and
    # last epoch kept, step = epoch). Full histories stay in histories.csv and the DVC plots.
    mlflow_max_steps: int = check(lambda v: v >= 2, "must be 2 or more", default=50)
    # The stacked engine splits each group of runs into this many parts and trains them side by side,
    # one per core. Each part draws its own dropout masks, so this is part of what defines a result.
    stack_parts: int = check(positive_int, "must be a positive integer", default=2)
    # local: this process trains every run. ray: each stacked part (or run) is a Ray task, on the
    # cluster at RAY_ADDRESS or a local Ray instance; the results are the same either way.
    executor: Literal["local", "ray"] = "local"
    ray: RayParams = field(default_factory=RayParams)


@dataclass(frozen=True)
class ClaimsParams:
    # Two-sided interval level; every one-sided decision is then made at (1 - confidence) / 2.
    confidence: float = check(lambda v: 0.5 < v < 1, "must be in (0.5, 1)", default=0.95)
    # BCa bootstrap (reported from bca_min_repeats repeats on, where it covers near nominal).
    bootstrap_resamples: int = check(lambda v: v >= 100, "must be 100 or more", default=10000)
    bootstrap_seed: int = 0
    bca_min_repeats: int = check(lambda v: v >= 3, "must be 3 or more", default=20)
    min_repeats: int = check(lambda v: v >= 2, "must be 2 or more", default=3)
    # Power for the minimum detectable effect and the repeats needed.
    power: float = check(lambda v: 0 < v < 1, "must be in (0, 1)", default=0.8)
    # The sign-flip test enumerates all 2**n sign patterns up to this many repeats, samples 2**this beyond.
    sign_flip_exact_max: int = check(lambda v: 4 <= v <= 20, "must be in [4, 20]", default=16)
    # Simulated draws per null distribution for the calibration shown in the report.
    calibration_draws: int = check(lambda v: v >= 100, "must be 100 or more", default=4000)
    # A claim naming a variant that params.yaml does not define: an error (a typo in claims.yaml), or,
    # for a deliberately trimmed params.yaml (quick runs, tests), the claim is reported as not run.
    on_missing_variant: Literal["error", "not_run"] = "error"
    # The run this one's per-repeat values are compared with (the drift report): a git revision whose
    # committed reports/claims_detail.json is read, or a path to such a file; null for none.
    drift_reference: str | None = "HEAD"
    # Claims judged under another randomness scope, shown beside this run's (regbench.claims.scopes): the
    # name of a DVC experiment run with `-S <experiment>.randomness.scope=data`, a git revision, or a path
    # to its reports/claims_detail.json; null for none.
    scope_reference: str | None = None


@dataclass(frozen=True)
class DecideParams:
    """Adaptive repeats (``./run.sh decide``) and the sequential verdicts they need (regbench/claims/stats.py)."""

    # true: the claims stage judges each claim at the looks start, start + batch, ..., max_repeats with
    # alpha spent over them (valid however often the decide loop looks); false: one look at full alpha.
    sequential: bool = False
    start: int = check(lambda v: v >= 2, "must be 2 or more (a t interval needs two repeats)", default=5)
    batch: int = check(positive_int, "must be a positive integer", default=5)
    max_repeats: int = check(lambda v: v >= 2, "must be 2 or more", default=20)
    spending: Literal["pocock", "obrien-fleming", "linear"] = "pocock"
    # The decide command stops before a round that would exceed either budget (null: no limit).
    # Runs: one variant trained on one seed (its CV folds and grid members count as one).
    budget_runs: int | None = check(positive_int, "must be a positive integer or null", default=None)
    budget_seconds: float | None = check(positive, "must be positive or null", default=None)

    def __post_init__(self) -> None:
        if self.start > self.max_repeats:
            raise ValueError(f"start ({self.start}) must not exceed max_repeats ({self.max_repeats})")


@dataclass(frozen=True)
class ReportParams:
    title: str = "regbench: do the tutorials' regularization claims reproduce?"
    max_curve_points: int = check(lambda v: v >= 10, "must be 10 or more", default=400)


@dataclass(frozen=True)
class Params:
    fetch: FetchParams
    # Experiment name -> its prepare params dataclass (regbench/data/experiments/<name>.py).
    prepare: Mapping[str, Any]
    train: TrainParams
    claims: ClaimsParams
    report: ReportParams
    experiments: Mapping[str, ExperimentParams] = field(default_factory=dict)
    # Optional section: a params.yaml without it gets one look per claim at full alpha.
    decide: DecideParams = field(default_factory=DecideParams)

    def run(self, run_name: str) -> tuple[ExperimentParams, Variant]:
        if run_name not in self.train.runs:
            raise ParamsError(f"params.yaml: train.runs has no run {run_name!r}; known runs: {sorted(self.train.runs)}")
        ref = self.train.runs[run_name]
        experiment = self.experiments[ref.experiment]
        return experiment, experiment.variants[ref.variant]


def parse(raw: Any) -> Params:
    """Validate the whole params document and return frozen, typed sections."""
    if not isinstance(raw, Mapping):
        fail("<root>", raw, "params.yaml must be a mapping of sections")
    registered = registry()
    known = set(STAGE_SECTIONS) | {"decide"} | set(registered)
    for key in raw:
        if key not in known:
            fail(key, "...", f"unknown section; sections are {sorted(known)}")
    stage_sections = {}
    for cls_field in dataclasses.fields(Params):
        if cls_field.name == "experiments":
            continue
        if cls_field.name == "decide":
            stage_sections["decide"] = build(DecideParams, raw.get("decide", {}), "decide")
            continue
        if cls_field.name not in raw:
            fail(cls_field.name, None, "missing section")
        if cls_field.name == "prepare":
            stage_sections["prepare"] = _build_prepare(raw["prepare"])
            continue
        cls = {
            "fetch": FetchParams,
            "train": TrainParams,
            "claims": ClaimsParams,
            "report": ReportParams,
        }[cls_field.name]
        stage_sections[cls_field.name] = build(cls, raw[cls_field.name], cls_field.name)
    # In params.yaml order: the report's sections follow it.
    built = {name: _build_experiment(name, raw[name]) for name in raw if name in registered}
    params = Params(**stage_sections, experiments=built)
    _check_cross_references(params)
    return params


def _check_cross_references(params: Params) -> None:
    for name, dataset in params.fetch.datasets.items():
        for source_name in (dataset.use, dataset.fallback):
            if source_name is not None and source_name not in dataset.sources:
                fail(
                    f"fetch.datasets.{name}.use",
                    source_name,
                    f"must be one of {sorted(dataset.sources)}",
                )
    listed = set()
    for run_name, ref in params.train.runs.items():
        path = f"train.runs.{run_name}"
        if ref.experiment not in params.experiments:
            fail(f"{path}.experiment", ref.experiment, f"must be one of {sorted(params.experiments)}")
        variants = params.experiments[ref.experiment].variants
        if ref.variant not in variants:
            fail(f"{path}.variant", ref.variant, f"must be one of {sorted(variants)}")
        if run_name != f"{ref.experiment}-{ref.variant}":
            fail(path, run_name, f"must be named '{ref.experiment}-{ref.variant}'")
        listed.add((ref.experiment, ref.variant))
    for experiment in params.experiments.values():
        for variant in experiment.variants:
            if (experiment.name, variant) not in listed:
                fail(
                    f"{experiment.name}.variants.{variant}",
                    "...",
                    f"is never trained: add '{experiment.name}-{variant}' to train.runs",
                )


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage from the repository root")
    with path.open() as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ParamsError(f"{path} is not valid YAML: {error}") from None
    return parse(raw)
