"""embwarden.yaml: deployments, their sources, versions, probes and default thresholds.

Validated with pydantic when loaded; a bad file fails with the path of the field, what was found
and what was expected. Relative paths in the file are relative to the file itself. The schema is
split by part (base, pipeline, corpora, deployment); reading the file is in `files`, writing it
back (init, versions add) in `rewrite`. The names most code needs are importable from here.
"""

from monitors.config.base import NAME
from monitors.config.corpora import CanaryConfig, corpus_parts, uses_production
from monitors.config.deployment import (
    DeploymentConfig,
    EmailChannelConfig,
    EmbwardenConfig,
    ThresholdConfig,
    WebhookChannelConfig,
)
from monitors.config.files import DEFAULT_CONFIG, config_path, format_errors, load_config, read_text, yaml_problem
from monitors.config.pipeline import MAX_SIGMA, TransformConfig

__all__ = [
    "DEFAULT_CONFIG", "MAX_SIGMA", "NAME", "CanaryConfig", "DeploymentConfig", "EmailChannelConfig", "EmbwardenConfig",
    "ThresholdConfig", "TransformConfig", "WebhookChannelConfig", "config_path", "corpus_parts", "format_errors",
    "load_config", "read_text", "uses_production", "yaml_problem",
]
