"""A step's Kubernetes Job as ``k8s_job_executor`` builds it, through dagster-k8s's own public functions.

Mirrors ``K8sStepHandler._get_container_context`` and ``launch_step`` (dagster_k8s/executor.py,
0.29.27): the run launcher's context, then the run's code-origin context (what
``includeConfigInLaunchedRuns`` gives it), then the executor's config, then the step's
``dagster-k8s/config`` tag; the Job from ``construct_dagster_k8s_job``. Only the API call is left out.
"""

from typing import Any

RUN_ID = "8d1a2c3e-0000-4000-8000-000000000001"


def step_job_manifest(
    *,
    job_name: str,
    step_key: str,
    step_tags: dict[str, str],
    executor_config: dict[str, Any],
    run_launcher,
    run_container_context: dict[str, Any],
    image: str,
) -> dict[str, Any]:
    """The step's Job as the dict the API server would receive (camelCase, as ``kubectl`` shows it)."""
    import dagster as dg
    import kubernetes
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )

    executor_context = K8sContainerContext(
        image_pull_policy=executor_config.get("image_pull_policy"),
        image_pull_secrets=executor_config.get("image_pull_secrets"),
        service_account_name=executor_config.get("service_account_name"),
        env_config_maps=executor_config.get("env_config_maps"),
        env_secrets=executor_config.get("env_secrets"),
        env_vars=executor_config.get("env_vars"),
        volume_mounts=executor_config.get("volume_mounts"),
        volumes=executor_config.get("volumes"),
        labels=executor_config.get("labels"),
        namespace=executor_config.get("job_namespace"),
        resources=executor_config.get("resources"),
        scheduler_name=executor_config.get("scheduler_name"),
        security_context=executor_config.get("security_context"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config.get("step_k8s_config", {})),
    )
    run = dg.DagsterRun(job_name=job_name, run_id=RUN_ID)
    context = (
        K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=False)
        .merge(K8sContainerContext.create_from_config(run_container_context))
        .merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
        .merge(
            K8sContainerContext(
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                    executor_config.get("per_step_k8s_config", {}).get(step_key, {})
                )
            )
        )
    )
    job_config = context.get_k8s_job_config(executor_config.get("job_image"), run_launcher)
    if not job_config.job_image:
        job_config = job_config.with_image(image)
    k8s_job_name = f"dagster-step-{get_k8s_job_name(RUN_ID, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=k8s_job_name,
        pod_name=k8s_job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": job_name, "dagster/op": step_key, "dagster/run-id": RUN_ID},
        env_vars=[
            {"name": "DAGSTER_RUN_JOB_NAME", "value": job_name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )
    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    manifest.setdefault("metadata", {})["namespace"] = context.namespace
    return manifest
