"""deploy/k8s/streaming: the stream processor as a Deployment scaled by KEDA, checked without a cluster.

Core objects are validated by kubernetes-validate (strict: an unknown field is an error), as the serving
manifests are (tests/test_serving_manifests.py). KEDA's ScaledObject is a CRD kubernetes-validate does not
bundle: its fields are asserted below.
"""

from pathlib import Path

import pytest
import yaml

STREAMING = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "streaming"
KUBERNETES_VERSIONS = ("1.30", "1.37")  # as tests/test_serving_manifests.py: the oldest supported, the newest bundled
CONNECTIONS_SECRET = "flight-delay-stream"
IMAGE_NAME = "flightdelay/user-code"  # what the kustomization's `images:` replaces with the released image


def _objects() -> list[dict]:
    """Every Kubernetes object in the folder's manifests (the kustomization itself excluded)."""
    found = []
    for path in sorted(STREAMING.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def _one(kind: str) -> dict:
    (found,) = [o for o in _objects() if o["kind"] == kind]
    return found


def _container() -> dict:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _validate(obj: dict, version: str) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_the_kubernetes_schemas(version):
    core = [o for o in _objects() if o["kind"] != "ScaledObject"]
    assert {o["kind"] for o in core} == {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service"}
    for obj in core:
        _validate(obj, version)


def test_an_unknown_field_fails_validation():
    """The check above can fail: strict validation rejects a misspelt field."""
    import kubernetes_validate

    broken = _one("Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken, KUBERNETES_VERSIONS[-1])


def test_the_probes_and_the_service_reach_the_port_the_processor_serves_metrics_on():
    container = _container()
    command = container["command"]
    assert command[:3] == ["python", "-m", "streaming.processor"]
    metrics_port = int(command[command.index("--metrics-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": metrics_port}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/metrics", probe
        assert ports.get(get["port"], get["port"]) == metrics_port, f"{probe} probes {get['port']}"
    (port,) = _one("Service")["spec"]["ports"]
    assert ports.get(port["targetPort"], port["targetPort"]) == metrics_port
    assert _one("Service")["spec"]["selector"].items() <= _one("Deployment")["spec"]["template"]["metadata"]["labels"].items()


def test_the_processor_reads_its_connections_from_a_secret_and_its_settings_from_the_configmap():
    container = _container()
    env = {e["name"]: e for e in container["env"]}
    for name in ("NATS_URL", "REDIS_URL"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": CONNECTIONS_SECRET, "key": name}}}
    assert all("value" not in e for e in container["env"]), "no setting is inlined: values live in the ConfigMap"
    assert container["envFrom"] == [{"configMapRef": {"name": _one("ConfigMap")["metadata"]["name"]}}]
    assert not any(o["kind"] == "Secret" for o in _objects()), "the connections Secret is created out of band"
    from infra import settings

    read = settings.environment_variables()
    unread = [k for k in _one("ConfigMap")["data"] if not k.startswith("BENTOML_") and k != "STREAM_BENTO" and k not in read]
    assert unread == [], "a ConfigMap key nobody reads is a typo or a leftover"


def test_resources_security_and_the_champion_import():
    spec = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "768Mi"}, "limits": {"memory": "1Gi"}}
    assert container["image"] == IMAGE_NAME
    for c in (*spec["initContainers"], container):
        security = {**spec["securityContext"], **c["securityContext"]}
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"] and security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    (init,) = spec["initContainers"]
    assert init["image"] == IMAGE_NAME and init["command"][:2] == ["bentoml", "import"]
    data = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert data == {m["name"]: m["mountPath"] for m in init["volumeMounts"]}, "the store the init container fills"
    assert data["data"] == "/var/lib/flightdelay", "BENTOML_HOME of the user-code image is under it"


def test_one_pod_per_durable_consumer():
    """Replicas own origins: two pods on one durable would split its events (AckPolicy.ALL acking the other's)."""
    deployment, scaled = _one("Deployment"), _one("ScaledObject")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "a rolling update would run two pods at once"
    assert scaled["spec"]["maxReplicaCount"] == 1
    command = _container()["command"]
    assert "--origins" not in command and "--durable" not in command, "this Deployment is the all-origins `processor`"


def test_keda_scales_on_the_processors_jetstream_consumer_lag():
    scaled, deployment = _one("ScaledObject"), _one("Deployment")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": deployment["metadata"]["name"]}
    assert 0 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["initialCooldownPeriod"] > 0, "the first pod creates the consumer KEDA reads"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata = trigger["metadata"]
    assert set(metadata) <= {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
                             "activationLagThreshold", "useHttps"}, "a key KEDA's nats-jetstream scaler does not read"
    assert {k: metadata[k] for k in ("account", "stream", "consumer", "lagThreshold")} == {
        "account": "$G", "stream": "AIRPORT", "consumer": "processor", "lagThreshold": "1000"}
    host, _, port = metadata["natsServerMonitoringEndpoint"].rpartition(":")
    assert host and "://" not in host and port == "8222", "host:port of the monitoring endpoint (nats-server -m 8222)"
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA's trigger metadata are strings"


def test_the_names_match_the_code():
    """The stream and the default durable are what streaming/ names them."""
    from streaming import broker

    trigger = _one("ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert (broker.EVENTS_STREAM, broker.PROCESSOR_DURABLE) == (trigger["stream"], trigger["consumer"])
    from streaming.processor import durable_for

    assert durable_for(None) == broker.PROCESSOR_DURABLE, "the durable without --origins"
    assert durable_for(frozenset({"JFK", "EWR"})) == "processor-EWR-JFK", "the ScaledObject's comment names this form"


def test_every_object_lives_in_the_streaming_namespace():
    namespace = _one("Namespace")["metadata"]["name"]
    for obj in _objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["kind"]


def test_kustomization_lists_every_manifest_and_rolls_the_image():
    kustomization = yaml.safe_load((STREAMING / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in STREAMING.glob("*.yaml")} - {"kustomization.yaml"}
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE_NAME
