"""Start and stop of a real `bentoml serve` process: nothing answered is lost, nothing is served unverified.

- Readiness: ``/readyz`` answers 200 only once the verified model is loaded; requests sent before
  that are answered (they wait in the listening socket's backlog), none is dropped.
- SIGTERM to the server (what Kubernetes sends) with requests in flight: every request answered
  200 is in the prediction log once the process has exited (joined by request_id).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from serving.prediction_log import read_prediction_log
from serving.schema import records_from_features
from tests.serving_helpers import AUTH, january_features, serve_command, serve_env, stop_server, store_model, train_small_unit
from tests.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def features():
    return january_features(last_day=8)


@pytest.fixture(scope="module")
def model_tag(features, tmp_path_factory):
    unit_dir, _ = train_small_unit(features, tmp_path_factory.mktemp("shutdown-unit"))
    return store_model(unit_dir, "5")


@pytest.fixture(scope="module")
def records(features):
    return records_from_features(features.sample(n=400, random_state=5))


class Server:
    """A `bentoml serve` process in its own session, started without waiting for it."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w") as output:
            self.process = subprocess.Popen(serve_command(self.port), stdout=output, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def terminate_and_wait(self, timeout: float = 120) -> int:
        """SIGTERM to the server process alone, as a container runtime sends it; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        stop_server(self.process)


class Callers:
    """Threads posting ``size``-flight requests until stopped; each answer kept with whether the server
    was ready when it was sent. A refused connection (nothing listening yet, or any more) is retried:
    the caller knows it was not served."""

    def __init__(self, url: str, records: list[dict], threads: int, size: int, ready: threading.Event):
        self.answers: list[tuple[bool, int, list[str]]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url, records, i, size, ready)) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, url, records, index, size, ready):
        with httpx.Client(base_url=url, timeout=120) as http:
            i = index
            while not self.stop.is_set():
                body = {"flights": [records[(i * size + k) % len(records)] for k in range(size)]}
                i += len(self._threads)
                was_ready = ready.is_set()
                try:
                    response = http.post("/predict", json=body, headers=AUTH)
                except httpx.ConnectError:
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError as error:  # the server went away mid-request: not answered, so not owed
                    self.failures.append(type(error).__name__)
                    continue
                ids = [p["request_id"] for p in response.json()] if response.status_code == 200 else []
                self.answers.append((was_ready, response.status_code, ids))

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=180)


def test_readyz_waits_for_the_verified_model_and_early_requests_are_answered(model_tag, records, tmp_path):
    server = Server(serve_env(model_tag, tmp_path / "predictions"), tmp_path / "serve.log")
    ready = threading.Event()
    callers = Callers(server.url, records, threads=3, size=5, ready=ready)
    try:
        deadline, probes = time.monotonic() + 180, []
        while not ready.is_set():
            assert time.monotonic() < deadline and server.process.poll() is None, server.log.read_text()[-2000:]
            try:
                status = httpx.get(f"{server.url}/readyz", timeout=1).status_code
            except (httpx.ConnectError, httpx.TimeoutException):
                time.sleep(0.1)
                continue
            probes.append(status)
            if status == 200:
                assert "unit verified" in server.log.read_text(), "ready before the verified model was loaded"
                ready.set()
            else:
                assert status == 503, status
        while sum(1 for was_ready, _, _ in callers.answers if was_ready) < 3:
            assert server.process.poll() is None
            time.sleep(0.1)
        callers.join()
        assert server.terminate_and_wait() is not None
    finally:
        callers.join()
        server.kill()

    assert {status for _, status, _ in callers.answers} == {200}, callers.answers[:5]
    early = [ids for was_ready, _, ids in callers.answers if not was_ready]
    assert early, "no request was sent before the server was ready"
    logged = set(read_prediction_log(str(tmp_path / "predictions"))["request_id"])
    answered = {i for _, _, ids in callers.answers for i in ids}
    assert answered <= logged, f"{len(answered - logged)} answered predictions missing from the log"
    print(f"{len(early)} requests sent before readiness, all answered 200 and logged; probes before ready: {probes}")


def test_sigterm_with_requests_in_flight_loses_no_answered_prediction(model_tag, records, tmp_path):
    server = Server(serve_env(model_tag, tmp_path / "predictions"), tmp_path / "serve.log")
    ready = threading.Event()
    try:
        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline and server.process.poll() is None, server.log.read_text()[-2000:]
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        ready.set()
        callers = Callers(server.url, records, threads=16, size=20, ready=ready)
        try:
            while len(callers.answers) < 50:
                assert server.process.poll() is None
                time.sleep(0.05)
            in_flight_at_sigterm = len(callers.answers)
            exit_status = server.terminate_and_wait()
        finally:
            callers.join()
    finally:
        server.kill()

    statuses = {status for _, status, _ in callers.answers}
    assert statuses <= {200, 503}, statuses
    answered = {i for _, status, ids in callers.answers if status == 200 for i in ids}
    after_sigterm = len(callers.answers) - in_flight_at_sigterm
    logged = read_prediction_log(str(tmp_path / "predictions"))
    missing = answered - set(logged["request_id"])
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions are not in the log"
    assert logged["request_id"].is_unique
    print(f"exit {exit_status}; {len(answered)} predictions answered 200 ({after_sigterm} answers after SIGTERM), "
          f"all logged; {len(callers.failures)} requests cut off unanswered: {sorted(set(callers.failures))}")
