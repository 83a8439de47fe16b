"""The executors: a train stage's runs trained here (``local``) or as Ray tasks (``ray``).

``plan_units`` chooses, once, what trains as one program: the parts of ``stacked.plan_parts``
when the stacked engine can train every run, else one unit per run (IMDB's sparse inputs,
``engine: fit``). The local executor trains the stacked parts side by side, or the per-run units
in worker threads; the Ray executor sends each unit as a task (a part draws its own dropout masks,
so sending the same parts keeps dropout runs identical to local). A worker rebuilds its runs' rows from the
prepared data with ``plan.attach_data``, trains them with the same code as the local executor
and returns histories and evaluations: only the driver (the DVC stage process) writes outputs
and MLflow.

Data: the prepared arrays are put once into Ray's object store (``ray.put``) and every task
gets that reference, so each node fetches one copy however many tasks it runs, no node needs
the driver's disk, and numpy arrays are read zero-copy from shared memory by the workers of a
node (https://docs.ray.io/en/latest/ray-core/objects/serialization.html). The code goes the
same way: the driver's ``regbench`` package is shipped as a ``py_modules`` runtime environment,
so the workers run the driver's code, not whatever version a node has installed; the nodes
need the same Python environment (TensorFlow, Keras) as the driver.

Faults: Ray retries a task whose worker process or node died ``train.ray.max_retries`` times,
on any node (``max_retries`` counts only system failures; an exception raised by the training
code is not retried: https://docs.ray.io/en/latest/ray-core/fault_tolerance/tasks.html). A task
that still fails ends the stage with a RuntimeError naming its runs; the other tasks are
cancelled, the observers (MLflow) close the open child runs as FAILED and the stage's results
are not replaced (they are only moved into place after every run is back); the runs that came
back are already in its run store (runstore.Keeper), so the rerun does not train them again.
Ctrl-C or SIGTERM (``tracking.StageKilled``) cancels the outstanding tasks the same way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regbench.config import Params
from regbench.data.sparse import BinaryCsr
from regbench.train import provenance, records
from regbench.train.engine import deterministic_ops, make_trainer, one_thread_per_op, side_by_side
from regbench.train.plan import attach_data
from regbench.train.progress import Progress
from regbench.train.run import Run, RunObserver
from regbench.train.stacked import plan_parts, train_parts, unsupported

log = logging.getLogger(__name__)
# ray.wait returns at least this often, so a signal (Ctrl-C, SIGTERM) is handled promptly.
WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Unit:
    """What trains as one program (and is one Ray task): run indices, stacked or one at a time."""

    indices: tuple[int, ...]
    stacked: bool


def plan_units(params: Params, runs: list[Run], stage: str = "") -> list[Unit]:
    """The one place that chooses how runs train: the stacked parts, or one unit per run.

    Stacked when the engine is ``compiled`` and the stacked engine can train every run
    (``stacked.unsupported``: IMDB's sparse inputs cannot); else each run is its own unit, trained
    by the engine ``train.engine`` names. Both executors train exactly these units.
    """
    if params.train.engine == "compiled":
        reason = unsupported(runs)
        if reason is None:
            return [Unit(tuple(part), True) for part in plan_parts(runs, params.train.stack_parts)]
        log.info("%s: runs train one at a time, not stacked: %s", stage, reason)
    return [Unit((index,), False) for index in range(len(runs))]


def train(
    params: Params,
    runs: list[Run],
    data,
    progress: Progress,
    stage: str,
    observers: Sequence[RunObserver] = (),
) -> dict[str, Any]:
    """Train every run (filling in its history and evaluations) here or on Ray, as ``train.executor`` says.

    ``observers`` see each run start and finish (MLflow: ``tracking.ChildRuns``). Returns what the
    run log records about where the runs trained.
    """
    if not runs:
        return {}  # nothing to train: every run of the stage was read back from its run store
    if params.train.deterministic:
        deterministic_ops()  # here for local runs; a Ray worker turns it on in train_unit
    units = plan_units(params, runs, stage)
    collector = _Collector(runs, observers, progress, stage)
    try:
        if params.train.executor == "ray":
            return _train_on_ray(params, runs, units, data, collector, progress, stage)
        _train_here(params, runs, units, collector, progress)
        return {"kind": "local"}
    except BaseException as error:
        collector.failed(error)
        raise


class _Collector:
    """Hands each run's start and end to the observers, marks divergence, keeps the progress line in step."""

    def __init__(self, runs: list[Run], observers: Sequence[RunObserver], progress: Progress, stage: str):
        self.runs, self.observers, self.progress, self.stage = runs, observers, progress, stage
        self.finished: set[int] = set()

    def started(self, index: int) -> None:
        for observer in self.observers:
            observer.on_run_started(index, self.runs[index])

    def done(self, index: int, history, evaluations: dict[str, float]) -> None:
        run = self.runs[index]
        # The engines stop a run at a NaN; a finite blow-up is judged here, before anything records the run.
        records.mark_divergence(history, run.data.output_dim)
        if history.status == "diverged":
            why = records.divergence_reason(history.status, history.diverged_epoch, history.epochs)
            log.warning("%s %s diverged (%s); the other runs go on", self.stage, run.label, why)
        run.history, run.evaluations = history, evaluations
        for observer in self.observers:
            observer.on_run_finished(index, run)
        self.finished.add(index)
        self.progress.run_done()

    def failed(self, error: BaseException) -> None:
        for observer in self.observers:
            observer.on_failure(error)


# --- local: in this process -------------------------------------------------------


def _train_here(params: Params, runs: list[Run], units: list[Unit], collector: _Collector, progress) -> None:
    """The units in this process: stacked parts side by side, or one run at a time per worker thread."""
    settings = params.train
    if units and units[0].stacked:
        first = runs[0]
        progress.begin(f"{first.member}: {len(runs)} runs together", first.params.epochs, len(runs))
        parts = [unit.indices for unit in units]
        train_parts(runs, parts, settings.chunk_seconds, progress, collector.done, threads=settings.stack_parts)
        return
    workers = min(settings.stack_parts, len(runs), usable_cores())
    if settings.engine == "compiled" and workers > 1:
        _side_by_side(params, runs, collector, progress, workers)
        return
    trainer, trainer_params = None, None
    for index, run in enumerate(runs):
        if run.params is not trainer_params:
            # One trainer per member: the compiled engine is traced once and reused across repeats and folds.
            trainer_params = run.params
            trainer = _trainer(params, run)
        progress.begin(run.label, run.params.epochs)
        collector.started(index)
        history, evaluations = train_one(trainer, run, progress)
        collector.done(index, history, evaluations)


def _trainer(params: Params, run: Run, engine: str | None = None):
    sparse = isinstance(run.data.x_train, BinaryCsr)
    return make_trainer(
        engine or params.train.engine,
        run.params,
        run.data.input_dim,
        run.data.output_dim,
        sparse,
        params.train.chunk_seconds,
    )


def train_one(trainer, run: Run, progress, cancel: threading.Event | None = None):
    """Train one run with a per-run trainer; its history and, when it did not diverge, its evaluations."""
    history = trainer.train(run.data, run.training_seed, progress, cancel)
    evaluations = {}
    if history.status == "ok":
        for prefix, arrays in run.evaluation_sets().items():
            metrics = trainer.final_metrics(*arrays)
            evaluations.update({f"{prefix}_{k}": v for k, v in metrics.items()})
    return history, evaluations


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _side_by_side(params: Params, runs: list[Run], collector: _Collector, progress: Progress, workers: int) -> None:
    """Train the runs one at a time per worker thread, ``workers`` at once, one thread per op each.

    A per-run trainer keeps about one core busy: its ops run one after another, and the widest
    (imdb-bigger's segment sums) use one thread. Measured on 2 cores, imdb-bigger took 2.2 s per
    epoch with one thread per op, 3.0 s with TensorFlow's pool, and identical histories either way
    (tests/test_models_engine.py checks the threads do not change a run's bits). Each worker keeps
    one trainer per member, traced once; resets take the engine's lock on Keras' random state, so a
    run's initial weights depend on its own seed only.
    """
    one_thread_per_op()
    lock = threading.Lock()
    pending = list(range(len(runs)))
    walls: dict[int, float] = {}

    def next_index(cancel: threading.Event) -> int | None:
        with lock:
            return pending.pop(0) if pending and not cancel.is_set() else None

    def work(worker: int, cancel: threading.Event) -> None:
        trainers: dict[int, Any] = {}
        while (index := next_index(cancel)) is not None:
            run = runs[index]
            trainer = trainers.get(id(run.params))
            if trainer is None:
                trainer = _trainer(params, run, "compiled")
                trainer.trace()
                trainers[id(run.params)] = trainer
            reporter = None
            with lock:
                collector.started(index)
                if worker == 0:
                    progress.begin(f"{run.label} ({workers} runs side by side)", run.params.epochs, workers)
                    reporter = progress
            started = time.perf_counter()
            history, evaluations = train_one(trainer, run, reporter, cancel)
            with lock:
                walls[index] = time.perf_counter() - started
                collector.done(index, history, evaluations)

    started = time.perf_counter()
    side_by_side([functools.partial(work, worker) for worker in range(workers)], workers)
    # A run's seconds: its share of the wall time, so the stage's training seconds add up to the wall time.
    scale = (time.perf_counter() - started) / max(sum(walls.values()), 1e-9)
    for index in collector.finished:
        runs[index].history.seconds = walls[index] * scale


# --- ray: each unit a Ray task ------------------------------------------------------


def train_unit(data, runs: list[Run], stacked: bool, engine: str, train_settings: dict[str, Any]) -> dict[str, Any]:
    """Train one unit (in a Ray worker): its histories and evaluations, in ``runs`` order, and where it ran."""
    import ray

    from regbench.train.engine import tensorflow_backend

    if train_settings["deterministic"]:
        tensorflow_backend().config.experimental.enable_op_determinism()
    runs = [attach_data(run, data, train_settings["max_train_samples"]) for run in runs]
    chunk_seconds = train_settings["chunk_seconds"]
    results: list[Any] = [None] * len(runs)
    if stacked:

        def keep(index, history, evaluations):
            results[index] = (history, evaluations)

        # One part: the unit is one part of the driver's plan already.
        train_parts(runs, [range(len(runs))], chunk_seconds, None, keep)
    else:
        sparse = isinstance(data["x_train"], BinaryCsr)
        first = runs[0]
        trainer = make_trainer(engine, first.params, first.data.input_dim, first.data.output_dim, sparse, chunk_seconds)
        for index, run in enumerate(runs):
            results[index] = train_one(trainer, run, None)
    node = ray.get_runtime_context().get_node_id()
    # The CPU and its float settings: runs agree bit for bit only across nodes where these agree.
    return {"results": results, "node": node, "host": os.uname().nodename, "machine": provenance.machine()}


@contextlib.contextmanager
def ray_session() -> Iterator[Any]:
    """Attach to the cluster at RAY_ADDRESS, or start a local Ray instance for this stage (shut down after)."""
    try:
        import ray
    except ImportError as error:
        raise RuntimeError(
            "params.yaml: train.executor = 'ray' needs Ray, which is not installed here: "
            "pip install -r requirements.lock (or pip install -e '.[ray]'), or set train.executor: local"
        ) from error

    import regbench

    started_here = not ray.is_initialized()
    local = None
    if started_here:
        address = os.environ.get("RAY_ADDRESS") or None
        runtime_env = {
            "py_modules": [str(Path(regbench.__file__).parent)],
            "env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
        }
        options: dict[str, Any] = {"address": address, "runtime_env": runtime_env, "log_to_driver": True}
        if address is None:
            options["include_dashboard"] = False
            local = _LocalInstance()
            options["_temp_dir"] = str(local.temp_dir)
        # ray.init replaces the SIGTERM handler (ray.init docs); the stage's own handler (StageKilled: runs
        # closed KILLED, tasks cancelled) is put back. Only the main thread can set handlers.
        main_thread = threading.current_thread() is threading.main_thread()
        stage_handler = signal.getsignal(signal.SIGTERM) if main_thread else None
        try:
            ray.init(**options)
            if main_thread and stage_handler is not None:
                signal.signal(signal.SIGTERM, stage_handler)
        except ConnectionError as error:
            raise RuntimeError(
                f"could not attach to the Ray cluster at RAY_ADDRESS={address}: {error}. Start its head node "
                "(ray start --head) or unset RAY_ADDRESS to train on a Ray instance started for the stage"
            ) from error
        except BaseException:
            if local is not None:
                local.remove()
            raise
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()
            if local is not None:
                local.remove()


class _LocalInstance:
    """What a local Ray instance started for a stage leaves nowhere else: its files and its token.

    Ray puts a local instance's session (sockets, logs, the shipped code) under ``<temp>/ray`` (``/tmp/ray``
    or ``$TMPDIR/ray``, shared by every user and session), unless ``ray.init(_temp_dir=...)`` names a root
    (ray.init's docstring: "``_temp_dir`` (root temp directory; must be absolute)"). Here that is a private
    directory: Ray makes its root world-writable, so the root is a folder inside one of mode 0700 (``mkdtemp``),
    removed after shutdown. Ray 2.59+ turns token authentication on for a
    new local instance and, with no token found, writes one to ``~/.ray/auth_token``; the token is read from
    ``RAY_AUTH_TOKEN`` first (https://docs.ray.io/en/master/ray-core/internals/token-authentication.html,
    "Token Sources and Precedence"), so a fresh one goes there, for this process and the workers it starts,
    and nothing is written to $HOME. The environment is put back after shutdown.
    """

    TOKEN_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")

    def __init__(self):
        # Short: Ray's socket paths under it (about 75 more bytes) must fit the 107-byte limit of a Unix socket.
        base = tempfile.gettempdir()
        self.private = Path(tempfile.mkdtemp(prefix="rbray-", dir=base if len(base) <= 24 else "/tmp"))
        # Ray makes its root world-writable (mode 0777); inside the 0700 directory no one else reaches it.
        self.temp_dir = self.private / "r"
        self.saved = {name: os.environ.get(name) for name in self.TOKEN_VARIABLES}
        explicit = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
        if not explicit and os.environ.get("RAY_AUTH_MODE", "token").lower() == "token":
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

    def remove(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(self.private, ignore_errors=True)


def _train_on_ray(
    params: Params, runs: list[Run], units: list[Unit], data, collector: _Collector, progress, stage: str
) -> dict[str, Any]:
    """Train every unit as a Ray task; hand each finished run to ``collector.done`` (in the driver).

    Returns what the run log records: the address, the tasks and the node each one ran on.
    """
    settings = params.train
    train_settings = {
        "deterministic": settings.deterministic,
        "max_train_samples": settings.max_train_samples,
        "chunk_seconds": settings.chunk_seconds,
    }
    with ray_session() as ray:
        gpus = settings.ray.task_gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        remote = ray.remote(train_unit).options(
            num_cpus=settings.ray.task_cpus,
            num_gpus=gpus,
            max_retries=settings.ray.max_retries,
            retry_exceptions=False,
            name=f"regbench {stage}",
        )
        data_ref = ray.put(data)
        pending: dict[Any, int] = {}
        for number, unit in enumerate(units):
            sent = [runs[i].without_data() for i in unit.indices]
            for index in unit.indices:
                # Started now, so the MLflow UI shows what runs, and a failed task's runs are closed FAILED.
                collector.started(index)
            ref = remote.remote(data_ref, sent, unit.stacked, settings.engine, train_settings)
            pending[ref] = number
        progress.begin(f"{len(units)} Ray tasks", 1, 0)
        placement: list[dict[str, Any]] = [{} for _ in units]
        machines: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            while pending:
                ready, _ = _wait(ray, list(pending))
                for ref in ready:
                    number = pending.pop(ref)
                    unit = units[number]
                    try:
                        answer = ray.get(ref)
                    except ray.exceptions.RayError as error:
                        raise RuntimeError(_failure(stage, runs, unit, error, settings.ray.max_retries)) from error
                    placement[number] = {"runs": len(unit.indices), **{k: answer[k] for k in ("node", "host")}}
                    machines.setdefault(answer["node"], answer["machine"])
                    for index, (history, evaluations) in zip(unit.indices, answer["results"], strict=True):
                        collector.done(index, history, evaluations)
                    # One line per task: a stage on a cluster runs for long without the local epoch line.
                    log.info(
                        "%s: task %d/%d done (%d runs) on %s, %d/%d runs back after %.0fs",
                        stage,
                        len(units) - len(pending),
                        len(units),
                        len(unit.indices),
                        answer["host"],
                        len(collector.finished),
                        len(runs),
                        time.perf_counter() - started,
                    )
        finally:
            # Whatever ended the loop (a failed task, Ctrl-C, SIGTERM): no task trains on for nothing.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        seconds = round(time.perf_counter() - started, 2)
        nodes = sorted({p["node"] for p in placement})
        log.info("%s: %d runs in %d Ray tasks on %d node(s), %.1fs", stage, len(runs), len(units), len(nodes), seconds)
        return {
            "kind": "ray",
            "address": os.environ.get("RAY_ADDRESS") or "local instance",
            "ray_version": ray.__version__,
            "task_cpus": settings.ray.task_cpus,
            "task_gpus": gpus,
            "max_retries": settings.ray.max_retries,
            "tasks": placement,
            "nodes": nodes,
            "machines": machines,
            "wall_seconds": seconds,
        }


def _wait(ray, refs: list) -> tuple[list, list]:
    """``ray.wait`` for one finished task, at most ``WAIT_SECONDS``; an interruption surfaces as itself.

    A signal handler's exception (the stage's StageKilled on SIGTERM/SIGINT) raised while Ray's compiled
    wait checks for signals comes out as a SystemError caused by it: re-raise the interruption, so the
    stage ends KILLED, not FAILED.
    """
    try:
        return ray.wait(refs, num_returns=1, timeout=WAIT_SECONDS)
    except SystemError as error:
        interruption = error.__cause__ or error.__context__
        if isinstance(interruption, BaseException) and not isinstance(interruption, Exception):
            raise interruption from None
        raise


def _failure(stage: str, runs: list[Run], unit: Unit, error: Exception, retries: int) -> str:
    labels = "; ".join(runs[i].label for i in unit.indices)
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = f"the training code raised {error.cause!r}" if error.cause is not None else str(error)
    else:
        cause = f"its worker or node died and {retries} retries did not bring it back ({type(error).__name__})"
    return (
        f"{stage}: the Ray task training {labels} failed: {cause}. The results were not replaced, and the runs "
        "that came back are kept in the run store; rerun the stage to train the rest (a lost node: raise "
        "train.ray.max_retries or check the cluster with `ray status`)"
    )
