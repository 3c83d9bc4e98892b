"""The settings: embedded defaults, every variable operators set, refusals that name the variable, secrets kept hidden."""

from __future__ import annotations

import logging
import pickle

import pytest

from infra import settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No variable of ours from the shell running the tests; the data dir in a temporary folder."""
    for name in settings.environment_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return tmp_path


def test_the_embedded_defaults(clean_environment):
    data = clean_environment
    assert settings.lake().location() == {
        "url": str(data / "lake"), "endpoint_url": None, "region_name": None, "sse": "AES256", "sse_kms_key_id": None,
        "max_attempts": 5,
    }
    assert settings.prediction_log().url == f"{data / 'lake'}/predictions"
    assert settings.audit().url == f"{data / 'lake'}/audit" and settings.audit().retention_days == 400
    assert settings.training().staging_url == f"{data / 'lake'}/staging"
    assert settings.registry().tracking_uri.get_secret_value() == f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    assert settings.project().bentoml_home == str(data / "bentoml")
    serving = settings.serving()
    assert (serving.workers, serving.max_wait_s, serving.torch_threads, serving.max_body_bytes) == (2, 1.0, 1, 4 << 20)
    assert not (serving.access_log or serving.tracing or serving.auth_disabled or serving.metrics_public)
    assert serving.ssl_config() == {"enabled": False} and serving.api_token is None and serving.model_tag is None
    assert settings.explain().model_dump() == {"max_flights": 64, "top_k": 5, "ig_steps": 32, "concurrency": 1}
    assert settings.executor().model_dump() == {
        "executor": "in_process", "max_concurrent": None, "job_namespace": None, "image_pull_policy": None, "env_secrets": [],
    }
    training = settings.training()
    assert (training.gpus, training.tolerations, training.processes, training.launcher) == (0, [], 1, "inprocess")
    assert settings.retraining().model_dump() == {
        "cooldown_s": 6 * 3600, "drift_min_new_days": 7, "performance_min_new_days": 1, "backoff_max_days": 56,
        "warn_after_rejections": 2,
    }
    assert (settings.steps().max_retries, settings.steps().retry_delay_s) == (2, 5)
    assert settings.sensors().interval_s is None
    stream = settings.stream()
    assert (stream.nats_url_value(), stream.redis_url_value(), stream.namespace) == (
        None, "redis://127.0.0.1:6379/0", "flightdelay")
    assert (stream.ack_wait_s, stream.allowed_lateness_minutes, stream.max_state_age_s) == (30, 0, 300)
    assert stream.prediction_log_url == settings.prediction_log().url
    assert (settings.observability().log_format, settings.observability().sentry_dsn) == ("json", None)
    assert (settings.postgres().host, settings.postgres().user, settings.postgres().password.get_secret_value()) == (
        "127.0.0.1", "postgres", "")
    assert (settings.metrics_exporter().host, settings.metrics_exporter().port) == ("127.0.0.1", 9464)
    assert settings.stack().dir == settings.PROJECT_ROOT / ".stack"
    assert settings.compute().model_dump() == {"torch_device": "auto", "dask_scheduler_address": None}
    assert settings.release().model_dump() == {"export_url": None, "image_repository": None}
    assert not any(settings.ci().model_dump().values())


READ = [
    ("LAKE_URL", "s3://lake/prefix", lambda: settings.lake().url, "s3://lake/prefix"),
    ("AWS_ENDPOINT_URL", "http://minio:9000", lambda: settings.lake().endpoint_url, "http://minio:9000"),
    ("AWS_REGION", "eu-west-1", lambda: settings.lake().region_name, "eu-west-1"),
    ("AWS_DEFAULT_REGION", "us-east-1", lambda: settings.lake().region_name, "us-east-1"),
    ("LAKE_SSE", "aws:kms", lambda: settings.lake().sse, "aws:kms"),
    ("LAKE_SSE_KMS_KEY_ID", "arn:key", lambda: settings.lake().sse_kms_key_id, "arn:key"),
    ("LAKE_MAX_ATTEMPTS", "9", lambda: settings.lake().max_attempts, 9),
    ("PREDICTION_LOG_URL", "s3://logs/p", lambda: settings.prediction_log().url, "s3://logs/p"),
    ("FLIGHT_DELAY_MODEL_TAG", "flight_delay:abc", lambda: settings.serving().model_tag, "flight_delay:abc"),
    ("SERVICE_MAX_WAIT_MS", "250", lambda: settings.serving().max_wait_s, 0.25),
    ("SERVICE_WORKERS", "4", lambda: settings.serving().workers, 4),
    ("SERVICE_ACCESS_LOG", "true", lambda: settings.serving().access_log, True),
    ("SERVICE_TRACING", "true", lambda: settings.serving().tracing, True),
    ("SERVICE_TORCH_THREADS", "2", lambda: settings.serving().torch_threads, 2),
    ("SERVICE_MAX_BODY_BYTES", "1024", lambda: settings.serving().max_body_bytes, 1024),
    ("SERVICE_API_TOKEN", "t0ken", lambda: settings.serving().api_token.get_secret_value(), "t0ken"),
    ("SERVICE_AUTH_DISABLED", "true", lambda: settings.serving().auth_disabled, True),
    ("SERVICE_METRICS_PUBLIC", "yes", lambda: settings.serving().metrics_public, True),
    ("EXPLAIN_MAX_FLIGHTS", "8", lambda: settings.explain().max_flights, 8),
    ("EXPLAIN_TOP_K", "3", lambda: settings.explain().top_k, 3),
    ("EXPLAIN_IG_STEPS", "16", lambda: settings.explain().ig_steps, 16),
    ("EXPLAIN_CONCURRENCY", "2", lambda: settings.explain().concurrency, 2),
    ("MLFLOW_TRACKING_URI", "http://mlflow:5000", lambda: settings.registry().tracking_uri.get_secret_value(),
     "http://mlflow:5000"),
    ("MLFLOW_ARTIFACT_LOCATION", "s3://lake/mlflow", lambda: settings.registry().artifact_location, "s3://lake/mlflow"),
    ("TORCH_DEVICE", "cuda:1", lambda: settings.compute().torch_device, "cuda:1"),
    ("DASK_SCHEDULER_ADDRESS", "tcp://dask:8786", lambda: settings.compute().dask_scheduler_address, "tcp://dask:8786"),
    ("DAGSTER_EXECUTOR", " In-Process ", lambda: settings.executor().executor, "in_process"),
    ("EXECUTOR_MAX_CONCURRENT", "3", lambda: settings.executor().max_concurrent, 3),
    ("K8S_JOB_NAMESPACE", "ml-jobs", lambda: settings.executor().job_namespace, "ml-jobs"),
    ("K8S_IMAGE_PULL_POLICY", "IfNotPresent", lambda: settings.executor().image_pull_policy, "IfNotPresent"),
    ("K8S_ENV_SECRETS", "a, b", lambda: settings.executor().env_secrets, ["a", "b"]),
    ("TRAINING_GPUS", "1", lambda: settings.training().gpus, 1),
    ("TRAINING_MEMORY", "16Gi", lambda: settings.training().memory, "16Gi"),
    ("TRAINING_NODE_SELECTOR", "pool=gpu", lambda: settings.training().node_selector, {"pool": "gpu"}),
    ("TRAINING_TOLERATIONS", "spot", lambda: settings.training().tolerations, [{"key": "spot", "operator": "Exists"}]),
    ("TRAINING_LAUNCHER", "k8s", lambda: settings.training().launcher, "k8s"),
    ("TRAINING_PROCESSES", "2", lambda: (settings.training().processes, settings.training().launcher), (2, "torchrun")),
    ("TRAINING_IMAGE", "trainer:1", lambda: settings.training().image, "trainer:1"),
    ("TRAINING_NAMESPACE", "gpu-jobs", lambda: settings.training().namespace, "gpu-jobs"),
    ("TRAINING_SERVICE_ACCOUNT", "trainer", lambda: settings.training().service_account, "trainer"),
    ("TRAINING_STAGING_URL", "s3://stage", lambda: settings.training().staging_url, "s3://stage"),
    ("BENTO_EXPORT_URL", "s3://lake/bentos/", lambda: settings.release().export_url, "s3://lake/bentos/"),
    ("BENTO_IMAGE_REPOSITORY", "ghcr.io/o/f", lambda: settings.release().image_repository, "ghcr.io/o/f"),
    ("NATS_URL", "nats://u:p@broker:4222", lambda: settings.stream().nats_url_value(), "nats://u:p@broker:4222"),
    ("REDIS_URL", "redis://:pw@redis:6379/1", lambda: settings.stream().redis_url_value(), "redis://:pw@redis:6379/1"),
    ("STREAM_STATE_NAMESPACE", "ns", lambda: settings.stream().namespace, "ns"),
    ("STREAM_ACK_WAIT_S", "5", lambda: settings.stream().ack_wait_s, 5),
    ("STREAM_ALLOWED_LATENESS_MINUTES", "2", lambda: settings.stream().allowed_lateness_minutes, 2),
    ("STREAM_PREDICTION_LOG", "false", lambda: settings.stream().prediction_log_url, None),
    ("STREAM_MAX_STATE_AGE_S", "60", lambda: settings.stream().max_state_age_s, 60),
    ("SENSOR_INTERVAL_S", "5", lambda: settings.sensors().interval_s, 5),
    ("STEP_MAX_RETRIES", "0", lambda: settings.steps().max_retries, 0),
    ("STEP_RETRY_DELAY_S", "0.5", lambda: settings.steps().retry_delay_s, 0.5),
    ("RETRAIN_COOLDOWN_S", "60", lambda: settings.retraining().cooldown_s, 60),
    ("RETRAIN_DRIFT_MIN_NEW_DAYS", "3", lambda: settings.retraining().drift_min_new_days, 3),
    ("RETRAIN_PERFORMANCE_MIN_NEW_DAYS", "2", lambda: settings.retraining().performance_min_new_days, 2),
    ("RETRAIN_BACKOFF_MAX_DAYS", "28", lambda: settings.retraining().backoff_max_days, 28),
    ("RETRAIN_WARN_AFTER_REJECTIONS", "4", lambda: settings.retraining().warn_after_rejections, 4),
    ("AUDIT_URL", "s3://audit", lambda: settings.audit().url, "s3://audit"),
    ("AUDIT_RETENTION_DAYS", "30", lambda: settings.audit().retention_days, 30),
    ("LOG_FORMAT", "TEXT", lambda: settings.observability().log_format, "text"),
    ("PIPELINE_JSON_LOGS", "1", lambda: settings.observability().pipeline_json_logs, True),
    ("SENTRY_DSN", "https://key@sentry/1", lambda: settings.observability().sentry_dsn.get_secret_value(),
     "https://key@sentry/1"),
    ("SENTRY_ENVIRONMENT", "staging", lambda: settings.observability().sentry_environment, "staging"),
    ("ALERT_WEBHOOK_URL", "https://hooks/x", lambda: settings.observability().alert_webhook_url.get_secret_value(),
     "https://hooks/x"),
    ("STACK_DIR", "/tmp/stack-x", lambda: str(settings.stack().dir), "/tmp/stack-x"),
    ("DAGSTER_PG_HOST", "db", lambda: settings.postgres().host, "db"),
    ("DAGSTER_PG_USER", "dagster", lambda: settings.postgres().user, "dagster"),
    ("DAGSTER_PG_PASSWORD", "pw", lambda: settings.postgres().password.get_secret_value(), "pw"),
    ("METRICS_EXPORTER_HOST", "0.0.0.0", lambda: settings.metrics_exporter().host, "0.0.0.0"),
    ("METRICS_EXPORTER_PORT", "9100", lambda: settings.metrics_exporter().port, 9100),
    ("REQUIRE_POSTGRES", "1", lambda: settings.ci().require_postgres, True),
    ("REQUIRE_PROMETHEUS", "true", lambda: settings.ci().require_prometheus, True),
    ("REQUIRE_REDIS", "yes", lambda: settings.ci().require_redis, True),
    ("CODE_VERSION", "abc1234", lambda: settings.project().current_code_version(), "abc1234"),
    ("BENTOML_HOME", "/tmp/bentoml-x", lambda: settings.project().bentoml_home, "/tmp/bentoml-x"),
    ("DATA_DIR", "/tmp/data-x", lambda: str(settings.project().data_dir), "/tmp/data-x"),
]
"""Each variable operators set (compose, Helm, k8s manifests, deploy/README.md), a value, and where it lands."""

TLS_FILES = {"SERVICE_TLS_CERTFILE", "SERVICE_TLS_KEYFILE", "STACK_TLS_CERTFILE", "STACK_TLS_KEYFILE", "STACK_TLS_CAFILE"}
"""Read in tests/test_tls_settings.py (they need real files)."""


@pytest.mark.parametrize(("variable", "value", "read", "expected"), READ, ids=[r[0] for r in READ])
def test_each_variable_is_read_under_its_operator_name(monkeypatch, variable, value, read, expected):
    monkeypatch.setenv(variable, value)
    assert read() == expected


def test_every_variable_the_settings_read_is_in_the_table():
    assert settings.environment_variables() == {r[0] for r in READ} | TLS_FILES


def test_an_empty_variable_is_unset(monkeypatch, clean_environment):
    for name in ("LAKE_URL", "SERVICE_WORKERS", "AWS_REGION", "TRAINING_NAMESPACE", "AUDIT_RETENTION_DAYS", "LOG_FORMAT"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("K8S_JOB_NAMESPACE", "ml-jobs")
    assert settings.lake().url == str(clean_environment / "lake") and settings.lake().region_name == "us-east-1"
    assert settings.serving().workers == 2 and settings.audit().retention_days == 400
    assert settings.training().namespace == "ml-jobs", "TRAINING_NAMESPACE falls back to K8S_JOB_NAMESPACE"
    assert settings.observability().log_format == "json"


@pytest.mark.parametrize("value", ["", "none", "OFF"])
def test_lake_sse_none_off_or_empty_turns_encryption_off(monkeypatch, value):
    monkeypatch.setenv("LAKE_SSE", value)
    assert settings.lake().sse is None and settings.lake().sse_arguments() == {}


def test_derived_urls_follow_the_lake(monkeypatch):
    monkeypatch.setenv("LAKE_URL", "s3://lake/p/")
    assert settings.prediction_log().url == "s3://lake/p/predictions"
    assert settings.audit().url == "s3://lake/p/audit"
    assert settings.training().staging_url == "s3://lake/p/staging"


@pytest.mark.parametrize(("variable", "value", "read", "message"), [
    ("SERVICE_WORKERS", "abc", settings.serving, "SERVICE_WORKERS='abc': expected a positive integer"),
    ("SERVICE_WORKERS", "0", settings.serving, "SERVICE_WORKERS='0': expected a positive integer"),
    ("SERVICE_MAX_WAIT_MS", "soon", settings.serving, "SERVICE_MAX_WAIT_MS='soon': expected a positive number of milliseconds"),
    ("SERVICE_ACCESS_LOG", "maybe", settings.serving, "SERVICE_ACCESS_LOG='maybe': expected true or false"),
    ("DAGSTER_EXECUTOR", "celery", settings.executor, "DAGSTER_EXECUTOR='celery': expected one of in_process, multiprocess, k8s"),
    ("K8S_IMAGE_PULL_POLICY", "Sometimes", settings.executor, "K8S_IMAGE_PULL_POLICY='Sometimes': expected one of Always, IfNotPresent, Never"),
    ("TRAINING_GPUS", "-1", settings.training, "TRAINING_GPUS='-1': expected an integer, 0 or more"),
    ("TRAINING_LAUNCHER", "slurm", settings.training, "TRAINING_LAUNCHER='slurm': expected one of inprocess, torchrun, k8s"),
    ("TRAINING_TOLERATIONS", "[1]", settings.training, "TRAINING_TOLERATIONS='[1]': expected a JSON list of objects"),
    ("TRAINING_NODE_SELECTOR", "{oops", settings.training, "TRAINING_NODE_SELECTOR='{oops': not valid JSON"),
    ("AUDIT_RETENTION_DAYS", "0", settings.audit, "AUDIT_RETENTION_DAYS='0': expected a number of days, 1 or more"),
    ("LOG_FORMAT", "xml", settings.observability, "LOG_FORMAT='xml': expected json or text"),
    ("METRICS_EXPORTER_PORT", "70000", settings.metrics_exporter, "METRICS_EXPORTER_PORT='70000': expected a port number"),
    ("LAKE_MAX_ATTEMPTS", "many", settings.lake, "LAKE_MAX_ATTEMPTS='many': input should be a valid integer"),
    ("STREAM_ACK_WAIT_S", "-1", settings.stream, "STREAM_ACK_WAIT_S='-1': expected a positive number of seconds"),
    ("SENSOR_INTERVAL_S", "0", settings.sensors, "SENSOR_INTERVAL_S='0': expected a positive integer"),
])
def test_a_bad_value_is_refused_naming_the_variable_and_the_form(monkeypatch, variable, value, read, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(settings.SettingsError) as refused:
        read()
    assert str(refused.value).startswith(message), str(refused.value)


SECRETS = {
    "DAGSTER_PG_PASSWORD": "pg-hunter2", "SENTRY_DSN": "https://sentry-key-42@sentry.example/1",
    "ALERT_WEBHOOK_URL": "https://hooks.example/secret-path-99", "SERVICE_API_TOKEN": "api-token-77",
    "MLFLOW_TRACKING_URI": "https://user:mlflow-pass-5@mlflow", "NATS_URL": "nats://u:nats-pass-6@broker:4222",
    "REDIS_URL": "redis://:redis-pass-8@redis:6379/0",
}


def test_the_secret_variables_are_the_secrets():
    assert settings.secret_variables() == set(SECRETS)


def test_secrets_never_show_in_repr_str_logs_or_refusals(monkeypatch, caplog):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    read = [settings.postgres(), settings.observability(), settings.serving(), settings.registry(), settings.stream()]
    logger = logging.getLogger("tests.settings")
    with caplog.at_level(logging.INFO, logger="tests.settings"):
        for values in read:
            logger.info("settings %s %r %s", values, values, values.model_dump())
    shown = " ".join([*(repr(v) + str(v) for v in read), caplog.text])
    monkeypatch.setenv("SERVICE_WORKERS", "abc")
    with pytest.raises(settings.SettingsError) as refused:
        settings.serving()
    shown += str(refused.value)
    assert "SERVICE_WORKERS" in shown and "**********" in shown
    assert not [name for name, value in SECRETS.items() if value in shown]


def test_the_lake_travels_as_one_plain_value(monkeypatch):
    monkeypatch.setenv("LAKE_URL", "s3://lake/p")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    lake = settings.lake()
    monkeypatch.setenv("LAKE_URL", "s3://elsewhere")
    assert pickle.loads(pickle.dumps(lake)) == lake, "unpickling on a worker reads no environment"
    assert lake.under("s3://audit/x").location() == {**lake.location(), "url": "s3://audit/x"}
