"""The executor, chosen by ``DAGSTER_EXECUTOR`` and set on Definitions so every launch path gets it.

Job-level executors and tags are skipped by direct asset materializations and backfills (dagster#26720,
#22865): only the Definitions-level executor reaches the UI's materializations, backfills, sensor and
schedule runs and declarative automation alike. dagster_k8s (and the kubernetes client under it) is
imported only when chosen, so the code location loads in about a second elsewhere.
"""

from typing import Any

import dagster as dg

from infra import settings


def k8s_executor_config() -> dict[str, Any]:
    """The ``k8s_job_executor``'s config from the environment: only what is set, the rest from the run launcher."""
    executor = settings.executor()
    config: dict[str, Any] = {}
    if executor.job_namespace:
        config["job_namespace"] = executor.job_namespace
    if executor.image_pull_policy:
        config["image_pull_policy"] = executor.image_pull_policy
    if executor.env_secrets:
        config["env_secrets"] = executor.env_secrets
    if executor.max_concurrent is not None:
        config["max_concurrent"] = executor.max_concurrent
    return config


def executor_from_settings() -> dg.ExecutorDefinition:
    """in_process (default: a child process per step costs ~1.8 s here, more than our steps), multiprocess, or k8s."""
    executor = settings.executor()
    kind = executor.executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(), name="k8s")
    if kind == "multiprocess":
        max_concurrent = executor.max_concurrent
        return dg.multiprocess_executor.configured(
            {"max_concurrent": max_concurrent} if max_concurrent is not None else {}, name="multiprocess"
        )
    return dg.in_process_executor
