"""dvc.yaml lists, for every stage, each module of this repository that the stage runs.

DVC reruns a stage only when a listed dependency changes: a module missing from
the list (the params dataclasses' defaults, the data loader) would leave stale
results that `dvc status` calls up to date.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from regbench.train import identity
from tools import stage_deps

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("regbench", "stages")
REGISTRY = "regbench/data/experiments"


def imported_files(path: Path) -> set[str]:
    """This repository's modules that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from regbench import config` imports regbench/config.py; `from regbench.io import x` regbench/io.py.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            # A package is its __init__.py (the registry); the others hold a docstring only and run nothing.
            if name.split(".")[0] not in PACKAGES or name in PACKAGES:
                continue
            for candidate in (ROOT / (name.replace(".", "/") + ".py"), ROOT / name.replace(".", "/") / "__init__.py"):
                if candidate.is_file() and not docstring_only(candidate):
                    found.add(candidate.relative_to(ROOT).as_posix())
    return found


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def registry_modules(stage: str) -> set[str]:
    """The experiment modules a stage runs through the registry (imported by name, invisible to ``ast``).

    prepare@<name> runs its own; claims and report read every experiment's labels. train@<name>-<variant>
    runs its own experiment's (each repeat's data: sonar's folds, scope data's datasets); the others only
    validate params.
    """
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / REGISTRY).glob("[!_]*.py"))
    if stage.startswith("prepare@"):
        return {f"{REGISTRY}/{stage.split('@', 1)[1]}.py"}
    if stage.startswith("train@"):
        return {f"{REGISTRY}/{stage.split('@', 1)[1].split('-', 1)[0]}.py"}
    return set(modules) if stage in ("claims", "report") else set()


def covered(module: str, deps: set[str]) -> bool:
    return module in deps or any(module.startswith(dep.rstrip("/") + "/") for dep in deps)


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(imported_files(ROOT / current))
    return seen


def resolved_stages() -> dict[str, tuple[str, set[str]]]:
    """Each stage (foreach items expanded): the module its command runs and its dependency paths."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = (stage["cmd"], {str(d) for d in stage["deps"]})
            continue
        items = stage["foreach"]
        if isinstance(items, str):  # ${train.runs}: a params.yaml value
            value = params
            for part in items.removeprefix("${").removesuffix("}").split("."):
                value = value[part]
            items = value
        items = items if isinstance(items, dict) else {item: item for item in items}
        for key, item in items.items():

            def fill(text: str, key=key, item=item) -> str:
                text = text.replace("${key}", key)
                if isinstance(item, dict):
                    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)
                return text.replace("${item}", str(item))

            stages[f"{name}@{key}"] = (fill(stage["do"]["cmd"]), {fill(str(d)) for d in stage["do"]["deps"]})
    return stages


@pytest.mark.parametrize("stage", sorted(resolved_stages()))
def test_every_module_a_stage_runs_is_a_dependency(stage):
    command, deps = resolved_stages()[stage]
    module = re.search(r"python -m ([\w.]+)", command).group(1).replace(".", "/") + ".py"
    runs = closure(module)
    if f"{REGISTRY}/__init__.py" in runs:
        for experiment_module in registry_modules(stage):
            runs |= closure(experiment_module)
    missing = sorted(m for m in runs if not covered(m, deps))
    assert not missing, f"dvc.yaml: stage {stage} runs {missing} but does not list them under deps"


# --- the train stage: one declaration (regbench/train/identity.py) decides what retrains and what reruns ---


def test_the_train_stage_deps_in_dvc_yaml_are_generated_from_the_declaration():
    text = (ROOT / "dvc.yaml").read_text()
    assert stage_deps.render(text) == text, "dvc.yaml is out of date: run python -m tools.stage_deps"


def test_every_module_the_train_stage_runs_is_declared_once_as_computing_or_recording():
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / REGISTRY).glob("[!_]*.py"))
    run_by_any = set()
    for module in modules:
        # Each experiment's train stages also run its own module, through the registry.
        experiment = Path(module).stem
        runs = closure("stages/train.py") | closure(module)
        run_by_any |= runs
        computes, records = set(identity.computes(experiment)), set(identity.RECORDS)
        assert not computes & records, f"declared both ways: {sorted(computes & records)}"
        undeclared = sorted(runs - computes - records)
        assert not undeclared, f"{experiment}: run by the train stage, in neither list of identity.py: {undeclared}"
        assert not computes - runs, f"{experiment}: computing but not run by the stage: {sorted(computes - runs)}"
    assert not set(identity.RECORDS) - run_by_any, (
        f"declared but run by no train stage: {sorted(set(identity.RECORDS) - run_by_any)}"
    )


def test_presentation_code_is_outside_the_run_identity_and_the_engines_inside():
    # The two cases: progress/tracking/report/claims edits retrain nothing; engine edits retrain all.
    for path in ("regbench/train/progress.py", "regbench/train/tracking.py", "regbench/train/plots.py"):
        assert path not in identity.COMPUTES
    for path in ("stages/train.py", "regbench/train/engine.py", "regbench/data/datasets.py"):
        assert path in identity.COMPUTES
    assert not [path for path in identity.COMPUTES if path.startswith(("regbench/claims/", "regbench/report/"))]


def test_render_rewrites_only_the_train_code_deps():
    text = (ROOT / "dvc.yaml").read_text()
    stale = text.replace("        - regbench/train/engine.py\n", "", 1).replace(
        "        - regbench/train/progress.py\n", "        - regbench/train/progress.py\n        - old/module.py\n", 1
    )
    assert stale != text and stage_deps.render(stale) == text
