# syntax=docker/dockerfile:1
# The Dagster system: dagster-webserver and dagster-daemon on the production instance
# (deploy/dagster-production.yaml as $DAGSTER_HOME/dagster.yaml). No user code: both reach it
# over gRPC (workspace.yaml), so this image changes only with Dagster's version.
# Build from the repository root:
#   docker build -f deploy/docker/dagster.Dockerfile -t flightdelay/dagster:1.13.27 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY constraints.txt ./
# Versions come from constraints.txt (the same pins as the code server, so both speak one Dagster).
RUN python -m venv /opt/venv \
 && pip install -c constraints.txt dagster dagster-webserver dagster-postgres dagster-aws dagster-k8s

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home
RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
 && mkdir -p /opt/dagster/home /opt/dagster/app
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster-production.yaml /opt/dagster/home/dagster.yaml
COPY deploy/stack/workspace.yaml /opt/dagster/app/workspace.yaml
WORKDIR /opt/dagster/app
USER 10001:10001
EXPOSE 3000
# The webserver's probe; compose gives the daemon `dagster-daemon liveness-check` instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/server_info', timeout=4)"]
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "/opt/dagster/app/workspace.yaml"]
