"""Many runs of one architecture trained as one program: weights stacked along a leading run axis.

Why: a sonar or circles model does a few microseconds of arithmetic per step,
so the cost of a run is the per-step overhead of the compiled loop. Stacking
the repeats, folds and grid members of a variant (each with its own initial
weights, data order, dropout masks and dropout rate) pays that overhead once
for all of them. The optimizers the suite uses (SGD with momentum, Adam,
RMSprop) update every weight element by element, and the summed loss gives
each run the gradient of its own loss, so a stacked run follows the same
trajectory as a run trained alone from the same weights in the same batch
order (tested against ``model.fit``). Each run draws its dropout masks from a
stream of its own, keyed by its own seed (``dropout_key``), so a run's history does
not depend on which runs share its stack or how stacks are split into parts. The
masks differ from Keras' own stream: dropout runs agree with ``model.fit`` in
distribution only.

Dense inputs and the TensorFlow backend only; IMDB's sparse inputs use
``engine.CompiledTrainer``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from regbench.config import VariantParams
from regbench.train.engine import (
    METRICS,
    ProgressFn,
    correct_predictions,
    epoch_orders,
    epochs_program,
    in_chunks,
    one_thread_per_op,
    side_by_side,
    tensorflow_backend,
)
from regbench.train.models import ModelSpec, build_model, build_optimizer
from regbench.train.run import History, Run

# Batch loops of up to this many steps are written out (see engine.graph_loop).
UNROLL_STEPS = 2
# A group is split only into parts of at least this many runs: a small stack's step costs about the
# same whatever its number of runs (per-op overhead), so splitting a few runs saves nothing and each
# part is traced on its own. Measured on circles (4,000 epochs, 2 cores): 5 runs took 2.9-6.3 s as one
# part and 2.9-6.0 s as two; 45 runs 42-48 s as one and 35 s as two.
MIN_RUNS_PER_PART = 10
# Below this many multiply-adds per run and training step a stack's ops run faster on one thread each
# than split across TensorFlow's pool: circles dropout (5 runs, about 4e4 each) took 7-8 s that way
# against 11-13 s; MNIST (about 1.4e8 per run) needs the pool for its matrix products.
SMALL_STEP_FLOPS_PER_RUN = 2_000_000
# The ModelSpec fields this engine writes out in ``StackedTrainer._forward`` and ``_penalty``: a spec
# with any other field is refused (its runs train one at a time), never silently simplified.
IMPLEMENTED = frozenset(
    {"input_dim", "hidden", "output_dim", "activation", "output_activation", "input_dropout", "hidden_dropout"}
    | {"l2", "l1", "max_norm"}
)
# Hidden layers are padded with zero units to a multiple of this (16 float32 = 64 bytes, an AVX-512
# register): each run's slice of a stacked tensor then starts on the same alignment at every position
# in the stack. With 20 or 500 units it does not, and Eigen's kernels, which peel unaligned leading
# elements off one by one, sum a run in another order at odd positions than at even ones (measured:
# circles' seed 5 at position 5 of a stack differed from the same run at position 0 from epoch 50 on).
UNIT_ALIGNMENT = 16
# Spawn key that sets the dropout streams apart from anything else derived from a run's seed.
DROPOUT_STREAM = 0x64726F70

# Optimizers that update every weight element by element: on stacked weights each run then gets exactly
# its own update. One that looks at a whole tensor (a norm, as LAMB or clipnorm do) would mix the runs.
ELEMENTWISE_OPTIMIZERS = frozenset({"sgd", "adam", "rmsprop"})


def dropout_key(seed: int) -> int:
    """The key of a run's own dropout stream, from its seed alone (``Run.training_seed``: repeat and fold)."""
    return int(np.random.SeedSequence([seed, DROPOUT_STREAM]).generate_state(1, np.uint32)[0])


def group_key(job: Run) -> tuple:
    """Jobs with equal keys can share one stacked program: same architecture, optimizer and shapes.

    Dropout rates may differ (they are per-run inputs); the number of training
    and validation rows must not, so every run takes the same batches per epoch.
    """
    shared = dataclasses.replace(job.params, input_dropout=0.0, hidden_dropout=0.0)
    return (
        shared,
        len(job.data.y_train),
        len(job.data.y_val),
        job.data.x_train.shape[1],
        job.data.y_train.shape[1],
    )


def _same(arrays: Sequence[np.ndarray]) -> bool:
    first = arrays[0]
    return all(a is first or (a.shape == first.shape and np.array_equal(a, first)) for a in arrays)


def _pool(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays holding every run's rows, and each run's row offset into them.

    Runs on the same rows (repeats on one training set) share them, so MNIST is held once, not per run.
    """
    if _same(xs) and _same(ys):
        return xs[0], ys[0], np.zeros(len(xs), np.int32)
    offsets = np.cumsum([0] + [len(x) for x in xs[:-1]]).astype(np.int32)
    return np.concatenate(xs), np.concatenate(ys), offsets


class StackedTrainer:
    """Train the jobs of one group (see ``group_key``) together; returns one History per job."""

    def __init__(
        self,
        params: VariantParams,
        input_dim: int,
        output_dim: int,
        runs: int,
        n_train: int,
        n_val: int,
        chunk_seconds: float,
    ):
        self.tf = tf = tensorflow_backend()
        self.params, self.input_dim, self.output_dim, self.runs = params, input_dim, output_dim, runs
        # One more slot than runs: the last slot trains a copy of the last run and is thrown away. Eigen
        # computes exp/log/sigmoid on whole SIMD packets but the buffer's last few elements one by one,
        # with other rounding: without the spare slot the last run's bits would depend on its position.
        self.slots = slots = runs + 1
        self.n_train, self.n_val, self.chunk_seconds = n_train, n_val, chunk_seconds
        self.spec = spec = ModelSpec.of(params, input_dim, output_dim)
        reason = refusal(params)
        if reason is not None:
            raise ValueError(f"the stacked engine cannot train this variant: {reason}")
        self._categorical = spec.output_activation == "softmax"
        self._loss = keras.losses.get(params.loss)
        self._activation = keras.activations.get(spec.activation)
        # The hidden layers padded (UNIT_ALIGNMENT): input and output sizes are those of the data.
        self.sizes = sizes = [
            size if layer in (0, len(spec.layer_sizes) - 1) else -(-size // UNIT_ALIGNMENT) * UNIT_ALIGNMENT
            for layer, size in enumerate(spec.layer_sizes)
        ]
        # 1 for a hidden layer's real units, 0 for its padding: the padding outputs 0 whatever the
        # activation, so it takes no part in the predictions and its weights get zero gradients.
        self._unit_masks = [
            tf.constant(np.arange(padded) < real, tf.float32)
            for real, padded in zip(spec.layer_sizes[1:-1], sizes[1:-1], strict=True)
        ]
        self.kernels = [
            keras.Variable(np.zeros((slots, a, b), np.float32), name=f"kernel_{i}")
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        ]
        self.biases = [
            keras.Variable(np.zeros((slots, b), np.float32), name=f"bias_{i}") for i, b in enumerate(sizes[1:])
        ]
        self.variables = [v for pair in zip(self.kernels, self.biases, strict=True) for v in pair]
        # Weight decay, like the penalties, on the hidden kernels only (models.undecayed_weights).
        self.optimizer = build_optimizer(params.optimizer, [*self.biases, self.kernels[-1]])
        self.optimizer.build(self.variables)
        self._optimizer_initial = [v.numpy() for v in self.optimizer.variables]
        # Kernels of the hidden layers, as in models.build_model: the output layer is not regularized.
        self._max_norm = keras.constraints.MaxNorm(spec.max_norm, axis=1) if spec.max_norm else None
        x_spec = tf.TensorSpec([None, input_dim], tf.float32)
        y_spec = tf.TensorSpec([None, output_dim], tf.float32)
        signature = [
            x_spec,
            y_spec,
            tf.TensorSpec([None, slots, n_train], tf.int32),  # per epoch, per run: pool rows in batch order
            x_spec,
            y_spec,
            tf.TensorSpec([slots, n_val], tf.int32),  # per run: its validation rows in the pool
            tf.TensorSpec([slots], tf.float32),  # input dropout rate per run
            tf.TensorSpec([slots], tf.float32),  # hidden dropout rate per run
            tf.TensorSpec([slots], tf.int64),  # per run: the key of its own dropout stream
            tf.TensorSpec([], tf.int32),  # first epoch of the chunk
        ]
        self._run_chunk = tf.function(self._chunk, input_signature=signature, autograph=False)

    # --- the model, written for stacked weights ----------------------------------

    def _dropout(self, h, rate, keys, counter, real_units: int):
        """Each run's mask from its own stream: Philox keyed by the run, counter = (step, dropout site).

        One stateless draw per run rather than one for the stack: a shared draw would make a run's masks
        depend on its position in the stack and on the other runs there. Stateless ops are deterministic
        on GPU as on CPU.
        """
        tf = self.tf
        keep = 1.0 - rate[:, None, None]
        # Drawn for the real units only, then padded: a run's masks do not depend on the padding.
        shape = tf.stack([tf.shape(h)[1], real_units])
        uniform = tf.stack(
            [tf.random.stateless_uniform(shape, seed=tf.stack([keys[run], counter])) for run in range(self.slots)]
        )
        uniform = tf.pad(uniform, [[0, 0], [0, 0], [0, h.shape[-1] - real_units]])
        return tf.where(uniform < keep, h / keep, tf.zeros_like(h))

    def _forward(self, x, training: bool, rates=None, keys=None, step=None):
        """x: (runs, batch, features) -> predictions (runs, batch, outputs), as models.build_model's model.

        ``step`` numbers the training step from the run's start; each dropout site (the input, then every
        hidden layer) gets its own counter within it, so no two draws of a run ever share one.
        """
        tf = self.tf
        sites = 1 + len(self.kernels)
        h = x
        if training and self.spec.input_dropout > 0:
            h = self._dropout(h, rates[0], keys, step * sites, self.input_dim)
        for layer, (kernel, bias) in enumerate(zip(self.kernels[:-1], self.biases[:-1], strict=True)):
            h = self._activation(tf.matmul(h, kernel) + bias[:, None, :])
            if self.sizes[layer + 1] != self.spec.layer_sizes[layer + 1]:
                h = h * self._unit_masks[layer]
            if training and self.spec.hidden_dropout > 0:
                h = self._dropout(h, rates[1], keys, step * sites + 1 + layer, self.spec.layer_sizes[layer + 1])
        logits = tf.matmul(h, self.kernels[-1]) + self.biases[-1][:, None, :]
        return tf.nn.softmax(logits) if self._categorical else tf.sigmoid(logits)

    def _penalty(self):
        """Per run: the penalty of its hidden kernels (Keras' L2: factor * sum of squares; L1: of |w|)."""
        tf = self.tf
        terms = [
            factor * tf.reduce_sum(transform(k), axis=[1, 2])
            for factor, transform in ((self.spec.l2, tf.square), (self.spec.l1, tf.abs))
            if factor > 0
            for k in self.kernels[:-1]
        ]
        return tf.add_n(terms) if terms else tf.zeros([self.slots])

    def _correct(self, y, predictions):
        return correct_predictions(self.tf, y, predictions, self._categorical)

    def _chunk(self, x_pool, y_pool, orders, xv_pool, yv_pool, val_rows, input_rate, hidden_rate, keys, first_epoch):
        tf = self.tf
        batch_size = self.params.batch_size
        n_batches = math.ceil(self.n_train / batch_size)
        val_batch = max(1, 16384 // self.slots)
        n_val_batches = math.ceil(self.n_val / val_batch)
        rates = (input_rate, hidden_rate)

        def train_step(epoch, batch, sums):
            index = orders[epoch, :, batch * batch_size : (batch + 1) * batch_size]
            x_batch, y_batch = tf.gather(x_pool, index), tf.gather(y_pool, index)
            step = tf.cast((first_epoch + epoch) * n_batches + batch, tf.int64)
            with tf.GradientTape() as tape:
                predictions = self._forward(x_batch, True, rates, keys, step)
                losses = tf.reduce_mean(self._loss(y_batch, predictions), axis=1) + self._penalty()
                total = tf.reduce_sum(losses)
            gradients = tape.gradient(total, self.variables)
            self.optimizer.apply(gradients, self.variables)
            if self._max_norm is not None:
                for kernel in self.kernels[:-1]:
                    kernel.assign(self._max_norm(kernel))
            size = tf.cast(tf.shape(index)[1], tf.float32)
            correct = tf.reduce_sum(self._correct(y_batch, predictions), axis=1)
            return sums[0] + losses * size, sums[1] + correct

        def val_step(batch, sums):
            index = val_rows[:, batch * val_batch : (batch + 1) * val_batch]
            y_batch = tf.gather(yv_pool, index)
            predictions = self._forward(tf.gather(xv_pool, index), False)
            losses = tf.reduce_sum(self._loss(y_batch, predictions), axis=1)
            return sums[0] + losses, sums[1] + tf.reduce_sum(self._correct(y_batch, predictions), axis=1)

        return epochs_program(
            tf,
            tf.shape(orders)[0],
            (n_batches, train_step),
            (n_val_batches, val_step),
            zeros=lambda: tf.zeros([self.slots]),
            penalty=self._penalty,
            sizes=lambda: (self.n_train, self.n_val),
            unroll=UNROLL_STEPS,
            axis=1,
        )

    # --- running jobs ------------------------------------------------------------

    def reset(self, jobs: Sequence[Run]) -> None:
        """Each run starts from the weights ``build_model`` gives its own spec and seed; fresh optimizer state."""
        initial = []
        for job in _padded(jobs):
            # The run's own model, dropout layers included: creating them draws from the seeded
            # generators, so leaving them out would change the Dense layers' initial weights.
            keras.utils.set_random_seed(job.training_seed)
            model = build_model(ModelSpec.of(job.params, self.input_dim, self.output_dim))
            dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
            if len(model.trainable_weights) != len(self.variables):
                # A layer with weights of its own that the stacked network does not have: refuse, not drop.
                raise ValueError(
                    f"the Keras model has {len(model.trainable_weights)} trainable weights, the stacked "
                    f"network {len(self.variables)}: teach StackedTrainer the new layer or refuse its setting"
                )
            initial.append([keras.ops.convert_to_numpy(w) for layer in dense for w in (layer.kernel, layer.bias)])
        for index, variable in enumerate(self.variables):
            # Each run's weights in the corner of its padded slot; the padding is zero.
            stacked_weights = np.zeros(variable.shape, np.float32)
            for run, weights in enumerate(initial):
                stacked_weights[_in_slot(run, weights[index].shape)] = weights[index]
            variable.assign(stacked_weights)
        for variable, value in zip(self.optimizer.variables, self._optimizer_initial, strict=True):
            variable.assign(value)

    def run_weights(self, run: int) -> list[np.ndarray]:
        """One run's kernels and biases as its Keras model has them (without the padding)."""
        real = self.spec.layer_sizes
        shapes = [shape for a, b in zip(real[:-1], real[1:], strict=True) for shape in ((a, b), (b,))]
        return [variable.numpy()[_in_slot(run, shape)] for variable, shape in zip(self.variables, shapes, strict=True)]

    def train(self, jobs: Sequence[Run], progress: ProgressFn | None = None) -> list[History]:
        """Reset to the jobs' initial weights, then train them."""
        self.reset(jobs)
        started = time.perf_counter()
        histories = self.fit(jobs, progress)
        seconds = (time.perf_counter() - started) / len(jobs)
        for history in histories:
            history.seconds = seconds
        return histories

    def trace(self) -> None:
        """Build the compiled chunk now (it is otherwise built by the first call)."""
        self._run_chunk.get_concrete_function()

    def fit(
        self, jobs: Sequence[Run], progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> list[History]:
        """Train from the current weights (see ``reset``); stops between chunks once ``cancel`` is set.

        The histories' ``seconds`` are the caller's to set: runs trained side by side share wall time.
        """
        if len(jobs) != self.runs:
            raise ValueError(f"this trainer was built for {self.runs} runs, got {len(jobs)}")
        runs, jobs = len(jobs), _padded(jobs)
        tf = self.tf
        params = self.params
        x_pool, y_pool, x_offsets = _pool([job.data.x_train for job in jobs], [job.data.y_train for job in jobs])
        xv_pool, yv_pool, v_offsets = _pool([job.data.x_val for job in jobs], [job.data.y_val for job in jobs])
        n_train, n_val = self.n_train, self.n_val
        orders = np.stack(
            [
                epoch_orders(n_train, params.epochs, params.shuffle, np.random.default_rng([job.training_seed, 1]))
                + offset
                for job, offset in zip(jobs, x_offsets, strict=True)
            ],
            axis=1,
        )
        val_rows = np.stack([np.arange(n_val, dtype=np.int32) + offset for offset in v_offsets])
        rates = [
            tf.constant([getattr(job.params, name) for job in jobs], tf.float32)
            for name in ("input_dropout", "hidden_dropout")
        ]
        keys = tf.constant([dropout_key(job.training_seed) for job in jobs], tf.int64)
        inputs = [tf.constant(a, tf.float32) for a in (x_pool, y_pool)]
        val_inputs = [tf.constant(a, tf.float32) for a in (xv_pool, yv_pool)]
        histories = [History() for _ in range(runs)]
        alive = np.ones(runs, bool)

        def run_chunk(epoch: int, count: int) -> np.ndarray:
            return self._run_chunk(
                *inputs,
                tf.constant(orders[epoch : epoch + count]),
                *val_inputs,
                tf.constant(val_rows),
                *rates,
                keys,
                tf.constant(epoch, tf.int32),
            ).numpy()[:, :runs]

        def take(epoch: int, rows: np.ndarray) -> bool:
            for block in rows:
                for run, values in enumerate(block):
                    if alive[run]:
                        alive[run] = histories[run].append(dict(zip(METRICS, values.tolist(), strict=True)))
            if progress is not None and alive.any():
                progress(epoch, {m: float(np.mean(rows[-1, alive, i])) for i, m in enumerate(METRICS)})
            return bool(alive.any())

        in_chunks(params.epochs, self.chunk_seconds, run_chunk, take, cancel)
        return histories

    def evaluate(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Inference-mode loss (with penalty) and accuracy of each run on its own set (equal sizes)."""
        tf = self.tf
        xs, ys = [*xs, xs[-1]], [*ys, ys[-1]]  # the spare slot
        shared = _same(xs) and _same(ys)
        n = len(ys[0])
        loss_sum, correct = np.zeros(self.slots), np.zeros(self.slots)
        # In slices, so that runs sharing a large set (MNIST) never hold one copy each.
        step = max(1, 65536 // self.slots)

        def rows(arrays: Sequence[np.ndarray], start: int):
            part = [a[start : start + step] for a in (arrays[:1] if shared else arrays)]
            if shared:
                return tf.broadcast_to(tf.constant(part[0], tf.float32), [self.slots, *part[0].shape])
            return tf.constant(np.stack(part), tf.float32)

        for start in range(0, n, step):
            x, y = rows(xs, start), rows(ys, start)
            predictions = self._forward(x, False)
            loss_sum += tf.reduce_sum(self._loss(y, predictions), axis=1).numpy()
            correct += tf.reduce_sum(self._correct(y, predictions), axis=1).numpy()
        loss = loss_sum / n + self._penalty().numpy()
        return [
            {"loss": float(a), "accuracy": float(b)}
            for a, b in zip(loss[: self.runs], correct[: self.runs] / n, strict=True)
        ]


def _in_slot(run: int, shape: tuple[int, ...]) -> tuple:
    """The index of a run's own (unpadded) weights in its slot of a stacked, padded variable."""
    return (run, *(slice(0, n) for n in shape))


def _padded(jobs: Sequence[Run]) -> list[Run]:
    """The jobs and, in the spare slot (see ``StackedTrainer.slots``), a copy of the last."""
    return [*jobs, jobs[-1]]


def train_parts(
    jobs: Sequence[Run],
    parts: Sequence[Sequence[int]],
    chunk_seconds: float,
    progress: ProgressFn | None,
    on_done: Callable[[int, History, dict[str, float]], None],
    threads: int = 1,
) -> None:
    """Train each part (run indices into ``jobs``, from ``plan_parts``) as one stacked program;
    ``on_done(job_index, history, evaluations)`` for each run once all are trained.

    All parts train side by side in ``threads`` threads: one stacked program keeps about one core
    busy (its ops are too small to spread), and the compiled chunks run without the GIL. Every run
    draws its own dropout masks and TensorFlow's threading is chosen from the variant alone, so the
    parts and the other runs in a stack change the speed, never a run's history.

    ``evaluations`` holds inference-mode ``train_eval_loss``/``train_eval_accuracy`` on the run's
    training rows and, when the job has a test set, ``test_loss``/``test_accuracy``. The first part
    reports ``progress`` on behalf of all. A run's ``History.seconds`` is its share of the wall time
    of training all of them.
    """
    reason = unsupported(jobs)
    if reason is not None:
        raise ValueError(f"the stacked engine cannot train these runs: {reason} (train them with engine.make_trainer)")
    split = [list(part) for part in parts]
    input_dim, output_dim = jobs[0].data.input_dim, jobs[0].data.output_dim
    # From one run's size, not the stack's: the thread pool can change how a matrix product sums, so
    # a choice that followed the number of seeds or parts would make a run's bits depend on them.
    if _step_flops(jobs[0].params, input_dim, output_dim, 1) < SMALL_STEP_FLOPS_PER_RUN:
        one_thread_per_op()
    started = time.perf_counter()
    # Trainers are built, reset and traced here, one after another: reset seeds Keras' global
    # random state, so it must not run concurrently.
    trainers = []
    for indices in split:
        members = [jobs[i] for i in indices]
        shared = group_key(members[0])[0]
        # The part's architecture keeps a dropout layer wherever any of its runs has a non-zero rate.
        shared = dataclasses.replace(
            shared,
            input_dropout=max(j.params.input_dropout for j in members),
            hidden_dropout=max(j.params.hidden_dropout for j in members),
        )
        n_train, n_val = len(members[0].data.y_train), len(members[0].data.y_val)
        trainer = StackedTrainer(shared, input_dim, output_dim, len(members), n_train, n_val, chunk_seconds)
        trainer.reset(members)
        trainer.trace()
        trainers.append((trainer, members))
    if len(trainers) == 1:
        results = [trainers[0][0].fit(trainers[0][1], progress)]
    else:
        # The first part reports progress for all.
        fits = [
            functools.partial(trainer.fit, members, progress if number == 0 else None)
            for number, (trainer, members) in enumerate(trainers)
        ]
        results = side_by_side(fits, threads)
    seconds = (time.perf_counter() - started) / len(jobs)
    for indices, (trainer, members), histories in zip(split, trainers, results, strict=True):
        evaluations: list[dict[str, float]] = [{} for _ in members]
        sets = [j.evaluation_sets() for j in members]
        for prefix in sets[0]:
            xs, ys = [s[prefix][0] for s in sets], [s[prefix][1] for s in sets]
            for run, metrics in enumerate(trainer.evaluate(xs, ys)):
                if histories[run].status == "ok":
                    evaluations[run].update({f"{prefix}_{k}": v for k, v in metrics.items()})
        for index, history, evaluation in zip(indices, histories, evaluations, strict=True):
            history.seconds = seconds
            on_done(index, history, evaluation)


def plan_parts(jobs: Sequence[Run], parts: int) -> list[list[int]]:
    """The job indices of each stacked part: every group (``group_key``) split into up to ``parts``
    contiguous parts of at least ``MIN_RUNS_PER_PART`` runs.

    The one place that decides the stacking: the Ray executor sends exactly these parts as tasks.
    Stacking changes speed only (each run has its own streams), so this is free to change.
    """
    groups: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(group_key(job), []).append(index)
    return [
        [int(i) for i in part]
        for indices in groups.values()
        for part in np.array_split(indices, max(1, min(parts, len(indices) // MIN_RUNS_PER_PART)))
    ]


def _step_flops(params: VariantParams, input_dim: int, output_dim: int, runs: int) -> int:
    """Multiply-adds of one forward pass over a batch, for ``runs`` stacked runs."""
    sizes = ModelSpec.of(params, input_dim, output_dim).layer_sizes
    return runs * params.batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def refusal(params: VariantParams) -> str | None:
    """Why the stacked engine cannot train ``params`` exactly, or None when it can."""
    untaught = sorted(f.name for f in dataclasses.fields(ModelSpec) if f.name not in IMPLEMENTED)
    if untaught:
        return f"it does not implement the model setting(s) {', '.join(untaught)}"
    if params.optimizer.name not in ELEMENTWISE_OPTIMIZERS:
        return f"optimizer {params.optimizer.name!r} is not known to update weights element by element"
    return None


def unsupported(jobs: Sequence[Run]) -> str | None:
    """Why these runs cannot train stacked, or None when they can.

    The executor then trains them one at a time with the per-run engine (``engine.CompiledTrainer``),
    and says why in the log; ``train_parts`` refuses them with this reason. Refused today: IMDB's
    multi-hot inputs (``BinaryCsr``: ``_pool`` stacks dense arrays, and a dense IMDB pool would
    take 10,000 floats per review), and runs evaluated on different test sets.
    """
    if any(not isinstance(job.data.x_train, np.ndarray) for job in jobs):
        return "sparse (multi-hot) inputs: the stacked engine takes dense arrays"
    tests = [job.test for job in jobs]
    if any(t is not None for t in tests) and not (all(t is not None for t in tests) and _same([t[0] for t in tests])):
        return "the runs have different test sets"
    for params in dict.fromkeys(job.params for job in jobs):
        reason = refusal(params)
        if reason is not None:
            return reason
    return None
