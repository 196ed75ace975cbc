"""An MLflow Model Registry model as a target, over MLflow's REST API (no mlflow package needed).

A push moves the alias (`champion`) to the model version of the active version, then tags the
model version the change is about with the gate: `embwarden.gate` (open | closed),
`embwarden.gate_reason`, `embwarden.event` and `embwarden.audit_run`. A serving layer that loads
`models:/<model>@champion` follows a rollback without a redeploy of its own.
"""

from __future__ import annotations

from audits.errors import EmbwardenError
from monitors.targets import Change, TargetUnavailable
from monitors.targets.connections import connection

MAX_TAG = 5000   # MLflow's limit on a tag value


class MlflowTarget:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.name = cfg.name

    def push(self, change: Change) -> None:
        from monitors.targets.mlflow_registry import MlflowRegistry

        registry = MlflowRegistry.from_connection(connection(self.cfg.connection))
        model, alias = self.cfg.model, self.cfg.alias
        try:
            if change.active_version is not None:
                registry.set_alias(model, alias, self.model_version(change.active_version))
            if change.version is not None:
                number = self.model_version(change.version)
                tags = {"embwarden.gate": change.gate, "embwarden.gate_reason": change.gate_reason[:MAX_TAG],
                        "embwarden.event": change.event,
                        "embwarden.audit_run": "" if change.audit_run_id is None else str(change.audit_run_id)}
                for key, value in tags.items():
                    registry.set_version_tag(model, number, key, value)
        except EmbwardenError as exc:
            raise TargetUnavailable(f"{self.name}: {exc}") from None

    def model_version(self, version: str) -> str:
        try:
            return self.cfg.versions[version]
        except KeyError:
            raise TargetUnavailable(f"{self.name}: no MLflow model version is configured for {version} "
                                    f"(targets.versions has {sorted(self.cfg.versions)})") from None
