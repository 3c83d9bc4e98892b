"""Where the embedded defaults live, and the environment variables that move them to production.

The one module that reads the environment: `resources/` build Dagster resources from it, `serving/`
and `sensors/` read it directly. Dagster-free (as all of `ml/`), so the served Bento can import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The project's data folder (``DATA_DIR``; default ``./data`` in the repository)."""
    return Path(os.environ.get("DATA_DIR") or PROJECT_ROOT / "data").resolve()


def lake_url() -> str:
    """``LAKE_URL``: ``s3://bucket/prefix`` in production; a local folder under the data dir by default."""
    return os.environ.get("LAKE_URL") or str(data_dir() / "lake")


def s3_endpoint_url() -> str | None:
    """``AWS_ENDPOINT_URL``: any S3 API (MinIO, moto, Ceph); unset for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def s3_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def s3_sse() -> str | None:
    """``LAKE_SSE``: the server-side encryption requested on every put (``AES256`` unless set; ``none`` turns it off)."""
    value = os.environ.get("LAKE_SSE", "AES256")
    return None if value.lower() in {"", "none", "off"} else value


@dataclass(frozen=True)
class LakeSettings:
    """Where the lake is and how to reach it: one value that travels whole (to Dask workers, the service).

    The storage resource is built from it and gives it back (``LakeStorage.settings()``), so a field
    added here reaches every reader and writer, in process or on a worker.
    """

    url: str
    endpoint_url: str | None = None
    region_name: str | None = None
    sse: str | None = "AES256"
    max_attempts: int = 5

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def uri(self, key: str = "") -> str:
        """A URI for people and for fsspec: ``s3://bucket/prefix/key`` or an absolute path."""
        if self.is_s3:
            bucket, _, prefix = self.url[len("s3://") :].partition("/")
            prefix = prefix.strip("/")
            return f"s3://{bucket}/{f'{prefix}/{key}' if prefix else key}".rstrip("/")
        return str((Path(self.url) / key).resolve())

    def fsspec_options(self) -> dict[str, Any]:
        """fsspec (s3fs) options for these settings, SSE included; none for a local folder."""
        if not self.is_s3:
            return {}
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.region_name:
            options["client_kwargs"] = {"region_name": self.region_name}
        if self.sse:
            options["s3_additional_kwargs"] = {"ServerSideEncryption": self.sse}
        return options


def lake_settings() -> LakeSettings:
    """The lake from ``LAKE_URL``, ``AWS_ENDPOINT_URL``, ``AWS_REGION`` and ``LAKE_SSE``."""
    return LakeSettings(url=lake_url(), endpoint_url=s3_endpoint_url(), region_name=s3_region(), sse=s3_sse())


def bentoml_home() -> str:
    """``BENTOML_HOME``: BentoML's model and Bento stores; a folder under the data dir by default."""
    return os.environ.get("BENTOML_HOME") or str(data_dir() / "bentoml")


def prediction_log_url() -> str:
    """``PREDICTION_LOG_URL``: where the service logs predictions; ``predictions/`` in the lake by default."""
    return os.environ.get("PREDICTION_LOG_URL") or f"{lake_url().rstrip('/')}/predictions"


def prediction_log_location_set() -> bool:
    """Whether any of ``PREDICTION_LOG_URL``, ``LAKE_URL``, ``DATA_DIR`` says where the prediction log goes."""
    return any(is_set(v) for v in ("PREDICTION_LOG_URL", "LAKE_URL", "DATA_DIR"))


def service_model_tag(default: str) -> str:
    """``FLIGHT_DELAY_MODEL_TAG``: the BentoML model the service loads (``serving/build.py`` pins it in a Bento)."""
    return os.environ.get("FLIGHT_DELAY_MODEL_TAG") or default


def service_max_wait_s() -> float:
    """``SERVICE_MAX_WAIT_MS``: how long a request may wait for its batch before it is shed (default 1000 ms)."""
    return float(os.environ.get("SERVICE_MAX_WAIT_MS", "1000")) / 1000


def service_workers() -> int:
    """``SERVICE_WORKERS``: the service's worker processes (default 2)."""
    return int(os.environ.get("SERVICE_WORKERS", "2"))


def service_access_log() -> bool:
    """``SERVICE_ACCESS_LOG=true``: BentoML's per-request access log (off by default)."""
    return os.environ.get("SERVICE_ACCESS_LOG", "false").lower() == "true"


def service_tracing() -> bool:
    """``SERVICE_TRACING=true``: OpenTelemetry spans for /predict too (off by default)."""
    return os.environ.get("SERVICE_TRACING", "false").lower() == "true"


def service_torch_threads() -> int:
    """``SERVICE_TORCH_THREADS``: torch threads per service worker (default 1)."""
    return int(os.environ.get("SERVICE_TORCH_THREADS", "1"))


def service_max_body_bytes() -> int:
    """``SERVICE_MAX_BODY_BYTES``: the largest request body accepted (default 1 MiB)."""
    return int(os.environ.get("SERVICE_MAX_BODY_BYTES", 1 << 20))


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``: an ``mlflow server`` URL in production; SQLite under the data dir by default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir() / 'mlflow' / 'mlflow.db'}"


def mlflow_artifact_location() -> str | None:
    """``MLFLOW_ARTIFACT_LOCATION`` for a new experiment; unset, a folder beside a SQLite store, or the server's choice."""
    return os.environ.get("MLFLOW_ARTIFACT_LOCATION") or None


def dask_scheduler_address() -> str | None:
    """``DASK_SCHEDULER_ADDRESS``: a remote scheduler (tcp://host:8786); a local cluster when unset."""
    return os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def torch_device() -> str:
    """``TORCH_DEVICE``: auto (CUDA when present), cpu, cuda, cuda:1 …"""
    return os.environ.get("TORCH_DEVICE", "auto")


def code_version() -> str:
    """The git commit of the running code (``CODE_VERSION`` in images without .git)."""
    import subprocess

    if os.environ.get("CODE_VERSION"):
        return os.environ["CODE_VERSION"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sensor_interval_s(default: int) -> int:
    """``SENSOR_INTERVAL_S``: the least seconds between two ticks of our sensors (the replay demo shortens it)."""
    return int(os.environ.get("SENSOR_INTERVAL_S") or default)


def retrain_cooldown_s() -> float:
    """``RETRAIN_COOLDOWN_S``: the least seconds between two drift-triggered trainings (default 6 h)."""
    return float(os.environ.get("RETRAIN_COOLDOWN_S", 6 * 3600))


def step_max_retries() -> int:
    """``STEP_MAX_RETRIES``: retries of a step after an I/O failure (default 2, so three attempts)."""
    return int(os.environ.get("STEP_MAX_RETRIES") or 2)


def step_retry_delay_s() -> float:
    """``STEP_RETRY_DELAY_S``: the first wait before a retry (default 5 s; doubled each time, ±jitter)."""
    return float(os.environ.get("STEP_RETRY_DELAY_S") or 5)


def alert_webhook_url() -> str | None:
    """``ALERT_WEBHOOK_URL``: where failed runs are posted (Slack-compatible JSON); unset: logged only."""
    return os.environ.get("ALERT_WEBHOOK_URL") or None


SECRET_VARIABLES = ("MLFLOW_TRACKING_URI", "ALERT_WEBHOOK_URL")
"""Settings that may carry credentials: Definitions bind them as ``dg.EnvVar`` so the UI shows the name."""


def is_set(variable: str) -> bool:
    """Whether ``variable`` is set to something (an empty value counts as unset, as everywhere here)."""
    return bool(os.environ.get(variable))


# stack: the production stack on one machine (pipelines/stack.py) and the tests that need Postgres
def stack_dir() -> Path:
    """``STACK_DIR``: where ``make stack-up`` keeps its state file, logs, Dagster home and Bento store (default ``.stack``)."""
    return Path(os.environ.get("STACK_DIR") or PROJECT_ROOT / ".stack").resolve()


def postgres_host() -> str:
    """``DAGSTER_PG_HOST``: the Postgres server of the Dagster instance (and, on the one-machine stack, MLflow's)."""
    return os.environ.get("DAGSTER_PG_HOST") or "127.0.0.1"


def postgres_user() -> str:
    """``DAGSTER_PG_USER``: the role the stack connects as (default ``postgres``)."""
    return os.environ.get("DAGSTER_PG_USER") or "postgres"


def postgres_password() -> str:
    """``DAGSTER_PG_PASSWORD``: that role's password (a secret; empty under trust authentication)."""
    return os.environ.get("DAGSTER_PG_PASSWORD") or ""


def require_postgres() -> bool:
    """``REQUIRE_POSTGRES=1`` (CI): a test that needs Postgres fails instead of skipping when it is missing."""
    return os.environ.get("REQUIRE_POSTGRES", "").lower() in {"1", "true", "yes"}
