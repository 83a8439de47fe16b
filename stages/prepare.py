"""DVC stage prepare@<experiment>: model-ready arrays and a manifest in data/prepared/<experiment>/."""

from __future__ import annotations

from pathlib import Path

from regbench import config
from regbench.cli import one_argument, run_stage
from regbench.data import datasets
from regbench.data.experiments import Raw, registry
from regbench.data.fetch import SOURCE_RECORD
from regbench.io import atomic_directory, read_json
from regbench.schema import to_plain


def main(argv: list[str]) -> None:
    params = config.load()
    name = one_argument(argv, params.prepare, "experiment")
    experiment = registry()[name]
    section = params.prepare[name]
    raw = None
    if experiment.raw_dataset is None:
        source = {"dataset": name, "source": "generated", "origin": experiment.generator, "fallback_used": False}
    else:
        raw_dir = Path("data/raw") / experiment.raw_dataset
        if not (raw_dir / SOURCE_RECORD).exists():
            raise FileNotFoundError(
                f"{raw_dir / SOURCE_RECORD} not found: run `dvc repro fetch@{experiment.raw_dataset}` first"
            )
        source = read_json(raw_dir / SOURCE_RECORD)
        raw = Raw(file=raw_dir / source["file"], source=source)
    arrays, info = experiment.prepare(section, raw)
    manifest = {"experiment": name, "source": source, "params": to_plain(section), **info}
    with atomic_directory(Path("data/prepared") / name) as out_dir:
        manifest = datasets.save(out_dir, arrays, manifest)
    shapes = ", ".join(f"{array} {'×'.join(map(str, shape))}" for array, shape in manifest["shapes"].items())
    print(f"prepare@{name}: {shapes} from {source['source']} ({manifest['content_digest'][:12]}…)")


if __name__ == "__main__":
    run_stage(main)
