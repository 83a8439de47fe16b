"""Every variant setting is honoured by every engine or refused by the stacked engine: none is silently dropped.

The table below classifies each field of ``VariantParams``, of its optimizer and of the optimizer's
learning-rate decay (an optional group: ``optimizer.decay`` itself, on against off, and each of its own
fields). A new field anywhere in them that is not in the table fails
``test_every_variant_setting_is_classified``: decide whether both engines honour it (then add a value
to COMPARED, and the comparison with ``model.fit`` must pass) or the stacked engine refuses it
(REFUSED, and ``stacked.refusal`` must say so).
"""

import dataclasses
import logging
import typing

import keras
import numpy as np
import pytest

from regbench import config
from regbench.data import datasets
from regbench.train import engine, executor, models, plan, stacked
from regbench.train.progress import Progress
from tests.test_models_engine import PARAMS, run_of, toy_data, toy_reviews, trainer_for, variant

BASE = variant(
    "sonar", "baseline", hidden=(8, 4), epochs=4, batch_size=8, optimizer=config.OptimizerParams("sgd", 0.05, 0.8)
)
# Honoured by both engines exactly: with this value (not the base's), each engine's history equals model.fit's.
COMPARED = {
    "hidden": (5, 3, 2),
    "activation": "tanh",
    "optimizer.name": "adam",
    "optimizer.learning_rate": 0.2,
    "optimizer.momentum": 0.3,
    "optimizer.weight_decay": 0.05,
    "optimizer.decay": config.DecayParams("inverse_time", 0.5, 3),
    # Each field of the decay, changed from the value above (BASE has no decay).
    "optimizer.decay.kind": "exponential",
    "optimizer.decay.rate": 0.9,
    "optimizer.decay.steps": 7,
    "loss": "categorical_crossentropy",
    "epochs": 6,
    "batch_size": 5,
    "l2": 0.01,
    "l1": 0.01,
    "max_norm": 0.3,
}
# Honoured by both engines in distribution only: dropout masks and shuffled row orders come from other
# random streams than Keras' (engine.epoch_orders, stacked.py), so the check is that the setting
# changes training in both engines, not that it equals model.fit.
OWN_STREAM = {"input_dropout": 0.5, "hidden_dropout": 0.5, "shuffle": True}
# Used by schedule.split to choose the training and validation rows; no engine ever sees them.
ROWS = {"validation", "validation_split"}
# Refused by the stacked engine (its runs train one at a time, with a log line): no setting today. What it
# does refuse is data: IMDB's sparse inputs (test_sparse_inputs_are_refused_and_train_one_at_a_time).
REFUSED: dict[str, typing.Any] = {}


def setting_names(cls, prefix="") -> list[str]:
    """Every field of ``cls``, nested dataclasses as ``outer.inner``, at any depth.

    A required group (the optimizer) is its fields; an optional one (``DecayParams | None``) is itself
    (on or off) and its fields, so that a field added to it is not missed either.
    """
    names = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        groups = [t for t in typing.get_args(hint) if dataclasses.is_dataclass(t)]
        if dataclasses.is_dataclass(hint):
            names += setting_names(hint, f"{prefix}{field.name}.")
        elif groups:
            (group,) = groups
            names.append(prefix + field.name)
            names += setting_names(group, f"{prefix}{field.name}.")
        else:
            names.append(prefix + field.name)
    return names


def _replaced(group, path: str, value, prefix: str = ""):
    """``group`` with the field at the dotted ``path`` set to ``value``; an optional group that is off
    (None) starts from its COMPARED value, so only the one field differs from that."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(group, **{head: value})
    inner = getattr(group, head)
    if inner is None:
        inner = COMPARED[prefix + head]
    return dataclasses.replace(group, **{head: _replaced(inner, rest, value, f"{prefix}{head}.")})


def setting_value(group, path: str, prefix: str = ""):
    """The value at the dotted ``path``, reading an optional group that is off as its COMPARED value."""
    head, _, rest = path.partition(".")
    inner = getattr(group, head)
    if not rest:
        return inner
    return setting_value(COMPARED[prefix + head] if inner is None else inner, rest, f"{prefix}{head}.")


def with_setting(params: config.VariantParams, name: str, value) -> config.VariantParams:
    if name == "optimizer.name" and value != "sgd":
        # Only SGD takes a momentum: config.OptimizerParams refuses one given to another optimizer.
        return dataclasses.replace(params, optimizer=dataclasses.replace(params.optimizer, name=value, momentum=0.0))
    return _replaced(params, name, value)


def test_every_variant_setting_is_classified():
    classified = [*COMPARED, *OWN_STREAM, *ROWS, *REFUSED]
    assert len(classified) == len(set(classified)), "a setting is classified twice"
    unclassified = sorted(set(setting_names(config.VariantParams)) - set(classified))
    assert not unclassified, (
        f"VariantParams settings {unclassified} are not classified: make both engines honour them (COMPARED) "
        "or have stacked.refusal refuse them (REFUSED)"
    )
    assert sorted(set(classified) - set(setting_names(config.VariantParams))) == [], "stale entries in the table"
    for name, value in REFUSED.items():
        assert name.split(".")[-1] in (stacked.refusal(with_setting(BASE, name, value)) or ""), f"{name} not refused"


def reference(params, data, seed, output_dim):
    keras.utils.set_random_seed(seed)
    return engine.fit_model(models.build_model(models.ModelSpec.of(params, 6, output_dim)), params, data, seed=seed)


@pytest.mark.parametrize("name", sorted(COMPARED))
def test_both_engines_honour_the_setting_as_model_fit_does(name):
    params = with_setting(BASE, name, COMPARED[name])
    assert setting_value(BASE, name) != COMPARED[name], "the value must change the setting"
    assert setting_value(params, name) == COMPARED[name]
    categorical = params.loss == "categorical_crossentropy"
    output_dim = 2 if categorical else 1
    datas = [toy_data(seed=s, categorical=categorical) for s in (0, 1)]
    seeds = [5, 6]
    expected = [reference(params, data, seed, output_dim) for data, seed in zip(datas, seeds, strict=True)]
    compiled = trainer_for(params, 6, output_dim)
    per_run = [compiled.train(data, seed) for data, seed in zip(datas, seeds, strict=True)]
    assert stacked.refusal(params) is None, f"{name}: the stacked engine refuses it, yet it is in COMPARED"
    jobs = [run_of(data, seed, params) for data, seed in zip(datas, seeds, strict=True)]
    together = stacked.StackedTrainer(params, 6, output_dim, 2, 32, 32, 1.0).train(jobs)
    for theirs, ours_alone, ours_stacked in zip(expected, per_run, together, strict=True):
        assert theirs.epochs == params.epochs
        for metric in engine.METRICS:
            np.testing.assert_allclose(ours_alone.metrics[metric], theirs.metrics[metric], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(ours_stacked.metrics[metric], theirs.metrics[metric], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(OWN_STREAM))
def test_both_engines_apply_the_randomized_setting(name):
    params = with_setting(BASE, name, OWN_STREAM[name])
    assert getattr(params, name) != getattr(BASE, name), "the value must change BASE"
    data = toy_data(seed=0)
    plain = trainer_for(BASE).train(data, 5)
    alone = trainer_for(params).train(data, 5)
    together = stacked.StackedTrainer(params, 6, 1, 1, 32, 32, 1.0).train([run_of(data, 5, params)])[0]
    for history in (alone, together):
        assert history.metrics["loss"] != plain.metrics["loss"]


def test_rows_settings_choose_the_rows_before_any_engine():
    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.zeros(10, np.float32)
    data = datasets.PreparedData({"x_train": x, "y_train": y, "x_test": x[:3], "y_test": y[:3]})
    split = plan.split(data, dataclasses.replace(BASE, validation="split", validation_split=0.3), None, None, 0)
    assert (len(split[0].y_train), len(split[0].y_val)) == (7, 3)
    whole = plan.split(data, dataclasses.replace(BASE, validation="test"), None, None, 0)
    assert (len(whole[0].y_train), len(whole[0].y_val)) == (10, 3)


def test_a_model_field_the_stacked_network_lacks_is_refused_not_dropped(monkeypatch):
    """The guard for the next ModelSpec field: until StackedTrainer writes it out, it refuses the spec."""
    monkeypatch.setattr(stacked, "IMPLEMENTED", stacked.IMPLEMENTED - {"max_norm"})
    params = dataclasses.replace(BASE, max_norm=0.3)
    assert "max_norm" in stacked.refusal(params)
    with pytest.raises(ValueError, match="max_norm"):
        stacked.StackedTrainer(params, 6, 1, 1, 32, 32, 1.0)


def test_sparse_inputs_are_refused_and_train_one_at_a_time(caplog):
    """IMDB's multi-hot rows: the stacked engine refuses them (a clear error), the executor plans one unit
    per run with the reason logged, and each run is exactly what the per-run engine trains alone."""
    x_train, y_train = toy_reviews(40, seed=0)
    x_test, y_test = toy_reviews(20, seed=1)
    data = datasets.PreparedData({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test})
    params = dataclasses.replace(PARAMS, train=dataclasses.replace(PARAMS.train, engine="compiled", stack_parts=1))
    member = config.Member("imdb", variant("imdb", "original", hidden=(8, 4), epochs=3, batch_size=16))
    runs = plan.plan_runs(params, (5, 6), [member], data, [None])
    with pytest.raises(ValueError, match="sparse"):
        stacked.train_parts(runs, [range(len(runs))], 1.0, None, lambda *done: None)
    caplog.set_level(logging.INFO, logger="regbench.train.executor")
    units = executor.plan_units(params, runs, "train@test")
    assert [(unit.indices, unit.stacked) for unit in units] == [((0,), False), ((1,), False)]
    assert "not stacked" in caplog.text and "sparse" in caplog.text
    executor.train(params, runs, data, Progress("train@test", 2), "train@test")
    for run in runs:
        alone = trainer_for(member.params, 40, 1, sparse=True).train(run.data, run.training_seed)
        assert run.history.metrics == alone.metrics
        assert set(run.evaluations) == {"train_eval_loss", "train_eval_accuracy"}  # validation: test
    # The same rows dense: the stacked engine takes them.
    dense = datasets.PreparedData({**data.arrays, "x_train": x_train.to_dense(), "x_test": x_test.to_dense()})
    dense_runs = plan.plan_runs(params, (5, 6), [member], dense, [None])
    assert all(unit.stacked for unit in executor.plan_units(params, dense_runs))
