"""What a frontier sweep measured: the points, their utility, the recommendation (data only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from audits.results import Score
from monitors.thresholds import Levels

K = 10                    # recall@K


BLOCKING = ("gate", "rollback")


@dataclass(frozen=True)
class Utility:
    """Retrieval recall@K of paraphrase pairs: the share of queries whose own document is among
    the K nearest of all documents, with its exact binomial 95% interval."""

    recall: float
    ci_low: float
    ci_high: float
    queries: int
    documents: int
    k: int = K

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FrontierPoint:
    """One transform of the grid (or the no-transform baseline, `strength` None) and what it gives."""

    transform: dict
    label: str
    strength: float | None
    scores: dict[str, Score]
    utility: Utility
    utility_loss: float                       # baseline recall minus this point's
    passes_gates: bool
    failed: tuple[str, ...] = ()              # the thresholds crossed, one line each
    guarantee: str = "none"
    errors: dict[str, str] = field(default_factory=dict)   # probe -> why it produced no scores
    seconds: float = 0.0

    @property
    def baseline(self) -> bool:
        return self.strength is None

    @property
    def kind(self) -> str:
        """The transform's kind ("none" for the baseline)."""
        return self.transform.get("kind", "none")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "transform": self.transform, "label": self.label, "strength": self.strength,
                "scores": {k: s.to_dict() for k, s in self.scores.items()}, "utility": self.utility.to_dict(),
                "utility_loss": self.utility_loss, "passes_gates": self.passes_gates, "failed": list(self.failed),
                "guarantee": self.guarantee, "errors": self.errors, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping) -> FrontierPoint:
        return cls(dict(data["transform"]), data["label"], data["strength"],
                   {k: Score.from_dict(s) for k, s in data["scores"].items()}, Utility(**data["utility"]),
                   data["utility_loss"], data["passes_gates"], tuple(data.get("failed", ())),
                   data.get("guarantee", "none"), dict(data.get("errors", {})), data.get("seconds", 0.0))


@dataclass(frozen=True)
class Recommendation:
    """The point to deploy, or None when no point of the grid passes; `message` says which and why."""

    message: str
    label: str | None = None
    transform: dict | None = None
    version: str | None = None      # a free version name for it
    command: str | None = None      # `embwarden versions add ...`
    utility_loss: float | None = None
    kind: str | None = None         # the recommended transform's kind

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Frontier:
    """A sweep of one or more kinds. `kind` and `param` name the kind and its swept field, as they
    always have for one kind; for several, comma-separated in `kinds` order (`kinds` lists them,
    `params()` maps each to its field)."""

    deployment: str
    base_version: str
    kind: str
    param: str
    points: tuple[FrontierPoint, ...]          # the baseline first, then each kind's grid by strength
    baseline_utility: float
    recommendation: Recommendation
    thresholds: dict[str, Levels]
    thresholds_source: str
    probes: tuple[str, ...]
    skipped: dict[str, str]
    notes: tuple[str, ...] = ()
    run_id: str = ""
    created_at: str = ""
    pairs: int = 0
    canaries: int = 0
    kinds: tuple[str, ...] = ()                # the kinds swept, in KINDS order (default: `kind` alone)

    def __post_init__(self) -> None:
        if not self.kinds:
            object.__setattr__(self, "kinds", tuple(self.kind.split(",")))

    @property
    def grid(self) -> tuple[FrontierPoint, ...]:
        return tuple(p for p in self.points if not p.baseline)

    def points_of(self, kind: str) -> tuple[FrontierPoint, ...]:
        return tuple(p for p in self.grid if p.kind == kind)

    def params(self) -> dict[str, str]:
        """Each kind's swept field."""
        return dict(zip(self.kinds, self.param.split(","), strict=True)) if len(self.kinds) > 1 \
            else {self.kinds[0]: self.param}

    def to_dict(self) -> dict:
        return {"deployment": self.deployment, "base_version": self.base_version, "kind": self.kind,
                "param": self.param, "kinds": list(self.kinds), "params": self.params(),
                "points": [p.to_dict() for p in self.points],
                "baseline_utility": self.baseline_utility, "recommendation": self.recommendation.to_dict(),
                "thresholds": {m: asdict(lv) for m, lv in self.thresholds.items()},
                "thresholds_source": self.thresholds_source, "probes": list(self.probes),
                "skipped": self.skipped, "notes": list(self.notes), "run_id": self.run_id,
                "created_at": self.created_at, "pairs": self.pairs, "canaries": self.canaries}

    @classmethod
    def from_dict(cls, data: Mapping) -> Frontier:
        return cls(data["deployment"], data["base_version"], data["kind"], data["param"],
                   tuple(FrontierPoint.from_dict(p) for p in data["points"]), data["baseline_utility"],
                   Recommendation(**data["recommendation"]),
                   {m: Levels(**lv) for m, lv in data["thresholds"].items()}, data["thresholds_source"],
                   tuple(data["probes"]), dict(data["skipped"]), tuple(data.get("notes", ())),
                   data.get("run_id", ""), data.get("created_at", ""), data.get("pairs", 0), data.get("canaries", 0),
                   tuple(data.get("kinds", ())))
