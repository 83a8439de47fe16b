"""Fixture data in the upstream formats, served as a mirror, and a shrunk copy of the real params."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from regbench.data import digests
from regbench.data.experiments import registry

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
WORDS = ["good", "bad", "great", "awful", "movie", "film", "plot", "acting", "boring", "wonderful"]
WORDS += ["the", "a", "and", "of", "to"]


def sonar_bytes(rows: int = 40, seed: int = 0, crlf: bool = False) -> bytes:
    """A small Sonar-format file: 60 floats in [0, 1] and a label; M rows differ a little from R rows."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        label = "M" if i % 2 == 0 else "R"
        values = rng.uniform(0, 1, 60) * (0.6 if label == "R" else 1.0)
        lines.append(",".join(f"{v:.4f}" for v in values) + f",{label}")
    newline = "\r\n" if crlf else "\n"
    return newline.join(lines).encode("ascii")


def imdb_archive(path: Path, per_folder: int = 6, seed: int = 0) -> None:
    """An aclImdb-style tar.gz: train/test x pos/neg folders of <id>_<rating>.txt reviews."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            for polarity in ("pos", "neg"):
                for i in range(per_folder):
                    mood = ["good", "great", "wonderful"] if polarity == "pos" else ["bad", "awful", "boring"]
                    words = list(rng.choice(WORDS, 12)) + list(rng.choice(mood, 4))
                    text = (" ".join(words) + ".<br /><br />The End!").encode()
                    rating = 8 if polarity == "pos" else 2
                    info = tarfile.TarInfo(f"aclImdb/{split}/{polarity}/{i}_{rating}.txt")
                    info.size = len(text)
                    archive.addfile(info, io.BytesIO(text))
        readme = b"fixture"
        info = tarfile.TarInfo("aclImdb/README")
        info.size = len(readme)
        archive.addfile(info, io.BytesIO(readme))


def mnist_npz(path: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=np.arange(n_train, dtype=np.uint8) % 10,
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=np.arange(n_test, dtype=np.uint8) % 10,
    )


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    """A mirror directory with tiny upstream-format files under the upstream names."""
    directory = tmp_path_factory.mktemp("mirror")
    (directory / "sonar.all-data").write_bytes(sonar_bytes())
    imdb_archive(directory / "aclImdb_v1.tar.gz")
    mnist_npz(directory / "mnist.npz")
    return directory


def mirror_digests(mirror: Path) -> dict[str, str]:
    return {
        "sonar": digests.sonar_digest((mirror / "sonar.all-data").read_bytes()),
        "imdb": digests.imdb_archive_digest(mirror / "aclImdb_v1.tar.gz")[0],
        "mnist": digests.sha256_file(mirror / "mnist.npz"),
    }


def real_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def without_variant_seeds(raw: dict) -> dict:
    """Drop the per-variant seed lists (grown by ./run.sh decide): every variant takes its experiment's seeds.

    Tests that count runs or plan seeds start from the experiment's list, whatever the committed run grew.
    """
    for experiment in registry():
        for variant in (raw.get(experiment) or {}).get("variants", {}).values():
            if isinstance(variant, dict):
                variant.pop("seeds", None)
    return raw


def shrunk_params(
    mirror: Path, runs: dict[str, list[str]], epochs: int = 2, seeds=(0, 1), digests_from: Path | None = None
) -> dict:
    """The real params.yaml, shrunk: fixture mirror and digests, few runs, seeds and epochs.

    Digests are those of the good fixture files in ``digests_from`` (default: the mirror itself).
    """
    raw = copy.deepcopy(real_params())
    fetch = raw["fetch"]
    fetch.update(mirror=str(mirror), retries=0, timeout_s=2)
    digests_from = digests_from or mirror
    if (digests_from / "sonar.all-data").exists():
        found = mirror_digests(digests_from)
        fetch["datasets"]["sonar"]["sources"]["uci"]["digest"] = found["sonar"]
        fetch["datasets"]["imdb"]["sources"]["stanford"]["digest"] = found["imdb"]
        fetch["datasets"]["mnist"]["sources"]["keras"]["digest"] = found["mnist"]
    raw["prepare"]["sonar"]["folds"] = 2
    raw["prepare"]["imdb"]["vocab_size"] = 12
    raw["train"]["runs"] = {}
    for experiment in [name for name in raw if name in registry()]:
        if experiment not in runs:
            del raw[experiment]
            continue
        raw[experiment]["seeds"] = list(seeds)
        raw[experiment]["defaults"]["epochs"] = epochs
        raw[experiment]["variants"] = {v: raw[experiment]["variants"][v] for v in runs[experiment]}
        for variant in runs[experiment]:
            raw["train"]["runs"][f"{experiment}-{variant}"] = {"experiment": experiment, "variant": variant}
    without_variant_seeds(raw)  # the shrunk seed list applies to every variant
    raw["claims"]["bootstrap_resamples"] = 200
    raw["claims"]["on_missing_variant"] = "not_run"  # the claims of the variants left out above
    return raw


def copy_repo(destination: Path) -> Path:
    """The tracked (and untracked, not ignored) files of this repo in a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    return destination


def write_params(repo: Path, raw: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data)


def dvc_env() -> dict[str, str]:
    # The stages' `python` must be this interpreter (the project's virtual environment).
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, env=dvc_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def git(repo: Path, *args: str) -> str:
    """git in ``repo`` with a commit identity (a test machine may have none); its output."""
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout


def stage_process(dvc_process: subprocess.Popen, stage: str) -> psutil.Process | None:
    """The Python process training ``stage``, not the shell DVC may run it through.

    Killing ``sh -c "python -m stages.train ..."`` instead would leave Python training on as an orphan, which
    then finishes its MLflow runs: that is what a CI machine whose shell does not exec showed.
    """
    for child in psutil.Process(dvc_process.pid).children(recursive=True):
        try:
            if child.cmdline()[-3:] == ["-m", "stages.train", stage]:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


# --- the shrunk pipeline: a copy of this repo with shrunk params, driven by the real DVC -------------------

# Settings of the test process that would point a copied pipeline at another store, mirror or cluster, or
# set TensorFlow's log level for it (the stages choose their own, as under a user's shell).
OUTSIDE_SETTINGS = ("MLFLOW_TRACKING_URI", "REGBENCH_MIRROR", "RAY_ADDRESS", "TF_CPP_MIN_LOG_LEVEL")


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """What a test pipeline holds: ``shrunk_params(runs, epochs, seeds)``, then ``change`` applied to it."""

    runs: Mapping[str, Sequence[str]]
    epochs: int = 2
    seeds: tuple[int, ...] = (0, 1)
    change: Callable[[dict], None] | None = None
    # Commit the copy first (dvc exp and dvc queue need a commit; git status then shows only a test's edits).
    commit: bool = False
    # `dvc repro` these targets once built (() for the whole pipeline); None: leave it to the test.
    repro: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """A copied repo whose DVC runs with its own MLflow store (its mlflow.db) and its params' mirror only."""

    repo: Path

    def env(self, **settings: str) -> dict[str, str]:
        """The stages' environment: this venv's python first on PATH, nothing of the test process'
        ``OUTSIDE_SETTINGS``, plus ``settings``."""
        base = {key: value for key, value in dvc_env().items() if key not in OUTSIDE_SETTINGS}
        return {**base, **settings}

    def dvc(self, *args: str, check: bool = True, **settings: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=self.repo,
            capture_output=True,
            text=True,
            env=self.env(**settings),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def edit_params(self, change: Callable[[dict], None]) -> str:
        """Apply ``change`` to params.yaml; return its former text (to put back)."""
        path = self.repo / "params.yaml"
        before = path.read_text()
        raw = yaml.safe_load(before)
        change(raw)
        write_params(self.repo, raw)
        return before

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.repo / 'mlflow.db'}"


def build_pipeline(directory: Path, mirror: Path, spec: PipelineSpec) -> Pipeline:
    """Copy the repo into ``directory``, shrink its params per ``spec``, and commit or run it as it asks."""
    pipeline = Pipeline(copy_repo(directory))
    raw = shrunk_params(mirror, dict(spec.runs), epochs=spec.epochs, seeds=spec.seeds)
    if spec.change is not None:
        spec.change(raw)
    write_params(pipeline.repo, raw)
    if spec.commit:
        git(pipeline.repo, "add", "-A")
        git(pipeline.repo, "commit", "-qm", "shrunk copy")
    if spec.repro is not None:
        pipeline.dvc("repro", *spec.repro)
    return pipeline


@pytest.fixture(scope="module")
def pipeline(request, tmp_path_factory, mirror) -> Pipeline:
    """One shrunk pipeline per test module: its spec is the module's ``PIPELINE``, or a parameter given with
    ``@pytest.mark.parametrize("pipeline", [PipelineSpec(...)], indirect=True)`` (one pipeline per spec)."""
    spec = getattr(request, "param", None) or request.module.PIPELINE
    return build_pipeline(tmp_path_factory.mktemp("pipeline"), mirror, spec)


@pytest.fixture
def make_pipeline(tmp_path, mirror) -> Callable[..., Pipeline]:
    """A fresh shrunk pipeline for one test: ``make_pipeline(PipelineSpec(...), name="repo")``."""

    def make(spec: PipelineSpec, name: str = "repo") -> Pipeline:
        return build_pipeline(tmp_path / name, mirror, spec)

    return make


# tryfirst: xdist's worker adds the group to each test id in its own hook, registered after this conftest.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Keep a module's tests on one xdist worker when they share a module-scoped fixture (a built pipeline,
    a Ray cluster, a report): spread over two workers, each would build it (``--dist loadgroup``). Every
    other test is handed out one by one, so the two workers stay evenly loaded."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else ()
        if any(definition.scope == "module" for defs in definitions for definition in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
