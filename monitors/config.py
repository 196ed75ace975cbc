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
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from audits.errors import ConfigError
from audits.params import Bool, not_bool, problems

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
# `probe.metric`, or `probe.metric[segment]` for the score of one segment (a label of the sample or canaries).
METRIC_KEY = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+(\[[A-Za-z0-9_ .:-]{1,40}\])?$")
DEFAULT_CONFIG = "embwarden.yaml"


# As audits.params: `true` is not 1, "30" or 2.0 is not a count; a number may be a numeric string.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(not_bool)]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]
MAX_SIGMA = 100.0   # Gaussian noise beyond this leaves nothing of a unit vector: surely a typo


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnsConfig(_Model):
    id: str = "id"
    vector: str = "embedding"
    version: str = "version"
    text: str | None = None
    created_at: str | None = None
    # A segment of each row (category, source, language): probes are also scored per segment.
    label: str | None = None


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
    batch_size: Int = Field(default=64, ge=1, le=4096)
    max_length: Int = Field(default=256, ge=8, le=8192)


class _HttpEncoderConfig(_Model):
    """An embedding API over HTTP. `url` reaches one that needs no key; `connection` names an Airflow
    connection: host (a whole URL, or a host with `schema` as scheme, https by default) and port
    give the base URL, the password is the API key, and the extra may hold `model` and `headers`."""

    url: str | None = None
    connection: str | None = None
    model: str | None = None
    dimension: Int | None = Field(default=None, ge=1, le=65_536)  # expected; unset: that of the first answer
    batch_size: Int = Field(default=64, ge=1, le=2048)
    timeout_seconds: Float = Field(default=30, gt=0, le=600, allow_inf_nan=False)
    max_retries: Int = Field(default=4, ge=0, le=20)
    requests_per_second: Float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_location(self) -> _HttpEncoderConfig:
        if (self.url is None) == (self.connection is None):
            raise ValueError("give exactly one of 'url' (an API that needs no key) or 'connection' "
                             "(an Airflow connection holding the URL and the key)")
        if self.url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url: expected an http:// or https:// URL, found {self.url!r}")
            if parts.username or parts.password:
                raise ValueError("url: holds credentials; put them in an Airflow connection named in 'connection'")
        return self


class OpenAIEncoderConfig(_HttpEncoderConfig):
    """An OpenAI-compatible POST /v1/embeddings. `dimensions` is OpenAI's request parameter that
    shortens text-embedding-3 vectors (leave it unset for other models)."""

    kind: Literal["openai"]
    dimensions: Int | None = Field(default=None, ge=1, le=65_536)

    @model_validator(mode="after")
    def _model_named(self) -> OpenAIEncoderConfig:
        if self.url is not None and not self.model:
            raise ValueError("model: required with 'url' (with a 'connection', its extra may name it)")
        if None not in (self.dimension, self.dimensions) and self.dimension != self.dimensions:
            raise ValueError(f"dimension {self.dimension} and dimensions {self.dimensions} differ")
        return self


class TEIEncoderConfig(_HttpEncoderConfig):
    """Hugging Face text-embeddings-inference, POST /embed. TEI serves one model: `model` names it in
    the cache key, so change it when the server's model changes."""

    kind: Literal["tei"]
    batch_size: Int = Field(default=32, ge=1, le=2048)  # TEI's default --max-client-batch-size is 32
    normalize: Bool = True
    truncate: Bool = True


def _kind_by_default(kind: str):
    """A validator that reads a mapping without `kind` as the given kind."""
    def fill(value: Any) -> Any:
        return {"kind": kind, **value} if isinstance(value, dict) and "kind" not in value else value
    return BeforeValidator(fill)


EncoderConfig = Annotated[
    LocalEncoderConfig | OpenAIEncoderConfig | TEIEncoderConfig,
    Field(discriminator="kind"),
    _kind_by_default("local"),
]


class NoTransformConfig(_Model):
    kind: Literal["none"] = "none"

    def spec(self) -> dict:
        return self.model_dump()


class _TransformModel(_Model):
    # Where the transform runs: in embwarden's replica of the pipeline (the encoder's output is
    # clean), or inside the embedding API itself (an HTTP encoder in front of the noise: its answers
    # already went through it; embwarden records and audits the claim and does not apply it again).
    applied_by: Literal["embwarden", "encoder"] = "embwarden"

    def spec(self) -> dict:
        """The transform as stored with the version (audits.transforms.make_transform reads it)."""
        data = self.model_dump()
        if data.get("applied_by") == "embwarden":
            del data["applied_by"]   # the default: versions stored before the field existed stay equal
        return data


class GaussianNoiseConfig(_TransformModel):
    kind: Literal["gaussian_noise"]
    sigma: Float = Field(ge=0, le=MAX_SIGMA, allow_inf_nan=False)


class ClipGaussianConfig(_TransformModel):
    """Clip to `clip_norm`, analytic Gaussian noise for (epsilon, delta)-DP per query."""

    kind: Literal["clip_gaussian"]
    epsilon: Float = Field(gt=0, le=1e6, allow_inf_nan=False)
    delta: Float = Field(default=1e-5, gt=0, lt=1)
    clip_norm: Float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)


class VonMisesFisherConfig(_TransformModel):
    """Pure epsilon-DP noise on the unit sphere (von Mises-Fisher, kappa = epsilon / 2)."""

    kind: Literal["vmf"]
    epsilon: Float = Field(gt=0, le=1e6, allow_inf_nan=False)   # beyond, kappa overflows (and nothing is hidden)


class RandomProjectionConfig(_TransformModel):
    """Johnson-Lindenstrauss projection to `dimension` (a fixed matrix from `seed`); no guarantee."""

    kind: Literal["random_projection"]
    dimension: Int = Field(ge=1, le=65_536)
    seed: Seed = 0


class QuantizeConfig(_TransformModel):
    """Scalar quantisation to `bits` per coordinate (1 = binary); no guarantee."""

    kind: Literal["quantize"]
    bits: Int = Field(default=8, ge=1, le=16)


TransformConfig = Annotated[
    NoTransformConfig | GaussianNoiseConfig | ClipGaussianConfig | VonMisesFisherConfig | RandomProjectionConfig
    | QuantizeConfig,
    Field(discriminator="kind"),
]


class VersionConfig(_Model):
    encoder: EncoderConfig = LocalEncoderConfig()
    transform: TransformConfig = NoTransformConfig()


class SyntheticCorpusConfig(_Model):
    """The built-in generator of templated PII messages (attacker and targets share templates)."""

    kind: Literal["synthetic"] = "synthetic"
    size: Int = Field(default=3000, ge=20, le=1_000_000)
    seed: Seed = 1


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


class GeneralCorpusConfig(_Model):
    """Real English from Debian's packages (audits.general): WordNet definitions and examples, GCIDE
    quotations, fortunes. For an attacker who knows English but not the deployment's domain."""

    kind: Literal["general"]
    size: Int = Field(default=20_000, ge=20, le=1_000_000)
    seed: Seed = 1
    sources: tuple[Literal["wordnet", "gcide", "fortunes"], ...] = ("wordnet", "gcide", "fortunes")


class ProductionCorpusConfig(_Model):
    """A slice of the deployment's own texts (same version), disjoint from the audited sample and
    drawn with another seed: the in-domain attacker. Kept only inside the run's owner-only folder,
    with everything fitted on it, and deleted at cleanup; never cached, logged or reported."""

    kind: Literal["production"]
    size: Int = Field(default=3000, ge=20, le=200_000)
    seed: Seed = 1


_SingleCorpusConfig = Annotated[
    SyntheticCorpusConfig | FileCorpusConfig | SqlCorpusConfig | GeneralCorpusConfig | ProductionCorpusConfig,
    Field(discriminator="kind"),
    _kind_by_default("synthetic"),
]


class MixedCorpusConfig(_Model):
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
    _kind_by_default("synthetic"),
    BeforeValidator(_mixed_from_list),
]


def corpus_parts(ccfg) -> list:
    """The single corpora a configured auxiliary corpus is made of."""
    return list(ccfg.parts) if ccfg.kind == "mixed" else [ccfg]


def uses_production(ccfg) -> bool:
    """Whether the attacker's corpus holds production text (so nothing fitted on it may be cached)."""
    return any(part.kind == "production" for part in corpus_parts(ccfg))


class CanaryConfig(_Model):
    """Synthetic messages with known secrets embedded through the live pipeline as extra targets.

    Probes that need text, secrets or labels the production sample lacks score on them.
    `count: 0` turns them off.
    """

    count: Int = Field(default=200, ge=0, le=100_000)
    seed: Seed = 7


class ThresholdConfig(_Model):
    """Levels of one metric. Higher values are worse unless `higher_is_worse` is false; `basis`
    says which bound of the score is judged: value, ci_low (sure leaks only) or ci_high."""

    warn: Float | None = Field(default=None, allow_inf_nan=False)
    gate: Float | None = Field(default=None, allow_inf_nan=False)
    rollback: Float | None = Field(default=None, allow_inf_nan=False)
    higher_is_worse: Bool = True
    basis: Literal["value", "ci_low", "ci_high"] = "value"

    def levels(self):
        from monitors.policy import Levels

        return Levels(self.warn, self.gate, self.rollback, self.higher_is_worse, self.basis)

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        problems = self.levels().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ValidationConfig(_Model):
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


class DriftConfig(_Model):
    """The embedding_drift DAG: the recent window of the active version against its reference sample
    (the sample of its last passing audit). Thresholds name `drift.model_auc`, `drift.mmd`, `drift.norm_ks`."""

    window_hours: Float = Field(default=24, gt=0, allow_inf_nan=False)
    sample_size: Int = Field(default=2000, ge=20, le=100_000)


class EmailChannelConfig(_Model):
    """Alert mail through Airflow's SmtpNotifier; host, port and login come from the connection."""

    kind: Literal["email"]
    to: list[str] = Field(min_length=1)
    connection: str = "embwarden_smtp"
    from_email: str | None = None


class WebhookChannelConfig(_Model):
    """An HTTP POST through Airflow's HttpNotifier; the connection holds the URL and credentials.

    `format: json` posts the alert's fields; `format: slack` posts a Slack-compatible message
    (`text` and `blocks`), for Slack incoming webhooks and the many tools that accept them.
    """

    kind: Literal["webhook"]
    connection: str = "embwarden_webhook"
    format: Literal["json", "slack"] = "json"
    endpoint: str | None = None


AlertChannelConfig = Annotated[EmailChannelConfig | WebhookChannelConfig, Field(discriminator="kind")]


class DeploymentConfig(_Model):
    source: SourceConfig
    versions: dict[Annotated[str, Field(pattern=NAME)], VersionConfig] = Field(min_length=1)
    active_version: str
    sample_size: Int = Field(default=500, ge=1, le=1_000_000)
    auxiliary_corpus: AuxiliaryCorpusConfig = SyntheticCorpusConfig()
    canaries: CanaryConfig = CanaryConfig()
    validation: ValidationConfig = ValidationConfig()
    drift: DriftConfig | None = DriftConfig()    # null: no drift checks for this deployment
    probes: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"bow_inversion": {}})
    thresholds: dict[str, ThresholdConfig] = Field(default_factory=dict)
    # When the audit cannot run (source or encoder down): alert and leave the gate as it is
    # (fail_open), or also close it (fail_closed).
    on_audit_error: Literal["fail_open", "fail_closed"] = "fail_open"
    # After a rollback, reopen the gate when the re-audit of the restored version passes (auto),
    # or leave it closed for a person to reopen (manual).
    reopen: Literal["auto", "manual"] = "auto"
    # Alert channels of this deployment; when absent, the top-level `alerts` apply.
    alerts: list[AlertChannelConfig] | None = None

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
        from monitors.policy import metric_problems

        for key, tcfg in self.thresholds.items():
            if not METRIC_KEY.match(key):
                raise ValueError(f"thresholds: {key!r} is not of the form probe.metric or probe.metric[segment]")
            problems = metric_problems(key, tcfg.levels(), self.checks())
            if problems:
                raise ValueError("thresholds." + "; thresholds.".join(problems))
        return self


class ArtifactsConfig(_Model):
    root: str = ".embwarden/artifacts"
    retention_days: Int = Field(default=30, ge=1, le=3650)
    # Where `root` is served (https://reports.example.com/embwarden); alerts link reports there.
    # Unset, alerts give the report's file path.
    base_url: str | None = None


class EmbwardenConfig(_Model):
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
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return EmbwardenConfig.model_validate({**data, "base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + format_errors(exc)) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: what is wrong, and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def read_text(path: Path) -> str:
    """A text file as UTF-8, or a ConfigError naming the file and the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "save the file as UTF-8") from None


# Discriminated unions add the tag to the path; it is not a field the user wrote.
_TAGS = re.compile(r"sql|parquet|file|local|openai|tei|none|gaussian_noise|clip_gaussian|vmf|random_projection"
                   r"|quantize|synthetic|general|production|mixed|email|webhook")


def format_errors(exc: ValidationError) -> str:
    """One line per problem: dotted field path, what was expected, and what was found."""
    return "; ".join(problems(exc, hidden=_TAGS))
