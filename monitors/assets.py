"""Names of the Airflow Assets embwarden emits. Plain strings: DAG files wrap them in `Asset`."""

# An event on this asset asks `privacy_audit` to audit the deployment named in its extra again
# (after a rollback, or a version activated by hand); the scheduler starts that run.
REAUDIT_ASSET = "embwarden_reaudit"
