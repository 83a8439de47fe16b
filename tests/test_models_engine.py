"""Model builder (published parameter counts, L2, max-norm, dropout placement) and the two engines."""

import copy
import dataclasses

import keras
import numpy as np
import pytest

from regbench import config
from regbench.train import engine, models, stacked
from regbench.train.run import Run
from tests.conftest import real_params

PARAMS = config.parse(real_params())


def variant(experiment: str, name: str, **changes) -> config.VariantParams:
    return dataclasses.replace(PARAMS.experiments[experiment].variants[name].members[0].params, **changes)


def test_mnist_parameter_counts_match_the_article():
    model = models.build_model(models.ModelSpec.of(variant("mnist", "dropout"), 784, 10))
    dense = [layer.count_params() for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [401_920, 131_328, 32_896, 1_290]


def test_dropout_sits_where_the_variant_says():
    def layer_kinds(params, inputs):
        model = models.build_model(models.ModelSpec.of(params, inputs, 1))
        return [type(layer).__name__ for layer in model.layers[1:]]

    assert layer_kinds(variant("sonar", "input_dropout"), 60) == ["Dropout", "Dense", "Dense", "Dense"]
    assert layer_kinds(variant("sonar", "hidden_dropout"), 60) == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert layer_kinds(variant("circles", "dropout"), 2) == ["Dense", "Dropout", "Dense"]
    model = models.build_model(models.ModelSpec.of(variant("imdb", "dropout"), 10, 1))
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.5, 0.5]


def test_l2_adds_its_penalty_to_the_loss():
    keras.utils.set_random_seed(0)
    model = models.build_model(models.ModelSpec.of(variant("imdb", "l2"), 10, 1))
    kernels = [layer.kernel for layer in model.layers if layer.name.startswith("hidden")]
    expected = sum(0.001 * float(np.sum(np.square(keras.ops.convert_to_numpy(k)))) for k in kernels)
    assert models.regularization_penalty(model) == pytest.approx(expected, rel=1e-5)
    x, y = np.ones((4, 10), np.float32), np.ones((4, 1), np.float32)
    models.compile_model(model, variant("imdb", "l2"))
    plain = float(keras.ops.mean(keras.losses.binary_crossentropy(y, model(x))))
    assert model.evaluate(x, y, verbose=0)[0] == pytest.approx(plain + expected, rel=1e-4)


def toy_data(n=64, d=6, seed=0, categorical=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[y.astype(int)] if categorical else engine.binary_targets(y)
    return engine.FitData(x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :])


def trainer_for(params: config.VariantParams, input_dim: int = 6, output_dim: int = 1, sparse: bool = False):
    """The per-run compiled engine on toy data, in chunks of about a second."""
    return engine.CompiledTrainer(params, input_dim, output_dim, sparse=sparse, chunk_seconds=1.0)


def run_of(data: engine.FitData, seed: int, params: config.VariantParams, test=None) -> Run:
    """A run outside any variant, as the engines take it."""
    return Run.alone(params, seed, data, test)


def train_stacked(jobs, on_done, parts: int = 1, chunk_seconds: float = 1.0, progress=None) -> None:
    """The jobs through the stacked engine, in the parts the executor plans (``stacked.plan_parts``)."""
    stacked.train_parts(jobs, stacked.plan_parts(jobs, parts), chunk_seconds, progress, on_done, threads=parts)


def test_max_norm_holds_kernel_column_norms_after_training():
    params = variant("sonar", "dropout_maxnorm", hidden=(8, 4), epochs=30, max_norm=0.5)
    trainer = trainer_for(params)
    trainer.train(toy_data(), seed=0)
    for layer in trainer.model.layers:
        if isinstance(layer, keras.layers.Dense) and layer.name.startswith("hidden"):
            norms = np.linalg.norm(keras.ops.convert_to_numpy(layer.kernel), axis=0)
            assert norms.max() <= 0.5 + 1e-5


@pytest.mark.parametrize(
    "optimizer",
    [
        config.OptimizerParams("sgd", 0.05, 0.8),
        config.OptimizerParams("adam", 0.01),
        config.OptimizerParams("rmsprop", 0.01),
    ],
)
@pytest.mark.parametrize("extra", [{}, {"l2": 0.01}, {"max_norm": 0.7}])
def test_compiled_engine_equals_model_fit(optimizer, extra):
    """Same initial weights and batch order: same per-epoch history and final weights."""
    params = variant("sonar", "baseline", hidden=(8, 4), epochs=6, batch_size=8, optimizer=optimizer, **extra)
    data = toy_data()
    compiled = trainer_for(params)
    history = compiled.train(data, seed=5)
    keras.utils.set_random_seed(5)
    reference_model = models.build_model(models.ModelSpec.of(params, 6, 1))
    reference = engine.fit_model(reference_model, params, data, seed=5)
    for metric in engine.METRICS:
        np.testing.assert_allclose(history.metrics[metric], reference.metrics[metric], rtol=1e-5, atol=1e-7)
    for ours, theirs in zip(compiled.model.weights, reference_model.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs), rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize("first_layer", [4, engine.SPARSE_MATMUL_MAX_UNITS + 8])
def test_compiled_engine_matches_fit_on_categorical_and_sparse_inputs(first_layer):
    params = variant("mnist", "baseline", hidden=(5,), epochs=3, batch_size=16, shuffle=False)
    data = toy_data(categorical=True)
    history = trainer_for(params, 6, 2, sparse=False).train(data, seed=1)
    keras.utils.set_random_seed(1)
    reference = engine.fit_model(models.build_model(models.ModelSpec.of(params, 6, 2)), params, data, seed=1)
    np.testing.assert_allclose(history.metrics["val_loss"], reference.metrics["val_loss"], rtol=1e-5)

    from regbench.data.sparse import BinaryCsr

    rng = np.random.default_rng(0)
    dense = (rng.uniform(size=(40, 12)) < 0.3).astype(np.float32)
    rows = [np.flatnonzero(r).astype(np.uint16) for r in dense]
    csr = BinaryCsr(np.concatenate([[0], np.cumsum([len(r) for r in rows])]), np.concatenate(rows), 12)
    y = engine.binary_targets((dense[:, 0] > 0).astype(np.float32))
    # Both sparse products: sparse_dense_matmul for a narrow first layer, segment sums for a wide one.
    imdb = variant("imdb", "original", hidden=(first_layer,), epochs=3, batch_size=8)
    sparse_history = trainer_for(imdb, 12, 1, sparse=True).train(
        engine.FitData(csr.take(np.arange(30)), y[:30], csr.take(np.arange(30, 40)), y[30:]), seed=2
    )
    dense_history = trainer_for(imdb, 12, 1, sparse=False).train(
        engine.FitData(dense[:30], y[:30], dense[30:], y[30:]), seed=2
    )
    for metric in engine.METRICS:
        np.testing.assert_allclose(sparse_history.metrics[metric], dense_history.metrics[metric], rtol=1e-5)


def test_a_dropout_run_validates_in_inference_mode():
    """The compiled loop's validation row uses the model without dropout: Keras' own evaluate agrees."""
    params = variant("synthetic", "dropout", hidden=(16, 16), epochs=8, l2=0.01)
    data = toy_data(n=200)
    trainer = trainer_for(params)
    history = trainer.train(data, seed=3)
    models.compile_model(trainer.model, params)
    loss, accuracy = trainer.model.evaluate(data.x_val, data.y_val, batch_size=len(data.y_val), verbose=0)
    assert history.metrics["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert history.metrics["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-7)
    # And dropout is on in training: the same network without it trains to another loss.
    plain = trainer_for(dataclasses.replace(params, input_dropout=0.0, hidden_dropout=0.0)).train(data, seed=3)
    assert plain.metrics["loss"] != history.metrics["loss"]


def test_graph_loop_written_out_or_as_a_while_loop_gives_the_same_state():
    tf = engine.tensorflow_backend()

    def body(i, state):
        total, squares = state
        value = tf.cast(i, tf.float32) + 1.0
        return total + value, squares.write(i, value * value)

    def run(count, unroll):
        """The loop's final state, and whether it was built as a graph while-loop."""

        @tf.function(autograph=False)
        def loop(n):
            start = (tf.constant(0.0), tf.TensorArray(tf.float32, size=n, element_shape=[]))
            total, squares = engine.graph_loop(tf, count if isinstance(count, int) else n, body, start, unroll)
            return total, squares.stack()

        traced = loop.get_concrete_function(tf.TensorSpec([], tf.int32))
        looped = any("While" in op.type for op in traced.graph.get_operations())
        total, squares = traced(tf.constant(count))
        return total.numpy().item(), squares.numpy().tolist(), looped

    assert run(3, unroll=3) == (6.0, [1.0, 4.0, 9.0], False)
    assert run(3, unroll=0) == (6.0, [1.0, 4.0, 9.0], True)
    assert run(tf.constant(3), unroll=3) == (6.0, [1.0, 4.0, 9.0], True)  # a count known only when run
    assert run(0, unroll=0) == (0.0, [], False)


def test_compiled_engine_is_deterministic():
    params = variant("circles", "dropout", epochs=20)
    data = toy_data(d=2)
    trainer = trainer_for(params, 2, 1, sparse=False)
    first = trainer.train(data, seed=3).metrics
    other = trainer.train(data, seed=4).metrics
    again = trainer_for(params, 2, 1, sparse=False).train(data, seed=3).metrics
    assert first == again and first != other


def test_divergence_stops_the_run_and_marks_it():
    params = variant("sonar", "baseline", hidden=(8,), epochs=50, optimizer=config.OptimizerParams("sgd", 1e6, 0.9))
    data = toy_data()
    data.x_train[:] *= 1e3
    history = trainer_for(params).train(data, seed=0)
    assert history.status == "diverged" and history.diverged_epoch is not None
    assert history.epochs == history.diverged_epoch - 1 < 50
    assert all(np.isfinite(history.metrics["loss"]))


def stacked_jobs(params, seeds, datas, **changes):
    return [run_of(data, seed, dataclasses.replace(params, **changes)) for seed, data in zip(seeds, datas, strict=True)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_stacked_runs_each_equal_model_fit_alone(optimizer):
    """Three runs with their own data (like CV folds) trained together: each matches model.fit alone."""
    settings = {"sgd": config.OptimizerParams("sgd", 0.05, 0.8), "adam": config.OptimizerParams("adam", 0.01)}
    chosen = settings.get(optimizer, config.OptimizerParams("rmsprop", 0.01))
    params = variant(
        "sonar", "baseline", hidden=(8, 4), epochs=5, batch_size=8, optimizer=chosen, l2=0.01, max_norm=0.9
    )
    datas = [toy_data(seed=s) for s in range(3)]
    jobs = stacked_jobs(params, [5, 6, 7], datas)
    trainer = stacked.StackedTrainer(params, 6, 1, runs=3, n_train=32, n_val=32, chunk_seconds=1.0)
    histories = trainer.train(jobs)
    for run, job in enumerate(jobs):
        keras.utils.set_random_seed(job.seed)
        model = models.build_model(models.ModelSpec.of(params, 6, 1))
        reference = engine.fit_model(model, params, job.data, seed=job.seed)
        for metric in engine.METRICS:
            np.testing.assert_allclose(histories[run].metrics[metric], reference.metrics[metric], rtol=1e-5, atol=1e-7)
        for ours, theirs in zip(trainer.run_weights(run), model.weights, strict=True):
            np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(theirs), rtol=1e-4, atol=1e-6)


def test_stacked_groups_grid_members_and_keeps_their_dropout_rates():
    params = variant("circles", "overfit", epochs=30)
    data = toy_data(n=80, d=2)
    jobs = [
        run_of(data, seed, dataclasses.replace(params, hidden_dropout=rate))
        for rate in (0.0, 0.6)
        for seed in (0, 1, 2)
    ]
    jobs.append(run_of(toy_data(n=60, d=2), 0, params))  # other shapes: its own group
    groups = {}
    for job in jobs:
        groups.setdefault(stacked.group_key(job), []).append(job)
    assert sorted(len(g) for g in groups.values()) == [1, 6]
    finished = {}
    train_stacked(jobs, lambda i, h, t: finished.__setitem__(i, h))
    assert sorted(finished) == list(range(7))
    no_dropout = [finished[i].metrics["loss"][-1] for i in range(3)]
    with_dropout = [finished[i].metrics["loss"][-1] for i in range(3, 6)]
    # A rate-0 run in a dropout group is the plain model exactly (same data order: the engine's own).
    alone = stacked.StackedTrainer(params, 2, 1, 1, 40, 40, 1.0).train([jobs[0]])[0]
    np.testing.assert_allclose(finished[0].metrics["val_loss"], alone.metrics["val_loss"], rtol=1e-5)
    # Rate 0.6 runs train noisier, so their training loss is higher.
    assert np.mean(with_dropout) > np.mean(no_dropout)


def test_stacked_engine_is_deterministic_and_isolates_a_diverging_run():
    params = variant("synthetic", "dropout", hidden=(8,), epochs=12)
    datas = [toy_data(seed=s) for s in range(3)]
    first = [
        h.metrics
        for h in stacked.StackedTrainer(params, 6, 1, 3, 32, 32, 1.0).train(stacked_jobs(params, [1, 2, 3], datas))
    ]
    again = [
        h.metrics
        for h in stacked.StackedTrainer(params, 6, 1, 3, 32, 32, 1.0).train(stacked_jobs(params, [1, 2, 3], datas))
    ]
    assert first == again
    # One run's loss turns NaN (a NaN feature): that run stops, its neighbours in the stack go on.
    wild = copy.deepcopy(datas)
    wild[1].x_train[3, 0] = np.nan
    histories = stacked.StackedTrainer(params, 6, 1, 3, 32, 32, 1.0).train(stacked_jobs(params, [1, 2, 3], wild))
    assert histories[1].status == "diverged" and histories[1].epochs == 0
    assert histories[0].status == histories[2].status == "ok" and histories[0].epochs == 12


def test_stacked_parts_train_side_by_side_with_the_results_of_one_stack(monkeypatch):
    monkeypatch.setattr(stacked, "MIN_RUNS_PER_PART", 1)  # small parts, so the toy group is split
    params = variant("sonar", "baseline", hidden=(8, 4), epochs=6, batch_size=8)
    jobs = stacked_jobs(params, [0, 1, 2, 3, 4], [toy_data(seed=s) for s in range(5)])

    def run(parts):
        finished = []
        train_stacked(jobs, lambda *done: finished.append(done), parts=parts)
        return finished

    together, side_by_side = run(1), run(3)
    assert [index for index, _, _ in side_by_side] == list(range(5))
    for (_, ours, our_eval), (_, theirs, their_eval) in zip(side_by_side, together, strict=True):
        for metric in engine.METRICS:
            np.testing.assert_allclose(ours.metrics[metric], theirs.metrics[metric], rtol=1e-6)
        assert our_eval.keys() == their_eval.keys() == {"train_eval_loss", "train_eval_accuracy"}


def test_an_error_in_one_part_stops_the_others(monkeypatch):
    monkeypatch.setattr(stacked, "MIN_RUNS_PER_PART", 1)
    params = variant("circles", "overfit", epochs=100_000)
    jobs = [run_of(toy_data(n=40, d=2), seed, params) for seed in range(4)]

    def failing_progress(epoch, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stacked(jobs, lambda *done: None, parts=2, chunk_seconds=0.2, progress=failing_progress)


def test_a_run_is_the_same_at_odd_and_even_positions_of_a_stack():
    """20 hidden units x 30 rows: without padding each run's slices alternate between two memory alignments
    along the stack, and Eigen summed the runs at odd positions in another order (differing after ~100 epochs)."""
    params, data = variant("circles", "overfit", hidden=(20,), epochs=200), toy_data(n=60, d=2)

    def seed_3(seeds):
        finished = {}
        jobs = [run_of(data, seed, params) for seed in seeds]
        train_stacked(jobs, lambda i, h, e: finished.__setitem__(i, (h.metrics, e)))
        return finished[seeds.index(3)]

    alone = seed_3([3])
    assert alone == seed_3([7, 3]) == seed_3([7, 8, 9, 3])


@pytest.mark.parametrize("name", ["circles-dropout", "sonar-input_and_hidden_dropout"])
def test_a_dropout_run_is_the_same_in_any_stack_and_any_part(monkeypatch, name):
    """Run identity: seed 3's history does not depend on the runs beside it or on the stack's parts."""
    monkeypatch.setattr(stacked, "MIN_RUNS_PER_PART", 1)
    if name == "circles-dropout":
        params, data = variant("circles", "dropout", hidden=(16,), epochs=25), toy_data(n=60, d=2)
    else:
        params = variant("sonar", "hidden_dropout", hidden=(8, 4), epochs=6, batch_size=8, input_dropout=0.2)
        data = toy_data()

    def seed_3(seeds, parts):
        finished = {}
        jobs = [run_of(data, seed, params) for seed in seeds]
        done = lambda i, h, e: finished.__setitem__(i, (h, e))  # noqa: E731
        train_stacked(jobs, done, parts=parts)
        history, evaluations = finished[seeds.index(3)]
        return history.metrics, evaluations

    alone = seed_3([3], parts=1)
    assert alone == seed_3([0, 1, 2, 3, 4], parts=1)
    assert alone == seed_3([0, 1, 2, 3, 4], parts=2)
    assert alone == seed_3([7, 3], parts=1)
    assert alone == seed_3([3, 7], parts=2)
    # And the masks do depend on the run's own seed: seed 4 alone trains differently.
    finished = {}
    train_stacked([run_of(data, 4, params)], lambda i, h, e: finished.update(h=h))
    assert finished["h"].metrics != alone[0]


def toy_reviews(n_rows: int, n_columns: int = 40, seed: int = 0):
    """Multi-hot rows in the prepared IMDB layout (uint16 column ids, each row's ids in order)."""
    from regbench.data.sparse import BinaryCsr

    rng = np.random.default_rng(seed)
    dense = rng.uniform(size=(n_rows, n_columns)) < 0.2
    rows = [np.flatnonzero(row).astype(np.uint16) for row in dense]
    csr = BinaryCsr(np.concatenate([[0], np.cumsum([len(r) for r in rows])]), np.concatenate(rows), n_columns)
    return csr, (dense[:, :3].sum(axis=1) > 0).astype(np.float32)


def test_column_order_is_the_stable_sort_the_graph_would_make():
    x, _ = toy_reviews(50)
    orders = engine.epoch_orders(50, 3, True, np.random.default_rng(1))
    order, offsets = engine.column_order(x, orders, 16)
    assert len(offsets) == 3 * 4 + 1  # 3 epochs of 4 batches (16, 16, 16, 2 rows)
    at = 0
    for epoch_order in orders:
        for start in range(0, 50, 16):
            columns = x.take(epoch_order[start : start + 16]).indices.astype(np.int64)
            mine = order[offsets[at] : offsets[at + 1]]
            np.testing.assert_array_equal(mine, np.argsort(columns, kind="stable"))
            assert np.all(np.diff(columns[mine]) >= 0)
            at += 1


@pytest.mark.parametrize("hidden_dropout", [0.0, 0.5])
def test_runs_side_by_side_equal_runs_one_at_a_time(hidden_dropout):
    """The per-run engine trains train.stack_parts runs at once, one thread per op each: a run's history and
    evaluations are the ones it has alone (the host column order, the lock on Keras' random state)."""
    from regbench.data import datasets
    from regbench.train import executor, plan
    from regbench.train.progress import Progress

    x_train, y_train = toy_reviews(60, seed=0)
    x_test, y_test = toy_reviews(30, seed=1)
    data = datasets.PreparedData({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test})
    member = dataclasses.replace(
        PARAMS.experiments["imdb"].variants["original"].members[0],
        params=variant(
            "imdb",
            "original",
            hidden=(engine.SPARSE_MATMUL_MAX_UNITS + 8, 4),
            epochs=4,
            batch_size=16,
            hidden_dropout=hidden_dropout,
        ),
    )

    def train(parts: int):
        params = dataclasses.replace(PARAMS, train=dataclasses.replace(PARAMS.train, stack_parts=parts))
        runs = plan.plan_runs(params, (0, 1, 2, 3, 4), [member], data, [None])
        executor.train(params, runs, data, Progress("t", 5), "t")
        return runs

    alone, side_by_side = train(1), train(2)
    assert [r.seed for r in side_by_side] == [0, 1, 2, 3, 4]
    for ours, theirs in zip(side_by_side, alone, strict=True):
        assert ours.history.metrics == theirs.history.metrics
        assert ours.evaluations == theirs.evaluations
    assert alone[0].history.metrics != alone[1].history.metrics
