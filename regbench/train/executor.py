"""The ``ray`` executor: a train stage's runs as Ray tasks, on a cluster or a local Ray instance.

What is sent: exactly the units the local executor trains as one program. For the stacked
engine that is each part of ``stacked.plan_parts`` (a part draws its own dropout masks, so
sending the same parts keeps dropout runs identical to local); for per-run engines (IMDB's
sparse inputs, ``engine: fit``) each run is its own task. A worker rebuilds its jobs from the
prepared data with ``schedule.make_job``, trains them with the same code as the local executor
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
cancelled, ``schedule.train_all`` closes the open MLflow child runs as FAILED and the stage
writes no output (its outputs are only moved into place after every run is back). Ctrl-C or
SIGTERM (``tracking.StageKilled``) cancels the outstanding tasks the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regbench.config import Params, VariantParams
from regbench.train import provenance
from regbench.train.plan import RunSpec, make_job, train_single
from regbench.train.stacked import plan_parts, train_jobs, unsupported

log = logging.getLogger(__name__)
# ray.wait returns at least this often, so a signal (Ctrl-C, SIGTERM) is handled promptly.
WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class RunRecipe:
    """What a worker needs to rebuild one run's job from the prepared data (``schedule.make_job``)."""

    params: VariantParams
    seed: int
    fold: int | None


@dataclass(frozen=True)
class Unit:
    """One Ray task: run indices into the stage's specs, trained stacked or one at a time."""

    indices: tuple[int, ...]
    stacked: bool


def plan_units(params: Params, specs: list[RunSpec]) -> list[Unit]:
    """The same grouping as the local executor: the stacked parts, or one unit per run."""
    jobs = [spec.job for spec in specs]
    if params.train.engine == "compiled" and unsupported(jobs) is None:
        return [Unit(tuple(part), True) for part in plan_parts(jobs, params.train.stack_parts)]
    return [Unit((index,), False) for index in range(len(specs))]


def train_unit(
    data,
    recipes: list[RunRecipe],
    stacked: bool,
    engine: str,
    train_settings: dict[str, Any],
) -> dict[str, Any]:
    """Train one unit (in a Ray worker): its histories and evaluations, in ``recipes`` order, and where it ran."""
    import ray

    from regbench.train.engine import make_trainer, tensorflow_backend

    if train_settings["deterministic"]:
        tensorflow_backend().config.experimental.enable_op_determinism()
    jobs = [make_job(data, r.params, r.seed, r.fold, train_settings["max_train_samples"]) for r in recipes]
    input_dim = data["x_train"].shape[1]
    output_dim = 1 if data["y_train"].ndim == 1 else data["y_train"].shape[1]
    chunk_seconds = train_settings["chunk_seconds"]
    results: list[Any] = [None] * len(jobs)
    if stacked:

        def keep(index, history, evaluations):
            results[index] = (history, evaluations)

        # parts=1: the unit is one part of the driver's plan already.
        train_jobs(jobs, input_dim, output_dim, chunk_seconds, lambda indices: None, keep, parts=1)
    else:
        from regbench.data.sparse import BinaryCsr

        sparse = isinstance(data["x_train"], BinaryCsr)
        trainer = make_trainer(engine, jobs[0].params, input_dim, output_dim, sparse, chunk_seconds)
        for index, job in enumerate(jobs):
            results[index] = train_single(trainer, job, None)
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
    if started_here:
        address = os.environ.get("RAY_ADDRESS") or None
        runtime_env = {
            "py_modules": [str(Path(regbench.__file__).parent)],
            "env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
        }
        options: dict[str, Any] = {"address": address, "runtime_env": runtime_env, "log_to_driver": True}
        if address is None:
            options["include_dashboard"] = False
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
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def train_on_ray(params: Params, specs: list[RunSpec], data, collector, progress, stage: str) -> dict[str, Any]:
    """Train every unit as a Ray task; hand each finished run to ``collector.done`` (in the driver).

    Returns what the manifest records: the address, the tasks and the node each one ran on.
    """
    units = plan_units(params, specs)
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
            recipes = [RunRecipe(specs[i].job.params, specs[i].seed, specs[i].fold) for i in unit.indices]
            for index in unit.indices:
                # Open now, so the MLflow UI shows what runs, and a failed task's runs are closed FAILED.
                collector.open(index)
            ref = remote.remote(data_ref, recipes, unit.stacked, settings.engine, train_settings)
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
                        raise RuntimeError(_failure(stage, specs, unit, error, settings.ray.max_retries)) from error
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
                        len(collector.results),
                        len(specs),
                        time.perf_counter() - started,
                    )
        finally:
            # Whatever ended the loop (a failed task, Ctrl-C, SIGTERM): no task trains on for nothing.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        seconds = round(time.perf_counter() - started, 2)
        nodes = sorted({p["node"] for p in placement})
        log.info("%s: %d runs in %d Ray tasks on %d node(s), %.1fs", stage, len(specs), len(units), len(nodes), seconds)
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


def _failure(stage: str, specs: list[RunSpec], unit: Unit, error: Exception, retries: int) -> str:
    labels = "; ".join(specs[i].label for i in unit.indices)
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = f"the training code raised {error.cause!r}" if error.cause is not None else str(error)
    else:
        cause = f"its worker or node died and {retries} retries did not bring it back ({type(error).__name__})"
    return (
        f"{stage}: the Ray task training {labels} failed: {cause}. No output was written; rerun the stage "
        "(a lost node: raise train.ray.max_retries or check the cluster with `ray status`)"
    )
