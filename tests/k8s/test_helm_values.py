"""Our Helm values: the run launcher's config passes dagster-k8s's own schema and builds a launcher; the
keys we set are ones the chart knows; the chart's own refusals (runs limited twice) are not triggered."""

import pytest

from tests.k8s import chart
from tests.k8s.conftest import load_code_location, validated_run_launcher_config

VALUES_FILES = [("values.yaml",), ("values.yaml", "values-gpu.yaml")]

CHART_KEYS = {
    "": {"global", "generatePostgresqlPasswordSecret", "dagster-user-deployments", "runLauncher", "postgresql",
         "dagsterDaemon", "concurrency", "computeLogManager", "telemetry"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "deployment": {"name", "image", "codeServerArgs", "dagsterApiGrpcArgs", "includeConfigInLaunchedRuns",
                   "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector",
                   "affinity", "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe",
                   "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName",
                   "initContainers", "sidecarContainers"},
    "k8sRunLauncher": {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                       "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                       "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"},
    "runK8sConfig": {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                   "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service"},
    "dagsterDaemon": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
                      "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                      "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
                      "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes",
                      "initContainerResources"},
    "s3ComputeLogManager": {"bucket", "localDir", "prefix", "useSsl", "verify", "verifyCertPath", "endpointUrl",
                            "skipEmptyFiles", "uploadInterval", "uploadExtraArgs", "showUrlOnly", "region"},
    "concurrency": {"enabled", "pools", "runs"},
    "pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
}
"""Keys the chart declares, from its values.schema.json (dagster-io/dagster helm/dagster, read at commit
bdb8547f) and, for `concurrency`, its helpers/instance/_concurrency.tpl. The schema is not vendored here."""


@pytest.fixture(params=VALUES_FILES, ids=lambda files: "+".join(files))
def values(request):
    return chart.load_values(*request.param)


def test_every_key_we_set_is_one_the_chart_declares(values):
    deployment = chart.user_deployment(values)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    concurrency = values["concurrency"]
    sections = {
        "": values, "global": values["global"], "dagster-user-deployments": values["dagster-user-deployments"],
        "deployment": deployment, "k8sRunLauncher": launcher, "runK8sConfig": launcher["runK8sConfig"],
        "postgresql": values["postgresql"], "dagsterDaemon": values["dagsterDaemon"],
        "s3ComputeLogManager": values["computeLogManager"]["config"]["s3ComputeLogManager"],
        "concurrency": concurrency, "pools": concurrency["pools"], "runs": concurrency["runs"],
    }
    for name, section in sections.items():
        assert set(section) <= CHART_KEYS[name], (name, set(section) - CHART_KEYS[name])


def test_the_run_launcher_config_passes_dagster_k8s_schema_and_builds_a_launcher(values, run_launcher_from):
    launcher = run_launcher_from(values)
    assert launcher.job_namespace == chart.RELEASE_NAMESPACE
    assert launcher.env_secrets == ["flight-delays-secrets"]
    assert launcher.image_pull_policy == "IfNotPresent"
    assert launcher.run_k8s_config["container_config"]["resources"] == {"requests": {"cpu": "250m", "memory": "1Gi"}}
    assert launcher.dagster_home == "/opt/dagster/dagster_home"  # resolved from the env the chart sets


def test_a_misspelt_run_launcher_key_is_refused_by_the_schema(values, kubeconfig, chart_env):
    import dagster as dg

    values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"] = None
    values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfg"] = {}
    with pytest.raises(dg.DagsterInvalidConfigError, match="pod_spec_confg"):
        validated_run_launcher_config(values, kubeconfig)


def test_the_user_code_runs_its_definitions_with_the_k8s_executor(values):
    deployment = chart.user_deployment(values)
    assert deployment["codeServerArgs"] == ["-m", "pipelines.definitions"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert chart.deployment_env(values)["DAGSTER_EXECUTOR"] == "k8s"
    assert [s["name"] for s in deployment["envSecrets"]] == ["flight-delays-secrets"]
    assert ":" in chart.image(values) and not chart.image(values).endswith(":latest")


def test_the_deployments_env_loads_a_code_location_on_the_k8s_executor(values):
    """The env we ship is a valid configuration of our settings (bad values fail the load)."""
    loaded = load_code_location(chart.deployment_env(values))
    assert {d["executor"] for d in loaded["paths"].values()} == {"k8s"}
    assert {d["executor_config"]["k8s"]["max_concurrent"] for d in loaded["paths"].values()} == {4}


def test_no_secret_value_is_in_the_values(values):
    """Secrets come from Secrets by name: no password in our values, no variable that may carry one set inline."""
    from infra.settings import secret_variables

    assert "postgresqlPassword" not in values["postgresql"]
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    env = chart.deployment_env(values)
    assert not set(env) & {*secret_variables(), "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DAGSTER_PG_PASSWORD"}


def test_an_external_postgres(values):
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlHost"]


def test_runs_are_limited_in_one_place_only(values):
    """The chart fails when both concurrency.runs and the run queue set the same limit (_concurrency.tpl)."""
    queue = values["dagsterDaemon"]["runCoordinator"]
    assert queue["enabled"] and queue["type"] == "QueuedRunCoordinator"
    queued = queue["config"]["queuedRunCoordinator"] or {}
    runs = values["concurrency"]["runs"]
    assert not (queued.get("maxConcurrentRuns") is not None and runs.get("maxConcurrentRuns") is not None)
    assert not (queued.get("tagConcurrencyLimits") and runs.get("tagConcurrencyLimits"))
    assert values["concurrency"]["enabled"] and values["concurrency"]["pools"]["defaultLimit"] == 1


def test_run_monitoring_compute_logs_and_telemetry(values):
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager" and logs["config"]["s3ComputeLogManager"]["bucket"]
    assert values["telemetry"] == {"enabled": False}


def test_kubernetes_fields_in_the_values_are_valid_models(values):
    """Resources and run pod config are checked against the kubernetes client's models (typos refused)."""
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict

    deployment = chart.user_deployment(values)
    k8s_model_from_dict(kubernetes.client.V1ResourceRequirements, deployment["resources"])
    for env in deployment["env"]:
        k8s_model_from_dict(kubernetes.client.V1EnvVar, env)
    container = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    k8s_model_from_dict(kubernetes.client.V1Container, {"name": "run", **container})


def test_the_gpu_overlay_only_adds_training_settings_to_the_deployment():
    """Helm replaces lists whole, so the overlay repeats the deployment: it must not drift from values.yaml."""
    base = chart.user_deployment(chart.load_values("values.yaml"))
    gpu_values = chart.load_values("values.yaml", "values-gpu.yaml")
    gpu = chart.user_deployment(gpu_values)
    assert {k: v for k, v in gpu.items() if k != "env"} == {k: v for k, v in base.items() if k != "env"}
    added = [e for e in gpu["env"] if e not in base["env"]]
    assert base["env"] == [e for e in gpu["env"] if e in base["env"]]
    assert {e["name"] for e in added} == {"TRAINING_GPUS", "TRAINING_MEMORY", "TRAINING_NODE_SELECTOR"}
    assert {k: v for k, v in gpu_values.items() if k != "dagster-user-deployments"} == {
        k: v for k, v in chart.load_values("values.yaml").items() if k != "dagster-user-deployments"
    }
