"""DVC stage prepare@<experiment>: model-ready arrays and a manifest in data/prepared/<experiment>/."""

from __future__ import annotations

from pathlib import Path

from regbench import config, datasets, prepare
from regbench.cli import one_argument, run_stage
from regbench.fetch import SOURCE_RECORD
from regbench.io import atomic_directory, read_json
from regbench.schema import to_plain

# Which fetched dataset each experiment reads; circles and synthetic are generated.
RAW_DATASET = {"sonar": "sonar", "mnist": "mnist", "imdb": "imdb"}


def main(argv: list[str]) -> None:
    params = config.load()
    name = one_argument(argv, config.EXPERIMENTS, "experiment")
    section = getattr(params.prepare, name)
    source = {
        "dataset": name,
        "source": "generated",
        "origin": "scikit-learn",
        "fallback_used": False,
    }
    if name in RAW_DATASET:
        raw_dir = Path("data/raw") / RAW_DATASET[name]
        if not (raw_dir / SOURCE_RECORD).exists():
            raise FileNotFoundError(f"{raw_dir / SOURCE_RECORD} not found: run `dvc repro fetch@{name}` first")
        source = read_json(raw_dir / SOURCE_RECORD)
        raw_file = raw_dir / source["file"]
    if name == "circles":
        arrays, info = prepare.circles(section)
    elif name == "synthetic":
        arrays, info = prepare.synthetic(section)
    elif name == "sonar":
        arrays, info = prepare.sonar(section, raw_file)
    elif name == "mnist":
        arrays, info = prepare.mnist(section, raw_file, source["source"])
    else:
        arrays, info = prepare.imdb(section, raw_file)
        if info["raw_content_digest"] != source["digest"]:
            raise prepare.DataError(
                f"{raw_file}: content digest {info['raw_content_digest']} does not match the fetched "
                f"{source['digest']}; rerun `dvc repro -f fetch@imdb`"
            )
    manifest = {"experiment": name, "source": source, "params": to_plain(section), **info}
    with atomic_directory(Path("data/prepared") / name) as out_dir:
        manifest = datasets.save(out_dir, arrays, manifest)
    print(f"prepare@{name}: {manifest['shapes']} from {source['source']} ({manifest['content_digest'][:12]}…)")


if __name__ == "__main__":
    run_stage(main)
