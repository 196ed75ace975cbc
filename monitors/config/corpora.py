"""The attacker's auxiliary corpus and the canaries in embwarden.yaml."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from monitors.config.base import Int, Model, Seed, kind_by_default


class SyntheticCorpusConfig(Model):
    """The built-in generator of templated PII messages (attacker and targets share templates)."""

    kind: Literal["synthetic"] = "synthetic"
    size: Int = Field(default=3000, ge=20, le=1_000_000)
    seed: Seed = 1


class FileCorpusConfig(Model):
    """A JSONL or Parquet file of rows {text, secrets?, label?}."""

    kind: Literal["file"]
    path: str


class SqlCorpusConfig(Model):
    """A query returning a `text` column and optionally `secrets` (JSON) and `label`."""

    kind: Literal["sql"]
    query: str
    url: str | None = None
    connection: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> SqlCorpusConfig:
        if (self.url is None) == (self.connection is None):
            raise ValueError("give exactly one of 'url' (a SQLAlchemy URL) or 'connection' (an Airflow connection id)")
        return self


class GeneralCorpusConfig(Model):
    """Real English from Debian's packages (audits.general): WordNet definitions and examples, GCIDE
    quotations, fortunes. For an attacker who knows English but not the deployment's domain."""

    kind: Literal["general"]
    size: Int = Field(default=20_000, ge=20, le=1_000_000)
    seed: Seed = 1
    sources: tuple[Literal["wordnet", "gcide", "fortunes"], ...] = ("wordnet", "gcide", "fortunes")


class ProductionCorpusConfig(Model):
    """A slice of the deployment's own texts (same version), disjoint from the audited sample and
    drawn with another seed: the in-domain attacker. Kept only inside the run's owner-only folder,
    with everything fitted on it, and deleted at cleanup; never cached, logged or reported."""

    kind: Literal["production"]
    size: Int = Field(default=3000, ge=20, le=200_000)
    seed: Seed = 1


_SingleCorpusConfig = Annotated[
    SyntheticCorpusConfig | FileCorpusConfig | SqlCorpusConfig | GeneralCorpusConfig | ProductionCorpusConfig,
    Field(discriminator="kind"),
    kind_by_default("synthetic"),
]


class MixedCorpusConfig(Model):
    """Several corpora as one attacker (e.g. synthetic PII messages + general English + production)."""

    kind: Literal["mixed"]
    parts: list[_SingleCorpusConfig] = Field(min_length=1)

    @property
    def seed(self) -> int:
        return getattr(self.parts[0], "seed", 0)


def _mixed_from_list(value: Any) -> Any:
    """A list of corpora is read as `{kind: mixed, parts: [...]}`."""
    return {"kind": "mixed", "parts": value} if isinstance(value, list) else value


AuxiliaryCorpusConfig = Annotated[
    SyntheticCorpusConfig | FileCorpusConfig | SqlCorpusConfig | GeneralCorpusConfig | ProductionCorpusConfig
    | MixedCorpusConfig,
    Field(discriminator="kind"),
    kind_by_default("synthetic"),
    BeforeValidator(_mixed_from_list),
]


def corpus_parts(ccfg) -> list:
    """The single corpora a configured auxiliary corpus is made of."""
    return list(ccfg.parts) if ccfg.kind == "mixed" else [ccfg]


def uses_production(ccfg) -> bool:
    """Whether the attacker's corpus holds production text (so nothing fitted on it may be cached)."""
    return any(part.kind == "production" for part in corpus_parts(ccfg))


class CanaryConfig(Model):
    """Synthetic messages with known secrets embedded through the live pipeline as extra targets.

    Probes that need text, secrets or labels the production sample lacks score on them.
    `count: 0` turns them off.
    """

    count: Int = Field(default=200, ge=0, le=100_000)
    seed: Seed = 7


