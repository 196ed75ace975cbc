"""Per-run artifacts: the sample (deleted when the run ends), probe scores and the report.

A run's folder is derived from (deployment, dag_id, run_id) alone, so a cleanup task can find
it even when the task that wrote it failed before returning anything. It lies under
`artifacts.root`, a local folder or an object store (audits.storage), so that the tasks of one run
can run on different workers. Sample files hold production vectors and text: they are written
owner-only where the store allows it and removed by the run's cleanup; everything else is pruned
after the configured retention, except the fitted transforms' artifacts under
`transforms/<deployment>/` (monitors.fitted_transforms), which versions pin by hash.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time

import numpy as np

from audits import storage
from audits.audit import ProbeResult
from audits.results import Sample
from audits.storage import Location

log = logging.getLogger(__name__)

SAMPLE_FILE = "sample.npz"
REFERENCES = "_references"
TRANSFORMS = "transforms"   # fitted transforms' artifacts: kept as long as a version may pin them


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value)[:200]


def run_dir(root: Location, deployment: str, dag_id: str, run_id: str) -> Location:
    return root / _slug(deployment) / _slug(dag_id) / _slug(run_id)


def transforms_dir(root: Location, deployment: str) -> Location:
    """Where a deployment's fitted transforms' artifacts live; never pruned (versions pin them)."""
    return root / TRANSFORMS / _slug(deployment)


def write_sample(folder: Location, sample: Sample) -> Location:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(sample.ids, dtype=str), vectors=sample.vectors,
             texts=np.array(sample.texts if sample.texts is not None else [], dtype=str),
             has_text=np.array(sample.texts is not None), version=np.array(sample.version),
             dims=np.array(sample.dims if sample.dims is not None else [], dtype=np.int64),
             created_at=np.array([np.nan if t is None else t for t in sample.created_at or ()], dtype=float),
             labels=np.array(sample.labels if sample.labels is not None else [], dtype=str),
             has_labels=np.array(sample.labels is not None))
    path = folder / SAMPLE_FILE
    storage.write_bytes(path, buffer.getvalue())
    return path


def has_sample(folder: Location) -> bool:
    return storage.exists(folder / SAMPLE_FILE)


def read_sample(folder: Location) -> Sample:
    data_bytes = storage.read_bytes(folder / SAMPLE_FILE)
    if data_bytes is None:
        raise FileNotFoundError(f"no sample in {folder} (deleted by the run's cleanup, or never drawn)")
    with np.load(io.BytesIO(data_bytes), allow_pickle=False) as data:
        texts = tuple(str(t) for t in data["texts"]) if bool(data["has_text"]) else None
        n = len(data["ids"])
        dims = tuple(int(d) for d in data["dims"]) if "dims" in data and len(data["dims"]) == n else None
        created = (tuple(None if np.isnan(t) else float(t) for t in data["created_at"])
                   if "created_at" in data and len(data["created_at"]) == n else None)
        labels = tuple(str(x) for x in data["labels"]) if "has_labels" in data and bool(data["has_labels"]) else None
        return Sample(ids=tuple(str(i) for i in data["ids"]), vectors=data["vectors"], texts=texts,
                      version=str(data["version"]), labels=labels, dims=dims, created_at=created)


def write_probe_result(folder: Location, result: ProbeResult) -> Location:
    """One probe's scores (or error): numbers and messages only, no text or vectors."""
    path = folder / f"probe-{_slug(result.probe)}.json"
    storage.write_bytes(path, json.dumps(result.to_dict(), indent=1).encode())
    return path


def read_probe_results(folder: Location) -> dict[str, ProbeResult]:
    return {r.probe: r for r in (ProbeResult.from_dict(json.loads(p.read_text()))
                                 for p in storage.glob(folder, "probe-*.json"))}


def delete_sample(folder: Location) -> bool:
    return storage.remove(folder / SAMPLE_FILE)


def prune(root: Location, retention_days: int, now: float | None = None) -> int:
    """Delete run folders (<deployment>/<dag>/<run>, references included) whose newest file is older
    than the retention; returns how many. The fitted transforms' artifacts (`transforms/`) are never
    deleted: a version pins its artifact by hash and cannot be audited or served without it."""
    cutoff = (now or time.time()) - retention_days * 86400
    newest: dict[tuple[str, ...], float] = {}
    for parts, changed in storage.files(root):
        if parts[0] == TRANSFORMS and len(parts) == 3:   # transforms/<deployment>/<fit>.npz: pinned
            continue
        if len(parts) > 3:
            newest[parts[:3]] = max(changed, newest.get(parts[:3], changed))
    removed = 0
    for parts, changed in sorted(newest.items()):
        if changed < cutoff:
            storage.remove_tree(root.joinpath(*parts))
            removed += 1
    if removed:
        log.info("pruned %d run folders older than %d days under %s", removed, retention_days, root)
    return removed


REFERENCE_FILE = "reference.npy"


def reference_path(root: Location, deployment: str, version: str) -> Location:
    """Where a version's reference sample lives: beside the run folders, so the same retention prunes
    the references of versions no longer audited (a passing audit rewrites its version's)."""
    return root / _slug(deployment) / REFERENCES / _slug(version) / REFERENCE_FILE


def has_reference(root: Location, deployment: str, version: str) -> bool:
    return storage.exists(reference_path(root, deployment, version))


def write_reference(root: Location, deployment: str, version: str, vectors: np.ndarray) -> Location:
    """Keep the vectors (no ids, no text) of a passing audit's sample as the version's drift reference."""
    path = reference_path(root, deployment, version)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(vectors, dtype=np.float32))
    storage.write_bytes(path, buffer.getvalue())   # a reader never sees half a file
    return path


def read_reference(root: Location, deployment: str, version: str) -> np.ndarray | None:
    data = storage.read_bytes(reference_path(root, deployment, version))
    return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)
