"""How far a run's settings travel: the places they pass from the train entry to the engine, and the climbs.

Traces a real ``regbench.train.variant.train`` call on the fixture data of bench/engine_bits.py with
``sys.setprofile`` and records every call of a regbench function that receives a run's settings: an
argument that is the ``Params``, a ``VariantParams`` or ``Member``, or an object holding one (a field, or
the first item of a list), which covers every run type the code has had; ``self`` does not count (a
method of the object holding the settings) nor do dataclasses' generated methods. Counted, along the call path
in time order, with each function taken the first time it is entered:

- places: the distinct functions that receive the settings, and the modules they are in;
- climbs: the times the next such function is entered at a stack depth no deeper than the previous
  one, i.e. control climbed back up before the settings went on down.

Run it at two commits (copy this file and bench/engine_bits.py into the older tree) to compare:

    python bench/params_path.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# A stacked variant with CV folds (the default path) and IMDB's per-run path.
RUNS = {"stacked": "sonar-dropout_maxnorm", "per_run": "imdb-original"}


def carries_settings(value, kinds, depth: int = 0) -> bool:
    if isinstance(value, kinds):
        return True
    if depth >= 1:
        return False
    if isinstance(value, list | tuple) and value:
        return carries_settings(value[0], kinds, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(carries_settings(getattr(value, f.name, None), kinds, depth + 1) for f in dataclasses.fields(value))
    return False


def trace(name: str) -> dict:
    from regbench import config
    from regbench.train.variant import train

    kinds = (config.Params, config.VariantParams, config.Member)
    params = config.load()
    path: list[tuple[str, str, int]] = []
    seen: set[tuple[str, str]] = set()

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("regbench"):
            return
        code = frame.f_code
        place = (module, code.co_qualname)
        if place in seen or "__create_fn__" in code.co_qualname:
            return  # dataclasses' generated __init__/__eq__/__hash__ are not places the code chose
        # A method of the object that holds the settings (self) is the object itself, not a place it went.
        names = [n for n in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if n not in ("self", "cls")]
        if not any(carries_settings(frame.f_locals.get(n), kinds) for n in names):
            return
        depth, outer = 0, frame
        while outer is not None:
            depth, outer = depth + 1, outer.f_back
        seen.add(place)
        path.append((module, code.co_qualname, depth))

    with tempfile.TemporaryDirectory(dir=os.getcwd()) as out:
        # Worker threads too (side-by-side runs and stacked parts); a thread's depth counts from its own start.
        threading.setprofile(profile)
        sys.setprofile(profile)
        try:
            train(params, name, Path(out))
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    climbs = sum(1 for before, after in zip(path, path[1:], strict=False) if after[2] <= before[2])
    return {
        "run": name,
        "places": len(path),
        "modules": len({module for module, _, _ in path}),
        "climbs": climbs,
        "path": [f"{'  ' * max(0, depth - path[0][2])}{module}:{function}" for module, function, depth in path],
    }


def main() -> None:
    from bench.engine_bits import prepare

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        prepare(workdir)
        os.chdir(workdir)
        results = {label: trace(name) for label, name in RUNS.items()}
    for label, result in results.items():
        print(f"{label} ({result['run']}): {result['places']} places in {result['modules']} modules, "
              f"{result['climbs']} climbs", file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
