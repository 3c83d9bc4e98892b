"""The code location's one root: it loads what each package defines and merges it, nothing more."""

import dagster as dg

import assets  # first: it silences Dagster's beta/preview warnings for the packages below
import resources
import sensors
from infra import structured_logs
from pipelines import jobs, schedules
from pipelines.executors import executor_from_settings
from resources.audit import AuditTrail


def build_definitions() -> dg.Definitions:
    """Everything, with resources configured from the environment as it is now."""
    return dg.Definitions.merge(
        dg.load_definitions_from_package_module(assets),
        dg.load_definitions_from_package_module(sensors),
        dg.load_definitions_from_modules([jobs, schedules]),
        resources.build_defs(),
        dg.Definitions(executor=executor_from_settings()),
        dg.Definitions(resources={"audit_trail": AuditTrail.from_settings()}),
    )


structured_logs.init_sentry("pipeline")  # only with SENTRY_DSN: code servers and run workers report errors
defs = build_definitions()
