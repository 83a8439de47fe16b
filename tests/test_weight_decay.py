"""Decoupled weight decay is the L2 gradient step under plain SGD, in every engine, and not under RMSprop.

With an L2 penalty l2 * sum(w**2) SGD steps w -= lr * (g + 2 * l2 * w); Keras' weight decay steps
w -= lr * weight_decay * w, then w -= lr * g from the same w. So weight_decay = 2 * l2 gives the same
weights, up to float rounding, epoch by epoch, from the same initial weights and batches.
"""

import dataclasses

import keras
import numpy as np
import pytest

from regbench import config
from regbench.train import engine, models, stacked
from regbench.train.run import Run
from tests.test_models_engine import toy_data, trainer_for, variant

L2 = 0.01
EPOCHS = 4
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def pair(name: str, **optimizer) -> tuple[config.VariantParams, config.VariantParams]:
    """(L2, weight decay) variants of a tiny sonar model, the decay being the L2 gradient's factor."""
    base = variant("sonar", "baseline", hidden=(8, 4), epochs=EPOCHS, batch_size=8)
    chosen = config.OptimizerParams(name, 0.1 if name == "sgd" else 0.01, **optimizer)
    with_l2 = dataclasses.replace(base, optimizer=chosen, l2=L2)
    decayed = dataclasses.replace(base, optimizer=dataclasses.replace(chosen, weight_decay=2 * L2))
    return with_l2, decayed


def fit_weights_per_epoch(params: config.VariantParams, data: engine.FitData, seed: int) -> list[list[np.ndarray]]:
    """model.fit (the reference engine's model and optimizer): every weight after every epoch."""
    keras.utils.set_random_seed(seed)
    model = models.compile_model(models.build_model(models.ModelSpec.of(params, 6, 1)), params)
    seen: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(model.get_weights()))
    model.fit(data.x_train, data.y_train, epochs=params.epochs, batch_size=params.batch_size, shuffle=False, verbose=0,
              callbacks=[record])  # fmt: skip
    return seen


def stacked_weights_per_epoch(params: config.VariantParams, datas, seeds) -> list[list[np.ndarray]]:
    """The stacked engine, one epoch per ``fit`` call (weights and optimizer state carry over)."""
    one_epoch = dataclasses.replace(params, epochs=1)
    jobs = [Run.alone(one_epoch, seed, data) for data, seed in zip(datas, seeds, strict=True)]
    trainer = stacked.StackedTrainer(one_epoch, 6, 1, len(jobs), 32, 32, 1.0)
    trainer.reset(jobs)
    seen = []
    for _ in range(params.epochs):
        trainer.fit(jobs)
        seen.append([variable.numpy() for variable in trainer.variables])
    return seen


def data_loss(history: engine.History) -> np.ndarray:
    """Validation loss without the penalty term: what an L2 model and a weight-decay model report alike."""
    return np.asarray(history.metrics["val_loss"]) - np.asarray(history.metrics["reg_loss"])


def test_weight_decay_equals_l2_under_plain_sgd_in_model_fit_epoch_by_epoch():
    with_l2, decayed = pair("sgd")
    data = toy_data(seed=0)
    for ours, theirs in zip(
        fit_weights_per_epoch(decayed, data, 3), fit_weights_per_epoch(with_l2, data, 3), strict=True
    ):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, **TOLERANCE)


def test_weight_decay_equals_l2_under_plain_sgd_in_the_stacked_engine_epoch_by_epoch():
    with_l2, decayed = pair("sgd")
    datas, seeds = [toy_data(seed=0), toy_data(seed=1)], [3, 4]
    for ours, theirs in zip(
        stacked_weights_per_epoch(decayed, datas, seeds), stacked_weights_per_epoch(with_l2, datas, seeds), strict=True
    ):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, **TOLERANCE)


def test_weight_decay_equals_l2_under_plain_sgd_in_the_compiled_engine():
    with_l2, decayed = pair("sgd")
    data = toy_data(seed=0)
    runs = {}
    for name, params in (("l2", with_l2), ("decayed", decayed)):
        trainer = trainer_for(params)
        runs[name] = (trainer.train(data, 3), [keras.ops.convert_to_numpy(w) for w in trainer.model.weights])
    np.testing.assert_allclose(data_loss(runs["decayed"][0]), data_loss(runs["l2"][0]), **TOLERANCE)
    assert runs["decayed"][0].metrics["val_accuracy"] == runs["l2"][0].metrics["val_accuracy"]
    assert max(runs["decayed"][0].metrics["reg_loss"]) == 0.0 < min(runs["l2"][0].metrics["reg_loss"])
    for a, b in zip(runs["decayed"][1], runs["l2"][1], strict=True):
        np.testing.assert_allclose(a, b, **TOLERANCE)


@pytest.mark.parametrize("name", ["rmsprop", "momentum"])
def test_weight_decay_differs_from_l2_where_the_optimizer_rescales_or_accumulates_the_gradient(name):
    """The control: RMSprop divides the penalty's gradient per weight, momentum carries it over steps."""
    with_l2, decayed = pair("sgd", momentum=0.9) if name == "momentum" else pair(name)
    data = toy_data(seed=0)
    last_l2, last_decayed = fit_weights_per_epoch(with_l2, data, 3)[-1], fit_weights_per_epoch(decayed, data, 3)[-1]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(last_l2, last_decayed, strict=True)) > 1e-3


def test_weight_decay_leaves_biases_and_the_output_layer_alone():
    keras.utils.set_random_seed(0)
    # With dropout layers too, named hidden_dropout_<i>: they have no weights to decay.
    model = models.build_model(models.ModelSpec.of(variant("sonar", "baseline", hidden_dropout=0.2), 60, 1))
    undecayed = {id(w) for w in models.undecayed_weights(model)}
    decays = {w.path: id(w) not in undecayed for w in model.trainable_weights}
    assert decays == {
        "hidden_1/kernel": True,
        "hidden_1/bias": False,
        "hidden_2/kernel": True,
        "hidden_2/bias": False,
        "output/kernel": False,
        "output/bias": False,
    }
