"""embwarden.yaml: deployments, their sources, versions, probes and default thresholds.

Validated with pydantic when loaded; a bad file fails with the path of the field, what was found
and what was expected. Relative paths in the file are relative to the file itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from audits.errors import ConfigError

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
METRIC_KEY = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
LEVELS = ("warn", "gate", "rollback")
DEFAULT_CONFIG = "embwarden.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnsConfig(_Model):
    id: str = "id"
    vector: str = "embedding"
    version: str = "version"
    text: str | None = None
    created_at: str | None = None


class SqlSourceConfig(_Model):
    kind: Literal["sql"]
    table: str
    db_schema: str | None = Field(default=None, alias="schema")
    url: str | None = None
    connection: str | None = None
    columns: ColumnsConfig = ColumnsConfig()

    @model_validator(mode="after")
    def _one_location(self) -> SqlSourceConfig:
        if (self.url is None) == (self.connection is None):
            raise ValueError("give exactly one of 'url' (a SQLAlchemy URL) or 'connection' (an Airflow connection id)")
        return self


class ParquetSourceConfig(_Model):
    kind: Literal["parquet"]
    path: str
    columns: ColumnsConfig = ColumnsConfig()


SourceConfig = Annotated[SqlSourceConfig | ParquetSourceConfig, Field(discriminator="kind")]


class LocalEncoderConfig(_Model):
    kind: Literal["local"] = "local"
    model: str = "bundled:all-MiniLM-L6-v2"
    batch_size: int = Field(default=64, ge=1, le=4096)
    max_length: int = Field(default=256, ge=8, le=8192)


class NoTransformConfig(_Model):
    kind: Literal["none"] = "none"


class GaussianNoiseConfig(_Model):
    kind: Literal["gaussian_noise"]
    sigma: float = Field(ge=0, allow_inf_nan=False)


TransformConfig = Annotated[NoTransformConfig | GaussianNoiseConfig, Field(discriminator="kind")]


class VersionConfig(_Model):
    encoder: LocalEncoderConfig = LocalEncoderConfig()
    transform: TransformConfig = NoTransformConfig()


class SyntheticCorpusConfig(_Model):
    """The built-in generator of templated PII messages (attacker and targets share templates)."""

    kind: Literal["synthetic"] = "synthetic"
    size: int = Field(default=3000, ge=20, le=1_000_000)
    seed: int = 1


class FileCorpusConfig(_Model):
    """A JSONL or Parquet file of rows {text, secrets?, label?}."""

    kind: Literal["file"]
    path: str


class SqlCorpusConfig(_Model):
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


def _default_kind(value: Any) -> Any:
    return {"kind": "synthetic", **value} if isinstance(value, dict) and "kind" not in value else value


AuxiliaryCorpusConfig = Annotated[
    SyntheticCorpusConfig | FileCorpusConfig | SqlCorpusConfig,
    Field(discriminator="kind"),
    BeforeValidator(_default_kind),
]


class CanaryConfig(_Model):
    """Synthetic messages with known secrets embedded through the live pipeline as extra targets.

    Probes that need text, secrets or labels the production sample lacks score on them.
    `count: 0` turns them off.
    """

    count: int = Field(default=200, ge=0, le=100_000)
    seed: int = 7


class ThresholdConfig(_Model):
    """Levels of one metric. Higher values are worse unless `higher_is_worse` is false."""

    warn: float | None = Field(default=None, allow_inf_nan=False)
    gate: float | None = Field(default=None, allow_inf_nan=False)
    rollback: float | None = Field(default=None, allow_inf_nan=False)
    higher_is_worse: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        given = [(level, getattr(self, level)) for level in LEVELS if getattr(self, level) is not None]
        if not given:
            raise ValueError("set at least one of warn, gate, rollback")
        for (lo_name, lo), (hi_name, hi) in zip(given, given[1:], strict=False):
            if (self.higher_is_worse and lo > hi) or (not self.higher_is_worse and lo < hi):
                order = "<=" if self.higher_is_worse else ">="
                raise ValueError(f"levels out of order: expected {lo_name} {order} {hi_name}, got {lo} and {hi}")
        return self


class DeploymentConfig(_Model):
    source: SourceConfig
    versions: dict[Annotated[str, Field(pattern=NAME)], VersionConfig] = Field(min_length=1)
    active_version: str
    sample_size: int = Field(default=500, ge=1, le=1_000_000)
    auxiliary_corpus: AuxiliaryCorpusConfig = SyntheticCorpusConfig()
    canaries: CanaryConfig = CanaryConfig()
    probes: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"bow_inversion": {}})
    thresholds: dict[str, ThresholdConfig] = Field(default_factory=dict)
    on_audit_error: Literal["fail_open", "fail_closed"] = "fail_open"

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        if self.active_version not in self.versions:
            raise ValueError(f"active_version {self.active_version!r} is not one of versions {sorted(self.versions)}")
        from audits.errors import ConfigError as ProbeConfigError
        from audits.probes import PROBES, make_probe

        for probe, params in self.probes.items():
            if probe not in PROBES:
                raise ValueError(f"probes: unknown probe {probe!r}, expected one of {sorted(PROBES)}")
            try:
                make_probe(probe, params)
            except ProbeConfigError as exc:
                raise ValueError(str(exc)) from None
        for key in self.thresholds:
            if not METRIC_KEY.match(key):
                raise ValueError(f"thresholds: {key!r} is not of the form probe.metric")
            if key.split(".")[0] not in self.probes:
                raise ValueError(f"thresholds: {key!r} names probe {key.split('.')[0]!r}, which is not in probes")
        return self


class ArtifactsConfig(_Model):
    root: str = ".embwarden/artifacts"
    retention_days: int = Field(default=30, ge=1)


class EmbwardenConfig(_Model):
    artifacts: ArtifactsConfig = ArtifactsConfig()
    cache_dir: str = ".embwarden/cache"
    deployments: dict[Annotated[str, Field(pattern=NAME)], DeploymentConfig] = Field(min_length=1)

    # Set by load_config: the directory relative paths are resolved against.
    base_dir: Path = Path(".")

    @field_validator("base_dir", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Path:
        return Path(value)

    def deployment(self, name: str) -> DeploymentConfig:
        try:
            return self.deployments[name]
        except KeyError:
            known = sorted(self.deployments)
            raise ConfigError(f"unknown deployment {name!r}; the configuration has {known}") from None

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def resolve_url(self, url: str) -> str:
        """Make a relative SQLite file URL absolute; other URLs are returned unchanged."""
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str(self.resolve(url[len(prefix):]))
        return url


def config_path() -> Path:
    return Path(os.environ.get("EMBWARDEN_CONFIG", DEFAULT_CONFIG)).expanduser().resolve()


def load_config(path: str | Path | None = None) -> EmbwardenConfig:
    path = Path(path).expanduser().resolve() if path else config_path()
    if not path.is_file():
        raise ConfigError(f"configuration file {path} not found (set EMBWARDEN_CONFIG or create {DEFAULT_CONFIG})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return EmbwardenConfig.model_validate({**data, "base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + format_errors(exc)) from None


def format_errors(exc: ValidationError) -> str:
    """One line per problem: dotted field path, what was expected, and what was found."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        # Discriminated unions add the tag to the path; it is not a field the user wrote.
        loc = re.sub(r"\.(sql|parquet|file|local|none|gaussian_noise|synthetic)(?=\.|$)", "", loc)
        found = err.get("input")
        shown = "" if isinstance(found, dict | list) else f" (found {found!r})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc or '<top>'}: {msg}{shown}")
    return "; ".join(lines)
