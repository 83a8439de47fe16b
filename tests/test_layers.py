"""The package layout is the architecture: data <- train <- claims <- report, with config/schema/io/cli below all.

Two checks a reader can trust: each module imports alone in a fresh interpreter (an import cycle
fails there, whichever module of it is imported first), and no module imports from a layer above
its own, nor from tools/ or tests/ (every import statement counts, those inside functions too).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A module's layer: the first matching prefix. Lower numbers are lower layers.
LAYERS = {
    "regbench.data": 1,
    "regbench.train": 2,
    "regbench.claims": 3,
    "regbench.report": 4,
    "regbench": 0,  # config, schema, io, cli: the bottom
}


# Known exceptions, each with its reason; the lead decides where the code moves.
KNOWN_UPWARD = {
    # params validation checks experiment names against the registry (regbench/data/experiments):
    # config.py belongs to another engineer this session; move the registry down or pass it in.
    ("regbench.config", "regbench.data.experiments"),
}


def modules() -> list[str]:
    found = []
    for path in sorted((ROOT / "regbench").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append(".".join(parts))
    return found


def layer(module: str) -> int:
    return next(number for prefix, number in LAYERS.items() if module == prefix or module.startswith(prefix + "."))


def imported(module: str) -> set[str]:
    """Every module an import statement of ``module`` names (relative imports resolved)."""
    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


# In a fresh interpreter, each module is imported with no regbench module loaded: the project's modules are
# dropped from sys.modules before each one (they have no side effects at import), the libraries stay loaded
# (they cannot be part of a cycle of ours), so the check costs one TensorFlow import, not fifty.
ALONE = """
import importlib, json, sys
failures = {}
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "regbench" or n.startswith("regbench.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception as error:
        failures[module] = repr(error)
print(json.dumps(failures))
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    done = subprocess.run(
        [sys.executable, "-c", ALONE, *modules()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def test_the_import_check_sees_a_cycle(tmp_path):
    """Two modules importing a name from each other: importing either alone fails, as a cycle in regbench would."""
    package = tmp_path / "regbench_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from regbench_probe.b import B\nA = 1\n")
    (package / "b.py").write_text("from regbench_probe.a import A\nB = 2\n")
    script = ALONE.replace('n == "regbench" or n.startswith("regbench.")', 'n.startswith("regbench_probe")')
    done = subprocess.run(
        [sys.executable, "-c", script, "regbench_probe.a", "regbench_probe.b"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) == {"regbench_probe.a", "regbench_probe.b"}


@pytest.mark.parametrize("module", modules())
def test_a_module_imports_only_from_its_layer_or_below(module):
    own = layer(module)
    wrong = sorted(
        name
        for name in imported(module)
        if name.split(".")[0] in ("tools", "tests", "stages")
        or (name.startswith("regbench.") and name in set(modules()) and layer(name) > own)
        if (module, name) not in KNOWN_UPWARD
    )
    assert not wrong, f"{module} (layer {own}) imports {wrong} from above its layer or outside the library"


def test_the_layer_check_sees_an_upward_import():
    assert layer("regbench.train.records") == 2 and layer("regbench.config") == 0
    assert "regbench.train.records" in imported("regbench.claims.measures")
    assert "regbench.train.executor" in imported("regbench.train.variant")
