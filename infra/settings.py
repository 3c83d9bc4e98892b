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


def s3_sse_kms_key_id() -> str | None:
    """``LAKE_SSE_KMS_KEY_ID``: the KMS key of ``LAKE_SSE=aws:kms`` puts; unset, S3 uses the account's ``aws/s3`` key.

    The Terraform bucket (deploy/terraform) has its own key: name it here, or set ``LAKE_SSE=none`` and
    let the bucket's default encryption apply it.
    """
    return os.environ.get("LAKE_SSE_KMS_KEY_ID") or None


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
    sse_kms_key_id: str | None = None
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
            options["s3_additional_kwargs"] = self.sse_arguments()
        return options

    def sse_arguments(self) -> dict[str, str]:
        """The encryption arguments of every S3 put (boto3's ``put_object`` names); none when SSE is off."""
        if not self.sse:
            return {}
        arguments = {"ServerSideEncryption": self.sse}
        if self.sse_kms_key_id and self.sse == "aws:kms":
            arguments["SSEKMSKeyId"] = self.sse_kms_key_id
        return arguments


def lake_settings() -> LakeSettings:
    """The lake from ``LAKE_URL``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``LAKE_SSE`` and ``LAKE_SSE_KMS_KEY_ID``."""
    return LakeSettings(
        url=lake_url(), endpoint_url=s3_endpoint_url(), region_name=s3_region(), sse=s3_sse(),
        sse_kms_key_id=s3_sse_kms_key_id(),
    )


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
    """``SERVICE_MAX_BODY_BYTES``: the largest request body accepted (default 4 MiB).

    The default holds the largest batch the schema accepts (``MAX_FLIGHTS_PER_REQUEST`` real flights
    with every feature: ~1.4 MB) with room for longer numbers; ``tests/test_serving.py`` keeps it so."""
    return int(os.environ.get("SERVICE_MAX_BODY_BYTES", 4 << 20))


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


# kubernetes
EXECUTORS = ("in_process", "multiprocess", "k8s")
"""The executors ``DAGSTER_EXECUTOR`` may name; every launch path (UI, backfill, sensor, schedule, automation) uses it."""


def dagster_executor() -> str:
    """``DAGSTER_EXECUTOR``: in_process (default), multiprocess, or k8s (each step a Kubernetes Job)."""
    value = (os.environ.get("DAGSTER_EXECUTOR") or "in_process").strip().lower().replace("-", "_")
    if value not in EXECUTORS:
        raise ValueError(f"DAGSTER_EXECUTOR={value!r} is not one of {', '.join(EXECUTORS)}; unset it for in_process")
    return value


def executor_max_concurrent() -> int | None:
    """``EXECUTOR_MAX_CONCURRENT``: steps of one run at once (multiprocess: processes; k8s: pods); unset: no cap."""
    value = os.environ.get("EXECUTOR_MAX_CONCURRENT")
    return int(value) if value else None


def k8s_job_namespace() -> str | None:
    """``K8S_JOB_NAMESPACE``: where step Jobs run; unset: the run launcher's namespace (the release's)."""
    return os.environ.get("K8S_JOB_NAMESPACE") or None


IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def k8s_image_pull_policy() -> str | None:
    """``K8S_IMAGE_PULL_POLICY``: Always, IfNotPresent or Never for step pods; unset: the run launcher's.

    Checked here: dagster-k8s takes any string, and a cluster would refuse the pod only at launch.
    """
    value = os.environ.get("K8S_IMAGE_PULL_POLICY") or None
    if value is not None and value not in IMAGE_PULL_POLICIES:
        raise ValueError(f"K8S_IMAGE_PULL_POLICY={value!r} is not one of {', '.join(IMAGE_PULL_POLICIES)}")
    return value


def k8s_env_secrets() -> list[str]:
    """``K8S_ENV_SECRETS``: comma-separated Secret names whose keys become the step pods' environment."""
    return _comma_list(os.environ.get("K8S_ENV_SECRETS"))


def training_gpus() -> int:
    """``TRAINING_GPUS``: GPUs the training step's pod asks for (``nvidia.com/gpu``); 0 (default): none."""
    value = int(os.environ.get("TRAINING_GPUS") or 0)
    if value < 0:
        raise ValueError(f"TRAINING_GPUS={value} must be 0 or more")
    return value


def training_memory() -> str | None:
    """``TRAINING_MEMORY``: the training pod's memory, requested and capped (Kubernetes quantity: ``16Gi``)."""
    return os.environ.get("TRAINING_MEMORY") or None


def training_node_selector() -> dict[str, str]:
    """``TRAINING_NODE_SELECTOR``: node labels for the training pod, as JSON or ``k=v,k=v``."""
    return _labels("TRAINING_NODE_SELECTOR", os.environ.get("TRAINING_NODE_SELECTOR"))


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
"""The taint GPU node pools carry (GKE, EKS and the NVIDIA GPU operator taint them so)."""


def training_tolerations() -> list[dict[str, Any]]:
    """``TRAINING_TOLERATIONS``: JSON list of tolerations, or ``key[=value][:Effect],…`` (no value: Exists).

    Unset: the GPU taint's toleration when ``TRAINING_GPUS`` > 0, else none; ``[]`` turns it off.
    """
    raw = os.environ.get("TRAINING_TOLERATIONS")
    if raw is None or not raw.strip():
        return [dict(GPU_TOLERATION)] if training_gpus() > 0 else []
    raw = raw.strip()
    if raw.startswith("["):
        parsed = _json("TRAINING_TOLERATIONS", raw)
        if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
            raise ValueError(f"TRAINING_TOLERATIONS: expected a JSON list of objects, got {raw!r}")
        return parsed
    tolerations = []
    for item in _comma_list(raw):
        key_value, _, effect = item.partition(":")
        key, has_value, value = key_value.partition("=")
        toleration: dict[str, Any] = {"key": key.strip()}
        toleration.update({"operator": "Equal", "value": value.strip()} if has_value else {"operator": "Exists"})
        if effect:
            toleration["effect"] = effect.strip()
        tolerations.append(toleration)
    return tolerations


def _comma_list(raw: str | None) -> list[str]:
    return [item.strip() for item in (raw or "").split(",") if item.strip()]


def _json(variable: str, raw: str) -> Any:
    import json

    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{variable}: not valid JSON ({exc.msg} at {exc.pos}): {raw!r}") from None


def _labels(variable: str, raw: str | None) -> dict[str, str]:
    """A label map from JSON (``{"k": "v"}``) or ``k=v,k=v``."""
    raw = (raw or "").strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        parsed = _json(variable, raw)
        if not isinstance(parsed, dict):
            raise ValueError(f"{variable}: expected a JSON object of labels, got {raw!r}")
        return {str(k): str(v) for k, v in parsed.items()}
    labels = {}
    for item in _comma_list(raw):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: {item!r} is not key=value; write k=v,k=v or a JSON object")
        labels[key.strip()] = value.strip()
    return labels


# serving release
def bento_export_url() -> str | None:
    """``BENTO_EXPORT_URL``: where verified Bentos are exported (``s3://bucket/prefix`` or a folder); unset: not exported.

    The objects go through the lake's S3 settings (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``LAKE_SSE``,
    ``LAKE_SSE_KMS_KEY_ID``).
    """
    return os.environ.get("BENTO_EXPORT_URL") or None


def bento_image_repository() -> str | None:
    """``BENTO_IMAGE_REPOSITORY``: the registry repository ``bentoml containerize`` pushes to (``ghcr.io/org/flight-delay``).

    The image to roll is ``<repository>:<Bento version>``; unset, the Bento's own name (containerize's default).
    """
    return os.environ.get("BENTO_IMAGE_REPOSITORY") or None


# distributed training
def training_launcher() -> str:
    """``TRAINING_LAUNCHER``: ``inprocess``, ``torchrun`` (DDP on this machine) or ``k8s`` (DDP in a GPU pod);
    unset: ``torchrun`` when ``TRAINING_PROCESSES`` asks for more than one, else ``inprocess``."""
    return os.environ.get("TRAINING_LAUNCHER") or ("torchrun" if training_processes() > 1 else "inprocess")


def training_processes() -> int:
    """``TRAINING_PROCESSES``: DDP processes under torchrun (default 1; on k8s, one per GPU when GPUs are set)."""
    return int(os.environ.get("TRAINING_PROCESSES") or 1)


def training_image() -> str | None:
    """``TRAINING_IMAGE``: the trainer image the k8s launcher runs (this code, torch with CUDA)."""
    return os.environ.get("TRAINING_IMAGE") or None


def training_namespace() -> str | None:
    """``TRAINING_NAMESPACE``: where the trainer pod runs (default: ``K8S_JOB_NAMESPACE``, else the client's current one)."""
    return os.environ.get("TRAINING_NAMESPACE") or k8s_job_namespace()


def training_service_account() -> str | None:
    """``TRAINING_SERVICE_ACCOUNT``: the trainer pod's service account (a role that reaches the staging area); unset: the namespace's default."""
    return os.environ.get("TRAINING_SERVICE_ACCOUNT") or None


def training_staging_url() -> str:
    """``TRAINING_STAGING_URL``: where the k8s trainer pod reads its window and writes the unit (default: the lake's ``staging/``)."""
    return os.environ.get("TRAINING_STAGING_URL") or f"{lake_url().rstrip('/')}/staging"


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


# pipeline metrics exporter (pipelines/metrics_exporter.py)
def metrics_exporter_host() -> str:
    """``METRICS_EXPORTER_HOST``: where the pipeline metrics exporter listens (default 127.0.0.1; 0.0.0.0 in a container)."""
    return os.environ.get("METRICS_EXPORTER_HOST") or "127.0.0.1"


def metrics_exporter_port() -> int:
    """``METRICS_EXPORTER_PORT``: the exporter's port (default 9464)."""
    return int(os.environ.get("METRICS_EXPORTER_PORT") or 9464)


def require_prometheus() -> bool:
    """``REQUIRE_PROMETHEUS=1`` (CI): a test that needs promtool or prometheus fails instead of skipping when it is missing."""
    return os.environ.get("REQUIRE_PROMETHEUS", "").lower() in {"1", "true", "yes"}


# encryption in transit: TLS for the service and the production stack's servers (docs/tls.md)
def _tls_file(name: str) -> str | None:
    """A PEM file named by ``name``: its absolute path, None when unset, ValueError when it does not exist."""
    value = os.environ.get(name) or None
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"{name}={value!r}: no such file; give a PEM file (docs/tls.md) or unset {name}")
    return str(path)


def service_tls_certfile() -> str | None:
    """``SERVICE_TLS_CERTFILE``: the service's certificate chain (PEM); set, the service serves HTTPS only."""
    return _tls_file("SERVICE_TLS_CERTFILE")


def service_tls_keyfile() -> str | None:
    """``SERVICE_TLS_KEYFILE``: the private key of that certificate (PEM; unset when the certificate file holds it)."""
    return _tls_file("SERVICE_TLS_KEYFILE")


def service_ssl_config() -> dict:
    """BentoML's ``ssl`` service configuration from ``SERVICE_TLS_CERTFILE``/``KEYFILE``; disabled (plain HTTP) when unset."""
    certfile, keyfile = service_tls_certfile(), service_tls_keyfile()
    if certfile is None:
        if keyfile is not None:
            raise ValueError("SERVICE_TLS_KEYFILE is set but SERVICE_TLS_CERTFILE is not: set both to serve HTTPS")
        return {"enabled": False}
    return {"enabled": True, "certfile": certfile, **({"keyfile": keyfile} if keyfile else {})}


def stack_tls_certfile() -> str | None:
    """``STACK_TLS_CERTFILE``: the stack's server certificate (PEM); set, MLflow and the webserver serve HTTPS only."""
    return _tls_file("STACK_TLS_CERTFILE")


def stack_tls_keyfile() -> str | None:
    """``STACK_TLS_KEYFILE``: its private key (PEM); required with ``STACK_TLS_CERTFILE``."""
    return _tls_file("STACK_TLS_KEYFILE")


def stack_tls_cafile() -> str | None:
    """``STACK_TLS_CAFILE``: the CA bundle the stack's clients verify its servers against; unset: the system's CAs."""
    return _tls_file("STACK_TLS_CAFILE")


# explainability: POST /explain (ml/explain.py, serving/explain.py)
def explain_max_flights() -> int:
    """``EXPLAIN_MAX_FLIGHTS``: flights one ``/explain`` request may carry (default 64; more is a 400)."""
    return int(os.environ.get("EXPLAIN_MAX_FLIGHTS", "64"))


def explain_top_k() -> int:
    """``EXPLAIN_TOP_K``: contributing features returned per flight unless the request asks otherwise (default 5)."""
    return int(os.environ.get("EXPLAIN_TOP_K", "5"))


def explain_steps() -> int:
    """``EXPLAIN_IG_STEPS``: integration steps of integrated gradients (default 32; the completeness gap shrinks with more)."""
    return int(os.environ.get("EXPLAIN_IG_STEPS", "32"))


def explain_concurrency() -> int:
    """``EXPLAIN_CONCURRENCY``: ``/explain`` requests one worker computes at once; more are a 503 (default 1).

    Integrated gradients costs tens of forward/backward passes per flight: the bound keeps
    explanations from starving ``/predict`` of the worker's CPU.
    """
    return max(1, int(os.environ.get("EXPLAIN_CONCURRENCY", "1")))


# retraining policy (ml/retraining_policy.py, docs/retraining-policy.md)
def retrain_drift_min_new_days() -> int:
    """``RETRAIN_DRIFT_MIN_NEW_DAYS``: labelled days since the last training window before drift alone retrains (default 7)."""
    return int(os.environ.get("RETRAIN_DRIFT_MIN_NEW_DAYS") or 7)


def retrain_performance_min_new_days() -> int:
    """``RETRAIN_PERFORMANCE_MIN_NEW_DAYS``: labelled days since the last window before a failed performance check retrains (default 1)."""
    return int(os.environ.get("RETRAIN_PERFORMANCE_MIN_NEW_DAYS") or 1)


def retrain_backoff_max_days() -> int:
    """``RETRAIN_BACKOFF_MAX_DAYS``: the most new labelled days the rejection backoff ever waits for (default 56)."""
    return int(os.environ.get("RETRAIN_BACKOFF_MAX_DAYS") or 56)


def retrain_warn_after_rejections() -> int:
    """``RETRAIN_WARN_AFTER_REJECTIONS``: consecutive candidates not promoted before the one backoff warning (default 2)."""
    return int(os.environ.get("RETRAIN_WARN_AFTER_REJECTIONS") or 2)


# audit log, structured logs and error reporting
def audit_url() -> str:
    """``AUDIT_URL``: where the append-only audit log lives (``s3://bucket/prefix`` or a folder); ``audit/`` in the lake by default.

    On S3 it is reached with the lake's settings (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``LAKE_SSE``, ``LAKE_SSE_KMS_KEY_ID``).
    """
    return os.environ.get("AUDIT_URL") or f"{lake_url().rstrip('/')}/audit"


def audit_retention_days() -> int:
    """``AUDIT_RETENTION_DAYS``: audit files older than this many days are deleted whole (default 400)."""
    days = int(os.environ.get("AUDIT_RETENTION_DAYS") or 400)
    if days < 1:
        raise ValueError(f"AUDIT_RETENTION_DAYS={days}: keep the audit log at least one day")
    return days


def log_format() -> str:
    """``LOG_FORMAT``: ``json`` (one event per line, the default) or ``text`` for people at a terminal."""
    value = (os.environ.get("LOG_FORMAT") or "json").lower()
    if value not in {"json", "text"}:
        raise ValueError(f"LOG_FORMAT={value!r}: use json or text")
    return value


def pipeline_json_logs() -> bool:
    """``PIPELINE_JSON_LOGS=true``: the local instance's runs write their events as JSON lines on stderr too.

    Off by default: a person at a terminal reads ``make run``'s summary, the UI keeps the event log.
    The production instance always writes them (``deploy/dagster-production.yaml``)."""
    return os.environ.get("PIPELINE_JSON_LOGS", "false").lower() in {"1", "true", "yes"}


def sentry_dsn() -> str | None:
    """``SENTRY_DSN``: report errors to Sentry (a secret: it carries the project key); unset, nothing is sent."""
    return os.environ.get("SENTRY_DSN") or None


def sentry_environment() -> str | None:
    """``SENTRY_ENVIRONMENT``: the environment errors are filed under (``production``, ``staging``)."""
    return os.environ.get("SENTRY_ENVIRONMENT") or None


@dataclass(frozen=True)
class StreamSettings:
    """Where the stream processor and the live lookup find the broker and the live state (docs/streaming.md)."""

    nats_url: str | None
    """``NATS_URL``; unset: commands that can start an embedded ``nats-server`` do (``make stream-demo``)."""
    redis_url: str
    namespace: str
    ack_wait_s: float
    allowed_lateness_minutes: int
    prediction_log_url: str | None
    max_state_age_s: float
    """``/predict_flight`` answers 503 when the processor has written nothing for longer than this."""


def stream_settings() -> StreamSettings:
    """``NATS_URL``, ``REDIS_URL`` (default the machine's 127.0.0.1:6379), ``STREAM_STATE_NAMESPACE``,
    ``STREAM_ACK_WAIT_S``, ``STREAM_ALLOWED_LATENESS_MINUTES``, ``STREAM_PREDICTION_LOG`` (false: none),
    ``STREAM_MAX_STATE_AGE_S``."""
    log = os.environ.get("STREAM_PREDICTION_LOG", "true").lower() != "false"
    return StreamSettings(
        nats_url=os.environ.get("NATS_URL") or None,
        redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        namespace=os.environ.get("STREAM_STATE_NAMESPACE") or "flightdelay",
        ack_wait_s=float(os.environ.get("STREAM_ACK_WAIT_S") or 30),
        allowed_lateness_minutes=int(os.environ.get("STREAM_ALLOWED_LATENESS_MINUTES") or 0),
        prediction_log_url=prediction_log_url() if log else None,
        max_state_age_s=float(os.environ.get("STREAM_MAX_STATE_AGE_S") or 300),
    )


def require_redis() -> bool:
    """``REQUIRE_REDIS=1`` (CI): a test that needs Redis fails instead of skipping when it is missing."""
    return os.environ.get("REQUIRE_REDIS", "").lower() in {"1", "true", "yes"}
