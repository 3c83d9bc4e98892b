"""The training step's pod on Kubernetes: the compute resource's needs as a ``dagster-k8s/config`` tag.

``k8s_job_executor`` builds each step's Job from that step's op tags (run and job tags never reach a
step pod: dagster#10591, #26720), so the GPU ask lives on the `delay_model` op and nowhere else.
Plain dicts only: dagster_k8s is imported by whoever builds Jobs, never here.
"""

from typing import Any

from ml import settings
from resources.compute import TorchCompute

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"


def training_step_k8s_config(compute: TorchCompute) -> dict[str, Any]:
    """The ``dagster-k8s/config`` value for the training step: limits, node selector, tolerations.

    GPUs go in ``limits`` only (Kubernetes sets the request to the limit for extended resources);
    memory is requested and capped at the same value so the pod is not evicted for using what it asked.
    """
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if compute.gpus:
        limits[GPU_RESOURCE] = str(compute.gpus)
    if compute.memory:
        limits["memory"] = requests["memory"] = compute.memory
    container: dict[str, Any] = {}
    if limits:
        container["resources"] = {"limits": limits, **({"requests": requests} if requests else {})}
    pod_spec: dict[str, Any] = {}
    if compute.node_selector:
        pod_spec["node_selector"] = dict(compute.node_selector)
    if compute.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in compute.tolerations]
    config: dict[str, Any] = {}
    if container:
        config["container_config"] = container
    if pod_spec:
        config["pod_spec_config"] = pod_spec
    return config


def training_step_op_tags(compute: TorchCompute | None = None) -> dict[str, Any]:
    """Op tags for the training step: ``{"dagster-k8s/config": …}``, or none when it needs nothing special.

    Read from the environment when the code location loads (the run worker loads the same image with
    the same environment, so the step it launches carries the same tag). With ``TRAINING_LAUNCHER=k8s``
    the training runs in its own pod (Dagster Pipes, ``resources/trainer.py``), which asks for the GPUs;
    the step then only waits for it, so it asks for none: a run holds its GPUs once.
    """
    if settings.training_launcher() == "k8s":
        return {}
    config = training_step_k8s_config(compute or TorchCompute.from_settings())
    return {K8S_CONFIG_TAG: config} if config else {}
