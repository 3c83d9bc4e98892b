"""Where the embedded defaults live, and the environment variables that move them to production.

The one module that reads the environment: one ``pydantic-settings`` class per concern, read fresh by
a function of the same name (``settings.serving().workers``), so a changed environment (a test's
monkeypatch, a CLI that sets a variable) is seen by the next call. `resources/` build Dagster
resources from them, `serving/`, `streaming/` and `sensors/` read them directly. Dagster-free, so the
served Bento can import it.

An empty variable counts as unset. A value that cannot be its setting is refused when the settings
are read, with the variable and the form it expects (``SERVICE_WORKERS='abc': expected a positive
integer``). Secrets are ``SecretStr``: their values never show in a repr, a log line or an error.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasGenerator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Expected:
    """The form a setting's variable takes, as people write it: what a refusal says was expected."""

    def __init__(self, form: str):
        self.form = form


PositiveInt = Annotated[int, Field(gt=0), Expected("a positive integer")]
NonNegativeInt = Annotated[int, Field(ge=0), Expected("an integer, 0 or more")]
PositiveSeconds = Annotated[float, Field(gt=0), Expected("a positive number of seconds")]
Seconds = Annotated[float, Field(ge=0), Expected("a number of seconds, 0 or more")]
Flag = Annotated[bool, Expected("true or false (1/0, yes/no also do)")]
Port = Annotated[int, Field(gt=0, lt=65536), Expected("a port number (1-65535)")]


def _existing_file(value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ValueError("no such file; expected a PEM file (docs/tls.md), or leave the variable unset")
    return str(path)


PemFile = Annotated[str | None, AfterValidator(_existing_file)]
"""A PEM file's absolute path (relative ones are taken from the working directory); None when unset."""


class SettingsError(ValueError):
    """A variable set to something its setting cannot be: says which variable, what it held, what it should."""


class Settings(BaseSettings):
    """The base of every concern's settings: read-only, empty variables unset, refusals that name the variable."""

    model_config = SettingsConfigDict(frozen=True, env_ignore_empty=True, validate_by_name=True)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as error:
            refusals = [self._refusal(e) for e in error.errors() if e["type"] != "default_factory_not_called"]
            raise SettingsError("; ".join(refusals)) from None

    @classmethod
    def variables(cls) -> dict[str, tuple[str, ...]]:
        """Each field's environment variables, the first one the name it is known by."""
        return {name: _variables(cls, name, field) for name, field in cls.model_fields.items()}

    @classmethod
    def _refusal(cls, error: Any) -> str:
        key = str(error["loc"][0]) if error["loc"] else ""
        name = next((n for n, names in cls.variables().items() if key == n or key in names), None)
        if name is None:
            return f"{key}: {error['msg']}"
        field = cls.model_fields[name]
        shown = "'**********'" if _is_secret(field) else repr(error["input"])
        if error["type"] == "value_error":
            detail = str(error["ctx"]["error"])
        else:
            form = _expected_form(field.metadata, field.annotation)
            detail = f"expected {form}" if form else error["msg"][:1].lower() + error["msg"][1:]
        return f"{cls.variables()[name][0]}={shown}: {detail}"


def _variables(cls: type[BaseSettings], name: str, field: FieldInfo) -> tuple[str, ...]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    if isinstance(alias, str):
        return (alias,)
    return ((cls.model_config.get("env_prefix", "") + name).upper(),)


def _expected_form(metadata: list[Any], annotation: Any) -> str | None:
    """The ``Expected`` form on a field, or inside its type (``PositiveInt | None``)."""
    found = next((m.form for m in metadata if isinstance(m, Expected)), None)
    if found is None:
        found = next(filter(None, (_expected_form(list(getattr(arg, "__metadata__", ())), arg)
                                   for arg in get_args(annotation))), None)
    return found


def _is_secret(field: FieldInfo) -> bool:
    return "SecretStr" in str(field.annotation)


def _env(name: str, *more: str) -> AliasChoices:
    """A field's variable(s) where they do not follow its class's prefix: the first set and non-empty wins."""
    return AliasChoices(name, *more)


class ProjectSettings(Settings):
    """Where this checkout keeps its data, and which code it is."""

    data_dir: Path = Field(PROJECT_ROOT / "data", validation_alias=_env("DATA_DIR"))
    """``DATA_DIR``: the project's data folder (default ``./data`` in the repository)."""
    bentoml_home: str = Field(default_factory=lambda data: str(data["data_dir"] / "bentoml"),
                              validation_alias=_env("BENTOML_HOME"))
    """``BENTOML_HOME``: BentoML's model and Bento stores; a folder under the data dir by default."""
    code_version: str | None = Field(None, validation_alias=_env("CODE_VERSION"))
    """``CODE_VERSION``: the commit of the running code, for images without .git (see ``current_code_version``)."""

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def current_code_version(self) -> str:
        """The git commit of the running code: ``CODE_VERSION``, else ``git rev-parse``, else ``unknown``."""
        if self.code_version:
            return self.code_version
        try:
            out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                 text=True, timeout=5)
            return out.stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            return "unknown"


class LakeLocation(BaseModel):
    """Where the lake is and how to reach it: the fields ``LakeSettings`` reads and ``LakeStorage`` is configured with.

    Declared once here: the storage resource inherits them, so a field added here reaches every
    reader and writer, in process or (as a pickled ``LakeSettings``) on a Dask worker.
    """

    url: str
    """``s3://bucket/prefix`` or a local folder."""
    endpoint_url: str | None = None
    region_name: str | None = None
    sse: str | None = "AES256"
    sse_kms_key_id: str | None = None
    max_attempts: int = Field(5, ge=0)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def location(self) -> dict[str, Any]:
        """These fields by name: how ``LakeStorage`` and ``LakeSettings`` are built from one another."""
        return {name: getattr(self, name) for name in LakeLocation.model_fields}

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


_AWS_VARIABLES = {
    "endpoint_url": _env("AWS_ENDPOINT_URL"), "region_name": _env("AWS_REGION", "AWS_DEFAULT_REGION"),
}


class LakeSettings(LakeLocation, Settings):
    """The lake from the environment: one plain, picklable value that travels whole (Dask workers, the service).

    ``LAKE_URL`` (default: ``lake/`` under the data dir), ``AWS_ENDPOINT_URL`` (any S3 API: MinIO, moto,
    Ceph; unset for AWS), ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``LAKE_SSE`` (the server-side
    encryption of every put: ``AES256`` unless set, ``none`` turns it off), ``LAKE_SSE_KMS_KEY_ID``
    (the key of ``LAKE_SSE=aws:kms`` puts; unset, S3 uses the account's ``aws/s3`` key; the Terraform
    bucket has its own: name it, or set ``LAKE_SSE=none`` and let the bucket's default apply it),
    ``LAKE_MAX_ATTEMPTS`` (S3 client attempts, default 5).
    """

    model_config = SettingsConfigDict(
        env_prefix="LAKE_", alias_generator=AliasGenerator(validation_alias=_AWS_VARIABLES.get)
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_the_environment(cls, data: Any) -> Any:
        """The lake under the data dir unless located; an empty ``LAKE_SSE`` has always meant no SSE, not the default."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not data.get("url"):
            data["url"] = str(project().data_dir / "lake")
        if "sse" not in data and os.environ.get("LAKE_SSE") == "":
            data["sse"] = None
        return data

    @field_validator("sse")
    @classmethod
    def _none_is_off(cls, value: str | None) -> str | None:
        return None if value is None or value.lower() in {"", "none", "off"} else value

    def under(self, url: str) -> LakeSettings:
        """These settings for another place (the audit log, a Bento export): the same endpoint, region and SSE."""
        return self.model_copy(update={"url": url})


def _in_the_lake(area: str) -> str:
    return f"{lake().url.rstrip('/')}/{area}"


class PredictionLogSettings(Settings):
    """Where the service and the stream processor log predictions."""

    model_config = SettingsConfigDict(env_prefix="PREDICTION_LOG_")

    url: str = Field(default_factory=lambda: _in_the_lake("predictions"))
    """``PREDICTION_LOG_URL``: ``predictions/`` in the lake by default."""


class ServingSettings(Settings):
    """The served Bento (``SERVICE_*``): its model, workers, limits, TLS and authentication."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_")

    model_tag: str | None = Field(None, validation_alias=_env("FLIGHT_DELAY_MODEL_TAG"))
    """``FLIGHT_DELAY_MODEL_TAG``: the BentoML model the service loads (``serving/build.py`` pins it in a Bento)."""
    max_wait_ms: Annotated[float, Field(gt=0), Expected("a positive number of milliseconds")] = 1000
    """``SERVICE_MAX_WAIT_MS``: how long a request may wait for its batch before it is shed."""
    workers: PositiveInt = 2
    access_log: Flag = False
    """``SERVICE_ACCESS_LOG``: BentoML's per-request access log."""
    tracing: Flag = False
    """``SERVICE_TRACING``: OpenTelemetry spans for /predict too."""
    torch_threads: PositiveInt = 1
    max_body_bytes: PositiveInt = 4 << 20
    """``SERVICE_MAX_BODY_BYTES``: the largest request body accepted (default 4 MiB).

    The default holds the largest batch the schema accepts (``MAX_FLIGHTS_PER_REQUEST`` real flights
    with every feature: ~1.4 MB) with room for longer numbers; ``tests/test_serving.py`` keeps it so."""
    tls_certfile: PemFile = None
    """``SERVICE_TLS_CERTFILE``: the certificate chain (PEM); set, the service serves HTTPS only."""
    tls_keyfile: PemFile = None
    """``SERVICE_TLS_KEYFILE``: its private key (PEM; unset when the certificate file holds it)."""
    api_token: SecretStr | None = None
    """``SERVICE_API_TOKEN``: the bearer token every non-probe request must carry."""
    auth_disabled: Flag = False
    """``SERVICE_AUTH_DISABLED``: serve without a token (a private machine only)."""
    metrics_public: Flag = False
    """``SERVICE_METRICS_PUBLIC``: Prometheus scrapes ``/metrics`` without the token."""

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000

    def ssl_config(self) -> dict:
        """BentoML's ``ssl`` service configuration; disabled (plain HTTP) without a certificate."""
        if self.tls_certfile is None:
            if self.tls_keyfile is not None:
                raise SettingsError("SERVICE_TLS_KEYFILE is set but SERVICE_TLS_CERTFILE is not: set both to serve HTTPS")
            return {"enabled": False}
        return {"enabled": True, "certfile": self.tls_certfile, **({"keyfile": self.tls_keyfile} if self.tls_keyfile else {})}


class ExplainSettings(Settings):
    """``POST /explain`` (``ml/explain.py``, ``serving/explain.py``)."""

    model_config = SettingsConfigDict(env_prefix="EXPLAIN_")

    max_flights: PositiveInt = 64
    """``EXPLAIN_MAX_FLIGHTS``: flights one request may carry (more is a 400)."""
    top_k: PositiveInt = 5
    """``EXPLAIN_TOP_K``: contributing features returned per flight unless the request asks otherwise."""
    ig_steps: PositiveInt = 32
    """``EXPLAIN_IG_STEPS``: integration steps of integrated gradients (the completeness gap shrinks with more)."""
    concurrency: PositiveInt = 1
    """``EXPLAIN_CONCURRENCY``: requests one worker computes at once; more are a 503.

    Integrated gradients costs tens of forward/backward passes per flight: the bound keeps
    explanations from starving ``/predict`` of the worker's CPU."""


class RegistrySettings(Settings):
    """The MLflow registry (``MLFLOW_*``)."""

    model_config = SettingsConfigDict(env_prefix="MLFLOW_")

    tracking_uri: SecretStr = Field(
        default_factory=lambda: SecretStr(f"sqlite:///{project().data_dir / 'mlflow' / 'mlflow.db'}"))
    """``MLFLOW_TRACKING_URI``: an ``mlflow server`` URL (it may carry credentials); SQLite under the data dir by default."""
    artifact_location: str | None = None
    """``MLFLOW_ARTIFACT_LOCATION`` for a new experiment; unset, a folder beside a SQLite store, or the server's choice."""


class ComputeSettings(Settings):
    """Where tensors and Dask tasks run."""

    torch_device: str = "auto"
    """``TORCH_DEVICE``: auto (CUDA when present), cpu, cuda, cuda:1 …"""
    dask_scheduler_address: str | None = None
    """``DASK_SCHEDULER_ADDRESS``: a remote scheduler (tcp://host:8786); a local cluster when unset."""


EXECUTORS = ("in_process", "multiprocess", "k8s")
"""The executors ``DAGSTER_EXECUTOR`` may name; every launch path (UI, backfill, sensor, schedule, automation) uses it."""
IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _comma_list(raw: Any) -> Any:
    return [item.strip() for item in raw.split(",") if item.strip()] if isinstance(raw, str) else raw


class ExecutorSettings(Settings):
    """The run executor, and the step Jobs of the k8s executor (docs/kubernetes.md)."""

    model_config = SettingsConfigDict(env_prefix="K8S_")

    executor: Annotated[Literal["in_process", "multiprocess", "k8s"],
                        Expected(f"one of {', '.join(EXECUTORS)} (unset: in_process)")] = Field(
        "in_process", validation_alias=_env("DAGSTER_EXECUTOR"))
    """``DAGSTER_EXECUTOR``: in_process, multiprocess, or k8s (each step a Kubernetes Job)."""
    max_concurrent: PositiveInt | None = Field(None, validation_alias=_env("EXECUTOR_MAX_CONCURRENT"))
    """``EXECUTOR_MAX_CONCURRENT``: steps of one run at once (multiprocess: processes; k8s: pods); unset: no cap."""
    job_namespace: str | None = None
    """``K8S_JOB_NAMESPACE``: where step Jobs run; unset: the run launcher's namespace (the release's)."""
    image_pull_policy: Annotated[Literal["Always", "IfNotPresent", "Never"] | None,
                                 Expected(f"one of {', '.join(IMAGE_PULL_POLICIES)}")] = None
    """``K8S_IMAGE_PULL_POLICY`` for step pods; unset: the run launcher's. Checked here: dagster-k8s takes
    any string, and a cluster would refuse the pod only at launch."""
    env_secrets: Annotated[list[str], NoDecode] = []
    """``K8S_ENV_SECRETS``: comma-separated Secret names whose keys become the step pods' environment."""

    @field_validator("executor", mode="before")
    @classmethod
    def _normalised(cls, value: Any) -> Any:
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @field_validator("env_secrets", mode="before")
    @classmethod
    def _names(cls, raw: Any) -> Any:
        return _comma_list(raw)


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
"""The taint GPU node pools carry (GKE, EKS and the NVIDIA GPU operator taint them so)."""


def _json(raw: str, expected: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at {exc.pos}); expected {expected}") from None


class TrainingSettings(Settings):
    """The training step: its launcher, processes and, on Kubernetes, its pod (``TRAINING_*``)."""

    model_config = SettingsConfigDict(env_prefix="TRAINING_")

    gpus: NonNegativeInt = 0
    """``TRAINING_GPUS``: GPUs the training pod asks for (``nvidia.com/gpu``); 0: none."""
    memory: str | None = None
    """``TRAINING_MEMORY``: the training pod's memory, requested and capped (Kubernetes quantity: ``16Gi``)."""
    node_selector: Annotated[dict[str, str], NoDecode] = {}
    """``TRAINING_NODE_SELECTOR``: node labels for the training pod, as JSON or ``k=v,k=v``."""
    tolerations: Annotated[list[dict[str, Any]], NoDecode] = Field(
        default_factory=lambda data: [dict(GPU_TOLERATION)] if data.get("gpus", 0) > 0 else [])
    """``TRAINING_TOLERATIONS``: JSON list of tolerations, or ``key[=value][:Effect],…`` (no value: Exists).
    Unset: the GPU taint's toleration when ``TRAINING_GPUS`` > 0, else none; ``[]`` turns it off."""
    processes: PositiveInt = 1
    """``TRAINING_PROCESSES``: DDP processes under torchrun (on k8s, one per GPU when GPUs are set)."""
    launcher: Annotated[Literal["inprocess", "torchrun", "k8s"], Expected("one of inprocess, torchrun, k8s")] = Field(
        default_factory=lambda data: "torchrun" if data.get("processes", 1) > 1 else "inprocess")
    """``TRAINING_LAUNCHER``: ``inprocess``, ``torchrun`` (DDP on this machine) or ``k8s`` (DDP in a GPU pod);
    unset: ``torchrun`` when ``TRAINING_PROCESSES`` asks for more than one, else ``inprocess``."""
    image: str | None = None
    """``TRAINING_IMAGE``: the trainer image the k8s launcher runs (this code, torch with CUDA)."""
    namespace: str | None = Field(None, validation_alias=_env("TRAINING_NAMESPACE", "K8S_JOB_NAMESPACE"))
    """``TRAINING_NAMESPACE``, else ``K8S_JOB_NAMESPACE``: where the trainer pod runs; unset: the client's current one."""
    service_account: str | None = None
    """``TRAINING_SERVICE_ACCOUNT``: the trainer pod's service account (a role that reaches the staging area)."""
    staging_url: str = Field(default_factory=lambda: _in_the_lake("staging"))
    """``TRAINING_STAGING_URL``: where the k8s trainer pod reads its window and writes the unit (the lake's ``staging/``)."""

    @field_validator("node_selector", mode="before")
    @classmethod
    def _labels(cls, raw: Any) -> Any:
        """A label map from JSON (``{"k": "v"}``) or ``k=v,k=v``."""
        if not isinstance(raw, str):
            return raw
        form = 'k=v,k=v or a JSON object of labels'
        if raw.strip().startswith("{"):
            parsed = _json(raw, form)
            if not isinstance(parsed, dict):
                raise ValueError(f"expected {form}")
            return {str(k): str(v) for k, v in parsed.items()}
        labels = {}
        for item in _comma_list(raw):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item!r} is not key=value; expected {form}")
            labels[key.strip()] = value.strip()
        return labels

    @field_validator("tolerations", mode="before")
    @classmethod
    def _tolerations(cls, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        form = "a JSON list of objects, or key[=value][:Effect],…"
        if raw.strip().startswith("["):
            parsed = _json(raw, form)
            if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
                raise ValueError(f"expected {form}")
            return parsed
        return [_toleration(item) for item in _comma_list(raw)]


def _toleration(item: str) -> dict[str, Any]:
    """``key[=value][:Effect]``: Equal with a value, Exists without."""
    key_value, _, effect = item.partition(":")
    key, has_value, value = key_value.partition("=")
    toleration: dict[str, Any] = {"key": key.strip()}
    toleration.update({"operator": "Equal", "value": value.strip()} if has_value else {"operator": "Exists"})
    if effect:
        toleration["effect"] = effect.strip()
    return toleration


class ReleaseSettings(Settings):
    """Where verified Bentos go (``BENTO_*``)."""

    model_config = SettingsConfigDict(env_prefix="BENTO_")

    export_url: str | None = None
    """``BENTO_EXPORT_URL``: where verified Bentos are exported (``s3://bucket/prefix`` or a folder); unset:
    not exported. The objects go through the lake's S3 settings (endpoint, region, SSE)."""
    image_repository: str | None = None
    """``BENTO_IMAGE_REPOSITORY``: the repository ``bentoml containerize`` pushes to (``ghcr.io/org/flight-delay``).
    The image to roll is ``<repository>:<Bento version>``; unset, the Bento's own name (containerize's default)."""


class StreamSettings(Settings):
    """Where the stream processor and the live lookup find the broker and the live state (docs/streaming.md)."""

    model_config = SettingsConfigDict(env_prefix="STREAM_")

    nats_url: SecretStr | None = Field(None, validation_alias=_env("NATS_URL"))
    """``NATS_URL`` (may carry credentials); unset: commands that can start an embedded ``nats-server`` do (``make stream-demo``)."""
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), validation_alias=_env("REDIS_URL"))
    """``REDIS_URL`` (may carry a password); default the machine's 127.0.0.1:6379."""
    namespace: str = Field("flightdelay", validation_alias=_env("STREAM_STATE_NAMESPACE"))
    ack_wait_s: PositiveSeconds = 30
    allowed_lateness_minutes: NonNegativeInt = 0
    prediction_log: Flag = True
    """``STREAM_PREDICTION_LOG``: false, the processor logs no predictions."""
    max_state_age_s: PositiveSeconds = 300
    """``STREAM_MAX_STATE_AGE_S``: ``/predict_flight`` answers 503 when the processor has written nothing for longer."""

    @property
    def prediction_log_url(self) -> str | None:
        return prediction_log().url if self.prediction_log else None

    def nats_url_value(self) -> str | None:
        """The broker's URL, credentials included: for the client that connects, never for a message."""
        return self.nats_url.get_secret_value() if self.nats_url else None

    def redis_url_value(self) -> str:
        """The live state's URL, password included: for the client that connects, never for a message."""
        return self.redis_url.get_secret_value()


class SensorSettings(Settings):
    """Our sensors' ticks (``SENSOR_*``)."""

    model_config = SettingsConfigDict(env_prefix="SENSOR_")

    interval_s: PositiveInt | None = None
    """``SENSOR_INTERVAL_S``: the least seconds between two ticks of every sensor (the replay demo shortens
    it); unset, each sensor's own default."""


class StepSettings(Settings):
    """How a step retries after an I/O failure (``STEP_*``)."""

    model_config = SettingsConfigDict(env_prefix="STEP_")

    max_retries: NonNegativeInt = 2
    """``STEP_MAX_RETRIES``: retries after the first attempt (default 2, so three attempts)."""
    retry_delay_s: Seconds = 5
    """``STEP_RETRY_DELAY_S``: the first wait before a retry (doubled each time, ±jitter)."""


class RetrainingSettings(Settings):
    """The retraining policy's knobs (``RETRAIN_*``; ml/retraining_policy.py, docs/retraining-policy.md)."""

    model_config = SettingsConfigDict(env_prefix="RETRAIN_")

    cooldown_s: Seconds = 6 * 3600
    """``RETRAIN_COOLDOWN_S``: the least seconds between two drift-triggered trainings."""
    drift_min_new_days: NonNegativeInt = 7
    """``RETRAIN_DRIFT_MIN_NEW_DAYS``: labelled days since the last training window before drift alone retrains."""
    performance_min_new_days: NonNegativeInt = 1
    """``RETRAIN_PERFORMANCE_MIN_NEW_DAYS``: the same before a failed performance check retrains."""
    backoff_max_days: NonNegativeInt = 56
    """``RETRAIN_BACKOFF_MAX_DAYS``: the most new labelled days the rejection backoff ever waits for."""
    warn_after_rejections: NonNegativeInt = 2
    """``RETRAIN_WARN_AFTER_REJECTIONS``: consecutive candidates not promoted before the one backoff warning."""


class AuditSettings(Settings):
    """The append-only audit log (``AUDIT_*``)."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_")

    url: str = Field(default_factory=lambda: _in_the_lake("audit"))
    """``AUDIT_URL``: ``s3://bucket/prefix`` or a folder; ``audit/`` in the lake by default. On S3 it is
    reached with the lake's endpoint, region and SSE."""
    retention_days: Annotated[int, Field(gt=0), Expected("a number of days, 1 or more: keep the audit log at least one day")] = 400
    """``AUDIT_RETENTION_DAYS``: audit files older than this many days are deleted whole."""


class ObservabilitySettings(Settings):
    """Logs, error reports and alerts."""

    log_format: Annotated[Literal["json", "text"], Expected("json or text")] = "json"
    """``LOG_FORMAT``: ``json`` (one event per line) or ``text`` for people at a terminal."""
    pipeline_json_logs: Flag = False
    """``PIPELINE_JSON_LOGS``: the local instance's runs write their events as JSON lines on stderr too.
    Off by default: a person at a terminal reads ``make run``'s summary, the UI keeps the event log.
    The production instance always writes them (``deploy/dagster-production.yaml``)."""
    sentry_dsn: SecretStr | None = None
    """``SENTRY_DSN``: report errors to Sentry (it carries the project key); unset, nothing is sent."""
    sentry_environment: str | None = None
    """``SENTRY_ENVIRONMENT``: the environment errors are filed under (``production``, ``staging``)."""
    alert_webhook_url: SecretStr | None = None
    """``ALERT_WEBHOOK_URL``: where failed runs are posted (Slack-compatible JSON; the URL is the credential); unset: logged only."""

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class StackSettings(Settings):
    """The production stack on one machine (``pipelines/stack.py``): its state and TLS (``STACK_*``, docs/tls.md)."""

    model_config = SettingsConfigDict(env_prefix="STACK_")

    dir: Path = PROJECT_ROOT / ".stack"
    """``STACK_DIR``: where ``make stack-up`` keeps its state file, logs, Dagster home and Bento store."""
    tls_certfile: PemFile = None
    """``STACK_TLS_CERTFILE``: the server certificate (PEM); set, MLflow and the webserver serve HTTPS only."""
    tls_keyfile: PemFile = None
    """``STACK_TLS_KEYFILE``: its private key (PEM); required with the certificate."""
    tls_cafile: PemFile = None
    """``STACK_TLS_CAFILE``: the CA bundle clients verify the servers against; unset: the system's CAs."""

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class PostgresSettings(Settings):
    """The Postgres server of the Dagster instance (and, on the one-machine stack, MLflow's)."""

    model_config = SettingsConfigDict(env_prefix="DAGSTER_PG_")

    host: str = "127.0.0.1"
    user: str = "postgres"
    password: SecretStr = SecretStr("")
    """``DAGSTER_PG_PASSWORD``: empty under trust authentication."""


class MetricsExporterSettings(Settings):
    """The pipeline metrics exporter (``pipelines/metrics_exporter.py``)."""

    model_config = SettingsConfigDict(env_prefix="METRICS_EXPORTER_")

    host: str = "127.0.0.1"
    """``METRICS_EXPORTER_HOST``: 0.0.0.0 in a container."""
    port: Port = 9464


class CiSettings(Settings):
    """``REQUIRE_*=1`` (CI): a test that needs the service fails instead of skipping when it is missing."""

    require_postgres: Flag = False
    require_prometheus: Flag = False
    require_redis: Flag = False


def project() -> ProjectSettings:
    return ProjectSettings()


def lake() -> LakeSettings:
    return LakeSettings()


def prediction_log() -> PredictionLogSettings:
    return PredictionLogSettings()


def serving() -> ServingSettings:
    return ServingSettings()


def explain() -> ExplainSettings:
    return ExplainSettings()


def registry() -> RegistrySettings:
    return RegistrySettings()


def compute() -> ComputeSettings:
    return ComputeSettings()


def executor() -> ExecutorSettings:
    return ExecutorSettings()


def training() -> TrainingSettings:
    return TrainingSettings()


def release() -> ReleaseSettings:
    return ReleaseSettings()


def stream() -> StreamSettings:
    return StreamSettings()


def sensors() -> SensorSettings:
    return SensorSettings()


def steps() -> StepSettings:
    return StepSettings()


def retraining() -> RetrainingSettings:
    return RetrainingSettings()


def audit() -> AuditSettings:
    return AuditSettings()


def observability() -> ObservabilitySettings:
    return ObservabilitySettings()


def stack() -> StackSettings:
    return StackSettings()


def postgres() -> PostgresSettings:
    return PostgresSettings()


def metrics_exporter() -> MetricsExporterSettings:
    return MetricsExporterSettings()


def ci() -> CiSettings:
    return CiSettings()


def is_set(variable: str) -> bool:
    """Whether ``variable`` is set to something (an empty value counts as unset, as everywhere here)."""
    return bool(os.environ.get(variable))


def prediction_log_location_set() -> bool:
    """Whether any of ``PREDICTION_LOG_URL``, ``LAKE_URL``, ``DATA_DIR`` says where the prediction log goes."""
    return any(is_set(v) for v in ("PREDICTION_LOG_URL", "LAKE_URL", "DATA_DIR"))


def _concerns(cls: type[Settings] = Settings) -> Iterator[type[Settings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _concerns(sub)


def environment_variables() -> set[str]:
    """Every variable these settings read: what a manifest may set."""
    return {name for concern in _concerns() for names in concern.variables().values() for name in names}


def secret_variables() -> set[str]:
    """The variables whose values are secrets: Definitions bind them as ``dg.EnvVar`` so the UI shows the name."""
    return {
        name for concern in _concerns() for field, names in concern.variables().items()
        if _is_secret(concern.model_fields[field]) for name in names
    }
