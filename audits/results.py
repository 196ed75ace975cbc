"""Typed values that cross the boundary between `audits` and its callers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    """A reproducible batch drawn from a source for one run.

    `texts` is None when the source has no text column. Vectors are float32, one row per id.
    """

    ids: tuple[str, ...]
    vectors: np.ndarray
    texts: tuple[str, ...] | None
    version: str
    # Known secrets of each row (kind -> value as it appears in the text) and a sensitive label;
    # canaries and labelled targets carry them, production samples usually do not.
    secrets: tuple[dict[str, str], ...] | None = None
    labels: tuple[str, ...] | None = None
    # As read from the source, for validation: each row's stored dimension (a row of another
    # dimension is cut or zero-padded in `vectors`) and its `created_at` (UTC epoch seconds).
    dims: tuple[int, ...] | None = None
    created_at: tuple[float | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids):
            raise ValueError(f"vectors must be (n, dim) with n={len(self.ids)}, got {self.vectors.shape}")
        for name in ("texts", "secrets", "labels", "dims", "created_at"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.ids):
                raise ValueError(f"{name} must have {len(self.ids)} entries, got {len(value)}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class Score:
    """One number from one probe: a point value, its 95% interval and the sample size."""

    probe: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int

    def __post_init__(self) -> None:
        for name in ("value", "ci_low", "ci_high"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"score {self.probe}.{self.metric}: {name} is not finite")
        if not self.ci_low <= self.value <= self.ci_high:
            raise ValueError(
                f"score {self.probe}.{self.metric}: value {self.value} outside its interval "
                f"[{self.ci_low}, {self.ci_high}]"
            )

    @property
    def key(self) -> str:
        """The name thresholds use: `probe.metric`."""
        return f"{self.probe}.{self.metric}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Score:
        return cls(**data)
