"""The network a variant describes (``ModelSpec``) and its Keras model, with Keras APIs only (any backend)."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from regbench.config import OptimizerParams, VariantParams


@dataclass(frozen=True)
class ModelSpec:
    """The network a variant trains, the one description every engine builds from.

    ``[Dropout(input)] -> (Dense -> [Dropout]) per hidden layer -> Dense(output)``. L2 and max-norm
    apply to the hidden kernels only, as in the tutorials. ``build_model`` makes it a Keras model;
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
            kernel_regularizer=keras.regularizers.L2(spec.l2) if spec.l2 > 0 else None,
            kernel_constraint=keras.constraints.MaxNorm(spec.max_norm) if spec.max_norm else None,
            name=f"hidden_{index}",
        )(x)
        if spec.hidden_dropout > 0:
            x = keras.layers.Dropout(spec.hidden_dropout, name=f"hidden_dropout_{index}")(x)
    outputs = keras.layers.Dense(spec.output_dim, activation=spec.output_activation, name="output")(x)
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
