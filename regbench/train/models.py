"""The network a variant describes (``ModelSpec``) and its Keras model, with Keras APIs only (any backend)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras

from regbench.config import OptimizerParams, VariantParams


@dataclass(frozen=True)
class ModelSpec:
    """The network a variant trains, the one description every engine builds from.

    ``[Dropout(input)] -> (Dense -> [Dropout]) per hidden layer -> Dense(output)``. L2, L1 and max-norm
    apply to the hidden kernels only, as in the tutorials (and so does the optimizer's weight decay:
    ``undecayed_weights``). ``build_model`` makes it a Keras model;
    ``stacked.StackedTrainer`` writes the same network for stacked weights and refuses a spec with a
    field it does not implement (``stacked.IMPLEMENTED``).
    """

    input_dim: int
    hidden: tuple[int, ...]
    output_dim: int
    activation: str
    # sigmoid for binary cross-entropy, softmax for categorical.
    output_activation: str
    input_dropout: float
    hidden_dropout: float
    l2: float
    l1: float
    max_norm: float | None

    @classmethod
    def of(cls, params: VariantParams, input_dim: int, output_dim: int) -> ModelSpec:
        return cls(
            input_dim=input_dim,
            hidden=tuple(params.hidden),
            output_dim=output_dim,
            activation=params.activation,
            output_activation="sigmoid" if params.loss == "binary_crossentropy" else "softmax",
            input_dropout=params.input_dropout,
            hidden_dropout=params.hidden_dropout,
            l2=params.l2,
            l1=params.l1,
            max_norm=params.max_norm,
        )

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Inputs and outputs of the Dense layers: input, hidden..., output."""
        return (self.input_dim, *self.hidden, self.output_dim)


def build_model(spec: ModelSpec) -> keras.Model:
    """The Keras model of ``spec``."""
    inputs = keras.Input(shape=(spec.input_dim,), name="features")
    x = inputs
    if spec.input_dropout > 0:
        x = keras.layers.Dropout(spec.input_dropout, name="input_dropout")(x)
    for index, units in enumerate(spec.hidden, start=1):
        x = keras.layers.Dense(
            units,
            activation=spec.activation,
            kernel_regularizer=kernel_regularizer(spec),
            kernel_constraint=keras.constraints.MaxNorm(spec.max_norm) if spec.max_norm else None,
            name=f"hidden_{index}",
        )(x)
        if spec.hidden_dropout > 0:
            x = keras.layers.Dropout(spec.hidden_dropout, name=f"hidden_dropout_{index}")(x)
    outputs = keras.layers.Dense(spec.output_dim, activation=spec.output_activation, name="output")(x)
    return keras.Model(inputs, outputs, name="regbench_mlp")


def kernel_regularizer(spec: ModelSpec) -> keras.regularizers.Regularizer | None:
    """Keras' penalty on a hidden kernel: L2 (factor * sum of squares), L1 (factor * sum of |w|), or both."""
    if spec.l1 > 0 and spec.l2 > 0:
        return keras.regularizers.L1L2(l1=spec.l1, l2=spec.l2)
    if spec.l1 > 0:
        return keras.regularizers.L1(spec.l1)
    if spec.l2 > 0:
        return keras.regularizers.L2(spec.l2)
    return None


def undecayed_weights(model: keras.Model) -> list:
    """The trainable weights weight decay leaves alone: all but the hidden kernels (biases, output layer)."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    hidden = {id(layer.kernel) for layer in dense if layer.name != "output"}
    return [w for w in model.trainable_weights if id(w) not in hidden]


def learning_rate(params: OptimizerParams) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The constant learning rate, or its decay schedule (evaluated by the optimizer at each step)."""
    decay = params.decay
    if decay is None:
        return params.learning_rate
    if decay.kind == "inverse_time":
        return keras.optimizers.schedules.InverseTimeDecay(params.learning_rate, decay.steps, decay.rate)
    if decay.kind == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(params.learning_rate, decay.steps, decay.rate)
    raise ValueError(f"unknown learning-rate decay {decay.kind!r}; use inverse_time or exponential")


def build_optimizer(params: OptimizerParams, undecayed: Sequence) -> keras.optimizers.Optimizer:
    """The Keras optimizer of ``params``; with weight decay, every weight but ``undecayed`` decays.

    Keras applies decoupled weight decay inside ``apply``, before the gradient step and from the same
    weights' values: ``w -= learning_rate * weight_decay * w`` (keras/src/optimizers/base_optimizer.py,
    ``_apply_weight_decay``); ``exclude_from_weight_decay`` must name the exceptions before the build.
    """
    rate = learning_rate(params)
    decay = params.weight_decay if params.weight_decay > 0 else None
    if params.name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=rate, momentum=params.momentum, weight_decay=decay)
    elif params.name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=rate, weight_decay=decay)
    elif params.name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(learning_rate=rate, weight_decay=decay)
    else:
        raise ValueError(f"unknown optimizer {params.name!r}; use adam, sgd or rmsprop")
    if decay is not None:
        optimizer.exclude_from_weight_decay(var_list=list(undecayed))
    return optimizer


def compile_model(model: keras.Model, params: VariantParams) -> keras.Model:
    optimizer = build_optimizer(params.optimizer, undecayed_weights(model))
    model.compile(optimizer=optimizer, loss=params.loss, metrics=["accuracy"])
    return model


def regularization_penalty(model: keras.Model) -> float:
    """The summed regularization losses at the current weights (0.0 when there are none)."""
    losses = model.losses
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in losses)) if losses else 0.0
