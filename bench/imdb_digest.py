"""Reading the IMDB archive: the hand-written ustar reader against the standard library's tarfile.

    python bench/imdb_digest.py [archive] [rounds]

Each way reads every regular file of the real aclImdb_v1.tar.gz (the offline
mirror's re-pack: 50,008 files, 111 MB once decompressed) and computes the
labeled-review content digest that fetch@imdb verifies and prepare@imdb repeats.
The readers take turns, round after round, each in its own process (for its own
peak RSS), so that a busy machine slows all of them alike; the median time of
each is printed with its ratio. All must yield the same digest.

Result (2 cores shared with other work, 5 rounds): by hand 2.3 s, 231 MB;
tarfile stream mode 6.0 s, 64 MB. regbench/data/digests.py now uses tarfile: see there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from regbench.data import digests  # noqa: E402

DEFAULT_ARCHIVE = Path("/work/shared/data/aclImdb_v1.tar.gz")


def ustar_reader(path: Path) -> Iterator[tuple[str, bytes]]:
    """The reader regbench/data/digests.py had up to this benchmark: ustar headers parsed by hand."""
    with gzip.open(path, "rb") as handle:
        blob = handle.read()
    view = memoryview(blob)
    offset, members = 0, []
    while offset + 512 <= len(blob):
        header = blob[offset : offset + 512]
        if header.count(0) == 512:
            break
        if header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0", b"5"):
            raise ValueError("not a plain ustar archive")
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        name = header[0:100].split(b"\0", 1)[0].decode()
        prefix = header[345:500].split(b"\0", 1)[0].decode()
        if prefix:
            name = f"{prefix}/{name}"
        offset += 512
        if header[156:157] != b"5":
            members.append((name, offset, size))
        offset += (size + 511) // 512 * 512
    for name, start, size in members:
        yield name, bytes(view[start : start + size])


def tarfile_seekable(path: Path) -> Iterator[tuple[str, bytes]]:
    """tarfile's default random-access mode ("r:gz"), the old reader's fallback for other header kinds."""
    with tarfile.open(path, mode="r:gz") as archive:
        for member in archive:
            if member.isfile():
                yield member.name, archive.extractfile(member).read()


def digest_with(reader: Callable[[Path], Iterator[tuple[str, bytes]]], path: Path) -> tuple[str, int]:

    records = []
    for name, data in reader(path):
        if digests.IMDB_REVIEW.match(name):
            records.append((name.split("/", 1)[1], hashlib.sha256(data).hexdigest()))
    return digests.imdb_content_digest(records)


def measure(reader: str, path: Path) -> dict:
    """One reader in this process: seconds, the digest, and the process's peak RSS."""
    started = time.perf_counter()
    digest, count = digest_with(READERS[reader], path)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "digest": digest, "count": count, "peak_mb": peak_mb}


# "tarfile r|gz" is regbench's own reader now: one sequential pass in tarfile's stream mode.
READERS = {"ustar by hand": ustar_reader, "tarfile r|gz": digests.iter_tar_gz, "tarfile r:gz": tarfile_seekable}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2], Path(sys.argv[3]))))
        return
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ARCHIVE
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    samples: dict[str, list[dict]] = {name: [] for name in READERS}
    for _ in range(rounds):
        for name in READERS:
            # Its own process, so that the peak RSS is this reader's alone.
            result = subprocess.run(
                [sys.executable, __file__, "--one", name, str(path)], capture_output=True, text=True, check=True
            )
            samples[name].append(json.loads(result.stdout))
    if len({(s["digest"], s["count"]) for runs in samples.values() for s in runs}) != 1:
        raise SystemExit(f"the readers disagree: {samples}")
    first = samples["ustar by hand"][0]
    print(f"{path.name}: {first['count']} labeled reviews, content digest {first['digest'][:16]}…, {rounds} rounds")
    reference = statistics.median(s["seconds"] for s in samples["ustar by hand"])
    for name, runs in samples.items():
        seconds = [s["seconds"] for s in runs]
        median = statistics.median(seconds)
        print(
            f"  {name:14s} median {median:6.2f} s  (min {min(seconds):.2f}, max {max(seconds):.2f})"
            f"  {median / reference:.2f}x the hand-written reader's time;"
            f"  peak RSS {max(s['peak_mb'] for s in runs):.0f} MB"
        )


if __name__ == "__main__":
    main()
