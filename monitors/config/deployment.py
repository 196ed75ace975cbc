"""embwarden.yaml as a whole: deployments (source, versions, probes, thresholds, checks, alerts),
artifacts and caches."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from audits.errors import ConfigError
from audits.params import Bool
from monitors.config.base import NAME, Float, Int, Model
from monitors.config.corpora import AuxiliaryCorpusConfig, CanaryConfig, SyntheticCorpusConfig, uses_production
from monitors.config.pipeline import SourceConfig, VersionConfig

URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """An object-store URL (s3://bucket/prefix); file:// and plain paths are local folders."""
    return bool(URL.match(path)) and not path.startswith("file://")


def object_store_path(url: str, connection: str | None = None):
    """Airflow's ObjectStoragePath for `url`: its filesystem comes from the provider that registers the
    scheme (s3: apache-airflow-providers-amazon), its credentials from the connection."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=connection) if connection else ObjectStoragePath(url)


def stored_location(text: str):
    """A location back from its str(): a Path, or an ObjectStoragePath whose URL names its connection
    (s3://conn@bucket/prefix), as RunRef carries it between tasks."""
    return object_store_path(text) if is_url(text) else Path(text.removeprefix("file://"))


def check_scheme(field: str, path: str) -> str:
    """Fail at load time, naming the field, when no installed provider serves the URL's scheme."""
    if is_url(path):
        from airflow.sdk.io.fs import has_fs

        scheme = path.split("://", 1)[0]
        if not has_fs(scheme):
            hint = {"s3": "apache-airflow-providers-amazon[s3fs]", "gs": "apache-airflow-providers-google",
                    "gcs": "apache-airflow-providers-google", "abfs": "apache-airflow-providers-microsoft-azure"}
            raise ValueError(f"{field}: no object-store filesystem is registered for {scheme}:// "
                             f"(install {hint.get(scheme, 'the Airflow provider for it')}); or give a folder")
    return path


# `probe.metric`, or `probe.metric[segment]` for the score of one segment (a label of the sample or canaries).
METRIC_KEY = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+(\[[A-Za-z0-9_ .:-]{1,40}\])?$")


class ThresholdConfig(Model):
    """Levels of one metric. Higher values are worse unless `higher_is_worse` is false; `basis`
    says which bound of the score is judged: value, ci_low (sure leaks only) or ci_high."""

    warn: Float | None = Field(default=None, allow_inf_nan=False)
    gate: Float | None = Field(default=None, allow_inf_nan=False)
    rollback: Float | None = Field(default=None, allow_inf_nan=False)
    higher_is_worse: Bool = True
    basis: Literal["value", "ci_low", "ci_high"] = "value"

    def levels(self):
        from monitors.thresholds import Levels

        return Levels(self.warn, self.gate, self.rollback, self.higher_is_worse, self.basis)

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        problems = self.levels().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ValidationConfig(Model):
    """What a valid sample must look like besides dimension, finite values and unique known ids."""

    min_rows: Int = Field(default=50, ge=1)
    # The newest sampled row must be younger than this (needs `columns.created_at`); 0 turns it off.
    max_age_hours: Float = Field(default=168, ge=0, allow_inf_nan=False)
    # Vector norms allowed; by default derived from the version's transform (unit vectors + noise).
    norm_range: tuple[Float, Float] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ValidationConfig:
        if self.norm_range is not None and not 0 <= self.norm_range[0] <= self.norm_range[1]:
            raise ValueError(f"norm_range: expected [low, high] with 0 <= low <= high, found {list(self.norm_range)}")
        return self


class DriftConfig(Model):
    """The embedding_drift DAG: the recent window of the active version against its reference sample
    (the sample of its last passing audit). Thresholds name `drift.model_auc`, `drift.mmd`, `drift.norm_ks`."""

    window_hours: Float = Field(default=24, gt=0, allow_inf_nan=False)
    sample_size: Int = Field(default=2000, ge=20, le=100_000)


class EmailChannelConfig(Model):
    """Alert mail through Airflow's SmtpNotifier; host, port and login come from the connection."""

    kind: Literal["email"]
    to: list[str] = Field(min_length=1)
    connection: str = "embwarden_smtp"
    from_email: str | None = None


class WebhookChannelConfig(Model):
    """An HTTP POST through Airflow's HttpNotifier; the connection holds the URL and credentials.

    `format: json` posts the alert's fields; `format: slack` posts a Slack-compatible message
    (`text` and `blocks`), for Slack incoming webhooks and the many tools that accept them.
    """

    kind: Literal["webhook"]
    connection: str = "embwarden_webhook"
    format: Literal["json", "slack"] = "json"
    endpoint: str | None = None


AlertChannelConfig = Annotated[EmailChannelConfig | WebhookChannelConfig, Field(discriminator="kind")]

CONNECTION_ID = r"^[A-Za-z0-9_.-]{1,200}$"


class MlflowTargetConfig(Model):
    """An MLflow Model Registry model whose `alias` embwarden moves to the active version (rollback,
    activate) and whose versions it tags with the gate (`embwarden.gate`, `embwarden.gate_reason`).

    `versions` maps each embwarden version to its MLflow model version number; the connection holds
    the tracking server's URL and credentials (login/password, or extra `token`)."""

    kind: Literal["mlflow"]
    model: str = Field(min_length=1, max_length=500)
    alias: str = Field(default="champion", pattern=r"^[A-Za-z0-9_-]{1,255}$")
    connection: str = Field(default="embwarden_mlflow", pattern=CONNECTION_ID)
    versions: dict[str, Annotated[str, Field(pattern=r"^[1-9][0-9]*$")]] = Field(min_length=1)

    @field_validator("versions", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """`v1: 3` and `v1: "3"` both name MLflow version 3."""
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in value.items()}
        return value

    @property
    def name(self) -> str:
        return f"mlflow:{self.model}@{self.alias}"


class DeployWebhookTargetConfig(Model):
    """A CD system's endpoint that gets each gate, rollback and activate event as JSON, signed with
    HMAC-SHA256 (header `Embwarden-Signature: t=<unix time>,v1=<hex>`, the secret is the connection's
    password). See monitors.targets.webhook."""

    kind: Literal["webhook"]
    connection: str = Field(default="embwarden_deploy_hook", pattern=CONNECTION_ID)
    endpoint: str | None = None

    @property
    def name(self) -> str:
        return f"webhook:{self.connection}"


TargetConfig = Annotated[MlflowTargetConfig | DeployWebhookTargetConfig, Field(discriminator="kind")]


class DeploymentConfig(Model):
    source: SourceConfig
    versions: dict[Annotated[str, Field(pattern=NAME)], VersionConfig] = Field(min_length=1)
    active_version: str
    sample_size: Int = Field(default=500, ge=1, le=1_000_000)
    auxiliary_corpus: AuxiliaryCorpusConfig = SyntheticCorpusConfig()
    canaries: CanaryConfig = CanaryConfig()
    validation: ValidationConfig = ValidationConfig()
    drift: DriftConfig | None = DriftConfig()    # null: no drift checks for this deployment
    probes: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"bow_inversion": dict[str, Any]()})
    thresholds: dict[str, ThresholdConfig] = Field(default_factory=dict)
    # When the audit cannot run (source or encoder down): alert and leave the gate as it is
    # (fail_open), or also close it (fail_closed).
    on_audit_error: Literal["fail_open", "fail_closed"] = "fail_open"
    # After a rollback, reopen the gate when the re-audit of the restored version passes (auto),
    # or leave it closed for a person to reopen (manual).
    reopen: Literal["auto", "manual"] = "auto"
    # Alert channels of this deployment; when absent, the top-level `alerts` apply.
    alerts: list[AlertChannelConfig] | None = None
    # Where the active version and the gate also live: a model registry alias, a CD system's webhook.
    targets: list[TargetConfig] = Field(default_factory=list)

    def checks(self) -> list[str]:
        """What produces scores for this deployment: its probes, `coverage` (every audit measures it),
        and `drift` when drift is checked."""
        return [*self.probes, "coverage", *(["drift"] if self.drift is not None else [])]

    @model_validator(mode="before")
    @classmethod
    def _coverage_lower_is_worse(cls, data: Any) -> Any:
        """Coverage is bad when low: its thresholds default to `higher_is_worse: false`."""
        if isinstance(data, dict) and isinstance(data.get("thresholds"), dict):
            data = {**data, "thresholds": {
                key: {"higher_is_worse": False, **value}
                if isinstance(key, str) and key.startswith("coverage.") and isinstance(value, dict) else value
                for key, value in data["thresholds"].items()}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        if self.active_version not in self.versions:
            raise ValueError(f"active_version {self.active_version!r} is not one of versions {sorted(self.versions)}")
        if uses_production(self.auxiliary_corpus) and self.source.columns.text is None:
            raise ValueError("auxiliary_corpus: kind production trains the attacker on the deployment's own texts, "
                             "but source.columns.text is not set; name the source's text column, or use kind "
                             "general (real English), file or sql")
        from audits.errors import ConfigError as ProbeConfigError
        from audits.probes import PROBES, make_probe

        for probe, params in self.probes.items():
            if probe not in PROBES:
                raise ValueError(f"probes: unknown probe {probe!r}, expected one of {sorted(PROBES)}")
            try:
                make_probe(probe, params)
            except ProbeConfigError as exc:
                raise ValueError(str(exc)) from None
        for i, target in enumerate(self.targets):
            if isinstance(target, MlflowTargetConfig):
                missing = sorted(set(self.versions) - set(target.versions))
                unknown = sorted(set(target.versions) - set(self.versions))
                if missing or unknown:
                    raise ValueError(f"targets[{i}].versions: expected an MLflow version number for each version "
                                     f"{sorted(self.versions)}; missing {missing}, unknown {unknown}")
        names = [t.name for t in self.targets]
        if len(names) != len(set(names)):
            raise ValueError(f"targets: each target once; found {names}")
        from monitors.thresholds import metric_problems

        for key, tcfg in self.thresholds.items():
            if not METRIC_KEY.match(key):
                raise ValueError(f"thresholds: {key!r} is not of the form probe.metric or probe.metric[segment]")
            problems = metric_problems(key, tcfg.levels(), self.checks())
            if problems:
                raise ValueError("thresholds." + "; thresholds.".join(problems))
        return self


class ArtifactsConfig(Model):
    # A folder (relative to this file) or an object-store URL (s3://bucket/prefix, gs://..., any scheme
    # an installed Airflow provider registers): with more than one worker, a place every worker reaches.
    root: str = ".embwarden/artifacts"
    # The Airflow connection with the object store's credentials (and endpoint); it serves `cache_dir`
    # too when that is a URL. Unset: the provider's default connection (aws_default for s3).
    connection: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,200}$")

    @field_validator("root")
    @classmethod
    def _scheme(cls, value: str) -> str:
        return check_scheme("artifacts.root", value)
    retention_days: Int = Field(default=30, ge=1, le=3650)
    # Where `root` is served (https://reports.example.com/embwarden); alerts link reports there.
    # Unset, alerts give the report's file path.
    base_url: str | None = None


class EmbwardenConfig(Model):
    artifacts: ArtifactsConfig = ArtifactsConfig()
    cache_dir: str = ".embwarden/cache"
    deployments: dict[Annotated[str, Field(pattern=NAME)], DeploymentConfig] = Field(min_length=1)
    alerts: list[AlertChannelConfig] = Field(default_factory=list)

    # Set by load_config: the directory relative paths are resolved against.
    base_dir: Path = Path(".")

    @field_validator("base_dir", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Path:
        return Path(value)

    @field_validator("cache_dir")
    @classmethod
    def _cache_scheme(cls, value: str) -> str:
        return check_scheme("cache_dir", value)

    def deployment(self, name: str) -> DeploymentConfig:
        try:
            return self.deployments[name]
        except KeyError:
            known = sorted(self.deployments)
            raise ConfigError(f"unknown deployment {name!r}; the configuration has {known}") from None

    def alert_channels(self, name: str) -> list:
        dep = self.deployment(name)
        return list(self.alerts if dep.alerts is None else dep.alerts)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def location(self, path: str):
        """Where run data or a cache lives: a local Path (relative to this file), or for a URL an
        ObjectStoragePath with the credentials of `artifacts.connection` (see audits.storage)."""
        if not is_url(path):
            return self.resolve(path.removeprefix("file://"))
        return object_store_path(path, self.artifacts.connection)

    @property
    def artifacts_root(self):
        return self.location(self.artifacts.root)

    @property
    def cache_root(self):
        return self.location(self.cache_dir)

    def resolve_url(self, url: str) -> str:
        """Make a relative SQLite file URL absolute; other URLs are returned unchanged."""
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str(self.resolve(url[len(prefix):]))
        return url


