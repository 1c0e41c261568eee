#!/usr/bin/env bash
# Serve the local MLflow store (mlflow/mlflow.db) on 127.0.0.1 for a browser or a team's clients.
# Usage: mlflow/serve.sh [PORT]   (default 5000); then open http://127.0.0.1:PORT
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-5000}"
mlflow_bin="${MLFLOW:-$here/../.venv/bin/mlflow}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec "$mlflow_bin" server --backend-store-uri "sqlite:///$here/mlflow.db" \
  --default-artifact-root "$here/artifacts" --host 127.0.0.1 --port "$port" --workers 1
