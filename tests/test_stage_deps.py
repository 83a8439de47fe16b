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
