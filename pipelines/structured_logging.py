"""The code location's console logger: Dagster's run and step events as JSON lines (``ml.structured_logs``).

Set as the default ``console`` logger on Definitions, so every job (asset jobs, backfills, sensor
runs) writes one JSON object per event with run id, job, step, asset and partition. It is part of the
code location, not of the instance's ``dagster.yaml``: the webserver and daemon images need not carry
our code. ``LOG_FORMAT=text`` gives plain lines instead. ``SENTRY_DSN`` starts error reporting.
"""

import logging
import sys

import dagster as dg

from ml import structured_logs


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Dagster events as JSON lines (LOG_FORMAT=text: plain lines), secrets masked.",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    logger = logging.Logger(config["name"], level=config["log_level"].upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structured_logs.formatter())
    logger.addHandler(handler)
    structured_logs.init_sentry("pipeline")
    return logger
