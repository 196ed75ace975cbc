"""Names Airflow knows embwarden by: its DAGs and the Assets it emits. Plain strings, light to import."""

AUDIT_DAG = "privacy_audit"       # leakage audits: their passing runs make a version one to roll back to
DRIFT_DAG = "embedding_drift"     # drift checks of the recent window against the reference sample

# An event on this asset asks `privacy_audit` to audit the deployment named in its extra again
# (after a rollback, or a version activated by hand); the scheduler starts that run.
REAUDIT_ASSET = "embwarden_reaudit"
