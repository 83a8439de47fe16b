"""Write outputs so that a failure or a kill leaves nothing half-written behind.

Temporary files and directories sit beside their target as ``.<name>.p<pid>.<random>.part``: DVC ignores
them (``.dvcignore``), and the next writer of the same target removes those whose process is gone, so a
SIGKILL, which no ``finally`` survives, leaves nothing that lasts.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

PART_SUFFIX = ".part"
# The previous directory while a new one replaces it (atomic_directory): a .part too, so DVC ignores it.
ASIDE_SUFFIX = ".old" + PART_SUFFIX
# Where DVC lists the cached outputs of a folder, so that git ignores them.
DVC_GITIGNORE = ".gitignore"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    handle, temporary = tempfile.mkstemp(prefix=_part_prefix(target), suffix=PART_SUFFIX, dir=target.parent)
    os.close(handle)
    temporary = Path(temporary)
    # mkstemp makes owner-only files; outputs should get the usual permissions.
    temporary.chmod(0o666 & ~umask())
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; it replaces ``target`` whole only if the block succeeds.

    A directory cannot be swapped in one rename, so the old one is renamed aside first, the new one moved
    in, and only then the old one deleted: at no moment is the only copy of either being deleted. A kill
    between the two renames leaves the old directory aside; the next writer of ``target`` puts it back
    before it starts (it may read it: the run store does). The old directory's ``.gitignore`` carries over.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_aside(target)
    remove_leftovers(target)
    temporary = Path(tempfile.mkdtemp(prefix=_part_prefix(target), suffix=PART_SUFFIX, dir=target.parent))
    temporary.chmod(0o777 & ~umask())
    try:
        yield temporary
        kept = target / DVC_GITIGNORE
        if kept.is_file() and not (temporary / DVC_GITIGNORE).exists():
            # DVC's list of the cached outputs it keeps in this folder, not the writer's: without it, a stage
            # run by hand (outside DVC) leaves them untracked in `git status` until DVC next writes it.
            with contextlib.suppress(OSError):  # DVC writes it again on its next run: not worth the outputs
                shutil.copy2(kept, temporary / DVC_GITIGNORE)
        aside = None
        if target.exists():
            aside = target.parent / f"{_part_prefix(target)}{os.urandom(4).hex()}{ASIDE_SUFFIX}"
            os.rename(target, aside)
        os.rename(temporary, target)
        if aside is not None:
            shutil.rmtree(aside)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def restore_aside(target: str | Path) -> Path | None:
    """Put back the previous ``target`` that a killed writer had renamed aside; return where it was."""
    target = Path(target)
    if target.exists():
        return None
    asides = [path for path in _dead_writers_parts(target) if path.name.endswith(ASIDE_SUFFIX) and path.is_dir()]
    if not asides:
        return None
    # Several only if writers were killed twice in that window with nothing written between: the newest.
    newest = max(asides, key=lambda path: path.stat().st_mtime)
    os.rename(newest, target)
    return newest


def _part_prefix(target: Path) -> str:
    return f".{target.name}.p{os.getpid()}."


def remove_leftovers(target: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` left by writers that no longer run; return them.

    A live writer's (another stage of a parallel queue, say) are left alone.
    """
    removed = []
    for candidate in _dead_writers_parts(target):
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _dead_writers_parts(target: str | Path) -> list[Path]:
    """The temporary siblings of ``target`` whose writing process is gone."""
    target = Path(target)
    found = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.p*{PART_SUFFIX}"):
        owner = candidate.name[len(target.name) + 3 :].split(".", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            found.append(candidate)
    return found


def umask() -> int:
    """This process' umask: reading it means setting it, so it is set straight back."""
    current = os.umask(0)
    os.umask(current)
    return current


def start_time(pid: int | None = None) -> str | None:
    """A process' creation time, to the millisecond, as recorded beside its pid; None if there is none.

    Pids are reused once their process is gone: a pid and its start time together name one process.
    """
    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
