"""Load test of the BentoML service on 127.0.0.1 beside a naive FastAPI endpoint and the in-process ceiling.

    .venv/bin/python bench/serve_load.py                  # ~2 minutes on 2 cores
    .venv/bin/python bench/serve_load.py --duration 3     # quick look
    .venv/bin/python bench/serve_load.py --bento-env SERVICE_WORKERS=2 --only bentoml
    PYTHONPATH=/some/dir .venv/bin/python bench/serve_load.py --only bentoml \
        --service serving.service:FlightDelay --service my_variant:FlightDelay   # A/B in one command

Self-contained: trains a tiny unit on 10 real January days (seconds), puts it in a throwaway
BentoML store (``BENTOML_HOME`` set before bentoml is imported) and serves ``serving.service:FlightDelay``
with ``bentoml serve`` from the project root. A load generator in a separate process (raw asyncio
HTTP/1.1 keep-alive on uvloop: one connection per client, each sending its next request as soon
as the last answer is read) drives each server at 1, 16 and 64 concurrent clients with single-row
``POST /predict`` bodies (real test-day flights, cycled), ``--warmup`` seconds discarded, then
``--duration`` seconds measured. Every non-200 and every broken connection is an error.

Targets, measured in the same command:

* ``ceiling``: a raw ASGI app on uvicorn returning a constant body: what this client and uvicorn
  reach together on this machine. On 2 cores the client shares the CPU with the server, so every
  figure below it is bounded by this one.
* ``fastapi``: the naive pattern, FastAPI + uvicorn with as many worker processes as the service
  (``SERVICE_WORKERS``, 2 by default; ``--fastapi-workers`` to change), the same pydantic schema
  (``serving.schema.Flight``) and the same model call as the service's batch (``predict_records``
  on the validated rows; ``predict_proba`` on a frame for a unit without it) once per request, no
  prediction log, no metrics.
* ``bentoml``: the service as configured in ``serving/service.py`` (env from ``--bento-env``).
* ``explain``: ``POST /explain`` on the same served ``bentoml`` process (integrated gradients,
  ``ml/explain.py``), bodies of 1 and of 16 flights, at ``--explain-clients`` (default 1,2: each
  worker computes ``EXPLAIN_CONCURRENCY`` explanations at once, 1 by default, and answers 503 beyond).
* in process: that model call on batches of 1…256 rows (rows/s), the batched ceiling, beside
  ``predict_proba`` on a ready pandas frame.

Prints one table (target, clients, req/s, p50, p99, errors) and the BentoML/FastAPI ratios;
asserts nothing but checks that both servers answer the same probabilities as the unit in process.
Beside each level: the CPU the server processes (per busy worker), the client and other processes used
meanwhile, and what the hypervisor stole, in % of one core; a large 'other' or 'steal' means the
figures are contended.
Where the time goes: ``bench/serve_profile.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _bootstrap import ROOT, bento_env  # the project on sys.path, the shared set-up

from resources.processes import free_port, running_server  # noqa: E402

LEVELS = (1, 16, 64)
MODEL_VERSION, RUN_ID = "1", "benchserveload00"
READY_TIMEOUT_S = 120
BENCH_TOKEN = "bench-token"
"""The service refuses to start without a token; every request here sends it (the other servers ignore it)."""


# --------------------------------------------------------------------------------------- setup


def train_unit(workdir: Path) -> tuple[Path, Path]:
    """A tiny unit trained on 10 real January days (as ``make run`` would, two epochs) and its test rows."""
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.dataset import TEST, TRAIN, VALIDATION, WindowSpec, assign_splits, split_days
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table
    from ml.train import TrainConfig, train_model

    def keep(table):
        return table[(table.month == "1") & (table.day.astype(int) <= 10)].reset_index(drop=True)

    features = build_features(
        parse_frame(keep(read_table("flights")), FLIGHTS, "flights").frame,
        parse_frame(keep(read_table("weather")), WEATHER, "weather").frame,
        parse_frame(read_table("planes"), PLANES, "planes").frame,
        parse_frame(read_table("airports"), AIRPORTS, "airports").frame,
    )
    days = sorted(features["date"].unique())
    features = assign_splits(features, split_days(days, WindowSpec(validation_days=2, test_days=2)))
    parts = {s: features[features.split == s] for s in (TRAIN, VALIDATION, TEST)}
    result = train_model(parts[TRAIN], parts[VALIDATION], TrainConfig(epochs=2, patience=1))
    unit_dir = result.unit.save(workdir / "unit")
    test_path = workdir / "test.parquet"
    parts[TEST].reset_index(drop=True).to_parquet(test_path)
    return unit_dir, test_path


def service_columns() -> tuple[list[str], dict[str, str]]:
    """The columns and dtypes ``serving.service`` builds its frame with (copied: importing it imports bentoml)."""
    from ml.features import FEATURE_COLUMNS

    columns = ["date", "carrier", "flight", "origin", "dest", *[c for c in FEATURE_COLUMNS if c not in ("carrier", "origin", "dest")]]
    with contextlib.suppress(ImportError):
        from serving.schema import REQUEST_COLUMNS

        columns = list(REQUEST_COLUMNS)
    dtypes = {"date": "string", "carrier": "string", "flight": "Int64", "origin": "string", "dest": "string",
              **{c: "float64" for c in columns[5:]}}
    return columns, dtypes


def frame_of(flights, columns, dtypes):
    """The service's frame from validated ``Flight`` objects."""
    import pandas as pd

    return pd.DataFrame([f.__dict__ for f in flights], columns=columns).astype(dtypes)


def model_call(unit, columns, dtypes):
    """``flights -> scores`` the way the service scores a batch: ``predict_records`` on the validated
    rows where the unit has it (no DataFrame), else ``predict_proba`` on the service's frame."""
    if hasattr(unit, "predict_records"):
        return "predict_records", lambda flights: unit.predict_records([f.__dict__ for f in flights])
    return "predict_proba(frame)", lambda flights: unit.predict_proba(frame_of(flights, columns, dtypes))


def request_records(frame) -> list[dict]:
    """The request body's flights: the service's columns, JSON-native (NaN → null)."""
    columns, _ = service_columns()
    out = frame[columns].copy()
    out["date"] = out["date"].astype(str)
    return json.loads(out.to_json(orient="records"))


def save_to_store(unit_dir: Path) -> str:
    """The unit into the BentoML store with its ``unit_sha256`` (the service verifies it), in a subprocess:
    BENTOML_HOME is resolved once per process."""
    code = "\n".join([
        "import shutil, bentoml",
        "from ml.model import unit_digest",
        f"metadata = {{'mlflow_version': {MODEL_VERSION!r}, 'mlflow_run_id': {RUN_ID!r}, 'unit_sha256': unit_digest({str(unit_dir)!r})}}",
        f"with bentoml.models.create('flight_delay:v{MODEL_VERSION}-{RUN_ID[:12]}', metadata=metadata) as model:",
        f"    shutil.copytree({str(unit_dir)!r}, model.path_of('unit'))",
        "print(model.tag)",
    ])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def server(command: list[str], port: int, log: Path, env: dict[str, str], ready_path: str = "/readyz"):
    """Start a server, wait until ``ready_path`` answers, stop it and its workers afterwards."""
    with running_server(command, f"http://127.0.0.1:{port}{ready_path}", log, timeout_s=READY_TIMEOUT_S, env=env, cwd=ROOT) as process:
        yield process


def post_json(port: int, body: dict, path: str = "/predict") -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()[:300]


def check_answers(port: int, records: list[dict], expected) -> str:
    """Both servers must return the unit's probabilities for single-row and multi-row bodies."""
    import numpy as np

    got = []
    for record in records[:20]:
        status, answer = post_json(port, {"flights": [record]})
        if status != 200:
            return f"FAILED: {status} {answer}"
        got.append(answer[0]["delay_probability"])
    status, answer = post_json(port, {"flights": records[:20]})
    if status != 200:
        return f"FAILED: {status} {answer}"
    batch = [a["delay_probability"] for a in answer]
    error = max(np.abs(np.array(got) - expected[:20]).max(), np.abs(np.array(batch) - expected[:20]).max())
    return f"ok (max |Δp| vs in-process {error:.1e})" if error < 1e-5 else f"FAILED: max |Δp| {error}"


def check_explanations(port: int, records: list[dict], expected) -> str:
    """``/explain`` must return the unit's probabilities, with attributions of the request's features."""
    import numpy as np

    status, answer = post_json(port, {"flights": records}, "/explain")
    if status != 200:
        return f"FAILED: {status} {answer}"
    error = np.abs(np.array([a["delay_probability"] for a in answer]) - expected).max()
    gap = max(a["completeness_gap"] for a in answer)
    top = answer[0]["contributions"][0]
    return (f"ok (max |Δp| vs in-process {error:.1e}; completeness gap ≤ {gap:.1e} log-odds; "
            f"top feature of the first: {top['feature']} {top['attribution']:+.3f})") if error < 1e-5 else f"FAILED: max |Δp| {error}"


# ------------------------------------------------------------------------------ servers (baselines)


def _fastapi_app(unit_dir: str, mode: str):
    """The naive pattern: one FastAPI endpoint, the same schema, the model called once per request
    (the same call as the service's batch, ``model_call``), no prediction log, no metrics."""
    import uuid

    import torch
    from fastapi import FastAPI
    from pydantic import BaseModel

    from ml.model import ModelUnit
    from serving.schema import Flights, Prediction

    torch.set_num_threads(1)
    columns, dtypes = service_columns()
    unit = ModelUnit.load(unit_dir)

    class Body(BaseModel):
        flights: Flights

    _, call_model = model_call(unit, columns, dtypes)

    def score(body: Body) -> list[Prediction]:
        scores = call_model(body.flights)
        return [Prediction(request_id=uuid.uuid4().hex, delay_probability=float(s), model_version="1") for s in scores]

    app = FastAPI()

    if mode == "async":  # the model runs on the event loop: no thread hop

        async def predict(body):
            return score(body)
    else:  # a plain `def`: FastAPI runs it in its thread pool

        def predict(body):
            return score(body)

    # real classes, not the strings `from __future__ import annotations` leaves (Body is local)
    predict.__annotations__ = {"body": Body, "return": list[Prediction]}
    app.post("/predict")(predict)

    async def ready():
        return "ok"

    app.get("/readyz")(ready)
    return app


def fastapi_app_from_env():
    """The app for each uvicorn worker process (``--fastapi-workers`` > 1 needs an import string)."""
    return _fastapi_app(os.environ["BENCH_FASTAPI_UNIT"], os.environ["BENCH_FASTAPI_MODE"])


def _fastapi_server(port: int, unit_dir: str, mode: str, workers: int) -> None:
    import uvicorn

    if workers == 1:
        uvicorn.run(_fastapi_app(unit_dir, mode), host="127.0.0.1", port=port, log_level="warning", access_log=False)
        return
    os.environ["BENCH_FASTAPI_UNIT"], os.environ["BENCH_FASTAPI_MODE"] = unit_dir, mode
    uvicorn.run("serve_load:fastapi_app_from_env", factory=True, workers=workers, host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def _ceiling_server(port: int) -> None:
    """A raw ASGI app answering a constant JSON body: the client + uvicorn ceiling."""
    import uvicorn

    body = b'[{"request_id":"0123456789abcdef0123456789abcdef","delay_probability":0.25,"model_version":"1"}]'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


# ------------------------------------------------------------------------------- load generator

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``request`` returns the status once the whole answer is in."""

    def __init__(self) -> None:
        self.transport = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[: end + 2])
        match = _CONTENT_LENGTH.search(head)
        if match is not None:
            total = end + 4 + int(match.group(1))
            if len(self.buffer) < total:
                return
        elif _CHUNKED.search(head):
            last = self.buffer.find(b"\r\n0\r\n\r\n", end)
            if last < 0:
                return
            total = last + 7
        else:
            total = end + 4
        status = int(head[9:12])
        del self.buffer[:total]
        self.waiter.set_result(status)

    async def request(self, payload: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


async def _drive(port: int, path: str, bodies: list[bytes], clients: int, warmup: float, duration: float) -> dict:
    loop = asyncio.get_running_loop()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {BENCH_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    payloads = [head + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    started = time.perf_counter()
    measure_from, measure_to = started + warmup, started + warmup + duration
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def client(index: int) -> None:
        connection = None
        i = index * 7919
        while True:
            if connection is None:
                _, connection = await loop.create_connection(_Connection, "127.0.0.1", port)
            payload = payloads[i % len(payloads)]
            i += 1
            sent = time.perf_counter()
            if sent >= measure_to:
                break
            try:
                status = await connection.request(payload)
            except (ConnectionError, OSError) as error:
                status, connection = f"{type(error).__name__}", None
                await asyncio.sleep(0.01)
            done = time.perf_counter()
            if measure_from <= sent and done <= measure_to:
                latencies.append(done - sent)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        if connection is not None:
            connection.transport.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"latencies": latencies, "statuses": statuses, "duration": duration}


def _client_main(port: int, path: str, bodies_file: str, clients: int, warmup: float, duration: float) -> None:
    import numpy as np
    import uvloop

    bodies = [line.encode() for line in Path(bodies_file).read_text().splitlines() if line]
    result = uvloop.run(_drive(port, path, bodies, clients, warmup, duration))
    latencies = np.array(result["latencies"]) * 1000
    ok = result["statuses"].get("200", 0)
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "ok_per_s": ok / duration,
                "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
                "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
                "errors": len(latencies) - ok,
                "statuses": result["statuses"],
            }
        )
    )


def _tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds used so far by a process and each of its descendants (bentoml's arbiter and workers)."""
    import psutil

    if pid is None:
        return {}
    out = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                out[process.pid] = times.user + times.system
    return out


def _machine_cpu() -> tuple[float, float]:
    """(CPU seconds spent in processes, user + system, on all CPUs so far; seconds stolen by the hypervisor)."""
    import psutil

    times = psutil.cpu_times()
    return times.user + times.nice + times.system, getattr(times, "steal", 0.0)


def run_load(port: int, bodies_file: Path, clients: int, warmup: float, duration: float, path: str = "/predict",
             server_pid: int | None = None) -> dict:
    """The load generator, in its own process; also where the machine's CPU went meanwhile (% of one core)."""
    import resource

    command = [sys.executable, __file__, "_client", str(port), path, str(bodies_file), str(clients), str(warmup), str(duration)]
    children, server, (busy, steal) = resource.getrusage(resource.RUSAGE_CHILDREN), _tree_cpu(server_pid), _machine_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=warmup + duration + 60)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    per_process = {p: cpu - server.get(p, 0.0) for p, cpu in _tree_cpu(server_pid).items()}
    busy_now, steal_now = _machine_cpu()
    server_s, busy_s, steal_s = sum(per_process.values()), busy_now - busy, steal_now - steal
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(server_cpu=100 * server_s / wall, client_cpu=100 * client_s / wall,
                  other_cpu=max(0.0, 100 * (busy_s - server_s - client_s) / wall), steal_cpu=100 * steal_s / wall,
                  # the busy server processes (a worker each), to see how connections spread over workers
                  server_split=sorted((round(100 * v / wall) for v in per_process.values() if v / wall > 0.05), reverse=True))
    return result


# ---------------------------------------------------------------------------------- in process


def in_process_rates(unit_dir: Path, records: list[dict], seconds: float = 0.7) -> tuple[str, list[tuple[int, float, float]]]:
    """rows/s per batch size of the call the service makes (``model_call``) and of ``predict_proba`` on a ready frame."""
    import torch

    from ml.model import ModelUnit
    from serving.schema import Flight

    torch.set_num_threads(1)
    unit = ModelUnit.load(unit_dir)
    columns, dtypes = service_columns()
    label, call_model = model_call(unit, columns, dtypes)
    flights = [Flight.model_validate(r) for r in records]
    out = []
    for size in (1, 16, 64, 256):
        batch = flights[:size]
        frame = frame_of(batch, columns, dtypes)
        rates = []
        for call in (lambda: call_model(batch), lambda: unit.predict_proba(frame)):
            call()
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                call()
                n += 1
            rates.append(n * size / (time.perf_counter() - started))
        out.append((size, *rates))
    return label, out


# ------------------------------------------------------------------------------------------ main


def live_state_for_lookup(workdir: Path, unit_dir: Path) -> tuple[Path, dict[str, str]]:
    """2013-07-01..02 through an embedded broker and the stream processor into a Redis namespace; the day's
    flight keys as request bodies and the environment that points the service at that state."""
    import datetime as dt
    import uuid

    from ml.model import unit_digest
    from streaming.broker import EmbeddedServer
    from streaming.processor import reference_tables
    from streaming.replay import events_between, publish
    from tests.streaming_helpers import run_processor

    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    namespace = f"serve-load-{uuid.uuid4().hex[:8]}"
    _, airports = reference_tables()
    with EmbeddedServer(workdir / "nats") as broker_server:
        asyncio.run(publish(broker_server.url, events_between(dt.date(2013, 7, 1), dt.date(2013, 7, 2), airports, False), None))
        processor = run_processor(broker_server.url, redis_url, namespace, unit_dir, unit_digest(unit_dir))
        asyncio.run(processor.run())
    keys = [k.decode() for k in processor.store.client.hkeys(f"{namespace}:features:2013-07-02")]
    bodies = workdir / "lookup.jsonl"
    bodies.write_text("".join(json.dumps(dict(zip(("date", "carrier", "flight", "origin"), k.split("/"))),
                                         separators=(",", ":")) + "\n" for k in keys))
    print(f"live state: {len(keys)} flights of 2013-07-02 in Redis namespace {namespace}")
    return bodies, {"REDIS_URL": redis_url, "STREAM_STATE_NAMESPACE": namespace, "STREAM_MAX_STATE_AGE_S": "86400"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per level (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded seconds before each level (default 1)")
    parser.add_argument("--clients", default=",".join(map(str, LEVELS)), help="concurrency levels (default 1,16,64)")
    parser.add_argument("--only", default="ceiling,fastapi,bentoml,explain", help="targets to run (default all four; "
                        "'lookup' adds POST /predict_flight by flight key on the bentoml target, from a live state the "
                        "stream processor fills first: the machine's Redis)")
    parser.add_argument("--explain-clients", default="1,2", help="concurrency levels of /explain (default 1,2)")
    parser.add_argument("--fastapi-mode", choices=("async", "sync"), default="async",
                        help="FastAPI endpoint as `async def` (model on the loop, default) or plain `def` (thread pool)")
    parser.add_argument("--fastapi-workers", type=int,
                        help="uvicorn worker processes of the FastAPI target (default: as many as the service's "
                             "SERVICE_WORKERS, so both get the same process budget)")
    parser.add_argument("--bento-env", action="append", default=[], metavar="K=V",
                        help="extra environment for the BentoML service (e.g. SERVICE_WORKERS=2); repeatable")
    parser.add_argument("--service", action="append", metavar="MODULE:SERVICE",
                        help="what `bentoml serve` serves (default serving.service:FlightDelay); repeat to compare "
                             "variants in one command (modules found through PYTHONPATH)")
    parser.add_argument("--workdir", type=Path, help="keep the unit, store and logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    targets = args.only.split(",")
    services = args.service or ["serving.service:FlightDelay"]

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve_load_")))
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if (workdir / "unit" / "unit.json").exists() and (workdir / "test.parquet").exists():
            unit_dir, test_path = workdir / "unit", workdir / "test.parquet"
        else:
            unit_dir, test_path = train_unit(workdir)
        import pandas as pd
        import torch

        from ml.model import ModelUnit

        torch.set_num_threads(1)
        test = pd.read_parquet(test_path)
        records = request_records(test)
        bodies_file = workdir / "bodies.jsonl"
        bodies_file.write_text("".join(json.dumps({"flights": [r]}, separators=(",", ":")) + "\n" for r in records))
        from serving.schema import Flight

        expected = ModelUnit.load(unit_dir).predict_proba(
            frame_of([Flight.model_validate(r) for r in records[:20]], *service_columns())
        )
        env = {**bento_env(workdir), "SERVICE_API_TOKEN": BENCH_TOKEN}
        model_tag = save_to_store(unit_dir) if "bentoml" in targets else ""
        env["FLIGHT_DELAY_MODEL_TAG"] = model_tag
        for item in args.bento_env:
            key, _, value = item.partition("=")
            env[key] = value
        from infra import settings

        bento_workers = int(env.get("SERVICE_WORKERS") or settings.serving().workers)
        fastapi_workers = args.fastapi_workers or bento_workers
        print(f"process budget: bentoml {bento_workers} worker(s), fastapi {fastapi_workers} worker(s)")
        print(f"unit: {len(test)} test rows, {len(records)} distinct 1-row bodies; setup {time.perf_counter() - started:.1f} s; "
              f"{os.cpu_count()} CPUs; load generator: 1 process, raw asyncio HTTP/1.1 keep-alive on uvloop")

        rows: list[tuple[str, int, dict]] = []

        def measure(name: str, port: int, clients: list[int], process, path: str = "/predict", bodies=bodies_file) -> None:
            for n in clients:
                result = run_load(port, bodies, n, args.warmup, args.duration, path=path, server_pid=process.pid)
                rows.append((name, n, result))
                print(f"  {name:<8} {n:>3} clients: {result['ok_per_s']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                      f"p99 {result['p99_ms']:7.2f} ms  errors {result['errors']} {result['statuses'] if result['errors'] else ''}"
                      f"  cpu: server {result['server_cpu']:.0f}% {result['server_split']} client {result['client_cpu']:.0f}% "
                      f"other {result['other_cpu']:.0f}% steal {result['steal_cpu']:.0f}%",
                      flush=True)

        if "ceiling" in targets:
            port = free_port()
            with server([sys.executable, __file__, "_ceiling", str(port)], port, workdir / "ceiling.log", env, "/") as process:
                measure("ceiling", port, [max(levels)], process)
        if "fastapi" in targets:
            port = free_port()
            command = [sys.executable, __file__, "_fastapi", str(port), str(unit_dir), args.fastapi_mode, str(fastapi_workers)]
            with server(command, port, workdir / "fastapi.log", env) as process:
                print(f"fastapi ({fastapi_workers} uvicorn worker(s), {args.fastapi_mode} endpoint, {model_call(ModelUnit.load(unit_dir), *service_columns())[0]} "
                      f"per request) answers: {check_answers(port, records, expected)}")
                measure("fastapi", port, levels, process)
        lookup_bodies = None
        if "lookup" in targets:
            lookup_bodies, lookup_env = live_state_for_lookup(workdir, unit_dir)
            env.update(lookup_env)
        for index, service in enumerate(services if "bentoml" in targets else []):
            port = free_port()
            name = "bentoml" if index == 0 else f"bentoml{index + 1}"
            command = [str(Path(sys.executable).with_name("bentoml")), "serve", service, "--host", "127.0.0.1", "-p", str(port)]
            with server(command, port, workdir / f"{name}.log", env) as process:
                print(f"{name} = {service} ({' '.join(args.bento_env) or 'default env'}) answers: "
                      f"{check_answers(port, records, expected)}")
                measure(name, port, levels, process)
                if index == 0 and lookup_bodies is not None:
                    status, answer = post_json(port, json.loads(lookup_bodies.read_text().splitlines()[0]), "/predict_flight")
                    print(f"lookup by flight key answers {status}: {str(answer)[:120]}")
                    measure("lookup", port, levels, process, "/predict_flight", lookup_bodies)
                if index == 0 and "explain" in targets:
                    explain_levels = [int(c) for c in args.explain_clients.split(",")]
                    for size in (1, 16):
                        explain_bodies = workdir / f"explain-{size}.jsonl"
                        explain_bodies.write_text("".join(
                            json.dumps({"flights": records[i : i + size]}, separators=(",", ":")) + "\n"
                            for i in range(0, len(records) - size + 1, size)
                        ))
                        print(f"explain, {size} flight(s) a request, answers: {check_explanations(port, records[:size], expected[:size])}")
                        measure(f"explain{size}", port, explain_levels, process, "/explain", explain_bodies)

        call_label, batch_rates = in_process_rates(unit_dir, records)

    print()
    print(f"{'target':<10}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}   CPU % of one core: server client other steal")
    for name, n, r in rows:
        print(f"{name:<10}{n:>8}{r['ok_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}"
              f"{r['server_cpu']:>25.0f}{r['client_cpu']:>7.0f}{r['other_cpu']:>6.0f}{r['steal_cpu']:>6.0f}")
    print(f"  ({os.cpu_count()} CPUs = {100 * (os.cpu_count() or 1)}%; 'other': other processes on this machine; 'steal': "
          "time the hypervisor gave to other machines. More than a few % of either means the figures are contended)")
    print()
    print(f"in process, 1 thread (the batched ceiling), rows/s:\n{'batch':>7}{call_label:>22}{'predict_proba(frame)':>22}")
    for size, call_rate, frame_rate in batch_rates:
        print(f"{size:>7}{call_rate:>22.0f}{frame_rate:>22.0f}")
    print(f"  ({call_label}: the model call the service and the fastapi endpoint make, from validated Flight objects; "
          "predict_proba(frame): on a ready pandas frame)")
    by = {(name, n): r for name, n, r in rows}
    ratios = [(name, n, by[(name, n)], by[("fastapi", n)]) for name, n, _ in rows
              if name.startswith("bentoml") and ("fastapi", n) in by]
    if ratios:
        print()
        for name, n, b, f in ratios:
            print(f"{name}/fastapi at {n:>2} clients: throughput {b['ok_per_s'] / max(f['ok_per_s'], 1e-9):5.2f}x, "
                  f"p99 {b['p99_ms']:6.1f} vs {f['p99_ms']:6.1f} ms")
        print("target at 16 and 64 clients: >= 0.5x fastapi req/s with p99 <= 50 ms, 0 errors; 1 client p50 <= 5 ms")
    if any(r["other_cpu"] > 15 or r["steal_cpu"] > 15 for _, _, r in rows):
        print("WARNING: other processes or the hypervisor took CPU during the run ('other', 'steal'): these figures are contended")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        _, _, port, path, bodies, clients, warmup, duration = sys.argv
        _client_main(int(port), path, bodies, int(clients), float(warmup), float(duration))
    elif len(sys.argv) > 1 and sys.argv[1] == "_fastapi":
        _fastapi_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        _ceiling_server(int(sys.argv[2]))
    else:
        sys.exit(main())
