"""A deployment's configuration made into the objects an audit uses: its versions' pipelines
(encoder + transform), its source, and the seeds of its runs. The attacker's corpus: monitors.auxiliary_corpus.
"""

from __future__ import annotations

import hashlib

from audits.encoders import build_encoder
from audits.errors import ConfigError
from audits.pipeline import Pipeline
from audits.sources import Columns, ParquetSource, SqlTableSource
from audits.transforms import make_transform
from monitors.config import EmbwardenConfig
from monitors.ledger.database import connection_url


def run_seed(*parts: str) -> int:
    """A seed fixed by the run's identity: a retried task draws the same sample."""
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:4], "big")


# -- building the audited pipeline from configuration --------------------------------------------
def version_config(config: EmbwardenConfig, deployment: str, version: str):
    vcfg = config.deployment(deployment).versions.get(version)
    if vcfg is None:
        raise ConfigError(f"deployments.{deployment}.versions: no version {version!r} in the configuration")
    return vcfg


def build_transform(config: EmbwardenConfig, deployment: str, version: str):
    return make_transform(version_config(config, deployment, version).transform.spec())


def build_pipeline(config: EmbwardenConfig, deployment: str, version: str) -> Pipeline:
    return Pipeline(build_version_encoder(config, deployment, version), build_transform(config, deployment, version))


def build_version_encoder(config: EmbwardenConfig, deployment: str, version: str):
    """The version's encoder alone (what a fitted transform of it learns from: monitors.fitted_transforms)."""
    enc = version_config(config, deployment, version).encoder
    connection = None
    if getattr(enc, "connection", None):  # an HTTP encoder's credentials: resolved here, audits knows no Airflow
        from monitors.ledger.database import airflow_connection

        connection = airflow_connection(enc.connection)
        if connection is None:
            raise ConfigError(f"deployments.{deployment}.versions.{version}.encoder.connection: Airflow connection "
                              f"{enc.connection!r} is not defined (set AIRFLOW_CONN_{enc.connection.upper()} "
                              "or define it in Airflow)")
    return build_encoder(enc, config.base_dir, connection)


def build_source(config: EmbwardenConfig, deployment: str):
    scfg = config.deployment(deployment).source
    columns = Columns(**scfg.columns.model_dump())
    if scfg.kind == "parquet":
        return ParquetSource(config.resolve(scfg.path), columns)
    return SqlTableSource(sql_url(config, scfg, f"deployments.{deployment}.source"), scfg.table, columns,
                          schema=scfg.db_schema, connection=scfg.connection)


def sql_url(config: EmbwardenConfig, where_cfg, where: str) -> str:
    """The SQLAlchemy URL of a config block that names a `url` or an Airflow `connection`."""
    if where_cfg.connection:
        url = connection_url(where_cfg.connection)
        if url is None:
            raise ConfigError(f"{where}.connection: Airflow connection {where_cfg.connection!r} is not defined")
        return url
    return config.resolve_url(where_cfg.url)


def auditor_seed(config: EmbwardenConfig, deployment: str) -> int:
    """The seed the attacker trains with: the corpus's own, so that its cached models are reused."""
    ccfg = config.deployment(deployment).auxiliary_corpus
    return getattr(ccfg, "seed", 0)
