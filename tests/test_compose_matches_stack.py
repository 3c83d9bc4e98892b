"""Compose runs what the one-box stack runs: same programs, option flags, ports and variable names.

``pipelines.stack.stack_services()`` is the truth for the one-box topology (``make stack-up``);
deploy/compose/compose.yaml is the same topology as containers. Values differ by design (hostnames,
paths, secrets), so only the shape is compared: program and subcommand, the set of option flags, the
container port, and that every variable the stack gives a service is set in its container (the
compose ``environment``/``env_file`` or the image's ``ENV``). The s3 service is moto on one box and
a real S3 server in compose: only its port is compared.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPARED = ("mlflow", "user-code", "webserver", "daemon")

CONTAINER_ONLY_FLAGS = {"mlflow": {"--expose-prometheus"}}
"""Flags compose adds for what exists only there: Prometheus scrapes MLflow's /metrics in compose."""

LONG_FLAGS = {
    "dagster": {"-h": "--host", "-p": "--port", "-m": "--module-name", "-f": "--python-file",
                "-d": "--working-directory", "-w": "--workspace", "-a": "--attribute"},
    "dagster-webserver": {"-h": "--host", "-p": "--port", "-w": "--workspace", "-m": "--module-name",
                          "-f": "--python-file", "-d": "--working-directory"},
    "dagster-daemon": {"-w": "--workspace", "-m": "--module-name", "-f": "--python-file",
                       "-d": "--working-directory"},
    "mlflow": {"-h": "--host", "-p": "--port", "-w": "--workers"},
}
"""Short options of the CLIs we start, spelled long, so ``-p 4000`` and ``--port=4000`` compare equal."""


def command_shape(argv) -> tuple[tuple[str, ...], frozenset[str]]:
    """(program and subcommands, option flags) of a command; a path or ``python -m X`` is reduced to X."""
    argv = [str(a) for a in argv]
    program = Path(argv[0]).name
    rest = argv[1:]
    if program.startswith("python") and rest[:1] == ["-m"]:
        program, rest = rest[1].split(".")[0], rest[2:]
    words = [program]
    for arg in rest:
        if arg.startswith("-"):
            break
        words.append(arg)
    aliases = LONG_FLAGS.get(program, {})
    flags = frozenset(aliases.get(flag, flag) for flag in (a.split("=", 1)[0] for a in rest if a.startswith("-")))
    return tuple(words), flags


def flag_value(argv, *names: str) -> str | None:
    """The value of the first of ``names`` in ``argv`` (``--port 4000`` or ``--port=4000``)."""
    argv = [str(a) for a in argv]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in names:
            return value if eq else argv[i + 1]
    return None


def compose_services() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["services"]


def dockerfile_env_names(dockerfile: Path) -> set[str]:
    """Names an image's final stage sets with ``ENV`` (its run-time environment)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    final_stage = re.split(r"(?m)^FROM\s", text)[-1]
    names: set[str] = set()
    for line in re.findall(r"(?m)^ENV\s+(.*)$", final_stage):
        names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line) or line.split()[:1])
    return names


def container_env_names(service: dict) -> set[str]:
    """Every variable the service's container has: compose environment, env files, image ENV."""
    environment = service.get("environment") or {}
    names = set(environment) if isinstance(environment, dict) else {e.split("=", 1)[0] for e in environment}
    env_files = service.get("env_file") or []
    for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        path = COMPOSE_DIR / (entry["path"] if isinstance(entry, dict) else entry)
        path = path if path.exists() else path.with_name(path.name + ".example")
        names |= {line.split("=", 1)[0].strip() for line in path.read_text().splitlines()
                  if "=" in line and not line.lstrip().startswith("#")}
    build = service.get("build")
    if isinstance(build, dict) and build.get("dockerfile"):
        names |= dockerfile_env_names((COMPOSE_DIR / build.get("context", ".") / build["dockerfile"]).resolve())
    return names


def container_ports(service: dict) -> set[int]:
    """Ports the container listens on as compose declares them (``expose``, targets of ``ports``)."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    for entry in service.get("ports", []):
        ports.add(int(entry["target"]) if isinstance(entry, dict) else int(str(entry).split(":")[-1].split("/")[0]))
    return ports


@pytest.fixture(scope="module")
def stack_by_name():
    stack = pytest.importorskip("pipelines.stack", reason="pipelines/stack.py (the one-box stack) is not merged yet")
    return {service.name: service for service in stack.stack_services(stack.StackConfig())}


def test_the_stack_and_compose_run_the_same_services(stack_by_name):
    assert set(COMPARED) | {"s3"} <= set(stack_by_name), f"the stack runs {sorted(stack_by_name)}"
    assert set(stack_by_name) <= set(compose_services()), "every one-box service has a compose service of that name"


@pytest.mark.parametrize("name", COMPARED)
def test_compose_runs_the_stacks_program_with_the_same_flags(stack_by_name, name):
    stack_program, stack_flags = command_shape(stack_by_name[name].argv)
    compose_program, compose_flags = command_shape(compose_services()[name]["command"])
    assert compose_program == stack_program
    assert stack_flags - compose_flags == set(), f"{name}: flags the stack passes and compose does not"
    extra = compose_flags - stack_flags - CONTAINER_ONLY_FLAGS.get(name, set())
    assert extra == set(), f"{name}: flags compose passes and the stack does not"


@pytest.mark.parametrize("name", (*COMPARED, "s3"))
def test_compose_listens_on_the_stacks_port(stack_by_name, name):
    service, port = compose_services()[name], stack_by_name[name].port
    if port is None:
        assert not container_ports(service), f"{name} listens on no port on one box"
        return
    assert port in container_ports(service), f"{name}: the stack listens on {port}"
    command = service.get("command")
    if isinstance(command, list) and (value := flag_value(command, "-p", "--port")) is not None:
        assert int(value) == port, f"{name}: compose's command listens on {value}"


@pytest.mark.parametrize("name", COMPARED)
def test_compose_sets_every_variable_the_stack_gives(stack_by_name, name):
    missing = set(stack_by_name[name].env) - container_env_names(compose_services()[name])
    assert not missing, f"{name}: the stack sets {sorted(missing)}, compose's container does not"


def test_the_shape_helpers_see_differences():
    """The comparisons above reduce commands as intended: paths, ``python -m``, short and ``=`` forms."""
    one_box = command_shape(["/repo/.venv/bin/dagster", "code-server", "start", "-h", "127.0.0.1", "--port=4000",
                             "-m", "pipelines.definitions"])
    container = command_shape(["dagster", "code-server", "start", "--host", "0.0.0.0", "-p", "4000",
                               "--module-name", "pipelines.definitions"])
    assert one_box == container
    assert command_shape(["python3", "-m", "mlflow", "server", "--port", "5000"]) == (("mlflow", "server"),
                                                                                  frozenset({"--port"}))
    assert command_shape(["dagster-daemon", "run"])[1] != command_shape(["dagster-daemon", "run", "-w", "w.yaml"])[1]
    assert flag_value(["x", "--port=5000"], "--port") == "5000"
    assert container_ports({"expose": ["4000"], "ports": ["127.0.0.1:3001:3000"]}) == {4000, 3000}
    assert {"DAGSTER_HOME", "PYTHONPATH", "DATA_DIR"} <= container_env_names(compose_services()["user-code"])
