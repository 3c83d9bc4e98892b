"""The training step's pod on Kubernetes: the compute resource's needs as a ``dagster-k8s/config`` tag.

``k8s_job_executor`` builds each step's Job from that step's op tags (run and job tags never reach a
step pod: dagster#10591, #26720), so the GPU ask lives on the `delay_model` op and nowhere else.
Plain dicts only: dagster_k8s is imported by whoever builds Jobs, never here.
"""

from typing import Any

from infra import settings
from resources.compute import TorchCompute

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"


SHM_VOLUME = "dshm"
"""A memory-backed /dev/shm: a container's default 64 MB is too small for DDP's shared-memory transports."""


def training_resources(compute: TorchCompute) -> dict[str, dict[str, str]]:
    """Container resources of whatever pod trains: GPUs as limits, memory requested and capped alike.

    GPUs go in ``limits`` only (Kubernetes sets the request to the limit for extended resources);
    memory is requested and capped at the same value so the pod is not evicted for using what it asked.
    """
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if compute.gpus:
        limits[GPU_RESOURCE] = str(compute.gpus)
    if compute.memory:
        limits["memory"] = requests["memory"] = compute.memory
    return {"limits": limits, **({"requests": requests} if requests else {})} if limits else {}


def training_step_k8s_config(compute: TorchCompute, shared_memory: bool = False) -> dict[str, Any]:
    """The ``dagster-k8s/config`` value for the training step: resources, node selector, tolerations.

    ``shared_memory``: torchrun runs inside the step's pod (``TRAINING_LAUNCHER=torchrun``), so it gets
    the memory-backed /dev/shm its DDP processes need.
    """
    container: dict[str, Any] = {}
    pod_spec: dict[str, Any] = {}
    if resources := training_resources(compute):
        container["resources"] = resources
    if compute.node_selector:
        pod_spec["node_selector"] = dict(compute.node_selector)
    if compute.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in compute.tolerations]
    if shared_memory and container:
        container["volume_mounts"] = [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]
        pod_spec["volumes"] = [{"name": SHM_VOLUME, "empty_dir": {"medium": "Memory"}}]
    config: dict[str, Any] = {}
    if container:
        config["container_config"] = container
    if pod_spec:
        config["pod_spec_config"] = pod_spec
    return config


def training_pod_spec(
    compute: TorchCompute, service_account: str | None = None, env_secrets: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """The trainer pod's spec for `PipesK8sClient` (``base_pod_spec``, snake_case as the client's models).

    The same needs as the training step's tag (``training_resources``, node selector, tolerations), a
    memory-backed /dev/shm, the service account whose role reaches the staging area, and the Secrets
    the run's pods get (``K8S_ENV_SECRETS``): PipesK8sClient itself passes only Pipes' bootstrap variables.
    """
    container: dict[str, Any] = {"name": "trainer", "volume_mounts": [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]}
    if resources := training_resources(compute):
        container["resources"] = resources
    if env_secrets:
        container["env_from"] = [{"secret_ref": {"name": name}} for name in env_secrets]
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": SHM_VOLUME, "empty_dir": {"medium": "Memory"}}],
    }
    if service_account:
        spec["service_account_name"] = service_account
    if compute.node_selector:
        spec["node_selector"] = dict(compute.node_selector)
    if compute.tolerations:
        spec["tolerations"] = [dict(t) for t in compute.tolerations]
    return spec


def training_step_op_tags(compute: TorchCompute | None = None) -> dict[str, Any]:
    """Op tags for the training step: ``{"dagster-k8s/config": …}``, or none when it needs nothing special.

    Read from the environment when the code location loads (the run worker loads the same image with
    the same environment, so the step it launches carries the same tag). With ``TRAINING_LAUNCHER=k8s``
    the training runs in its own pod (Dagster Pipes, ``resources/trainer.py``), which asks for the GPUs;
    the step then only waits for it, so it asks for none: a run holds its GPUs once.
    A malformed ``TRAINING_*`` value fails the code location's load, naming the variable: a GPU ask
    silently dropped would train on the CPU for hours.
    """
    launcher = settings.training().launcher
    if launcher == "k8s":
        return {}
    config = training_step_k8s_config(compute or TorchCompute.from_settings(), shared_memory=launcher == "torchrun")
    return {K8S_CONFIG_TAG: config} if config else {}
