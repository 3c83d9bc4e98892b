# syntax=docker/dockerfile:1
# The MLflow tracking server and model registry: Postgres backend (psycopg2), S3 artifacts (boto3),
# Prometheus metrics (`--expose-prometheus` needs prometheus-flask-exporter).
# Build from the repository root:
#   docker build -f deploy/docker/mlflow.Dockerfile -t flightdelay/mlflow:3.17.2 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Not in constraints.txt (nothing else needs it): pinned here until it is.
ARG PROMETHEUS_FLASK_EXPORTER_VERSION=0.23.2
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY constraints.txt ./
RUN python -m venv /opt/venv \
 && pip install -c constraints.txt mlflow psycopg2-binary boto3 \
    "prometheus-flask-exporter==${PROMETHEUS_FLASK_EXPORTER_VERSION}"

FROM ${PYTHON_IMAGE}
# MLflow 3's job runner (GenAI judges, scorers, trace roll-ups: unused here) costs most of a core idle.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
RUN groupadd --system --gid 10001 mlflow \
 && useradd --system --uid 10001 --gid mlflow --home-dir /opt/mlflow --create-home --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/mlflow
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
# The backend, artifact destination and allowed hosts are deployment facts: compose and the Helm
# values pass the full command; the password reaches libpq as PGPASSWORD, never in the URI.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
