# syntax=docker/dockerfile:1
# The user code: the gRPC code server (`dagster code-server start`), the run workers it launches,
# the Dask scheduler/workers (they must run the client's exact dask and the ml/ readers) and the
# stream processor (`python -m streaming.processor`).
# CPU torch by default; `--build-arg TORCH_VARIANT=cu128` builds the CUDA image for the gpu profile.
# Build from the repository root:
#   docker build -f deploy/docker/user-code.Dockerfile -t flightdelay/user-code:$(git rev-parse --short HEAD) \
#     --build-arg CODE_VERSION=$(git rev-parse --short HEAD) .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build
COPY constraints.txt pyproject.toml ./
# torch first, from the PyTorch index of the chosen variant, at the version constraints.txt pins:
# from PyPI an open `torch` would pull the CUDA build and its multi-GB nvidia wheels into the CPU image.
# Then the project's dependencies (not the project: its sources are copied below) under the constraints.
RUN python -m venv /opt/venv \
 && torch_version="$(sed -n 's/^torch==//p' constraints.txt)" \
 && test -n "${torch_version}" \
 && pip install "torch==${torch_version}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt \
 && python -c "import torch; print('torch', torch.__version__)"

FROM ${PYTHON_IMAGE}
ARG CODE_VERSION=unknown
# PYTHONPATH: the code location is imported from the source tree (serving/build.py packs
# deploy/bentofile.yaml from it); DAGSTER_HOME: the code server launches run workers, which write
# events to the production instance; DATA_DIR: promotion lock and BentoML store (a volume in compose),
# BENTOML_HOME spelled out so the bentoml CLI in the container finds the store the assets use.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DATA_DIR=/var/lib/flightdelay \
    BENTOML_HOME=/var/lib/flightdelay/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    CODE_VERSION=${CODE_VERSION}
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app /opt/dagster/home /var/lib/flightdelay \
 && chown app:app /var/lib/flightdelay
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster-production.yaml /opt/dagster/home/dagster.yaml
WORKDIR /app
COPY pyproject.toml ./
COPY deploy/bentofile.yaml deploy/bentofile.yaml
COPY ml ml
COPY infra infra
COPY serving serving
COPY streaming streaming
COPY assets assets
COPY resources resources
COPY sensors sensors
COPY pipelines pipelines
USER 10001:10001
EXPOSE 4000
# The code server's own gRPC ping; the Dask services in compose override it with their /health.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=5 \
  CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "pipelines.definitions"]
