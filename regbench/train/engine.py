"""Training engines: Keras ``model.fit`` (the reference) and a compiled epoch loop.

Both return the per-epoch history ``model.fit`` reports: training-mode loss
(regularization included) and accuracy averaged over the epoch's batches,
weighted by batch size, and inference-mode validation loss and accuracy at the
end of each epoch. ``reg_loss`` is the regularization penalty at the end of the
epoch. A non-finite loss stops the run and marks it diverged.

Why a second engine: Keras' per-epoch machinery costs about 50 ms while the
circles model's arithmetic takes 0.1 ms, so 4,000 epochs take minutes with
``fit``. The compiled engine runs a chunk of epochs (shuffle, train steps,
validation) inside one ``tf.function`` and is reused across repeats and folds
by resetting weights rather than rebuilding, so it is traced once per model.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from regbench.config import VariantParams
from regbench.data.sparse import BinaryCsr
from regbench.train.models import (
    ModelSpec,
    build_model,
    build_optimizer,
    compile_model,
    regularization_penalty,
    undecayed_weights,
)
from regbench.train.records import EPOCH_METRICS as METRICS
from regbench.train.run import FitData, History, binary_targets  # noqa: F401 (binary_targets: re-exported)

ProgressFn = Callable[[int, dict[str, float]], None]
# Up to this width the sparse first layer uses tf.sparse.sparse_dense_matmul, above it segment sums
# (see multi_hot_matmul for the measurements).
SPARSE_MATMUL_MAX_UNITS = 32
# Keras' random state (set_random_seed, the weight initializers) is one per process. Trainers that train
# side by side build, trace and reset under this lock, so a run's initial weights and dropout seeds come
# from its own seed whatever the other threads do.
GLOBAL_RANDOM_STATE = threading.RLock()


def epoch_orders(n: int, epochs: int, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
    """Row order for each epoch: a fresh permutation per epoch, or the given order."""
    if not shuffle:
        return np.broadcast_to(np.arange(n, dtype=np.int32), (epochs, n)).copy()
    return np.stack([rng.permutation(n).astype(np.int32) for _ in range(epochs)])


# --- reference engine: model.fit --------------------------------------------------


class _DenseBatches(keras.utils.PyDataset):
    """Densify a BinaryCsr a batch at a time so the full dense matrix never exists."""

    def __init__(self, x: BinaryCsr, y: np.ndarray, batch_size: int, orders: np.ndarray | None):
        super().__init__()
        self.x, self.y, self.batch_size, self.orders = x, y, batch_size, orders
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index: int):
        order = self.orders[min(self.epoch, len(self.orders) - 1)] if self.orders is not None else None
        rows = np.arange(index * self.batch_size, min((index + 1) * self.batch_size, len(self.y)))
        if order is not None:
            rows = order[rows]
        return self.x.to_dense(rows), self.y[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self, history: History, progress: ProgressFn | None):
        super().__init__()
        self.history, self.progress = history, progress

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = dict(logs or {})
        logs["reg_loss"] = regularization_penalty(self.model)
        if not self.history.append(logs):
            self.model.stop_training = True
        elif self.progress is not None:
            self.progress(epoch + 1, logs)


class FitTrainer:
    """Reference engine: a fresh model per run, trained with ``model.fit`` as the tutorials do."""

    def __init__(self, params: VariantParams, input_dim: int, output_dim: int):
        self.params, self.spec = params, ModelSpec.of(params, input_dim, output_dim)
        self.model: keras.Model | None = None

    def train(
        self,
        data: FitData,
        seed: int,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> History:
        if cancel is not None and cancel.is_set():
            raise RuntimeError("training cancelled")
        keras.utils.set_random_seed(seed)
        self.model = build_model(self.spec)
        return fit_model(self.model, self.params, data, seed, progress)

    def final_metrics(self, x, y) -> dict[str, float]:
        if isinstance(x, BinaryCsr):
            x = _DenseBatches(x, y, 1024, None)
            loss, accuracy = self.model.evaluate(x, verbose=0)
        else:
            loss, accuracy = self.model.evaluate(x, y, batch_size=self.params.batch_size, verbose=0)
        return {"loss": float(loss), "accuracy": float(accuracy)}


def fit_model(
    model: keras.Model,
    params: VariantParams,
    data: FitData,
    seed: int,
    progress: ProgressFn | None = None,
) -> History:
    """Train ``model`` (already built and initialized) with ``model.fit``."""
    compile_model(model, params)
    history = History()
    started = time.perf_counter()
    callbacks = [_EpochRecorder(history, progress)]
    if isinstance(data.x_train, BinaryCsr):
        orders = epoch_orders(len(data.y_train), params.epochs, params.shuffle, np.random.default_rng([seed, 1]))
        train = _DenseBatches(data.x_train, data.y_train, params.batch_size, orders)
        val = _DenseBatches(data.x_val, data.y_val, max(params.batch_size, 1024), None)
        model.fit(train, validation_data=val, epochs=params.epochs, verbose=0, callbacks=callbacks)
    else:
        model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=params.epochs,
            batch_size=params.batch_size,
            shuffle=params.shuffle,
            verbose=0,
            callbacks=callbacks,
        )
    history.seconds = time.perf_counter() - started
    return history


# --- compiled engines (this one and stacked.StackedTrainer) ------------------------


def correct_predictions(tf, y, predictions, categorical: bool):
    """1.0 where a prediction is right, as Keras' accuracy counts it (argmax, or a 0.5 threshold).

    Works on (batch, outputs) and on stacked (runs, batch, outputs) tensors.
    """
    if categorical:
        return tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(predictions, -1)), tf.float32)
    return tf.cast(tf.equal(y, tf.cast(predictions > 0.5, tf.float32)), tf.float32)[..., 0]


def next_chunk(chunk_seconds: float, elapsed: float, epochs_run: int, epochs_left: int) -> int:
    """Epochs for the next compiled call, sized from the last one's speed (the first includes tracing)."""
    per_epoch = elapsed / epochs_run
    return int(max(1, min(chunk_seconds / max(per_epoch, 1e-6), epochs_left)))


def multi_hot_matmul(tf, words, kernel, by_column=None):
    """A multi-hot batch times ``kernel``, computed from the words' column ids without densifying the batch.

    ``words`` is a ragged batch of column ids (int32). ``by_column``, when given, is the stable order
    of its nonzeros by column (``column_order``, computed on the host); else the gradient sorts them.
    Measured on IMDB batches of 512 on 2 cores, forward plus backward of the first layer, dense product /
    sparse_dense_matmul / segment sums: 24 / 5.5 / 10 ms at 16 units, 31 / 31 / 13 ms at 64 and 96 / 176
    / 37 ms at 512. sparse_dense_matmul's gradient runs on one core and slows down with width; the
    segment sums pay a sort of the nonzeros by column instead.
    """
    rows = tf.cast(words.value_rowids(), tf.int32)
    columns = words.flat_values
    n_rows = words.nrows(out_type=tf.int32)
    if kernel.shape[-1] <= SPARSE_MATMUL_MAX_UNITS:
        coordinates = tf.cast(tf.stack([rows, columns], axis=1), tf.int64)
        batch = tf.SparseTensor(
            coordinates, tf.ones(tf.shape(columns), tf.float32), tf.cast([n_rows, tf.shape(kernel)[0]], tf.int64)
        )
        return tf.sparse.sparse_dense_matmul(batch, kernel)

    @tf.custom_gradient
    def product(kernel):
        def gradient(upstream):
            # batch^T @ upstream is the same kind of segment sum once the nonzeros are ordered by column.
            order = tf.argsort(columns, stable=True) if by_column is None else by_column
            return tf.sparse.segment_sum(
                upstream,
                tf.gather(rows, order),
                tf.gather(columns, order),
                num_segments=tf.shape(kernel)[0],
            )

        return tf.sparse.segment_sum(kernel, columns, rows, num_segments=n_rows), gradient

    return product(kernel)


def column_order(x: BinaryCsr, orders: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For every training batch of ``orders`` (epochs x rows), the stable order of its nonzeros by column.

    The wide sparse layer's gradient sums the batch's nonzeros column by column. Sorting them in the graph
    (``tf.argsort``, a TopKV2) took 0.27 s of imdb-bigger's 2.2 s epoch on one core; NumPy's stable radix
    sort of the 16-bit column ids takes 0.02 s for the whole epoch. A stable order is unique, so the
    gradient is the same to the bit. Returns the orders of all batches, concatenated, and their offsets.
    """
    # 16-bit ids get NumPy's radix sort; the prepared IMDB ids are uint16 already.
    small = x.n_columns <= 2**16 and x.indices.dtype.itemsize > 2
    csr = BinaryCsr(x.indptr, x.indices.astype(np.uint16), x.n_columns) if small else x
    pieces = [
        np.argsort(csr.take(epoch_order[start : start + batch_size]).indices, kind="stable").astype(np.int32)
        for epoch_order in orders
        for start in range(0, orders.shape[1], batch_size)
    ]
    offsets = np.concatenate([[0], np.cumsum([len(piece) for piece in pieces])]).astype(np.int64)
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.int32)), offsets


def graph_loop(tf, count, body, state, unroll: int = 0):
    """``state = body(i, state)`` for ``i`` in ``range(count)``, inside a traced function.

    The compiled chunks are traced with AutoGraph off: converting their source
    (and every function they call) took most of the 1.1-1.3 s a circles stage
    spent tracing, so the loops are built here instead. A loop whose ``count``
    is a Python int no larger than ``unroll`` is written out: a graph
    while-loop costs a fixed overhead per iteration that dwarfs a tiny model's
    step (circles: one batch per epoch).
    """
    if isinstance(count, int) and count <= unroll:
        for i in range(count):
            state = body(i, state)
        return state
    _, state = tf.while_loop(lambda i, _: i < count, lambda i, inner: (i + 1, body(i, inner)), (tf.constant(0), state))
    return state


def epochs_program(tf, n_epochs, train, validate, zeros, penalty, sizes, unroll: int = 0, axis: int = 0):
    """The compiled chunk of both compiled engines (per-run and stacked): ``n_epochs`` epochs, in the graph.

    An epoch runs the training batches (``train = (count, step(epoch, batch, sums))``), then the
    validation batches (``validate = (count, step(batch, sums))``), each summing (loss, correct) from
    ``zeros()``, and writes the row ``METRICS`` lists: loss and accuracy over the training rows, the
    validation loss plus the penalty at the epoch's end, validation accuracy, the penalty. ``sizes()``
    gives (training rows, validation rows). Only the steps (the model's forward pass, its weights'
    shapes) differ between the engines; a stacked engine's sums carry a leading run axis (its rows:
    ``axis=1``, epoch x run x metric).
    """
    n_batches, train_step = train
    n_val_batches, val_step = validate

    def epoch_step(epoch, rows):
        # Zeros made inside the body are constants Grappler folds away: with one batch per epoch
        # the epoch's loss is then that batch's loss exactly, not loss * size / size.
        start = zeros()
        loss_sum, correct_sum = graph_loop(
            tf, n_batches, lambda batch, sums: train_step(epoch, batch, sums), (start, start), unroll
        )
        val_loss_sum, val_correct = graph_loop(tf, n_val_batches, val_step, (start, start), unroll)
        reg = penalty()
        n_train, n_val = sizes()
        row = [loss_sum / n_train, correct_sum / n_train, val_loss_sum / n_val + reg]
        return rows.write(epoch, tf.stack([*row, val_correct / n_val, reg], axis=axis))

    return graph_loop(tf, n_epochs, epoch_step, tf.TensorArray(tf.float32, size=n_epochs)).stack()


def in_chunks(
    epochs: int,
    chunk_seconds: float,
    run_chunk: Callable[[int, int], np.ndarray],
    take: Callable[[int, np.ndarray], bool],
    cancel: threading.Event | None = None,
) -> None:
    """The host side of both compiled engines: run the epochs in compiled chunks of about ``chunk_seconds``.

    ``run_chunk(first_epoch, count)`` returns the chunk's rows (one per epoch); ``take(epochs_done, rows)``
    records them and returns False to stop early (every run diverged). Stops between chunks once
    ``cancel`` is set (a run training side by side failed).
    """
    epoch, chunk = 0, 1
    while epoch < epochs:
        if cancel is not None and cancel.is_set():
            raise RuntimeError("training cancelled")
        started = time.perf_counter()
        rows = run_chunk(epoch, chunk)
        elapsed = time.perf_counter() - started
        epoch += len(rows)
        if not take(epoch, rows):
            return
        chunk = next_chunk(chunk_seconds, elapsed, len(rows), epochs - epoch)


def deterministic_ops() -> None:
    """TensorFlow's op determinism (``train.deterministic``), before anything trains: the same seed gives the
    same bits on one machine, and on a GPU an op without a deterministic kernel raises instead of varying.
    Other Keras backends have nothing to turn on."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def tensorflow_backend():
    """The ``tensorflow`` module, or a clear error when Keras runs on another backend."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"the compiled engine needs the TensorFlow backend (KERAS_BACKEND={keras.backend.backend()}); "
            "set train.engine: fit in params.yaml to train with model.fit on this backend"
        )
    import tensorflow as tf

    return tf


class CompiledTrainer:
    """One model, optimizer and compiled epoch loop, reused for every repeat and fold.

    ``train(seed, data)`` re-initializes weights, optimizer state and dropout
    seeds from ``seed`` and runs the epochs in chunks of about ``chunk_seconds``.
    TensorFlow backend only (it uses ``tf.function`` and ``tf.GradientTape``).
    """

    def __init__(
        self,
        params: VariantParams,
        input_dim: int,
        output_dim: int,
        sparse: bool,
        chunk_seconds: float,
    ):
        self.tf = tf = tensorflow_backend()
        self.params, self.input_dim, self.output_dim = params, input_dim, output_dim
        self.sparse, self.chunk_seconds = sparse, chunk_seconds
        self.spec = ModelSpec.of(params, input_dim, output_dim)
        with GLOBAL_RANDOM_STATE:
            self.model = build_model(self.spec)
            self.optimizer = build_optimizer(params.optimizer, undecayed_weights(self.model))
            self.optimizer.build(self.model.trainable_variables)
        self._optimizer_initial = [v.numpy() for v in self.optimizer.variables]
        self._loss = keras.losses.get(params.loss)
        self._categorical = params.loss == "categorical_crossentropy"
        self._has_penalty = self.spec.l2 > 0 or self.spec.l1 > 0
        # The sparse first-layer path needs the multi-hot rows to reach the first Dense layer unchanged.
        self._first, self._rest = None, []
        if sparse and self.spec.input_dropout == 0:
            layers = [layer for layer in self.model.layers if not isinstance(layer, keras.layers.InputLayer)]
            self._first, self._rest = layers[0], layers[1:]
        # Host-side column orders for the wide sparse layer's gradient (column_order); empty otherwise.
        self._host_order = self._first is not None and self.spec.layer_sizes[1] > SPARSE_MATMUL_MAX_UNITS
        signature = [self._x_spec(), tf.TensorSpec([None, output_dim], tf.float32)] * 2
        signature.append(tf.TensorSpec([None, None], tf.int32))
        signature += [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64)]
        self._run_chunk = tf.function(self._chunk, input_signature=signature, autograph=False)

    def _x_spec(self):
        tf = self.tf
        if self.sparse:
            return tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1, row_splits_dtype=tf.int64)
        return tf.TensorSpec([None, self.input_dim], tf.float32)

    def _rows(self, x, index):
        """Dense float rows of ``x`` at ``index``; a ragged x is densified here, per batch."""
        tf = self.tf
        if not self.sparse:
            return tf.gather(x, index)
        picked = tf.gather(x, index)
        coordinates = tf.stack([tf.cast(picked.value_rowids(), tf.int32), picked.flat_values], axis=1)
        ones = tf.ones(tf.shape(coordinates)[0], tf.float32)
        return tf.scatter_nd(coordinates, ones, [tf.shape(index)[0], self.input_dim])

    def _predict(self, x, index, training: bool, by_column=None):
        """The model's output for rows ``index`` of ``x``.

        With sparse multi-hot inputs the first layer is a sparse product over
        each review's words (129 of 10,000 on average) instead of a product
        with a dense, 98.7 % zero batch.
        """
        tf = self.tf
        if self._first is None:
            return self.model(self._rows(x, index), training=training)
        kernel = tf.convert_to_tensor(self._first.kernel)
        h = multi_hot_matmul(tf, tf.gather(x, index), kernel, by_column) + self._first.bias
        h = self._first.activation(h)
        for layer in self._rest:
            h = layer(h, training=training)
        return h

    def _correct(self, y, predictions):
        return correct_predictions(self.tf, y, predictions, self._categorical)

    def _penalty(self):
        return self.tf.add_n(self.model.losses) if self._has_penalty else self.tf.constant(0.0)

    def _chunk(self, x_train, y_train, x_val, y_val, orders, by_column, by_column_offsets):
        tf = self.tf
        batch_size = self.params.batch_size
        n_train = tf.shape(orders)[1]
        n_batches = (n_train + batch_size - 1) // batch_size
        n_val = tf.shape(y_val)[0]
        val_batch = 1024 if self.sparse else 8192
        n_val_batches = (n_val + val_batch - 1) // val_batch
        variables = self.model.trainable_variables

        def train_step(epoch, batch, sums):
            index = orders[epoch, batch * batch_size : (batch + 1) * batch_size]
            y_batch = tf.gather(y_train, index)
            order = None
            if self._host_order:
                at = epoch * n_batches + batch
                order = by_column[by_column_offsets[at] : by_column_offsets[at + 1]]
            with tf.GradientTape() as tape:
                predictions = self._predict(x_train, index, training=True, by_column=order)
                loss = tf.reduce_mean(self._loss(y_batch, predictions)) + self._penalty()
            gradients = tape.gradient(loss, variables)
            self.optimizer.apply(gradients, variables)
            size = tf.cast(tf.shape(index)[0], tf.float32)
            return sums[0] + loss * size, sums[1] + tf.reduce_sum(self._correct(y_batch, predictions))

        def val_step(batch, sums):
            index = tf.range(batch * val_batch, tf.minimum((batch + 1) * val_batch, n_val))
            y_batch = tf.gather(y_val, index)
            predictions = self._predict(x_val, index, training=False)
            loss = tf.reduce_sum(self._loss(y_batch, predictions))
            return sums[0] + loss, sums[1] + tf.reduce_sum(self._correct(y_batch, predictions))

        return epochs_program(
            tf,
            tf.shape(orders)[0],
            (n_batches, train_step),
            (n_val_batches, val_step),
            zeros=lambda: tf.constant(0.0),
            penalty=self._penalty,
            sizes=lambda: (tf.cast(n_train, tf.float32), tf.cast(n_val, tf.float32)),
        )

    def trace(self) -> None:
        """Trace the compiled chunk now (from its input signature, without running it)."""
        with GLOBAL_RANDOM_STATE:
            self._run_chunk.get_concrete_function()

    def reset(self, seed: int) -> None:
        """Fresh initial weights, optimizer state and dropout seeds, all from ``seed``."""
        with GLOBAL_RANDOM_STATE:
            keras.utils.set_random_seed(seed)
            fresh = build_model(self.spec)
        for target, source in zip(self.model.weights, fresh.weights, strict=True):
            target.assign(source)
        for variable, initial in zip(self.optimizer.variables, self._optimizer_initial, strict=True):
            variable.assign(initial)
        for layer, fresh_layer in zip(self.model.layers, fresh.layers, strict=True):
            if hasattr(layer, "seed_generator"):
                layer.seed_generator.state.assign(fresh_layer.seed_generator.state.value)

    def _tensor(self, x):
        tf = self.tf
        if isinstance(x, BinaryCsr):
            return tf.RaggedTensor.from_row_splits(
                tf.constant(x.indices.astype(np.int32)), tf.constant(x.indptr), validate=False
            )
        return tf.constant(x, tf.float32)

    def train(
        self,
        data: FitData,
        seed: int,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> History:
        """Train from ``seed``; stops between chunks once ``cancel`` is set (a side-by-side run failed)."""
        self.reset(seed)
        params = self.params
        orders = epoch_orders(len(data.y_train), params.epochs, params.shuffle, np.random.default_rng([seed, 1]))
        inputs = (self._tensor(data.x_train), data.y_train, self._tensor(data.x_val), data.y_val)
        history = History()
        started = time.perf_counter()

        def run_chunk(epoch: int, count: int) -> np.ndarray:
            chunk_orders = orders[epoch : epoch + count]
            by_column = (
                column_order(data.x_train, chunk_orders, params.batch_size)
                if self._host_order
                else (np.zeros(0, np.int32), np.zeros(1, np.int64))
            )
            return self._run_chunk(*inputs, chunk_orders, *by_column).numpy()

        def take(epoch: int, rows: np.ndarray) -> bool:
            for row in rows:
                logs = dict(zip(METRICS, row.tolist(), strict=True))
                if not history.append(logs):
                    return False
            if progress is not None:
                progress(epoch, logs)
            return True

        in_chunks(params.epochs, self.chunk_seconds, run_chunk, take, cancel)
        history.seconds = time.perf_counter() - started
        return history

    def final_metrics(self, x, y) -> dict[str, float]:
        """Inference-mode loss (with penalty) and accuracy on another set, e.g. a held-out test set."""
        loss, accuracy = self._run_eval(self._tensor(x), y)
        return {"loss": loss, "accuracy": accuracy}

    def _run_eval(self, x, y) -> tuple[float, float]:
        tf = self.tf
        losses, correct = [], []
        for start in range(0, len(y), 1024):
            index = tf.range(start, min(start + 1024, len(y)))
            predictions = self._predict(x, index, training=False)
            y_batch = tf.gather(y, index)
            losses.append(float(tf.reduce_sum(self._loss(y_batch, predictions))))
            correct.append(float(tf.reduce_sum(self._correct(y_batch, predictions))))
        return sum(losses) / len(y) + float(self._penalty()), sum(correct) / len(y)


def side_by_side(tasks: Sequence[Callable[[threading.Event], object]], threads: int) -> list:
    """Run ``tasks`` in a pool of ``threads`` (the compiled chunks run without the GIL); results in task order.

    Each task gets the same cancel event, set once any task fails (or the stage is interrupted), so the
    others stop at their next chunk instead of training on. Stacked parts and per-run trainers both use it.
    """
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="train") as pool:
        futures = [pool.submit(task, cancel) for task in tasks]
        try:
            return [future.result() for future in futures]
        except BaseException:
            cancel.set()
            raise


def one_thread_per_op() -> None:
    """Run each op on one thread, so trainers training side by side keep one core each.

    Measured on the circles grid (45 runs, 2 cores), 1,000 epochs took 14-18 s as one stacked part with
    TensorFlow's default thread pool, 14-16 s as two parts sharing it, and 10-11 s as two parts with one
    thread per op; imdb-bigger's per-run trainer took 2.2 s per epoch with one thread per op and 3.0 s with
    the pool, under the same load, with identical histories. TensorFlow fixes its pool when it starts; where
    it has started already (tests train in-process) the pool is left as it is, which changes speed only.
    """
    tf = tensorflow_backend()
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)


def make_trainer(
    engine: str,
    params: VariantParams,
    input_dim: int,
    output_dim: int,
    sparse: bool,
    chunk_seconds: float,
):
    if engine == "fit":
        return FitTrainer(params, input_dim, output_dim)
    return CompiledTrainer(params, input_dim, output_dim, sparse, chunk_seconds)
