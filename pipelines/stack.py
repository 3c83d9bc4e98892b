"""The production stack on one machine, without Docker: ``python -m pipelines.stack up|down|status|restart``.

What runs (``stack_services``), in start order: an S3 API (moto) holding the lake's bucket;
``mlflow server`` on Postgres with artifacts proxied to S3 (SSE); the gRPC code server; the webserver
and the daemon on ``deploy/dagster-production.yaml`` (Postgres storage, compute logs in S3, run
monitoring, run retries, pools). The Postgres databases are created when missing, on the machine's
server. The service list is the contract the compose file is written against: one ``Service`` per
compose service, same names, programs, ports and environment.

Each service runs under the process guard (``resources/processes.py``) in a process group of its own,
detached from this command; the state file (``<stack dir>/state.json``) records each group's leader
so ``down`` stops every group it started, with whatever the services started (run workers, parity
servers). Logs are ``<stack dir>/logs/<service>.log``. Secrets (the Postgres password, AWS keys) are
inherited from the environment by name and never printed or written.

With ``STACK_TLS_CERTFILE`` and ``STACK_TLS_KEYFILE`` set, MLflow serves HTTPS through its uvicorn's
own TLS options, and the webserver (which has none) listens on loopback behind ``pipelines.tls_proxy``,
which takes the webserver's port with TLS (docs/tls.md). Unset, every server speaks plain HTTP as before.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra import settings

PROJECT_ROOT = settings.PROJECT_ROOT
WORKSPACE = "deploy/stack/workspace.yaml"
INSTANCE_CONFIG = PROJECT_ROOT / "deploy" / "dagster-production.yaml"
LOCATION_NAME = "flight_delay"
REPOSITORY_NAME = "__repository__"
SSE = "AES256"
COMPUTE_LOGS_PREFIX = "dagster/compute-logs"
#: Secrets the services inherit from the supervisor's environment by name; never in a Service's env.
INHERITED_SECRETS = ("DAGSTER_PG_PASSWORD", "PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Service:
    """One process of the stack, as a compose service would declare it."""

    name: str
    """The compose service name: "s3", "mlflow", "user-code", "webserver", "daemon"."""
    argv: tuple[str, ...]
    """Program (its console script name) and arguments."""
    port: int | None
    """The port it listens on (None for the daemon)."""
    env: Mapping[str, str]
    """The environment variables it needs beyond the inherited ones (names → values; never a secret)."""
    ready_url: str | None
    """http(s):// answered 2xx once it serves; grpc://host:port for the code server; None: alive is ready."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack listens and keeps its files; defaults are the production ports and names."""

    root: Path = field(default_factory=lambda: settings.stack().dir)
    """State file, logs, Dagster home, BentoML home and data folder."""
    host: str = "127.0.0.1"
    s3_port: int = 9000
    mlflow_port: int = 5000
    code_server_port: int = 4000
    webserver_port: int = 3000
    bucket: str = "lake"
    postgres_host: str = field(default_factory=lambda: settings.postgres().host)
    postgres_port: int = 5432
    postgres_user: str = field(default_factory=lambda: settings.postgres().user)
    dagster_db: str = "dagster"
    mlflow_db: str = "mlflow"
    sensor_interval_s: int | None = None
    """Our sensors' tick (``SENSOR_INTERVAL_S``); None keeps their production defaults."""
    instance_overrides: Mapping[str, Any] = field(default_factory=dict)
    """Sections merged over deploy/dagster-production.yaml, key by key (a test's short run monitoring)."""
    tls_certfile: str | None = field(default_factory=lambda: settings.stack().tls_certfile)
    """The servers' certificate (PEM): set, MLflow and the webserver serve HTTPS only."""
    tls_keyfile: str | None = field(default_factory=lambda: settings.stack().tls_keyfile)
    tls_cafile: str | None = field(default_factory=lambda: settings.stack().tls_cafile)
    """What the stack's clients (its probes, the code server's MLflow client) trust; None: the system's CAs."""
    webserver_internal_port: int = 3080
    """With TLS: the webserver's plain port, on 127.0.0.1 only, behind the TLS proxy on ``webserver_port``."""

    def __post_init__(self) -> None:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("set both STACK_TLS_CERTFILE and STACK_TLS_KEYFILE to serve TLS, or neither")

    @property
    def tls(self) -> bool:
        return bool(self.tls_certfile)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def client_context(self) -> ssl.SSLContext | None:
        """The context the stack's own clients verify its servers with (None without TLS)."""
        return ssl.create_default_context(cafile=self.tls_cafile) if self.tls else None

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.mlflow_port}"

    @property
    def webserver_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.webserver_port}"

    @property
    def webserver_upstream_url(self) -> str:
        """Where the webserver itself listens: behind the TLS proxy on loopback, else ``webserver_url``."""
        return f"http://127.0.0.1:{self.webserver_internal_port}" if self.tls else self.webserver_url

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def lake_url(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def bento_export_url(self) -> str:
        return f"s3://{self.bucket}/bentos/"

    @property
    def mlflow_artifacts_url(self) -> str:
        return f"s3://{self.bucket}/mlflow-artifacts"

    def postgres_url(self, database: str) -> str:
        """A SQLAlchemy URL without the password: libpq takes it from ``PGPASSWORD``."""
        return f"postgresql+psycopg2://{self.postgres_user}@{self.postgres_host}:{self.postgres_port}/{database}"


MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""Every ``mlflow server`` we run: without MLflow 3's job runner (huey consumers for GenAI judges,
scorers and trace roll-ups, none of which this project uses). Idle, with it, a server used 37 CPU s
in 40 s on a 2-core box; without it 9 s, all of it start-up (docs/testing.md)."""


def stack_services(config: StackConfig) -> list[Service]:
    """The stack's services in start order, as the compose file declares them."""
    host = config.host
    dagster_env = {
        "DAGSTER_HOME": str(config.dagster_home),
        "DAGSTER_PG_HOST": config.postgres_host,
        "DAGSTER_PG_USER": config.postgres_user,
        "DAGSTER_PG_DB": config.dagster_db,
        "DAGSTER_COMPUTE_LOGS_BUCKET": config.bucket,
        "DAGSTER_CODE_SERVER_HOST": host,
        "DAGSTER_CODE_SERVER_PORT": str(config.code_server_port),
        "AWS_ENDPOINT_URL": config.s3_endpoint,
    }
    code_env = {
        **dagster_env,
        "PYTHONPATH": str(PROJECT_ROOT),
        "DATA_DIR": str(config.root / "data"),
        "BENTOML_HOME": str(config.root / "bentoml"),
        "LAKE_URL": config.lake_url,
        "LAKE_SSE": SSE,
        "MLFLOW_TRACKING_URI": config.mlflow_url,
        **({"MLFLOW_TRACKING_SERVER_CERT_PATH": config.tls_cafile} if config.tls and config.tls_cafile else {}),
        "PREDICTION_LOG_URL": f"{config.lake_url}/predictions",
        "BENTO_EXPORT_URL": config.bento_export_url,
        **({"SENSOR_INTERVAL_S": str(config.sensor_interval_s)} if config.sensor_interval_s else {}),
    }
    allowed_hosts = ",".join(
        [f"{host}:{config.mlflow_port}", host, f"localhost:{config.mlflow_port}", "localhost",
         f"mlflow:{config.mlflow_port}", "mlflow"]
    )
    mlflow_tls = ("--uvicorn-opts", mlflow_tls_options(config.tls_certfile, config.tls_keyfile)) if config.tls else ()
    services = [
        Service("s3", ("moto_server", "-H", host, "-p", str(config.s3_port)), config.s3_port, {},
                f"{config.s3_endpoint}/moto-api/"),
        Service(
            "mlflow",
            ("mlflow", "server", "--backend-store-uri", config.postgres_url(config.mlflow_db),
             "--artifacts-destination", config.mlflow_artifacts_url, "--serve-artifacts",
             "--host", host, "--port", str(config.mlflow_port), "--workers", "1", "--allowed-hosts", allowed_hosts,
             *mlflow_tls),
            config.mlflow_port,
            {"MLFLOW_S3_ENDPOINT_URL": config.s3_endpoint,
             "MLFLOW_S3_UPLOAD_EXTRA_ARGS": json.dumps({"ServerSideEncryption": SSE}),
             **MLFLOW_SERVER_ENV},
            f"{config.mlflow_url}/health",
        ),
        Service(
            "user-code",
            ("dagster", "code-server", "start", "-h", host, "-p", str(config.code_server_port),
             "-m", "pipelines.definitions", "--location-name", LOCATION_NAME),
            config.code_server_port, code_env, f"grpc://{host}:{config.code_server_port}",
        ),
        Service("webserver", ("dagster-webserver", "-h", host, "-p", str(config.webserver_port), "-w", WORKSPACE),
                config.webserver_port, dagster_env, f"{config.webserver_url}/server_info"),
        Service("daemon", ("dagster-daemon", "run", "-w", WORKSPACE), None, dagster_env, None),
    ]
    if config.tls:
        at = next(i for i, service in enumerate(services) if service.name == "webserver")
        services[at:at + 1] = tls_webserver(config, services[at])
    return services


def mlflow_tls_options(certfile: str, keyfile: str) -> str:
    """``mlflow server --uvicorn-opts`` that have its uvicorn serve HTTPS only, with this certificate and key."""
    return shlex.join(["--ssl-certfile", certfile, "--ssl-keyfile", keyfile])


def tls_webserver(config: StackConfig, webserver: Service) -> list[Service]:
    """The webserver on its loopback-only plain port, and ``pipelines.tls_proxy`` serving TLS on its public address."""
    internal = str(config.webserver_internal_port)
    plain = Service(webserver.name, ("dagster-webserver", "-h", "127.0.0.1", "-p", internal, "-w", WORKSPACE),
                    config.webserver_internal_port, webserver.env, f"{config.webserver_upstream_url}/server_info")
    proxy = Service("webserver-tls",
                    ("python", "-m", "pipelines.tls_proxy", "--listen", f"{config.host}:{config.webserver_port}",
                     "--upstream", f"127.0.0.1:{internal}", "--certfile", config.tls_certfile,
                     "--keyfile", config.tls_keyfile),
                    config.webserver_port, {}, f"{config.webserver_url}/server_info")
    return [plain, proxy]


class StackError(RuntimeError):
    """The stack cannot do what was asked; the message says what to do."""


class Stack:
    """Starts, watches and stops the services of ``stack_services`` for one stack directory."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.services = {s.name: s for s in stack_services(config)}
        self.state_path = config.root / "state.json"
        self.log_dir = config.root / "logs"

    def state(self) -> dict[str, dict]:
        """Service name → {pid (its process group), log}; empty when nothing was started."""
        if not self.state_path.exists():
            return {}
        return json.loads(self.state_path.read_text())["services"]

    def status(self) -> dict[str, bool]:
        """Which recorded services are alive."""
        from resources.processes import group_members, process_alive

        return {name: process_alive(entry["pid"]) or bool(group_members(entry["pid"]))
                for name, entry in self.state().items()}

    def up(self) -> str:
        """Start every service that is not running, in order, each once it is ready; refuse a half-alive stack."""
        alive = self.status()
        if alive and all(alive.values()) and set(alive) == set(self.services):
            return f"stack already up under {self.config.root} ({', '.join(alive)}); `make stack-down` stops it"
        if any(alive.values()):
            running = ", ".join(n for n, a in alive.items() if a)
            raise StackError(f"stack under {self.config.root} is partly running ({running}): run `make stack-down`"
                             " (python -m pipelines.stack down) first")
        self.state_path.unlink(missing_ok=True)
        self._prepare()
        started = time.perf_counter()
        try:
            for name in self.services:
                self.start(name)
        except BaseException:
            self.down()
            raise
        return f"stack up in {time.perf_counter() - started:.1f} s: {self.describe()}"

    def start(self, name: str) -> None:
        """Start one service and wait until it is ready (a restart after a crash, as a restart policy would)."""
        from resources.processes import start_detached

        service = self.services[name]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        process = start_detached(self._argv(service), log, env=self._environment(service), cwd=PROJECT_ROOT)
        self._record(name, {"pid": process.pid, "log": str(log), "port": service.port})
        try:
            self._wait_ready(service, process, log)
        except StackError:
            from resources.processes import stop_process_group

            stop_process_group(process.pid)
            raise
        if name == "s3":
            self._ensure_bucket()
        if name == "webserver":
            self._wait_for_location()

    def stop(self, name: str) -> bool:
        """Stop one service's process group; True once nothing of it is alive."""
        from resources.processes import stop_process_group

        entry = self.state().get(name)
        return True if entry is None else stop_process_group(entry["pid"])

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def down(self) -> str:
        """Stop every recorded service, last started first; nothing they started is left."""
        stopped = []
        for name in reversed(list(self.state())):
            if not self.stop(name):
                raise StackError(f"{name} (process group {self.state()[name]['pid']}) survived SIGKILL")
            stopped.append(name)
        self.state_path.unlink(missing_ok=True)
        return f"stopped {', '.join(stopped)}" if stopped else "nothing was running"

    def describe(self) -> str:
        c = self.config
        return (f"s3 {c.s3_endpoint} (bucket {c.bucket}), mlflow {c.mlflow_url}, code server {c.host}:{c.code_server_port},"
                f" webserver {c.webserver_url}; logs {self.log_dir}")

    def _prepare(self) -> None:
        import yaml

        ensure_databases(self.config)
        home = self.config.dagster_home
        home.mkdir(parents=True, exist_ok=True)
        instance = yaml.safe_load(INSTANCE_CONFIG.read_text())
        for section, value in self.config.instance_overrides.items():
            base = instance.get(section)
            instance[section] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))

    def _record(self, name: str, entry: dict) -> None:
        services = {**self.state(), name: entry}
        self.config.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": services}, indent=2))
        tmp.replace(self.state_path)

    def _argv(self, service: Service) -> list[str]:
        """The console script from this interpreter's environment, else from PATH."""
        program = shutil.which(service.argv[0], path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                      os.environ.get("PATH", "")]))
        if program is None:
            raise StackError(f"{service.name}: program {service.argv[0]!r} not found; install the project (make install)")
        return [program, *service.argv[1:]]

    def _environment(self, service: Service) -> dict[str, str]:
        """The inherited environment, the service's own, and the stack's throwaway defaults for unset secrets."""
        env = dict(os.environ)
        env.setdefault("DAGSTER_PG_PASSWORD", settings.postgres().password.get_secret_value())
        env.setdefault("PGPASSWORD", env["DAGSTER_PG_PASSWORD"])
        # moto accepts any key; a real S3 API gets the operator's credentials from the environment.
        env.setdefault("AWS_ACCESS_KEY_ID", "stack-local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "stack-local")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env.update(service.env)
        return env

    def _wait_ready(self, service: Service, process, log: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise StackError(f"{service.name} exited ({process.returncode}) while starting: {_tail(log)}")
            if service.ready_url is None:
                time.sleep(1.0)  # alive after a second: it read its config and connected
                if process.poll() is None:
                    return
                continue
            if _probe(service.ready_url, self.config.client_context()):
                return
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} not ready at {service.ready_url} within {READY_TIMEOUT_S:.0f} s:"
                                 f" {_tail(log)}")
            time.sleep(0.3)

    def _ensure_bucket(self) -> None:
        import boto3

        env = self._environment(self.services["s3"])
        s3 = boto3.client("s3", endpoint_url=self.config.s3_endpoint, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        if self.config.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=self.config.bucket)

    def _wait_for_location(self) -> None:
        """Until the webserver has loaded the code location from the code server; its load error otherwise."""
        query = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                     locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            entries = graphql(self.config.webserver_upstream_url, query)["workspaceOrError"].get("locationEntries", [])
            entry = next((e for e in entries if e["name"] == LOCATION_NAME), None)
            if entry and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise StackError(f"code location {LOCATION_NAME} failed to load: {error['message']}")
                return
            time.sleep(0.5)
        raise StackError(f"code location {LOCATION_NAME} not loaded within {READY_TIMEOUT_S:.0f} s")


def graphql(webserver_url: str, query: str, variables: Mapping[str, Any] | None = None,
            context: ssl.SSLContext | None = None) -> dict:
    """POST a GraphQL query to the webserver (what the UI does); its ``data``, or StackError with the errors.

    An https URL is verified with ``context`` (``StackConfig.client_context()``; default: the system's CAs)."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(f"{webserver_url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60, context=context) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise StackError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def ensure_databases(config: StackConfig) -> list[str]:
    """Create the Dagster and MLflow databases when missing; the names of those created."""
    import psycopg2
    from psycopg2 import sql

    try:
        connection = psycopg2.connect(host=config.postgres_host, port=config.postgres_port, user=config.postgres_user,
                                      password=settings.postgres().password.get_secret_value(), dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise StackError(f"cannot connect to Postgres at {config.postgres_host}:{config.postgres_port} as "
                         f"{config.postgres_user}: {str(exc).strip()}; install and start PostgreSQL, or set "
                         "DAGSTER_PG_HOST / DAGSTER_PG_USER / DAGSTER_PG_PASSWORD") from None
    created = []
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in (config.dagster_db, config.mlflow_db):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
    finally:
        connection.close()
    return created


def _probe(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` answers: 2xx over HTTP; for grpc://, the port accepts and the server's health check passes."""
    if url.startswith("grpc://"):
        host, _, port = url[len("grpc://"):].partition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return False
        from resources.processes import run_bounded

        dagster = Path(sys.executable).parent / "dagster"
        try:
            check = run_bounded([str(dagster), "api", "grpc-health-check", "-h", host, "-p", port], 60, "grpc health check")
        except RuntimeError:
            return False
        return check.returncode == 0
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True
    except OSError:
        return False


def _tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "restart", "services"])
    parser.add_argument("service", nargs="?", help="for restart: the service to restart")
    parser.add_argument("--sensor-interval", type=int, default=None, help="SENSOR_INTERVAL_S for the code server")
    args = parser.parse_args(argv)
    try:
        config = StackConfig(sensor_interval_s=args.sensor_interval)
    except ValueError as exc:  # a TLS file that is missing, or half of the pair
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    stack = Stack(config)
    try:
        if args.command == "up":
            print(stack.up())
        elif args.command == "down":
            print(stack.down())
        elif args.command == "restart":
            if args.service not in stack.services:
                parser.error(f"restart which service? one of {', '.join(stack.services)}")
            stack.restart(args.service)
            print(f"{args.service} restarted")
        elif args.command == "services":
            for service in stack_services(config):
                print(json.dumps({**asdict(service), "env": sorted(service.env)}))  # names only
        else:
            status = stack.status()
            if not status:
                print(f"nothing running under {config.root}")
            for name, alive in status.items():
                print(f"{name:10} {'up' if alive else 'DOWN'}  (log {stack.log_dir / (name + '.log')})")
            return 0 if status and all(status.values()) else 1
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["Service", "StackConfig", "Stack", "StackError", "stack_services", "ensure_databases", "graphql",
           "mlflow_tls_options"]

if __name__ == "__main__":
    sys.exit(main())
