"""How sampled rows become a Sample: vectors decoded from any stored form into one preallocated
matrix, chosen ids in Python (for databases that cannot sample themselves), every row of a
repeated id kept for validation to name. Shared by the SQL and Parquet sources."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from audits.errors import InvalidSample
from audits.results import Sample


def decode_vector(value, row_id) -> np.ndarray:
    """One stored vector as float32, whatever its storage form."""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, (bytes, bytearray)):
        if len(value) % 4:
            raise InvalidSample(f"row id={row_id}: vector has {len(value)} bytes, expected a multiple of 4 (float32)")
        return np.frombuffer(value, dtype="<f4").copy()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidSample(f"row id={row_id}: vector is text but not a JSON array") from None
    if value is None:
        raise InvalidSample(f"row id={row_id}: vector is NULL")
    try:
        return np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidSample(f"row id={row_id}: vector is not a list of numbers") from None


class SampleRows:
    """The rows of a sample as they arrive, in any order, decoded into one preallocated matrix: a
    row of another dimension is cut or zero-padded to `dimension`, its stored dimension kept."""

    def __init__(self, size: int, dimension: int) -> None:
        self.dimension = dimension
        self.vectors = np.zeros((size, dimension), dtype=np.float32)
        self.ids: list = [None] * size
        self.texts: list = [None] * size
        self.dims = [0] * size
        self.created: list = [None] * size
        self.labels: list = [None] * size

    def put(self, position: int, row_id, raw, text=None, created_at=None, label=None) -> None:
        vector = decode_vector(raw, row_id)
        width = min(self.dimension, vector.shape[0])
        self.vectors[position, :width] = vector[:width]
        self.ids[position] = str(row_id)
        self.texts[position] = "" if text is None else str(text)
        self.dims[position] = int(vector.shape[0])
        self.created[position] = _epoch(created_at)
        self.labels[position] = "" if label is None else str(label)

    def grow(self) -> int:
        """One more position, for a row beyond those chosen (another row of a repeated id)."""
        self.vectors = np.concatenate([self.vectors, np.zeros((1, self.dimension), dtype=np.float32)])
        for column in (self.ids, self.texts, self.created, self.labels):
            column.append(None)
        self.dims.append(0)
        return len(self.ids) - 1

    def sample(self, version: str, with_text: bool, with_label: bool = False) -> Sample:
        """The sample; a position never filled (a row gone meanwhile) is left out."""
        kept = [i for i, row_id in enumerate(self.ids) if row_id is not None]
        if not kept:
            raise InvalidSample(f"the sample for version {version} is empty, expected at least 1 row")
        vectors = self.vectors if len(kept) == len(self.ids) else self.vectors[kept]
        texts = tuple(self.texts[i] for i in kept) if with_text else None
        labels = tuple(self.labels[i] for i in kept) if with_label else None
        return Sample(ids=tuple(self.ids[i] for i in kept), vectors=vectors, texts=texts, version=version,
                      labels=labels, dims=tuple(self.dims[i] for i in kept),
                      created_at=tuple(self.created[i] for i in kept))


def assemble_sample(rows: Iterable[tuple], version: str, dimension: int, with_text: bool,
                    with_label: bool = False) -> Sample:
    """Build a Sample from (id, vector, text[, created_at[, label]]) rows; rows of another dimension are
    cut or zero-padded to `dimension`, their stored dimension kept in `dims`."""
    rows = rows if isinstance(rows, Sequence) else list(rows)
    built = SampleRows(len(rows), dimension)
    for position, row in enumerate(rows):
        built.put(position, *row[:5])  # (id, vector, text[, created_at[, label]])
    return built.sample(version, with_text, with_label)


def _epoch(value) -> float | None:
    """A stored `created_at` as UTC epoch seconds; naive timestamps are taken as UTC."""
    from datetime import UTC, datetime

    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if hasattr(value, "timestamp"):   # pandas / pyarrow timestamps
        return float(value.timestamp())
    return None


def every_copy(chosen: Sequence, rows: Iterable[tuple]) -> list[tuple]:
    """The rows of the chosen ids, in the order chosen, with every row of an id that several rows
    share: a repeated id must reach validation, which fails the sample naming it, not be collapsed."""
    by_id: dict = {}
    for row in rows:
        by_id.setdefault(row[0], []).append(row)
    return [row for row_id in dict.fromkeys(chosen) for row in by_id.get(row_id, ())]


def choose_ids(ids: Sequence, size: int, seed: int, where: str) -> list:
    if not ids:
        raise InvalidSample(f"{where} has no rows, expected at least 1")
    ordered = sorted(ids, key=str)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ordered), size=min(size, len(ordered)), replace=False)
    return [ordered[i] for i in sorted(picked)]
