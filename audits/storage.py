"""Files of run data and caches, in a local folder or on an object store, through one small API.

A location is either a `pathlib.Path` (a local folder) or an fsspec-backed path with the same
interface, such as Airflow's `ObjectStoragePath` (`s3://bucket/prefix`): tasks of one run may run
on different machines, so what one task writes for another goes to a location both can reach.

Locally, files are written owner-only (0600 in 0700 folders) and atomically (a temporary file,
then a rename), so a reader never sees half a file. On an object store one PUT is atomic and who
may read is the bucket's policy: no object is written with a public ACL. fsspec caches directory
listings per process; every change here drops that cache, so a task sees what it just wrote or
deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path, PurePath
from typing import Any, TypeAlias

# A local Path, or an object-store path (upath.UPath / airflow.sdk.ObjectStoragePath).
Location: TypeAlias = Any


def as_location(location: Location | str) -> Location:
    """A location from what callers pass: a str is a local path (object stores come as paths already)."""
    return Path(location) if isinstance(location, str) else location


def is_local(location: Location) -> bool:
    return isinstance(location, PurePath)


def _refresh(location: Location) -> None:
    if not is_local(location):
        location.fs.invalidate_cache()


def write_bytes(path: Location, data: bytes) -> None:
    """Write `data` to `path` whole: owner-only and renamed into place locally, one PUT remotely."""
    if not is_local(path):
        path.write_bytes(data)
        _refresh(path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bytes(path: Location) -> bytes | None:
    """The file's content, or None when there is none."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def exists(path: Location) -> bool:
    """Whether a file is at `path` (asked of the store, not of a cached listing)."""
    _refresh(path)
    return path.is_file()


def remove(path: Location) -> bool:
    """Delete one file; whether there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    finally:
        _refresh(path)
    return True


def remove_tree(folder: Location) -> bool:
    """Delete a folder and everything under it; whether there was anything."""
    if is_local(folder):
        if not Path(folder).exists():
            return False
        shutil.rmtree(folder)
        return True
    _refresh(folder)
    if not folder.exists():
        return False
    folder.fs.rm(folder.path, recursive=True)
    _refresh(folder)
    return True


def files(folder: Location) -> list[tuple[tuple[str, ...], float]]:
    """Every file under `folder`: its path relative to it, as parts, and when it last changed."""
    if is_local(folder):
        root = Path(folder)
        if not root.is_dir():
            return []
        return [(p.relative_to(root).parts, p.stat().st_mtime) for p in root.rglob("*") if p.is_file()]
    _refresh(folder)
    prefix = folder.path.rstrip("/") + "/"
    found = []
    for name, info in folder.fs.find(folder.path, detail=True).items():
        if info.get("type") == "directory" or not name.startswith(prefix):
            continue
        changed = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        stamp = changed.timestamp() if hasattr(changed, "timestamp") else float(changed or time.time())
        found.append((tuple(name[len(prefix):].split("/")), stamp))
    return found


def relative(path: Location, root: Location) -> str:
    """`path` below `root`, as a/b/c; a ValueError when it is not below it."""
    if is_local(path) and is_local(root):
        return Path(path).relative_to(root).as_posix()
    inner, outer = str(path.path).rstrip("/"), str(root.path).rstrip("/") + "/"
    if is_local(path) or is_local(root) or path.protocol != root.protocol or not inner.startswith(outer):
        raise ValueError(f"{path} is not under {root}")
    return inner[len(outer):]


def glob(folder: Location, pattern: str) -> list[Location]:
    """Files in `folder` (not below) whose names match `pattern`, sorted."""
    _refresh(folder)
    try:
        return sorted((p for p in folder.glob(pattern) if p.is_file()), key=lambda p: p.name)
    except FileNotFoundError:
        return []
