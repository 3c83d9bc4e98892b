#!/usr/bin/env bash
# First start only (postgres runs /docker-entrypoint-initdb.d on an empty data directory): one role
# and one database each for the Dagster instance and MLflow. Passwords come from the container's
# environment and reach psql as variables (quoted by psql), never on a command line.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v dagster_password="$DAGSTER_PG_PASSWORD" -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
