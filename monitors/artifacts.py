"""Per-run artifacts: the sample (deleted when the run ends), probe scores and the report.

A run's folder is derived from (deployment, dag_id, run_id) alone, so a cleanup task can find
it even when the task that wrote it failed before returning anything. Sample files hold
production vectors and text: they are written owner-only and removed by the run's cleanup;
everything else is pruned after the configured retention.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from audits.audit import ProbeResult
from audits.results import Sample

log = logging.getLogger(__name__)

SAMPLE_FILE = "sample.npz"


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value)[:200]


def run_dir(root: Path, deployment: str, dag_id: str, run_id: str) -> Path:
    return Path(root) / _slug(deployment) / _slug(dag_id) / _slug(run_id)


def write_sample(folder: Path, sample: Sample) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / SAMPLE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, ids=np.array(sample.ids, dtype=str), vectors=sample.vectors,
                 texts=np.array(sample.texts if sample.texts is not None else [], dtype=str),
                 has_text=np.array(sample.texts is not None), version=np.array(sample.version),
                 dims=np.array(sample.dims if sample.dims is not None else [], dtype=np.int64),
                 created_at=np.array([np.nan if t is None else t for t in sample.created_at or ()], dtype=float),
                 labels=np.array(sample.labels if sample.labels is not None else [], dtype=str),
                 has_labels=np.array(sample.labels is not None))
    return path


def read_sample(folder: Path) -> Sample:
    with np.load(Path(folder) / SAMPLE_FILE, allow_pickle=False) as data:
        texts = tuple(str(t) for t in data["texts"]) if bool(data["has_text"]) else None
        n = len(data["ids"])
        dims = tuple(int(d) for d in data["dims"]) if "dims" in data and len(data["dims"]) == n else None
        created = (tuple(None if np.isnan(t) else float(t) for t in data["created_at"])
                   if "created_at" in data and len(data["created_at"]) == n else None)
        labels = tuple(str(x) for x in data["labels"]) if "has_labels" in data and bool(data["has_labels"]) else None
        return Sample(ids=tuple(str(i) for i in data["ids"]), vectors=data["vectors"], texts=texts,
                      version=str(data["version"]), labels=labels, dims=dims, created_at=created)


def write_probe_result(folder: Path, result: ProbeResult) -> Path:
    """One probe's scores (or error): numbers and messages only, no text or vectors."""
    Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(folder) / f"probe-{_slug(result.probe)}.json"
    path.write_text(json.dumps(result.to_dict(), indent=1))
    return path


def read_probe_results(folder: Path) -> dict[str, ProbeResult]:
    return {r.probe: r for r in (ProbeResult.from_dict(json.loads(p.read_text()))
                                 for p in sorted(Path(folder).glob("probe-*.json")))}


def delete_sample(folder: Path) -> bool:
    path = Path(folder) / SAMPLE_FILE
    if path.exists():
        path.unlink()
        return True
    return False


def prune(root: Path, retention_days: int, now: float | None = None) -> int:
    """Delete run folders whose newest file is older than the retention; returns how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    cutoff = (now or time.time()) - retention_days * 86400
    removed = 0
    for folder in root.glob("*/*/*"):
        if not folder.is_dir():
            continue
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("pruned %d run folders older than %d days under %s", removed, retention_days, root)
    return removed


REFERENCE_FILE = "reference.npy"


def reference_path(root: Path, deployment: str, version: str) -> Path:
    """Where a version's reference sample lives: beside the run folders, so the same retention prunes
    the references of versions no longer audited (a passing audit rewrites its version's)."""
    return Path(root) / _slug(deployment) / "_references" / _slug(version) / REFERENCE_FILE


def write_reference(root: Path, deployment: str, version: str, vectors: np.ndarray) -> Path:
    """Keep the vectors (no ids, no text) of a passing audit's sample as the version's drift reference."""
    path = reference_path(root, deployment, version)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, np.asarray(vectors, dtype=np.float32))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)   # a reader never sees half a file
    return path


def read_reference(root: Path, deployment: str, version: str) -> np.ndarray | None:
    path = reference_path(root, deployment, version)
    return np.load(path, allow_pickle=False) if path.is_file() else None
