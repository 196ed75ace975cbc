"""A version's pipeline in embwarden.yaml: the source it is read from, its encoder and its transform."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from audits.params import Bool
from monitors.config.base import Float, Int, Model, Seed, kind_by_default

MAX_SIGMA = 100.0   # Gaussian noise beyond this leaves nothing of a unit vector: surely a typo


class ColumnsConfig(Model):
    id: str = "id"
    vector: str = "embedding"
    version: str = "version"
    text: str | None = None
    created_at: str | None = None
    # A segment of each row (category, source, language): probes are also scored per segment.
    label: str | None = None


class SqlSourceConfig(Model):
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


class ParquetSourceConfig(Model):
    kind: Literal["parquet"]
    path: str
    columns: ColumnsConfig = ColumnsConfig()


SourceConfig = Annotated[SqlSourceConfig | ParquetSourceConfig, Field(discriminator="kind")]


class LocalEncoderConfig(Model):
    kind: Literal["local"] = "local"
    model: str = "bundled:all-MiniLM-L6-v2"
    batch_size: Int = Field(default=64, ge=1, le=4096)
    max_length: Int = Field(default=256, ge=8, le=8192)
    # auto: ONNX Runtime where the model exports (checked to match torch within 1e-4), else torch
    backend: Literal["auto", "onnx", "torch"] = "auto"


class _HttpEncoderConfig(Model):
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


EncoderConfig = Annotated[
    LocalEncoderConfig | OpenAIEncoderConfig | TEIEncoderConfig,
    Field(discriminator="kind"),
    kind_by_default("local"),
]


class NoTransformConfig(Model):
    kind: Literal["none"] = "none"

    def spec(self) -> dict:
        return self.model_dump()


class _TransformModel(Model):
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


class _FittedTransformModel(_TransformModel):
    """A kind with learnt state: `artifact` (a path or object-store URL of its .npz) and its `sha256`.
    Left empty in a file, `embwarden versions add` and the frontier fit it on the deployment's
    auxiliary corpus and fill both; a version stores them, so its transform never changes."""

    artifact: str = ""
    sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")

    @model_validator(mode="after")
    def _both_or_neither(self):
        if bool(self.artifact) != bool(self.sha256):
            raise ValueError("give both 'artifact' and 'sha256' (as fitting writes them), or neither")
        return self


class PacGaussianConfig(_FittedTransformModel):
    """Auto-PAC Gaussian noise shaped by the calibration corpus's output covariance, for a per-query
    mutual-information budget of `mi_bits` (a PAC-privacy claim, not DP)."""

    kind: Literal["pac_gaussian"]
    mi_bits: Float = Field(gt=0, le=4096, allow_inf_nan=False)


class SpectralConfig(_FittedTransformModel):
    """Keep the first `keep` components of a fixed orthogonal basis (`pca` of the auxiliary corpus, or
    `dct`), drop the rest; with `epsilon`, clip and add calibrated Gaussian noise to what is kept."""

    kind: Literal["spectral"]
    basis: Literal["pca", "dct"] = "pca"
    keep: Int = Field(ge=1, le=65_536)
    epsilon: Float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    delta: Float = Field(default=1e-5, gt=0, lt=1)
    clip_norm: Float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)


class JlGaussianConfig(_TransformModel):
    """A fixed random projection to `dimension` (from `seed`), then Gaussian noise calibrated for
    (epsilon, delta)-DP per query on inputs clipped to `clip_norm`."""

    kind: Literal["jl_gaussian"]
    dimension: Int = Field(ge=1, le=65_536)
    epsilon: Float = Field(gt=0, le=1e6, allow_inf_nan=False)
    delta: Float = Field(default=1e-5, gt=0, lt=1)
    clip_norm: Float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    seed: Seed = 0


class AdversarialConfig(_FittedTransformModel):
    """A map trained on the auxiliary corpus against a bag-of-words inversion attacker, weighing
    privacy (`privacy_weight`) against keeping the corpus's similarities; optional Gaussian noise
    `sigma` after it. No guarantee: the audit's adaptive attacker, trained on its outputs, judges it."""

    kind: Literal["adversarial"]
    privacy_weight: Float = Field(ge=0, le=1e4, allow_inf_nan=False)
    sigma: Float = Field(default=0.0, ge=0, le=MAX_SIGMA, allow_inf_nan=False)
    epochs: Int = Field(default=30, ge=1, le=1000)


TransformConfig = Annotated[
    NoTransformConfig | GaussianNoiseConfig | ClipGaussianConfig | VonMisesFisherConfig | RandomProjectionConfig
    | QuantizeConfig | PacGaussianConfig | SpectralConfig | JlGaussianConfig | AdversarialConfig,
    Field(discriminator="kind"),
]


class VersionConfig(Model):
    encoder: EncoderConfig = LocalEncoderConfig()
    transform: TransformConfig = NoTransformConfig()


