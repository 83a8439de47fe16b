"""The Ray executor against the local one: per-task overhead, throughput on 1 and 2 nodes, projection to N.

    python bench/ray_executor.py --data ../main/data/prepared [--repeats 2] [--out bench/ray_executor.md]

Needs the prepared sonar and imdb data (`dvc repro prepare@sonar prepare@imdb`) and a private
network namespace (root, `unshare -n`): the cluster is tests/ray_cluster.py's loopback cluster,
one CPU per node, all nodes on this machine.

Each measurement is one fresh driver process that calls ``regbench.train.variant.train`` on the real
params (no MLflow), as the stage does, and times that call: data loading, connecting to Ray
and training. Configurations: the local executor; Ray with the head node only; Ray with the head
and one worker node. Stages: sonar-baseline (50 runs as 2 stacked parts = 2 tasks) and
imdb-original (5 runs = 5 tasks). Overhead: the same stages capped at one epoch, where training
is a small part of the time, on one node: (Ray - local) / tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ray_cluster import LoopbackCluster, namespace_unavailable  # noqa: E402

STAGES = ["sonar-baseline", "imdb-original"]
DRIVER = """
import json, sys, time
from pathlib import Path
from regbench import config
from regbench.train.variant import train
import dataclasses
params = config.load({params!r})
train_params = dataclasses.replace(params.train, executor={executor!r}, max_epochs={max_epochs!r})
params = dataclasses.replace(params, train=train_params)
started = time.perf_counter()
train(params, {stage!r}, Path("out") / {stage!r})
seconds = time.perf_counter() - started
manifest = json.loads((Path("out") / {stage!r} / "manifest.json").read_text())
print(json.dumps({{"seconds": seconds, "executor": manifest["executor"]}}))
"""


def measure(work: Path, stage: str, executor: str, max_epochs, cluster: LoopbackCluster | None) -> dict:
    code = DRIVER.format(params=str(ROOT / "params.yaml"), executor=executor, stage=stage, max_epochs=max_epochs)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-c", code]
    if cluster is not None:
        env, command = cluster.env(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"), cluster.prefix() + command
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{stage} on {executor} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "ray_executor.json")
    args = parser.parse_args()
    reason = namespace_unavailable()
    if reason is not None:
        sys.exit(f"needs a private network namespace: {reason}")
    work = Path(tempfile.mkdtemp(prefix="rbbench-"))
    (work / "data").mkdir()
    (work / "data" / "prepared").symlink_to(args.data.resolve())
    rows = []

    def record(stage, config, max_epochs, cluster):
        for repeat in range(args.repeats):
            before = load()
            executor = "local" if config == "local" else "ray"
            answer = measure(work, stage, executor, max_epochs, cluster)
            row = {
                "stage": stage,
                "config": config,
                "max_epochs": max_epochs,
                "repeat": repeat,
                "seconds": round(answer["seconds"], 2),
                "tasks": len(answer["executor"].get("tasks", [])),
                "nodes": len(answer["executor"].get("nodes", [])),
                "load_before": before,
                "load_after": load(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    for stage in STAGES:
        for max_epochs in (1, None):
            record(stage, "local", max_epochs, None)
    cluster = LoopbackCluster(object_store_bytes=300_000_000)
    try:
        started = time.perf_counter()
        cluster.start_head()
        print(f"head node up in {time.perf_counter() - started:.1f}s", flush=True)
        for stage in STAGES:
            for max_epochs in (1, None):
                record(stage, "ray-1-node", max_epochs, cluster)
        started = time.perf_counter()
        cluster.add_worker()
        print(f"worker node up in {time.perf_counter() - started:.1f}s", flush=True)
        for stage in STAGES:
            record(stage, "ray-2-nodes", None, cluster)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
