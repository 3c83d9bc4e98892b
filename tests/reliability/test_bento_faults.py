"""kill -9 of the run process mid-Bento and mid-training; MLflow artifacts on S3 carry SSE.

The `bento` and training assets run in a child process on a Dagster instance on disk, paused by
test-only code at the point of interest, then SIGKILLed. What must hold afterwards: no server or
build process outlives the run, the champion never moves, `make serve`'s lookup
(`pipelines.verified_bento`) names the verified Bento, and the next `bento` run prunes the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.reliability.test_registry_faults import _register, _stored_model, _wait_for, features  # noqa: F401

pytestmark = pytest.mark.slow
SPAWN = multiprocessing.get_context("spawn")
DAYS = ("2013-01-01", "2013-01-28")
FAST_TRAINING = {"ops": {"delay_model": {"config": {"epochs": 4, "patience": 2}}}}


def _resources(root: Path) -> dict:
    """Every resource of the chain, on folders under ``root`` (rebuilt the same way in child processes)."""
    from resources.mlflow_registry import MlflowRegistry
    from resources.bento_store import BentoStore
    from resources.storage import LakeStorage
    from tests.conftest import chain_resources

    lake = LakeStorage(url=str(root / "lake"))
    registry = MlflowRegistry(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                              lock_path=str(root / "mlflow" / "promotion.lock"))
    serving = BentoStore(bentoml_home=str(root / "bentoml"), prediction_log_url=str(root / "plog"))
    return {**chain_resources(lake, registry), "bentos": serving}


def _instance(root: Path) -> dg.DagsterInstance:
    """The instance on disk that `make serve`'s lookup reads (DAGSTER_HOME), shared with the child processes."""
    (root / "dagster_home").mkdir(exist_ok=True)
    return dg.DagsterInstance.local_temp(tempdir=str(root / "dagster_home"))


def _assets():
    from assets.features import flight_features
    from assets.inference import bento
    from assets.training import champion_model, delay_model, training_set

    return {"flight_features": flight_features.to_source_asset(), "training_set": training_set,
            "delay_model": delay_model, "champion_model": champion_model, "bento": bento}


def _materialize(root: Path, selection: list[str], instance=None):
    assets = _assets()
    return dg.materialize(list(assets.values()), selection=[assets[n] for n in selection],
                          resources=_resources(root), instance=instance or _instance(root),
                          run_config=FAST_TRAINING if "delay_model" in selection else {}, raise_on_error=False)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """Four real weeks ingested and featurised, a champion trained and promoted, its Bento verified."""
    from assets.features import flight_features
    from assets.ingest import airports, planes, raw_flights, raw_weather
    from pipelines.partition_ranges import range_tags
    from pipelines.replay import replay

    root = tmp_path_factory.mktemp("chain")
    (root / "mlflow").mkdir()
    resources = _resources(root)
    replay(resources["storage"], *(dt.date.fromisoformat(d) for d in DAYS))
    with _instance(root) as instance:
        for assets in ([raw_flights, raw_weather, planes, airports], [flight_features]):
            ran = dg.materialize(assets, resources={k: v for k, v in resources.items() if k != "bentos"},
                                 tags=range_tags(*DAYS), instance=instance, selection=assets)
            assert ran.success
        trained = _materialize(root, ["training_set", "delay_model", "champion_model", "bento"], instance)
        assert trained.success, [e.step_failure_data.error.message for e in trained.all_events if e.is_step_failure]
    return root


def _verified_tag(root: Path) -> str | None:
    from pipelines.verified_bento import verified_bento_tag

    with _instance(root) as instance:
        return verified_bento_tag(instance)


def _in_child(root: str, selection: list[str], pause: str, signal_file: str) -> None:
    """Child process: materialize ``selection``, stopping dead at ``pause`` (test-only patches)."""
    import contextlib

    def hang(**facts) -> None:
        Path(signal_file).write_text(json.dumps(facts))
        time.sleep(600)

    if pause == "parity server up":
        import resources.bento_store as bento_store

        real = bento_store.running_server

        @contextlib.contextmanager
        def paused(command, ready_url, *args, **kwargs):
            with real(command, ready_url, *args, **kwargs) as process:
                hang(pid=process.pid, port=int(ready_url.rsplit(":", 1)[1].split("/")[0]), tag=command[2])
                yield process

        bento_store.running_server = paused
    elif pause == "registered":
        import resources.mlflow_registry as registry_module

        real_register = registry_module.register_unit

        def paused_register(*args, **kwargs):
            hang(version=real_register(*args, **kwargs))

        registry_module.register_unit = paused_register
    _materialize(Path(root), selection)


def _start_child(root: Path, selection: list[str], pause: str, signal_file: Path):
    child = SPAWN.Process(target=_in_child, args=(str(root), selection, pause, str(signal_file)))
    child.start()
    return child


def _kill(child) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _tree(pid: int) -> list[int]:
    from resources.processes import _descendants

    return [pid, *_descendants(pid)]


def _children_running(parent: int, needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and needle in cmdline:
            found.append(int(entry.name))
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _latest_in_store(root: Path) -> str:
    serving = _resources(root)["bentos"]
    done = subprocess.run([serving._bentoml(), "get", "flight_delay_service:latest", "-o", "json"],
                          env=serving.env(), capture_output=True, text=True, check=True, timeout=120)
    info = json.loads(done.stdout)
    return f"{info['name']}:{info['version']}"


def test_kill_9_mid_parity_check_leaves_no_server_and_the_next_run_prunes_its_bento(chain, tmp_path):
    root = chain
    registry, serving = _resources(root)["registry"], _resources(root)["bentos"]
    champion, verified = registry.champion_version(), _verified_tag(root)
    paused = tmp_path / "paused.json"
    child = _start_child(root, ["bento"], "parity server up", paused)
    _wait_for(lambda: paused.exists() or not child.is_alive(), 600, "the parity server to come up in the child")
    facts = json.loads(paused.read_text())
    server = _tree(facts["pid"])  # the guard, `bentoml serve` (arbiter) and its workers, in sessions of their own
    assert len(server) >= 3 and _port_open(facts["port"])
    killed = time.monotonic()
    _kill(child)

    _wait_for(lambda: not any(_alive(pid) for pid in server), 60, f"the parity server's processes {server} to exit")
    print(f"parity server: {len(server)} processes gone {time.monotonic() - killed:.1f} s after kill -9 of the run")
    assert not _port_open(facts["port"])
    unchecked = facts["tag"]
    assert unchecked in serving.stored()["bentos"] and _latest_in_store(root) == unchecked, "the crash's leftover"
    lookup = subprocess.run([sys.executable, "-m", "pipelines.verified_bento"], capture_output=True, text=True,
                            env={**os.environ, "DAGSTER_HOME": str(root / "dagster_home"),
                                 "BENTOML_HOME": serving.bentoml_home}, timeout=120)
    assert lookup.returncode == 0, lookup.stderr
    assert lookup.stdout.strip() == verified != unchecked
    assert registry.champion_version() == champion

    started = time.monotonic()
    rerun = _materialize(root, ["bento"])
    print(f"next bento run (prune + build + parity): {time.monotonic() - started:.0f} s")
    assert rerun.success
    metadata = rerun.asset_materializations_for_node("bento")[0].metadata
    assert unchecked in metadata["pruned"].value
    assert unchecked not in serving.stored()["bentos"]
    assert _verified_tag(root) == metadata["bento_tag"].value != unchecked
    assert registry.champion_version() == champion


def test_kill_9_mid_bento_build_kills_the_build(chain, tmp_path):
    root = chain
    registry = _resources(root)["registry"]
    champion, verified = registry.champion_version(), _verified_tag(root)
    child = _start_child(root, ["bento"], "none", tmp_path / "unused")
    builds: list[int] = []

    def building() -> bool:
        builds[:] = _children_running(child.pid, "serving.build")
        return bool(builds) or not child.is_alive()

    _wait_for(building, 600, "the child to start `python -m serving.build`")
    assert builds, "the child finished without building"
    _kill(child)
    _wait_for(lambda: not any(_alive(pid) for pid in builds), 60, f"the build {builds} to exit with its parent")
    assert registry.champion_version() == champion and _verified_tag(root) == verified


def test_the_parity_check_runs_no_registered_code(chain, tmp_path):
    """The champion's registered pyfunc code is replaced by code that writes a marker: the check never runs it."""
    root = chain
    registry = _resources(root)["registry"]
    code = _stored_model(registry, registry.champion_version()) / "delay_pyfunc.py"
    marker = tmp_path / "registered-code-ran"
    original = code.read_text()
    code.write_text(f"open({str(marker)!r}, 'w').close()\n" + original)
    try:
        result = _materialize(root, ["bento"])
    finally:
        code.write_text(original)
    assert result.success
    assert not marker.exists()


def test_kill_9_mid_training_never_moves_the_champion(chain, tmp_path):
    root = chain
    registry = _resources(root)["registry"]
    champion = registry.champion_version()
    paused = tmp_path / "paused.json"
    child = _start_child(root, ["training_set", "delay_model", "champion_model"], "registered", paused)
    _wait_for(lambda: paused.exists() or not child.is_alive(), 900, "the child to register its candidate")
    version = json.loads(paused.read_text())["version"]
    _kill(child)
    assert registry.champion_version() == champion != version
    tags = registry.client().get_model_version(registry.model_name, version).tags
    assert "candidate_status" not in tags and "promoted_by" not in tags

    rerun = _materialize(root, ["champion_model"])  # a rerun of the step alone promotes nothing new
    assert registry.champion_version() == champion, rerun


def test_mlflow_artifacts_on_s3_carry_server_side_encryption(features, tmp_path, monkeypatch):  # noqa: F811
    """Both ways artifacts reach S3: proxied by `mlflow server --artifacts-destination s3://…`, and written
    by the client itself to an `s3://` artifact root (the registry resource asks for SSE)."""
    import boto3

    from resources.mlflow_registry import MlflowRegistry
    from tests.servers import mlflow_server, moto_server

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_UPLOAD_EXTRA_ARGS": ""}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS")  # unset, and unset again after the test
    monkeypatch.delenv("LAKE_SSE", raising=False)
    with moto_server(tmp_path) as endpoint:
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="mlflow")

        direct = MlflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'direct.db'}",
                                artifact_location="s3://mlflow/direct")
        _register(direct, features)
        with mlflow_server(tmp_path / "server", s3_destination="s3://mlflow/proxied", s3_endpoint=endpoint) as url:
            _register(MlflowRegistry(tracking_uri=url), features)

        for prefix in ("direct/", "proxied/"):
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix=prefix).get("Contents", [])]
            assert any(k.endswith("unit/weights.pt") for k in keys), keys
            unencrypted = [k for k in keys if s3.head_object(Bucket="mlflow", Key=k).get("ServerSideEncryption") != "AES256"]
            assert not unencrypted, f"{prefix}: {unencrypted}"
