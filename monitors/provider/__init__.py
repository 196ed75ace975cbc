"""embwarden as an Airflow provider: a hook on the ledger, a sensor that waits for a deployment's gate,
an operator that audits a candidate version before a user's own DAG deploys it.

    from monitors.provider.operators import PrivacyAuditOperator
    from monitors.provider.sensors import PrivacyGateSensor

Registered through the `apache_airflow_provider` entry point (pyproject.toml), so `airflow
providers list` shows it and Airflow's UI lists its hook, sensor, operator and trigger.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def get_provider_info() -> dict:
    """What Airflow's providers manager reads (airflow/provider_info.schema.json)."""
    try:
        installed = version("embwarden")
    except PackageNotFoundError:   # pragma: no cover - the entry point exists only when installed
        installed = "0"
    integration = "embwarden"
    return {
        "package-name": "embwarden",
        "name": "embwarden",
        "description": "Privacy audits of text embeddings: wait for a deployment's privacy gate, audit a candidate "
                       "version before it is deployed, read the leakage ledger.",
        "versions": [installed],
        "integrations": [{"integration-name": integration, "tags": ["software"]}],
        "hooks": [{"integration-name": integration, "python-modules": ["monitors.provider.hooks"]}],
        "sensors": [{"integration-name": integration, "python-modules": ["monitors.provider.sensors"]}],
        "operators": [{"integration-name": integration, "python-modules": ["monitors.provider.operators"]}],
        "triggers": [{"integration-name": integration, "python-modules": ["monitors.provider.triggers"]}],
    }
