"""JSON logs, one event per line, for Loki or any collector; and optional error reports to Sentry.

One formatter (python-json-logger) for the service and the pipeline. Each line carries ``timestamp``,
``level``, ``logger``, ``message`` and, where known, the request id (the service, from a context
variable set by its middleware) or the Dagster run id, job, step, asset and partition (flattened from
the record Dagster's log manager builds). Messages and tracebacks go through ``infra.redaction.redact``;
nothing here logs a request's payload. Framework-free: the Dagster logger that uses it lives in
``pipelines/structured_logging.py``, the service configures it in ``serving/service.py``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from infra.redaction import redact

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being served (``X-Request-ID``), set by the service's middleware."""

_DAGSTER_META = "dagster_meta"
_DAGSTER_EVENT = "dagster_event"
_HANDLER_MARK = "_structured_logs_handler"


def _dagster_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Run id, job, step, asset, partition and event type from the metadata Dagster puts on a record."""
    tags = meta.get("job_tags") or {}
    partition = tags.get("dagster/partition")
    if partition is None and "dagster/asset_partition_range_start" in tags:
        partition = f"{tags['dagster/asset_partition_range_start']}...{tags.get('dagster/asset_partition_range_end')}"
    event = meta.get(_DAGSTER_EVENT)
    fields = {
        "run_id": meta.get("run_id"), "job": meta.get("job_name"), "step": meta.get("step_key"),
        "asset": (meta.get("op_name") or meta.get("step_key")), "partition": partition,
        "event_type": getattr(event, "event_type_value", None), "resource": meta.get("resource_name"),
    }
    return {k: v for k, v in fields.items() if v is not None}


class JsonLogsRequested(logging.Filter):
    """Lets records through only where an operator asked for JSON lines (``PIPELINE_JSON_LOGS=true``).

    The local instance's handler carries it, so a terminal shows people a summary by default; read
    when the handler is built (once per run process), not per record.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        from infra import settings

        self.requested = settings.observability().pipeline_json_logs

    def filter(self, record: logging.LogRecord) -> bool:
        return self.requested


class StructuredFormatter(JsonFormatter):
    """One JSON object per record; secrets masked; Dagster's record metadata flattened to plain fields."""

    def __init__(self, **kwargs):
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s", **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        meta = getattr(record, _DAGSTER_META, None)
        super().add_fields(log_data, record, message_dict)
        for internal in (_DAGSTER_META, _DAGSTER_EVENT, "dagster_event_batch_metadata", "color_message",
                         "levelname_bracketed", "trace_msg"):  # Dagster's and BentoML's formatting aids
            log_data.pop(internal, None)
        if isinstance(meta, Mapping):
            log_data.update(_dagster_fields(meta))
            if meta.get("orig_message") is not None:
                log_data["message"] = meta["orig_message"]
        request_id = REQUEST_ID.get()
        if request_id is not None:
            log_data["request_id"] = request_id  # BentoML's own field is its trace's id, None untraced
        elif log_data.get("request_id") is None:
            log_data.pop("request_id", None)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key in ("message", "exc_info", "stack_info"):
            if isinstance(log_data.get(key), str):
                log_data[key] = redact(log_data[key])
        return log_data


def formatter(log_format: str | None = None) -> logging.Formatter:
    """The formatter ``LOG_FORMAT`` asks for: JSON (default) or plain text for a terminal."""
    from infra import settings

    if (log_format or settings.observability().log_format) == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return StructuredFormatter()


def configure(loggers: tuple[str, ...] = ("",), level: int | str | None = None, stream=None,
              log_format: str | None = None) -> logging.Handler:
    """Send ``loggers`` (the root by default) to one stream handler with our formatter; idempotent.

    Handlers another framework installed on these loggers are kept, but their formatters are replaced,
    so every line from the process has the same shape.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    setattr(handler, _HANDLER_MARK, True)
    for name in loggers:
        target = logging.getLogger(name)
        for existing in list(target.handlers):
            if getattr(existing, _HANDLER_MARK, False):
                target.removeHandler(existing)
            else:
                existing.setFormatter(handler.formatter)
        if name == "" or not any(not getattr(h, _HANDLER_MARK, False) for h in target.handlers):
            target.addHandler(handler)
        if level is not None:
            target.setLevel(level)
    return handler


def scrub_sentry_event(event: dict, hint: dict | None = None) -> dict:
    """Sentry's ``before_send``: no request body, cookies or auth headers; every other string redacted."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: ("***" if k.lower() in {"authorization", "cookie", "x-api-key"} else v)
                                  for k, v in headers.items()}
    return _redact_all(event)


def _redact_all(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v) for v in value]
    return value


def init_sentry(component: str) -> bool:
    """Report errors to Sentry when ``SENTRY_DSN`` is set; otherwise do nothing. Whether it was started.

    No personal data (``send_default_pii=False``), no performance tracing, every event scrubbed by
    ``scrub_sentry_event`` before it leaves the process.
    """
    from infra import settings

    observability = settings.observability()
    if observability.sentry_dsn is None:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=observability.sentry_dsn.get_secret_value(), environment=observability.sentry_environment,
        release=settings.project().current_code_version(),
        send_default_pii=False, traces_sample_rate=0.0, before_send=scrub_sentry_event,
        before_breadcrumb=lambda crumb, hint: _redact_all(crumb),
    )
    sentry_sdk.set_tag("component", component)
    return True
