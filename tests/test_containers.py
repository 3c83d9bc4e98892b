"""Images and compose, checked on what they say (no Docker engine here): lint, pins, users, probes, secrets.

Dockerfiles go through hadolint; compose through the compose specification's JSON schema; the rest
are the house rules for deploy/: versions from constraints.txt, non-root users, a probe on every
long-running container, no `latest`, variables by name only, no secret values anywhere.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
BIN = Path(sys.executable).parent
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile"))
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_KEK$|^AWS_ACCESS_KEY_ID$|WEBHOOK")
REQUIRED_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]*\}$")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict:
    return compose()["services"]


def joined_lines(dockerfile: Path) -> list[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def final_stage(dockerfile: Path) -> list[str]:
    lines = joined_lines(dockerfile)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hadolint"), "--no-color", "--failure-threshold", "warning", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_there_are_the_three_images():
    assert {p.name for p in DOCKERFILES} == {"user-code.Dockerfile", "dagster.Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_no_warning(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_an_unpinned_root_image(tmp_path):
    """The lint above can fail: the same call rejects what our images avoid."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nRUN pip install dagster\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3013" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_non_root_user_with_a_probe(dockerfile):
    stage = final_stage(dockerfile)
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users, f"{dockerfile.name}: the final stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(line.startswith("HEALTHCHECK ") and "NONE" not in line for line in stage), dockerfile.name


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_the_pinned_versions(dockerfile):
    """Every pip install is bound to constraints.txt or pins what it names (torch by its own index)."""
    installs = [line for line in joined_lines(dockerfile) if "pip install" in line]
    assert installs, dockerfile.name
    for line in installs:
        for command in re.findall(r"pip install ([^&]*)", line):
            args = command.split()
            packages = [a.strip("\"'") for a in args if not a.startswith("-") and "://" not in a
                        and a not in {"constraints.txt", "requirements.txt"} and "index-url" not in a]
            if "-c" in args and "constraints.txt" in args:
                continue
            assert packages and all("==" in p for p in packages), f"{dockerfile.name}: unpinned: {command}"
    assert "COPY constraints.txt" in dockerfile.read_text()


def test_the_user_code_image_takes_torch_from_the_variants_index_cpu_by_default():
    text = (DOCKER / "user-code.Dockerfile").read_text()
    assert re.search(r"(?m)^ARG TORCH_VARIANT=cpu$", text)
    assert "--index-url \"https://download.pytorch.org/whl/${TORCH_VARIANT}\"" in text
    torch_install = text.index("download.pytorch.org")
    assert torch_install < text.index("-c constraints.txt -r requirements.txt"), \
        "torch goes in first: the constrained install then keeps that build"


def test_the_dagster_image_is_the_system_on_the_production_instance():
    lines = joined_lines(DOCKER / "dagster.Dockerfile")
    install = next(line for line in lines if "pip install" in line)
    assert {"dagster", "dagster-webserver", "dagster-postgres", "dagster-aws", "dagster-k8s"} <= set(install.split())
    assert "pipelines" not in " ".join(lines) and "COPY ml " not in " ".join(lines), "no user code in it"
    stage = " ".join(final_stage(DOCKER / "dagster.Dockerfile"))
    assert "DAGSTER_HOME=/opt/dagster/home" in stage
    assert "COPY deploy/dagster-production.yaml /opt/dagster/home/dagster.yaml" in stage


def test_the_mlflow_image_has_the_postgres_driver_boto3_and_the_metrics_exporter():
    install = next(line for line in joined_lines(DOCKER / "mlflow.Dockerfile") if "pip install" in line)
    assert {"mlflow", "psycopg2-binary", "boto3"} <= set(install.split())
    assert "prometheus-flask-exporter==" in install


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_only_what_exists_and_the_build_context_keeps(dockerfile):
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    for line in joined_lines(dockerfile):
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path"
                assert source.split("/")[0] not in ignored, f"{dockerfile.name}: {source} is in .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_bake_no_secret(dockerfile):
    for line in joined_lines(dockerfile):
        if line.startswith(("ENV ", "ARG ")):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line):
                assert not SECRET_NAME.search(name), f"{dockerfile.name}: {name} baked into the image"


def test_the_build_context_leaves_out_state_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    assert {".git", ".venv", "data", ".dagster_home", "**/.env", "tests"} <= ignored


def test_compose_matches_the_compose_specification():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_topology():
    assert {"postgres", "s3", "bucket-init", "mlflow", "user-code", "webserver", "daemon", "dask-scheduler",
            "dask-worker", "bento", "prometheus", "nats", "redis", "stream-processor"} <= set(services())


def test_the_stream_processor_reaches_nats_and_redis_and_both_keep_their_data():
    """JetStream with its store on a volume, Redis with its append-only file on one: a restart of either keeps
    the stream, the consumer's ack floor and the live state; the processor names both by their service."""
    nats, redis, processor = (services()[name] for name in ("nats", "redis", "stream-processor"))
    assert {"-js", "-sd", "-m"} <= set(nats["command"])
    store = nats["command"][nats["command"].index("-sd") + 1]
    assert any(v.split(":")[1] == store for v in nats["volumes"]) and nats["volumes"][0].split(":")[0] in compose()["volumes"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["volumes"][0].split(":")[0] in compose()["volumes"] and redis["volumes"][0].endswith(":/data")
    assert processor["command"][:3] == ["python", "-m", "streaming.processor"]
    env = processor["environment"]
    assert env["NATS_URL"] == "nats://nats:4222" and "4222" in nats["expose"]
    assert env["REDIS_URL"] == "redis://redis:6379/0" and "6379" in redis["expose"]
    assert {"nats", "redis"} <= set(processor["depends_on"])
    assert processor["image"] == services()["user-code"]["image"], "the image that holds streaming/ and the model store"
    assert "COPY streaming streaming" in (DOCKER / "user-code.Dockerfile").read_text()


def resolved_default(value: str) -> str:
    """A compose value with each ``${VAR:-default}`` replaced by its default (what runs when VAR is unset)."""
    return INTERPOLATION.sub(lambda m: m["arg"] if m["op"] in {"-", ":-"} else m[0], value)


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text())["services"]))
def test_compose_images_name_a_version_never_latest(name):
    image = services()[name]["image"]
    if REQUIRED_VARIABLE.match(image):
        return  # the operator names it (BENTO_IMAGE: the tag bentoml containerize built)
    resolved = resolved_default(image)
    repository, _, tag = resolved.rpartition(":")
    assert repository and tag and "/" not in tag, f"{name}: {image} names no tag"
    assert tag != "latest" and "latest" not in image, f"{name}: {image}"


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text())["services"]))
def test_every_long_running_service_has_a_healthcheck(name):
    service = services()[name]
    if service.get("restart") == "no":
        dependents = [s for s, spec in services().items()
                      if (spec.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"]
        assert dependents, f"{name} is a one-shot nobody waits for"
        return
    test = service.get("healthcheck", {}).get("test")
    assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"


def test_services_wait_for_their_dependencies_to_be_healthy():
    for name, service in services().items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if services()[dependency].get("restart") == "no" \
                else "service_healthy"
            assert condition["condition"] == expected, f"{name} -> {dependency}"


def environment_items():
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            yield name, key, str(value)


def test_compose_holds_no_secret_value():
    """Every secret is a required variable (``${NAME:?…}``): no value, no default, in the file."""
    checked = 0
    for service, key, value in environment_items():
        if SECRET_NAME.search(key) and key != "ALERT_WEBHOOK_URL":  # optional: empty means "log only"
            assert REQUIRED_VARIABLE.match(value), f"{service}.{key} holds a value: use ${{{key}:?…}}"
            checked += 1
    assert checked >= 10
    for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        if SECRET_NAME.search(match["name"]):
            optional_and_empty = match["name"] == "ALERT_WEBHOOK_URL" and not match["arg"]
            assert match["op"] in {":?", "?"} or optional_and_empty, match[0]
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", COMPOSE_FILE.read_text()), "a URL with user:password"


def test_the_env_example_names_every_variable_compose_reads_and_nothing_else():
    lines = [line for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*=", line) for line in lines), "names only: VAR="
    names = {line[:-1] for line in lines}
    used = {m["name"] for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text())}
    assert used == names, f"unnamed: {sorted(used - names)}; unused: {sorted(names - used)}"


def test_the_env_file_stays_out_of_git():
    assert (COMPOSE_DIR / ".gitignore").read_text().split() == [".env"]


def test_postgres_creates_the_dagster_and_mlflow_databases_the_services_use():
    script = (COMPOSE_DIR / "initdb" / "10-databases.sh").read_text()
    assert subprocess.run(["bash", "-n", str(COMPOSE_DIR / "initdb" / "10-databases.sh")]).returncode == 0
    postgres = services()["postgres"]
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    instance = services()["user-code"]["environment"]
    assert f"CREATE DATABASE {instance['DAGSTER_PG_DB']} OWNER {instance['DAGSTER_PG_USER']};" in script
    mlflow = services()["mlflow"]["command"]
    backend = mlflow[mlflow.index("--backend-store-uri") + 1]
    user, database = re.fullmatch(r"postgresql\+psycopg2://(\w+)@postgres:5432/(\w+)", backend).groups()
    assert f"CREATE DATABASE {database} OWNER {user};" in script
    assert ":'dagster_password'" in script and ":'mlflow_password'" in script, "passwords as psql variables"


def test_mlflow_serves_s3_artifacts_with_sse_and_exposes_metrics():
    mlflow = services()["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://")
    assert "--serve-artifacts" in command and "--expose-prometheus" in command
    assert "mlflow:5000" in command[command.index("--allowed-hosts") + 1].split(",")
    assert json.loads(mlflow["environment"]["MLFLOW_S3_UPLOAD_EXTRA_ARGS"]) == {"ServerSideEncryption": "AES256"}
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"


def test_the_s3_server_encrypts_and_the_bucket_is_versioned():
    s3, init = services()["s3"], services()["bucket-init"]
    assert "WEED_S3_SSE_KEK" in s3["environment"], "without a KEK SeaweedFS cannot honour ServerSideEncryption"
    assert "-s3.port=9000" in s3["command"]
    script = init["command"][0]
    assert "put-bucket-versioning --bucket flightdelay --versioning-configuration Status=Enabled" in script
    assert '"SSEAlgorithm":"AES256"' in script
    assert services()["user-code"]["environment"]["LAKE_URL"].startswith("s3://flightdelay/")


def test_only_the_gpu_profile_reserves_a_gpu():
    reserving = {name for name, service in services().items()
                 if service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")}
    assert reserving == {"user-code-gpu"}
    gpu = services()["user-code-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert gpu["environment"]["TORCH_DEVICE"] == "cuda"
    assert gpu["command"] == services()["user-code"]["command"]


def test_the_workspace_points_at_the_code_server():
    """Compose uses the one-box stack's workspace file; its variables lead to the user-code service."""
    location = yaml.safe_load((ROOT / "deploy" / "stack" / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    command = services()["user-code"]["command"]
    assert location["location_name"] == command[command.index("--location-name") + 1]
    for name in ("webserver", "daemon"):
        environment = services()[name]["environment"]
        assert resolved_default(environment[location["host"]["env"]]) == "user-code"
        assert int(environment[location["port"]["env"]]) == int(command[command.index("-p") + 1])
        assert "/opt/dagster/app/workspace.yaml" in services()[name]["command"]
    assert "COPY deploy/stack/workspace.yaml /opt/dagster/app/workspace.yaml" in \
        (DOCKER / "dagster.Dockerfile").read_text()


def test_prometheus_scrapes_the_bento_with_the_token_from_a_compose_secret():
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    bento = jobs["flight-delay-service"]
    secret_file = bento["authorization"]["credentials_file"]
    secret = Path(secret_file).name
    assert secret_file == f"/run/secrets/{secret}" and secret in services()["prometheus"]["secrets"]
    assert compose()["secrets"][secret] == {"environment": "SERVICE_API_TOKEN"}
    assert "credentials" not in bento["authorization"]
    targets = {job: job_config["static_configs"][0]["targets"] for job, job_config in jobs.items()}
    bento_port = int(services()["bento"]["ports"][0].split(":")[-1])
    stream = services()["stream-processor"]["command"]
    stream_port = int(stream[stream.index("--metrics-port") + 1])
    assert targets == {"flight-delay-service": [f"bento:{bento_port}"], "flight-delay-pipeline": ["metrics-exporter:9464"],
                       "flight-delay-stream": [f"stream-processor:{stream_port}"], "mlflow": ["mlflow:5000"]}
    assert str(stream_port) in services()["stream-processor"]["expose"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services()["prometheus"]["volumes"]
