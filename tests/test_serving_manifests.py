"""deploy/k8s/serving: the Bento on Knative (scale to zero) or as a Deployment + HPA, checked without a cluster.

Core objects are validated by kubernetes-validate (strict: an unknown field is an error). Knative's
CRD is not bundled, so its Service is checked by the asserts below and its PodSpec is validated by
wrapping it into a core/v1 Pod.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

SERVING = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "serving"
VARIANTS = ("knative", "deployment")
KUBERNETES_VERSIONS = ("1.30", "1.37")  # the oldest cluster we support, the newest schemas bundled
TOKEN_SECRET = {"name": "flight-delay-service-token", "key": "SERVICE_API_TOKEN"}
IMAGE_NAME = "flight-delay-service"  # what the kustomizations' `images:` replace with the released image
BENTO_PORT = 3000


def _objects(folder: str) -> list[dict]:
    """Every Kubernetes object in a folder's manifests (the kustomization itself excluded)."""
    found = []
    for path in sorted((SERVING / folder).glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def _one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def _knative_service() -> dict:
    return _one(_objects("knative"), "Service")


def _deployment() -> dict:
    return _one(_objects("deployment"), "Deployment")


def _pod_specs() -> dict[str, dict]:
    return {"knative": _knative_service()["spec"]["template"]["spec"], "deployment": _deployment()["spec"]["template"]["spec"]}


def _validate(obj: dict, version: str) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", ["base", "deployment"])
def test_core_objects_match_the_kubernetes_schemas(folder, version):
    objects = _objects(folder)
    assert objects
    for obj in objects:
        _validate(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_knative_pod_spec_is_a_valid_pod_spec(version):
    service = _knative_service()
    template = service["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": service["metadata"]["name"], "labels": template["metadata"]["labels"]},
           "spec": {k: v for k, v in template["spec"].items() if k not in ("containerConcurrency", "timeoutSeconds")}}
    _validate(pod, version)


def test_an_unknown_field_fails_validation():
    """The check above can fail: strict validation rejects a misspelt field."""
    import kubernetes_validate

    broken = _deployment()
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken, KUBERNETES_VERSIONS[-1])


def test_knative_service_scales_to_zero_with_a_concurrency_target():
    service = _knative_service()
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 2
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    target = int(annotations["autoscaling.knative.dev/target"])
    concurrency = service["spec"]["template"]["spec"]["containerConcurrency"]
    assert 0 < target <= concurrency, "the soft target must sit below the hard per-pod limit"
    assert all(isinstance(v, str) for v in annotations.values()), "Knative annotations are strings"
    assert service["spec"]["template"]["spec"]["timeoutSeconds"] <= 60


def test_knative_pod_spec_stays_within_what_knative_allows_by_default():
    """Knative rejects a pod-level securityContext (unless a feature flag is on) and more than one port."""
    spec = _pod_specs()["knative"]
    assert "securityContext" not in spec
    (container,) = spec["containers"]
    (port,) = container["ports"]
    assert port == {"name": "http1", "containerPort": BENTO_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == BENTO_PORT, "Knative probes only the serving port"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pod_probes_the_bento_and_takes_its_token_from_a_secret(variant):
    spec = _pod_specs()[variant]
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    (token,) = [e for e in container["env"] if e["name"] == "SERVICE_API_TOKEN"]
    assert token == {"name": "SERVICE_API_TOKEN", "valueFrom": {"secretKeyRef": TOKEN_SECRET}}
    assert all("value" not in e for e in container["env"]), "no setting is inlined: values live in the ConfigMap"
    assert container["image"] == IMAGE_NAME
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pod_runs_as_a_non_root_user_without_privileges(variant):
    spec = _pod_specs()[variant]
    (container,) = spec["containers"]
    security = {**spec.get("securityContext", {}), **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}, "the one writable path"


def test_both_variants_run_the_same_container():
    """Only what Knative forbids (named ports, a startup probe) may differ between the two variants."""
    knative, deployment = (c["containers"][0] for c in _pod_specs().values())
    for field in ("image", "env", "envFrom", "resources", "volumeMounts"):
        assert knative[field] == deployment[field], field


def test_deployment_is_scaled_by_an_hpa_and_protected_by_a_pdb():
    objects = _objects("deployment")
    deployment, hpa, pdb, service = (_one(objects, k) for k in ("Deployment", "HorizontalPodAutoscaler",
                                                                 "PodDisruptionBudget", "Service"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain can always proceed"
    for selector in (deployment["spec"]["selector"]["matchLabels"], pdb["spec"]["selector"]["matchLabels"],
                     service["spec"]["selector"]):
        assert selector.items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}


def test_every_setting_the_pod_gets_is_one_the_service_reads():
    """A ConfigMap key nobody reads is a typo or a leftover (infra/settings.py is the one reader)."""
    config = _one(_objects("base"), "ConfigMap")
    from infra import settings

    read = settings.environment_variables()
    unread = [k for k in config["data"] if not k.startswith("BENTOML_") and k not in read]
    assert unread == []
    assert not any(o["kind"] == "Secret" for folder in ("base", *VARIANTS) for o in _objects(folder)), \
        "the token Secret is created out of band, never committed"


def test_every_object_lives_in_the_serving_namespace():
    namespace = _one(_objects("base"), "Namespace")["metadata"]["name"]
    for folder in ("base", *VARIANTS):
        for obj in _objects(folder):
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == namespace, (folder, obj["kind"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_lists_every_manifest_and_rolls_the_image(variant):
    kustomization = yaml.safe_load((SERVING / variant / "kustomization.yaml").read_text())
    manifests = {p.name for p in (SERVING / variant).glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == {"../base", *manifests}
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE_NAME


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: kustomize rendering not checked")
@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomize_renders_the_released_image(variant, tmp_path):
    """What a rollout does: set the image bento_release recorded, render, and find it in the pod."""
    from resources.bento_store import image_reference

    shutil.copytree(SERVING, tmp_path / "serving")
    folder = tmp_path / "serving" / variant
    image = image_reference("flight_delay_service:k3x9", "registry.example.com/flight-delay/service")
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    name, _, tag = image.rpartition(":")
    kustomization["images"] = [{"name": IMAGE_NAME, "newName": name, "newTag": tag}]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendered = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True)
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    workload = next(o for o in objects if o["kind"] == "Deployment" or o["apiVersion"] == "serving.knative.dev/v1")
    assert workload["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert {o["kind"] for o in objects} >= {"Namespace", "ServiceAccount", "ConfigMap"}
