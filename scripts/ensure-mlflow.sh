#!/usr/bin/env bash
# The MLflow Model Registry tests start a real `mlflow server` on loopback. MLflow lives in a virtualenv
# of its own, ${EMBWARDEN_MLFLOW_VENV:-.venv-mlflow} (relative to the repository root): embwarden talks
# to it over its REST API only, and MLflow's dependencies must not meet Airflow's in .venv.
# Creates the virtualenv when it is missing or holds another MLflow than the one pinned here; else
# does nothing. The full `mlflow` package: mlflow-skinny has no Flask, SQLAlchemy or alembic, which the
# server and its sqlite backend store need. 3.17.2: the newest 3.x whose mlflow-skinny the package index
# here has (mlflow 3.18.0 is listed, its mlflow-skinny==3.18.0 is not).
set -euo pipefail
MLFLOW_VERSION=3.17.2
cd "$(dirname "$0")/.."
VENV=${EMBWARDEN_MLFLOW_VENV:-.venv-mlflow}
STAMP=$VENV/.mlflow-version

if [ -x "$VENV/bin/mlflow" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$MLFLOW_VERSION" ]; then exit 0; fi

PYTHON=$(command -v python3) || { echo "embwarden: python3 (3.11) is not on PATH" >&2; exit 1; }
echo "installing mlflow==$MLFLOW_VERSION into $VENV for the MLflow registry tests (about a minute, 850 MB)"
rm -f "$STAMP"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "mlflow==$MLFLOW_VERSION" 2>&1 \
  | { grep -v "is ignored: it is neither" || true; }
echo "$MLFLOW_VERSION" > "$STAMP"
