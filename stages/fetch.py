"""DVC stage fetch@<dataset>: the verified upstream file in data/raw/<dataset>/."""

from __future__ import annotations

from pathlib import Path

from regbench import config
from regbench.cli import one_argument, run_stage
from regbench.data.fetch import SOURCE_RECORD, fetch_dataset
from regbench.io import atomic_directory, write_json


def main(argv: list[str]) -> None:
    params = config.load()
    name = one_argument(argv, params.fetch.datasets, "dataset")
    repo_root = Path.cwd()
    with atomic_directory(repo_root / "data" / "raw" / name) as out_dir:
        fetched = fetch_dataset(name, params.fetch.datasets[name], params.fetch, out_dir, repo_root)
        write_json(out_dir / SOURCE_RECORD, fetched.record())
    print(f"fetch@{name}: {fetched.file} from {fetched.origin} ({fetched.digest_kind} {fetched.digest[:12]}…)")


if __name__ == "__main__":
    run_stage(main)
