"""Get each dataset file from a local mirror, an installed package or its URL, verified.

The file is written to a temporary name, verified against the digest declared
in params.yaml, and only then moved into place: a corrupt or truncated
download never reaches the DVC cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from regbench import digests
from regbench.config import DatasetFetchParams, FetchParams, SourceParams
from regbench.io import atomic_path

log = logging.getLogger(__name__)
MIRROR_ENV = "REGBENCH_MIRROR"
SOURCE_RECORD = "source.json"


class FetchError(RuntimeError):
    """A dataset file could not be obtained or did not verify."""


class Unreachable(FetchError):
    """Neither a mirror copy nor the network could provide the file."""


@dataclass(frozen=True)
class Fetched:
    dataset: str
    source: str
    file: str
    origin: str
    digest_kind: str
    digest: str
    fallback_used: bool

    def record(self) -> dict:
        return dict(self.__dict__)


def mirror_directory(params: FetchParams, repo_root: Path) -> Path | None:
    configured = os.environ.get(MIRROR_ENV) or params.mirror
    if not configured:
        return None
    path = Path(configured)
    return (path if path.is_absolute() else repo_root / path).resolve()


def compute_digest(kind: str, path: Path) -> str:
    try:
        if kind == "sha256":
            return digests.sha256_file(path)
        if kind == "sonar-normalized":
            return digests.sonar_digest(path.read_bytes())
        if kind == "imdb-content":
            digest, count = digests.imdb_archive_digest(path)
            if count == 0:
                raise FetchError(f"{path.name}: no labeled review files found in the archive")
            return digest
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as error:
        # A truncated gzip raises EOFError, a damaged tar a ReadError (an OSError subclass).
        return f"unreadable ({type(error).__name__}: {error})"
    raise ValueError(f"unknown digest kind {kind!r}")


def verify(dataset: str, source: SourceParams, path: Path, origin: str) -> str:
    actual = compute_digest(source.digest_kind, path)
    if actual != source.digest:
        raise FetchError(
            f"{dataset}: {source.file} from {origin} failed verification ({source.digest_kind}):\n"
            f"  expected {source.digest}\n  actual   {actual}\n"
            "The file is corrupt, truncated or a different version. Nothing was written. "
            "Replace the mirror copy (or delete it to download afresh), or fix the digest in "
            "params.yaml if the upstream file really changed."
        )
    return actual


def download(url: str, destination: Path, params: FetchParams) -> None:
    """Download with a timeout, a progress bar and retries with exponential backoff."""
    attempts = params.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=params.timeout_s) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    destination.open("wb") as out,
                    tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name) as bar,
                ):
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            return
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            # A host name that does not resolve means no network: retrying will not help.
            no_network = isinstance(getattr(error, "reason", None), socket.gaierror)
            if attempt == attempts or no_network:
                tried = f"{attempt} attempt" + ("s" if attempt > 1 else "")
                raise Unreachable(f"download of {url} failed after {tried}: {error}") from error
            wait = params.backoff_s * 2 ** (attempt - 1)
            log.warning(
                "download of %s failed (%s); retry %d/%d in %.0f s",
                url,
                error,
                attempt,
                attempts - 1,
                wait,
            )
            time.sleep(wait)


def _obtain(
    source: SourceParams, temporary: Path, params: FetchParams, mirror: Path | None, missing_mirror: str = ""
) -> str:
    """Copy or download ``source`` into ``temporary``; return where it came from."""
    if source.package is not None:
        spec = importlib.util.find_spec(source.package)
        if spec is None or spec.origin is None:
            raise Unreachable(f"package {source.package!r} is not installed: pip install {source.package}")
        packaged = Path(spec.origin).parent / source.package_path
        if not packaged.exists():
            raise Unreachable(f"{packaged} is missing from the installed {source.package} package")
        shutil.copyfile(packaged, temporary)
        return f"package:{source.package}/{source.package_path}"
    if mirror is not None:
        candidate = mirror / source.file
        if candidate.is_file():
            shutil.copyfile(candidate, temporary)
            # The file name only: this record is part of the fetched data that DVC hashes, and the same
            # data from a mirror at another path must not count as changed.
            log.info("%s: copied from the mirror %s", source.file, mirror)
            return f"mirror:{source.file}"
        log.info("%s not in mirror %s; downloading", source.file, mirror)
    try:
        download(source.url, temporary, params)
    except Unreachable as error:
        if mirror is not None:
            where = f"the mirror {mirror} has no {source.file}"
        else:
            where = missing_mirror or "no mirror is configured"
        raise Unreachable(
            f"{error}\n{where}. Without network access, put the upstream file {source.file!r} in a "
            f"directory and point to it with the environment variable {MIRROR_ENV}=<dir> or "
            "fetch.mirror in params.yaml (here: ../shared/data)."
        ) from None
    return f"url:{source.url}"


def fetch_dataset(
    name: str, dataset: DatasetFetchParams, params: FetchParams, out_dir: Path, repo_root: Path
) -> Fetched:
    """Fetch one dataset into ``out_dir/<file>``, falling back to ``dataset.fallback`` if unreachable."""
    mirror = mirror_directory(params, repo_root)
    missing_mirror = ""
    if mirror is not None and not mirror.is_dir():
        setting = f"{MIRROR_ENV}={os.environ[MIRROR_ENV]}" if os.environ.get(MIRROR_ENV) else "fetch.mirror"
        missing_mirror = f"the mirror directory {mirror} (from {setting}) does not exist: fix the path"
        log.warning("%s; files will be downloaded", missing_mirror)
        mirror = None
    order = [dataset.use] + ([dataset.fallback] if dataset.fallback else [])
    failures = []
    for source_name in order:
        source = dataset.sources[source_name]
        target = out_dir / source.file
        try:
            with atomic_path(target) as temporary:
                origin = _obtain(source, temporary, params, mirror, missing_mirror)
                digest = verify(name, source, temporary, origin)
        except Unreachable as error:
            failures.append(f"[{source_name}] {error}")
            continue
        fallback_used = source_name != dataset.use
        if fallback_used:
            log.warning("%s: source %r unreachable, using fallback %r", name, dataset.use, source_name)
        return Fetched(name, source_name, source.file, origin, source.digest_kind, digest, fallback_used)
    raise Unreachable(f"{name}: no source could be reached:\n" + "\n".join(failures))
