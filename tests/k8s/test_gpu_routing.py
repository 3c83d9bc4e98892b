"""GPU routing as configuration: the training step's pod needs come from settings, reach the
`delay_model` step only, and survive dagster-k8s's own Job construction on every launch path."""

import json

import pytest

from infra import settings
from resources.compute import TorchCompute
from resources.kubernetes import GPU_RESOURCE, K8S_CONFIG_TAG, training_step_k8s_config, training_step_op_tags
from tests.k8s import chart
from tests.k8s.conftest import load_code_location
from tests.k8s.step_jobs import step_job_manifest

KUBERNETES_VERSIONS = ("1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36", "1.37")
"""The versions we claim: every one kubernetes-validate bundles from 1.30 on (its newest is 1.37)."""

TRAINING_STEP = "delay_model"


def test_node_selector_reads_json_or_pairs(monkeypatch):
    monkeypatch.setenv("TRAINING_NODE_SELECTOR", "pool=gpu, accelerator=nvidia-l4")
    assert settings.training().node_selector == {"pool": "gpu", "accelerator": "nvidia-l4"}
    monkeypatch.setenv("TRAINING_NODE_SELECTOR", '{"cloud.google.com/gke-accelerator": "nvidia-l4"}')
    assert settings.training().node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    monkeypatch.setenv("TRAINING_NODE_SELECTOR", "pool")
    with pytest.raises(ValueError, match="TRAINING_NODE_SELECTOR='pool': 'pool' is not key=value"):
        settings.training().node_selector


def test_tolerations_default_to_the_gpu_taint_only_when_gpus_are_asked(monkeypatch):
    monkeypatch.delenv("TRAINING_TOLERATIONS", raising=False)
    monkeypatch.delenv("TRAINING_GPUS", raising=False)
    assert settings.training().tolerations == []
    monkeypatch.setenv("TRAINING_GPUS", "2")
    assert settings.training().tolerations == [settings.GPU_TOLERATION]
    monkeypatch.setenv("TRAINING_TOLERATIONS", "[]")
    assert settings.training().tolerations == []
    monkeypatch.setenv("TRAINING_TOLERATIONS", "dedicated=ml:NoSchedule,nvidia.com/gpu")
    assert settings.training().tolerations == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},
    ]
    monkeypatch.setenv("TRAINING_TOLERATIONS", '[{"key": "spot", "operator": "Exists", "tolerationSeconds": 60}]')
    assert settings.training().tolerations[0]["tolerationSeconds"] == 60


def test_a_cpu_training_step_carries_no_tag():
    assert training_step_op_tags(TorchCompute()) == {}


def test_gpus_are_asked_once_when_the_trainer_has_its_own_pod(monkeypatch):
    """``TRAINING_LAUNCHER=k8s``: the Pipes trainer pod holds the GPUs; the step that waits for it holds none."""
    from resources.trainer import DistributedTrainer

    monkeypatch.setenv("TRAINING_GPUS", "2")
    monkeypatch.setenv("TRAINING_LAUNCHER", "inprocess")
    assert training_step_op_tags()[K8S_CONFIG_TAG]["container_config"]["resources"]["limits"] == {GPU_RESOURCE: "2"}
    monkeypatch.setenv("TRAINING_LAUNCHER", "k8s")
    monkeypatch.setenv("TRAINING_IMAGE", "registry.example.com/flight-delays/trainer:1")
    assert training_step_op_tags() == {}
    pod = DistributedTrainer.from_settings().k8s_run_arguments("cuda")["base_pod_spec"]
    assert pod["containers"][0]["resources"]["limits"] == {GPU_RESOURCE: "2"}


def test_the_tag_is_what_dagster_k8s_reads_from_a_step():
    from dagster_k8s.job import get_user_defined_k8s_config

    compute = TorchCompute(gpus=2, memory="24Gi", node_selector={"pool": "gpu"}, tolerations=[settings.GPU_TOLERATION])
    tags = {key: json.dumps(value) for key, value in training_step_op_tags(compute).items()}
    read = get_user_defined_k8s_config(tags)
    assert read.container_config["resources"] == {
        "limits": {GPU_RESOURCE: "2", "memory": "24Gi"}, "requests": {"memory": "24Gi"},
    }
    assert read.pod_spec_config == {"node_selector": {"pool": "gpu"}, "tolerations": [settings.GPU_TOLERATION]}
    assert training_step_k8s_config(compute) == json.loads(tags[K8S_CONFIG_TAG])


def _gpu_limit(manifest: dict) -> str | None:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return ((container.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE)


def _step_manifests(values: dict, run_launcher) -> dict[tuple[str, str], dict]:
    """Every step Job of every launch path, from the code location loaded with the deployment's env."""
    loaded = load_code_location(chart.deployment_env(values))
    manifests = {}
    for path, described in loaded["paths"].items():
        assert described["executor"] == "k8s", path
        for step_key, tags in described["step_tags"].items():
            manifests[(path, step_key)] = step_job_manifest(
                job_name=described["job"],
                step_key=step_key,
                step_tags=tags,
                executor_config=described["executor_config"]["k8s"],
                run_launcher=run_launcher,
                run_container_context=chart.launched_run_container_context(values),
                image=chart.image(values),
            )
    return manifests


@pytest.fixture
def gpu_values():
    return chart.load_values("values.yaml", "values-gpu.yaml")


@pytest.mark.slow
def test_only_the_training_step_asks_for_a_gpu_on_every_launch_path(gpu_values, run_launcher_from):
    manifests = _step_manifests(gpu_values, run_launcher_from(gpu_values))
    training = {path: m for (path, step), m in manifests.items() if step == TRAINING_STEP}
    # Where training can run at all: UI materialization/backfill, automation, the retrain sensor, training_job.
    assert set(training) == {
        "ui materialization, backfill", "sensor automation_sensor", "sensor retrain_on_drift_sensor", "job training_job",
    }
    for path, manifest in training.items():
        pod = manifest["spec"]["template"]["spec"]
        assert _gpu_limit(manifest) == "1", path
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}, path
        assert settings.GPU_TOLERATION in pod["tolerations"], path
        assert pod["containers"][0]["resources"]["requests"]["memory"] == "16Gi", path
    others = {key: m for key, m in manifests.items() if key[1] != TRAINING_STEP}
    assert len(others) > 40
    for key, manifest in others.items():
        pod = manifest["spec"]["template"]["spec"]
        assert _gpu_limit(manifest) is None, key
        assert not pod.get("nodeSelector") and not pod.get("tolerations"), key
        # The run launcher's runK8sConfig reaches every step pod: a limit there would cap them all.
        assert not pod["containers"][0]["resources"].get("limits"), key


@pytest.mark.slow
def test_step_pods_get_the_deployments_image_env_and_secrets(gpu_values, run_launcher_from):
    manifests = _step_manifests(gpu_values, run_launcher_from(gpu_values))
    manifest = manifests[("job training_job", TRAINING_STEP)]
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DAGSTER_EXECUTOR"] == "k8s" and env["TRAINING_GPUS"] == "1"
    assert env["DAGSTER_RUN_STEP_KEY"] == TRAINING_STEP
    assert {"secretRef": {"name": "flight-delays-secrets"}} in container["envFrom"]
    assert container["image"] == chart.image(gpu_values)
    assert manifest["metadata"]["namespace"] == chart.RELEASE_NAMESPACE
    assert manifest["metadata"]["labels"]["dagster/op"] == TRAINING_STEP


@pytest.mark.slow
@pytest.mark.parametrize("values_files", [("values.yaml",), ("values.yaml", "values-gpu.yaml")])
def test_every_rendered_step_job_is_valid_kubernetes(values_files, run_launcher_from):
    import kubernetes_validate

    values = chart.load_values(*values_files)
    manifests = _step_manifests(values, run_launcher_from(values))
    distinct = {json.dumps(m, sort_keys=True): m for m in manifests.values()}
    assert len(distinct) > 20
    for version in KUBERNETES_VERSIONS:
        for manifest in distinct.values():
            kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.slow
def test_without_the_gpu_overlay_no_step_asks_for_a_gpu(run_launcher_from):
    values = chart.load_values("values.yaml")
    manifests = _step_manifests(values, run_launcher_from(values))
    assert ("job training_job", TRAINING_STEP) in manifests
    assert all(_gpu_limit(m) is None for m in manifests.values())


def test_a_typo_in_the_tag_is_refused_by_dagster_k8s():
    """The pod spec keys are checked against the kubernetes models when the Job is built."""
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    job_config = DagsterK8sJobConfig(job_image="x:1", dagster_home="/opt/dagster/dagster_home")
    with pytest.raises(Exception, match="node_selectr"):
        config = UserDefinedDagsterK8sConfig.from_dict({"pod_spec_config": {"node_selectr": {"pool": "gpu"}}})
        construct_dagster_k8s_job(job_config, args=["true"], job_name="typo", user_defined_k8s_config=config)


def test_the_validator_refuses_what_an_api_server_would():
    """Strict validation is not vacuous: a misplaced field in a step Job fails it."""
    import kubernetes_validate

    bad = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x:1", "nodeSelector": {"a": "b"}}],
                                       "restartPolicy": "Never"}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)
