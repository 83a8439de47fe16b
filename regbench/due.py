"""The line `./run.sh repro` prints before `dvc repro`: how many stages are due, and how many runs.

``python -m regbench.due [targets...]`` asks DVC which stages changed (what `dvc status` reports;
about as long as a no-op `dvc repro`) and counts the runs of the due train stages from params.yaml:
seeds x members x folds. Runs a stage already has in its run store are read back, not trained, so the
count is an upper bound. Stages downstream of a changed one are due too: DVC reruns them when their
inputs change, which `dvc status` cannot know in advance; the line says "at least" for that reason.
Not a stage's dependency: it changes no result.
"""

from __future__ import annotations

import sys

from regbench import config


def due_stages(targets: list[str]) -> list[str]:
    from dvc.repo import Repo

    with Repo(".") as repo:
        return sorted(repo.status(targets=targets or None))


def runs_of(params: config.Params, raw_prepare: dict, run_name: str) -> int:
    experiment, variant = params.run(run_name)
    folds = 1
    if experiment.defaults.validation == "cv":
        folds = int((raw_prepare.get(experiment.data) or {}).get("folds", 1))
    return len(experiment.seeds_of(variant.name)) * len(variant.members) * folds


def line(stages: list[str], params: config.Params, raw_prepare: dict) -> str:
    train = [stage.split("@", 1)[1] for stage in stages if stage.startswith("train@")]
    runs = sum(runs_of(params, raw_prepare, name) for name in train if name in params.train.runs)
    if not stages:
        return "dvc repro: no stage is due (outputs match code, params and data)"
    return (
        f"dvc repro: at least {len(stages)} stage(s) due, {len(train)} of them train stages with up to {runs} runs "
        "(runs already in a stage's run store are read back, not trained)"
    )


def main(argv: list[str]) -> None:
    import yaml

    params = config.load()
    raw = yaml.safe_load(open("params.yaml", encoding="utf-8"))  # noqa: SIM115 - read once
    targets, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-S", "--set-param", "--glob", "--pull"):
            skip = arg in ("-S", "--set-param")
        elif not arg.startswith("-"):
            targets.append(arg)
    if {"-f", "--force", "-s", "--single-item", "--downstream", "-R", "--recursive"} & set(argv):
        return  # the stages run are chosen by the flags, not by what changed: nothing useful to count
    print(line(due_stages(targets), params, raw.get("prepare") or {}), file=sys.stderr)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as error:  # noqa: BLE001 - a count that cannot be made must not stop the run
        print(f"dvc repro: (could not count the stages due: {error})", file=sys.stderr)
