"""Get each dataset file from a local mirror, an installed package or its URL, verified.

The file is written to a temporary name, verified against the digest declared
in params.yaml, and only then moved into place: a corrupt or truncated
download never reaches the DVC cache.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import urllib3
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, NameResolutionError, ProtocolError, ReadTimeoutError, SSLError
from urllib3.util import Retry

from regbench.data import digests
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
        # A truncated gzip raises EOFError, a damaged tar digests.ArchiveError (a ValueError).
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


# Server-side trouble worth waiting for; a 4xx answer (wrong URL, forbidden) will not change on retry.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class DiskError(FetchError):
    """The file could not be written here (disk full, read-only, quota): not a reason to fall back."""


class _Retry(Retry):
    """urllib3's Retry, except that a host name that does not resolve means no network: no waiting."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, NameResolutionError):
            raise MaxRetryError(_pool, url, error)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def retry_policy(params: FetchParams) -> Retry:
    """Connection errors, read timeouts and 429/5xx answers are retried ``fetch.retries`` times, waiting
    ``backoff_s * 2**(n-1)`` seconds before the n-th retry after the first (urllib3's backoff)."""
    return _Retry(
        total=params.retries,
        backoff_factor=params.backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )


def download(url: str, destination: Path, params: FetchParams) -> None:
    """Download with a timeout, a progress bar and urllib3's retries; a failed write is a ``DiskError``."""
    retries = retry_policy(params)
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=params.timeout_s, read=params.timeout_s))
    while True:
        try:
            response = http.request("GET", url, retries=retries, preload_content=False)
        except MaxRetryError as error:
            raise Unreachable(f"download of {url} failed: {error.reason}") from error
        try:
            if response.status >= 400:
                kind = "the server failed" if response.status >= 500 else "the URL is wrong or the file is gone"
                raise Unreachable(f"download of {url} failed: HTTP {response.status} ({kind})")
            _stream(response, url, destination)
            return
        except (ProtocolError, ReadTimeoutError, SSLError) as error:
            # The connection broke mid-file: urllib3 retries requests, not bodies, so count it here.
            try:
                retries = (response.retries or retries).increment("GET", url, error=error)
            except MaxRetryError:
                raise Unreachable(f"download of {url} broke off: {error}") from error
            log.warning("download of %s broke off (%s); retrying", url, error)
            retries.sleep()
        finally:
            response.release_conn()


def _stream(response, url: str, destination: Path) -> None:
    total = int(response.headers.get("Content-Length") or 0) or None
    # Network failures surface as urllib3 errors, never OSError: an OSError here is the disk's.
    with (
        tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name) as bar,
        _disk_writes(destination),
        destination.open("wb") as out,
    ):
        for chunk in response.stream(1 << 16):
            out.write(chunk)
            bar.update(len(chunk))


def _copy(source: Path, destination: Path) -> None:
    """Copy a mirror or package file; a failed read is the source's fault, a failed write the disk's."""

    def read(handle) -> bytes:
        try:
            return handle.read(1 << 20)
        except OSError as error:
            raise FetchError(f"cannot read {source}: {error}") from error

    try:
        handle = source.open("rb")
    except OSError as error:
        raise FetchError(f"cannot read {source}: {error}") from error
    with handle, _disk_writes(destination), destination.open("wb") as out:
        while chunk := read(handle):
            out.write(chunk)


@contextlib.contextmanager
def _disk_writes(destination: Path) -> Iterator[None]:
    """An OSError in the block (no space, quota, read-only, I/O error) is a ``DiskError``, never a fallback."""
    try:
        yield
    except OSError as error:
        code = errno.errorcode.get(error.errno, "?")
        raise DiskError(
            f"cannot write {destination.parent}: {error.strerror or error} ({code}). The disk failed, not the "
            "source: free space (or fix permissions) there and rerun. Nothing was kept; no fallback source was tried."
        ) from error


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
        _copy(packaged, temporary)
        return f"package:{source.package}/{source.package_path}"
    if mirror is not None:
        candidate = mirror / source.file
        if candidate.is_file():
            _copy(candidate, temporary)
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
