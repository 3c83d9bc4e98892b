"""Where a request's time goes in the BentoML service: a ladder of servers, then cProfile in process.

    .venv/bin/python bench/serve_profile.py              # ~2.5 minutes on 2 cores
    .venv/bin/python bench/serve_profile.py --skip-ladder --requests 3000

1. Ladder. The same single-row ``POST /predict`` bodies and load generator as ``serve_load.py``
   (a separate process), at 1 and 16 clients, against servers that add one layer at a time:

   raw-asgi     uvicorn + a raw ASGI app answering a constant body (the client + uvicorn ceiling)
   starlette    uvicorn + Starlette: read the body, validate it as ``{"flights": Flights}`` (pydantic),
                answer constant ``Prediction``s (JSON via pydantic)
   bento-plain  ``bentoml serve`` of a service with FlightDelay's own service config and middlewares,
                the same IO types, answering constant predictions without the model, not batchable
   bento-batch  the same, batchable with FlightDelay's ``max_batch_size``/``max_latency_ms``
   bento-batch-json  the same, the return type annotated ``ContentType("application/json")``: without
                it BentoML builds the output's JSON schema again for every response
   service      ``serving.service:FlightDelay`` itself (model, pandas frame, prediction log, metrics)

   CPU ms/request at 16 clients (the server processes' CPU seconds per answered request, so worker
   counts compare) is what each layer costs; the 1-client p50 is the latency a lone caller sees.

2. cProfile of the full service's ASGI app driven in process (no sockets, no uvicorn), ``--concurrency``
   requests in flight, after a warm-up: the event-loop thread and the batch (worker) thread profiled
   separately with a per-thread CPU clock. Prints CPU µs per request grouped by package, then the
   heaviest functions, and the average batch size. cProfile inflates call-heavy code (pandas) by its
   own per-call cost, so read the split, not the absolute figures; the unprofiled in-process rate is
   printed beside it. Before that, the api method alone, unprofiled, per batch size (1…256 rows):
   its model call, and the rest (ids, metrics, the prediction log, the answers).

``--service-env K=V`` (repeatable) applies to the service in both parts, e.g. ``SERVICE_WORKERS=2``;
``--service module:Service`` measures a variant instead (its module found through ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _bootstrap import ROOT, bento_env  # the project on sys.path, the shared set-up
import serve_load  # noqa: E402  (the unit, the servers, the load generator)

TRIVIAL_SERVICES = '''
"""Services with FlightDelay's config, middlewares and IO types but no model (written by bench/serve_profile.py)."""
import uuid
from typing import Annotated

import bentoml
from bentoml.validators import ContentType

from serving.schema import Flights, Prediction
import {module} as _measured
from {module} import {cls} as FlightDelay

_API = FlightDelay.apis["predict"]
# BentoML's batcher as the service configured it before it batched by itself (serving/batching.py)
_MAX_BATCH = getattr(_measured, "MAX_BATCH_ROWS", _API.max_batch_size)
_MAX_LATENCY_MS = int(1000 * getattr(_measured, "MAX_WAIT_S", _API.max_latency_ms / 1000))


def _answer(flights):
    return [Prediction(request_id=uuid.uuid4().hex, delay_probability=0.25, model_version="1") for _ in flights]


@bentoml.service(name="trivial_plain", **FlightDelay.config)
class TrivialPlain:
    @bentoml.api(route="/predict")
    def predict(self, flights: Flights) -> list[Prediction]:
        return _answer(flights)


@bentoml.service(name="trivial_batch", **FlightDelay.config)
class TrivialBatch:
    @bentoml.api(route="/predict", batchable=True, max_batch_size=_MAX_BATCH, max_latency_ms=_MAX_LATENCY_MS)
    def predict(self, flights: Flights) -> list[Prediction]:
        return _answer(flights)


@bentoml.service(name="trivial_batch_json", **FlightDelay.config)
class TrivialBatchJson:
    """As TrivialBatch, its output declared JSON: BentoML then skips a JSON schema build per response."""

    @bentoml.api(route="/predict", batchable=True, max_batch_size=_MAX_BATCH, max_latency_ms=_MAX_LATENCY_MS)
    def predict(self, flights: Flights) -> Annotated[list[Prediction], ContentType("application/json")]:
        return _answer(flights)


for _service in (TrivialPlain, TrivialBatch, TrivialBatchJson):
    for _middleware, _options in FlightDelay.middlewares:
        _service.add_asgi_middleware(_middleware, **_options)
'''


def _starlette_server(port: int) -> None:
    """uvicorn + Starlette + the request's pydantic validation, constant answers."""
    import uuid

    import uvicorn
    from pydantic import BaseModel, TypeAdapter
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from serving.schema import Flights, Prediction

    class Body(BaseModel):
        flights: Flights

    answers = TypeAdapter(list[Prediction])

    async def predict(request):
        body = Body.model_validate_json(await request.body())
        out = [Prediction(request_id=uuid.uuid4().hex, delay_probability=0.25, model_version="1") for _ in body.flights]
        return Response(answers.dump_json(out), media_type="application/json")

    async def ready(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ------------------------------------------------------------------------------- in-process profile


def _group(filename: str, name: str) -> str:
    """The package a profiled function belongs to."""
    if filename == "~":  # C functions: name like "<built-in method torch._C._nn.linear>"
        for key in ("torch", "numpy", "pandas", "pydantic", "uvloop", "_asyncio", "_thread", "select", "time"):
            if key in name:
                return f"C: {key}"
        return "C: other builtins"
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        top = path.split("/site-packages/")[1].split("/")[0]
        return {"_bentoml_impl": "bentoml", "_bentoml_sdk": "bentoml", "pydantic_core": "pydantic",
                "opentelemetry": "opentelemetry", "prometheus_client": "prometheus_client"}.get(top, top)
    if path.startswith(str(ROOT)):
        return "project: " + path[len(str(ROOT)) + 1 :].split("/")[0]
    if "/lib/python3" in path:
        return "stdlib: " + Path(path).stem
    return path


def _profile_main(target: str, bodies_file: str, requests: int, concurrency: int, out: str) -> None:
    """Runs in a subprocess with BENTOML_HOME and FLIGHT_DELAY_MODEL_TAG set (see ``profile_in_process``)."""
    import cProfile
    import pstats
    import threading

    import importlib

    import anyio.to_thread
    import uvloop

    module_name, _, name = target.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, name).to_asgi(is_main=True)
    body_costs = _body_costs(module, getattr(module, name), bodies_file)
    bodies = [line.encode() for line in Path(bodies_file).read_text().splitlines() if line]
    thread_profiles: dict[int, cProfile.Profile] = {}
    state = {"profiling": False, "batches": 0, "rows": 0}
    original_run_sync = anyio.to_thread.run_sync

    async def run_sync(func, *args, **kwargs):  # profile the worker thread only while measuring
        def profiled(*inner):
            if not state["profiling"]:
                return func(*inner)
            if threading.get_ident() not in thread_profiles:
                thread_profiles[threading.get_ident()] = cProfile.Profile(time.thread_time)
            profile = thread_profiles[threading.get_ident()]
            state["batches"] += 1
            batch = func.args[0] if isinstance(func, functools.partial) and func.args else None
            state["rows"] += len(batch) if isinstance(batch, (list, tuple)) else 1
            profile.enable()
            try:
                return func(*inner)
            finally:
                profile.disable()

        return await original_run_sync(profiled, *args, **kwargs)

    anyio.to_thread.run_sync = run_sync

    async def request(body: bytes) -> int:
        done = asyncio.Event()
        sent, status = False, [0]

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000), "state": {},
            "headers": [(b"host", b"127.0.0.1:3000"), (b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {serve_load.BENCH_TOKEN}".encode()),
                        (b"content-length", str(len(body)).encode())],
        }
        await app(scope, receive, send)
        return status[0]

    async def drive(count: int) -> tuple[float, collections.Counter]:
        statuses: collections.Counter = collections.Counter()
        queue = iter(range(count))

        async def client():
            for i in queue:
                statuses[await request(bodies[i % len(bodies)])] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses

    async def main():
        lifespan_in: asyncio.Queue = asyncio.Queue()
        started = asyncio.Event()

        async def lifespan_send(message):
            if message["type"].startswith("lifespan.startup"):
                started.set()

        await lifespan_in.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan_in.get, lifespan_send))
        await started.wait()
        await drive(max(200, requests // 5))  # warm-up: the batcher's optimizer trains on the first requests
        plain_s, plain_statuses = await drive(requests)
        loop_profile = cProfile.Profile(time.thread_time)
        state["profiling"] = True
        loop_profile.enable()
        profiled_s, statuses = await drive(requests)
        loop_profile.disable()
        state["profiling"] = False
        await lifespan_in.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(lifespan, 10)
        return loop_profile, plain_s, plain_statuses, profiled_s, statuses

    loop_profile, plain_s, plain_statuses, profiled_s, statuses = uvloop.run(main())

    def grouped(profile_list) -> tuple[dict, list]:
        if not profile_list:
            return {}, []
        stats = pstats.Stats(profile_list[0])
        for extra in profile_list[1:]:
            stats.add(extra)
        groups: dict[str, float] = collections.defaultdict(float)
        functions = []
        for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
            groups[_group(filename, name)] += tottime
            short = filename if filename == "~" else "/".join(Path(filename).parts[-2:])
            functions.append((tottime, cumtime, calls, f"{short}:{line}({name})"))
        return dict(groups), sorted(functions, reverse=True)

    loop_groups, loop_functions = grouped([loop_profile])
    thread_groups, thread_functions = grouped(list(thread_profiles.values()))
    Path(out).write_text(json.dumps({
        "requests": requests, "concurrency": concurrency,
        "plain_req_per_s": requests / plain_s, "plain_statuses": dict(plain_statuses),
        "profiled_req_per_s": requests / profiled_s, "statuses": dict(statuses),
        "batches": state["batches"], "rows": state["rows"], "body_costs": body_costs,
        "loop_groups": loop_groups, "thread_groups": thread_groups,
        "loop_functions": loop_functions[:25], "thread_functions": thread_functions[:25],
        "loop_cumulative": [f for f in sorted(loop_functions, key=lambda f: -f[1]) if _interesting(f[3])][:30],
    }))


def _body_costs(module, service, bodies_file: str, seconds: float = 0.6) -> list[dict]:
    """ms per call of the api method itself, unprofiled, per batch size: all of it, and its model call."""
    from serving.schema import Flight

    instance = service()  # a second instance, outside the app (its own prediction log)
    flights = [Flight.model_validate(json.loads(line)["flights"][0]) for line in Path(bodies_file).read_text().splitlines()[:256]]
    _, call_model = serve_load.model_call(instance.unit, *serve_load.service_columns())

    def per_call_ms(call) -> float:
        call()
        times, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return 1000 * min(times)  # the least disturbed call: other load only ever adds

    out = []
    for size in (1, 16, 64, 256):
        batch = flights[:size]
        out.append({"rows": size, "total_ms": per_call_ms(lambda: getattr(instance, "score", instance.predict)(batch)),
                    "model_ms": per_call_ms(lambda: call_model(batch))})
    instance.prediction_log.close()
    return out


def _interesting(label: str) -> bool:
    keys = ("middleware", "instruments", "traffic", "__call__", "api_endpoint", "from_http_request", "to_http_response",
            "batch_infer", "controller", "inbound_call", "outbound_call", "serde", "app.py", "routing")
    return any(k in label for k in keys)


def profile_in_process(env: dict[str, str], target: str, bodies_file: Path, requests: int, concurrency: int, workdir: Path) -> dict:
    out = workdir / "profile.json"
    command = [sys.executable, __file__, "_profile", target, str(bodies_file), str(requests), str(concurrency), str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(out.read_text())


def print_profile(result: dict) -> None:
    n = result["requests"]
    print(f"\nin-process ASGI (no sockets, no uvicorn), {result['concurrency']} requests in flight, {n} requests: "
          f"{result['plain_req_per_s']:.0f} req/s unprofiled, {result['profiled_req_per_s']:.0f} req/s profiled; "
          f"statuses {result['statuses']}; {result['batches']} batches, "
          f"{result['rows'] / max(result['batches'], 1):.1f} rows per batch")
    print("\nthe api method alone (called in process, unprofiled, fastest of many calls, ms):")
    print(f"  {'rows':>5}{'total':>9}{'model call':>12}{'rest':>8}{'µs/row':>9}   rest = ids, histogram, prediction log, Prediction objects")
    for c in result["body_costs"]:
        rest = c["total_ms"] - c["model_ms"]
        print(f"  {c['rows']:>5}{c['total_ms']:>9.2f}{c['model_ms']:>12.2f}{rest:>8.2f}{1000 * c['total_ms'] / c['rows']:>9.0f}")
    for title, groups in (("event-loop thread", result["loop_groups"]), ("batch thread (the api method)", result["thread_groups"])):
        total = sum(groups.values())
        print(f"\n{title}: {total / n * 1e6:.0f} CPU µs per request (profiled)")
        for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1])[:14]:
            print(f"  {name:<32}{seconds / n * 1e6:>8.0f} µs  {100 * seconds / total:5.1f} %")
    for title, key in (("event loop, heaviest functions (self time)", "loop_functions"),
                       ("batch thread, heaviest functions (self time)", "thread_functions")):
        print(f"\n{title}: µs/request self, cumulative, calls/request")
        for tottime, cumtime, calls, label in result[key][:12]:
            print(f"  {tottime / n * 1e6:7.0f} {cumtime / n * 1e6:8.0f} {calls / n:7.1f}  {label[-90:]}")
    print("\nevent loop, request path (cumulative CPU µs per request, callees included; coroutines summed over resumes)")
    for _, cumtime, calls, label in result["loop_cumulative"][:22]:
        print(f"  {cumtime / n * 1e6:8.0f} {calls / n:7.1f}  {label[-100:]}")


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per ladder level (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", default="1,16", help="ladder concurrency levels (default 1,16)")
    parser.add_argument("--requests", type=int, default=2000, help="profiled in-process requests (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="in-process requests in flight (default 16)")
    parser.add_argument("--skip-ladder", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--service-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--service", default="serving.service:FlightDelay", help="module:Service to measure (default %(default)s)")
    parser.add_argument("--workdir", type=Path, help="keep the unit, store and logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve_profile_")))
        workdir.mkdir(parents=True, exist_ok=True)
        if (workdir / "unit" / "unit.json").exists() and (workdir / "test.parquet").exists():
            unit_dir, test_path = workdir / "unit", workdir / "test.parquet"
        else:
            unit_dir, test_path = serve_load.train_unit(workdir)
        import pandas as pd

        records = serve_load.request_records(pd.read_parquet(test_path))
        bodies_file = workdir / "bodies.jsonl"
        bodies_file.write_text("".join(json.dumps({"flights": [r]}, separators=(",", ":")) + "\n" for r in records))
        env = {**bento_env(workdir, workdir), "SERVICE_API_TOKEN": serve_load.BENCH_TOKEN}  # variants in workdir
        env["FLIGHT_DELAY_MODEL_TAG"] = serve_load.save_to_store(unit_dir)
        for item in args.service_env:
            key, _, value = item.partition("=")
            env[key] = value
        workers_note = (f"SERVICE_WORKERS={env.get('SERVICE_WORKERS', 'unset, the service default')}; "
                        "raw-asgi and starlette: one uvicorn process")
        module, _, cls = args.service.partition(":")
        (workdir / "trivial_services.py").write_text(textwrap.dedent(TRIVIAL_SERVICES).replace("{module}", module).replace("{cls}", cls))
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before start; service {args.service}, env: "
              f"{' '.join(args.service_env) or 'defaults'}")

        rows = []
        if not args.skip_ladder:
            bentoml_bin = str(Path(sys.executable).with_name("bentoml"))
            serve = [bentoml_bin, "serve", "{target}", "--host", "127.0.0.1", "-p", "{port}"]
            rungs = [  # name, base (the rung it adds to), command, readiness path
                ("raw-asgi", None, [sys.executable, serve_load.__file__, "_ceiling", "{port}"], "/"),
                ("starlette", "raw-asgi", [sys.executable, __file__, "_starlette", "{port}"], "/readyz"),
                ("bento-plain", "starlette", serve, "/readyz"),
                ("bento-batch", "bento-plain", serve, "/readyz"),
                ("bento-batch-json", "bento-batch", serve, "/readyz"),
                ("service", "bento-batch", serve, "/readyz"),
            ]
            targets = {"bento-plain": "trivial_services:TrivialPlain", "bento-batch": "trivial_services:TrivialBatch",
                       "bento-batch-json": "trivial_services:TrivialBatchJson", "service": args.service}
            bases = {name: base for name, base, _, _ in rungs}
            for name, _, command, ready in rungs:
                port = serve_load.free_port()
                command = [part.format(port=port, target=targets.get(name, "")) for part in command]
                with serve_load.server(command, port, workdir / f"{name}.log", env, ready) as process:
                    for clients in levels:
                        result = serve_load.run_load(port, bodies_file, clients, args.warmup, args.duration, server_pid=process.pid)
                        rows.append((name, clients, result))
                        print(f"  {name:<12}{clients:>3} clients: {result['ok_per_s']:7.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                              f"p99 {result['p99_ms']:7.2f} ms  errors {result['errors']}  cpu: server {result['server_cpu']:.0f}% {result['server_split']} "
                              f"client {result['client_cpu']:.0f}% other {result['other_cpu']:.0f}% steal {result['steal_cpu']:.0f}%", flush=True)
        profile = None if args.skip_profile else profile_in_process(env, args.service, bodies_file, args.requests, args.concurrency, workdir)

    if rows:
        saturated = max(levels)
        print(f"\n{'server':<17}{'clients':>8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'server CPU %':>13}"
              f"{'CPU ms/req':>11}   {'+CPU ms/req':<24}{'other %':>8}{'steal %':>8}")
        cost = {}
        for name, clients, r in rows:
            cpu_ms = r["server_cpu"] * 10 / r["ok_per_s"] if r["ok_per_s"] else float("nan")
            step = ""
            if clients == saturated:
                cost[name] = cpu_ms
                if bases.get(name) in cost:
                    step = f"{cpu_ms - cost[bases[name]]:+.3f} vs {bases[name]}"
            print(f"{name:<17}{clients:>8}{r['ok_per_s']:>8.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['errors']:>7}"
                  f"{r['server_cpu']:>13.0f}{cpu_ms:>11.3f}   {step:<24}{r['other_cpu']:>8.0f}{r['steal_cpu']:>8.0f}")
        print(f"(CPU ms/req: server processes' CPU time per answered request; '+' is what a rung adds to its base, "
              f"at {saturated} clients. Workers as in the service config: {workers_note})")
    if profile:
        print_profile(profile)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_profile":
        _profile_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) > 1 and sys.argv[1] == "_starlette":
        _starlette_server(int(sys.argv[2]))
    else:
        sys.exit(main())
