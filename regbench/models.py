"""Build the Keras model a variant describes, with Keras APIs only (any backend)."""

from __future__ import annotations

import keras

from regbench.config import OptimizerParams, VariantParams


def build_model(params: VariantParams, input_dim: int, output_dim: int) -> keras.Model:
    """[Dropout(input)] -> (Dense -> [Dropout]) per hidden layer -> Dense(output).

    L2 and max-norm apply to the hidden kernels only, as in the tutorials.
    """
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    if params.input_dropout > 0:
        x = keras.layers.Dropout(params.input_dropout, name="input_dropout")(x)
    for index, units in enumerate(params.hidden, start=1):
        x = keras.layers.Dense(
            units,
            activation=params.activation,
            kernel_regularizer=keras.regularizers.L2(params.l2) if params.l2 > 0 else None,
            kernel_constraint=keras.constraints.MaxNorm(params.max_norm) if params.max_norm else None,
            name=f"hidden_{index}",
        )(x)
        if params.hidden_dropout > 0:
            x = keras.layers.Dropout(params.hidden_dropout, name=f"hidden_dropout_{index}")(x)
    activation = "sigmoid" if params.loss == "binary_crossentropy" else "softmax"
    outputs = keras.layers.Dense(output_dim, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name="regbench_mlp")


def build_optimizer(params: OptimizerParams) -> keras.optimizers.Optimizer:
    if params.name == "sgd":
        return keras.optimizers.SGD(learning_rate=params.learning_rate, momentum=params.momentum)
    if params.name == "adam":
        return keras.optimizers.Adam(learning_rate=params.learning_rate)
    if params.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=params.learning_rate)
    raise ValueError(f"unknown optimizer {params.name!r}; use adam, sgd or rmsprop")


def compile_model(model: keras.Model, params: VariantParams) -> keras.Model:
    model.compile(optimizer=build_optimizer(params.optimizer), loss=params.loss, metrics=["accuracy"])
    return model


def regularization_penalty(model: keras.Model) -> float:
    """The summed regularization losses at the current weights (0.0 when there are none)."""
    losses = model.losses
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in losses)) if losses else 0.0
