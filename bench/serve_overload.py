"""Recovery after overload: a lone client's latency before, during and after a burst of large requests.

    .venv/bin/python bench/serve_overload.py                       # ~1.5 minutes on 2 cores
    .venv/bin/python bench/serve_overload.py --burst 4 --clients 64 --after 30
    PYTHONPATH=/some/dir .venv/bin/python bench/serve_overload.py --service my_variant:FlightDelay

Serves ``serving.service:FlightDelay`` (a tiny unit trained as in ``serve_load.py``) with ``bentoml serve``,
then: the lone-client baseline (median of ``--lone`` sequential 1-flight requests), a burst of
``--clients`` concurrent clients each sending ``--flights``-flight requests back to back for ``--burst``
seconds (statuses counted: 503 is shedding; ``--backoff`` seconds of pause after a 503), then 1-flight requests from a lone client for ``--after``
seconds. Prints the lone latency per second after the burst and the recovery time: the first moment
from which a sliding median of 10 lone requests stays within 3x the baseline + 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _bootstrap  # the project on sys.path, the shared set-up
import serve_load  # noqa: E402  (the unit, the store, the servers)


async def _burst(url: str, token: str, body: bytes, clients: int, seconds: float, backoff: float = 0.0) -> tuple[dict[str, int], list[float]]:
    import httpx

    statuses: dict[str, int] = {}
    ok_latencies: list[float] = []
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                status = str((await http.post("/predict", content=body, headers=headers)).status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                ok_latencies.append(time.monotonic() - sent)
            elif status == "503" and backoff:
                await asyncio.sleep(backoff)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return statuses, ok_latencies


def lone_latencies(http, body: bytes, headers: dict, count: int | None = None, seconds: float | None = None):
    """(seconds since start, latency s, status) of sequential requests, by count or for a duration."""
    out, started = [], time.perf_counter()
    while (count is not None and len(out) < count) or (seconds is not None and time.perf_counter() - started < seconds):
        sent = time.perf_counter()
        status = http.post("/predict", content=body, headers=headers).status_code
        out.append((sent - started, time.perf_counter() - sent, status))
    return out


def recovery_s(after: list[tuple[float, float, int]], bound_s: float, window: int = 10) -> float | None:
    """First time from which every sliding median of ``window`` lone latencies stays within ``bound_s``."""
    medians = [(after[i][0], statistics.median(x[1] for x in after[i : i + window])) for i in range(len(after) - window + 1)]
    for i, (at, _) in enumerate(medians):
        if all(m <= bound_s for _, m in medians[i:]):
            return at
    return None


def main(argv: list[str] | None = None) -> int:
    import httpx
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--flights", type=int, default=1000, help="flights per burst request (default 1000)")
    parser.add_argument("--burst", type=float, default=4.0, help="burst seconds (default 4)")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of lone requests after the burst (default 30)")
    parser.add_argument("--backoff", type=float, default=0.0,
                        help="seconds a burst client waits after a 503 before its next request (default 0: at once)")
    parser.add_argument("--lone", type=int, default=40, help="lone requests for the baseline (default 40)")
    parser.add_argument("--service", default="serving.service:FlightDelay")
    parser.add_argument("--service-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve_overload_")))
        workdir.mkdir(parents=True, exist_ok=True)
        if (workdir / "unit" / "unit.json").exists() and (workdir / "test.parquet").exists():
            unit_dir, test_path = workdir / "unit", workdir / "test.parquet"
        else:
            unit_dir, test_path = serve_load.train_unit(workdir)
        records = serve_load.request_records(pd.read_parquet(test_path))
        big = (records * (args.flights // len(records) + 1))[: args.flights]
        big_body = json.dumps({"flights": big}, separators=(",", ":")).encode()
        one_body = json.dumps({"flights": records[:1]}, separators=(",", ":")).encode()
        token = secrets.token_urlsafe(16)
        env = {**_bootstrap.bento_env(workdir), "SERVICE_API_TOKEN": token}
        env["FLIGHT_DELAY_MODEL_TAG"] = serve_load.save_to_store(unit_dir)
        for item in args.service_env:
            key, _, value = item.partition("=")
            env[key] = value
        port = serve_load.free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).with_name("bentoml")), "serve", args.service, "--host", "127.0.0.1", "-p", str(port)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with serve_load.server(command, port, workdir / "serve.log", env), httpx.Client(base_url=url, timeout=30) as http:
            lone_latencies(http, one_body, headers, count=args.lone)  # warm-up: the batcher's first calls
            baseline = statistics.median(x[1] for x in lone_latencies(http, one_body, headers, count=args.lone))
            print(f"{args.service}: {len(big_body) / 1e6:.2f} MB bodies of {args.flights} flights; "
                  f"lone baseline median {baseline * 1000:.2f} ms", flush=True)
            statuses, ok_latencies = asyncio.run(_burst(url, token, big_body, args.clients, args.burst, args.backoff))
            total = sum(statuses.values())
            shed = [line for line in http.get("/metrics", headers=headers).text.splitlines()
                    if line.startswith("flight_delay_shed_requests_total")]
            print(f"burst: {args.clients} clients x {args.burst:.0f} s: {total} requests, statuses {statuses}, "
                  f"shed (503) {100 * statuses.get('503', 0) / max(total, 1):.0f} %; served {statuses.get('200', 0) * args.flights / args.burst:.0f} "
                  f"flights/s, their latency p50 {1000 * statistics.median(ok_latencies or [float('nan')]):.0f} ms, "
                  f"max {1000 * max(ok_latencies or [float('nan')]):.0f} ms; {' '.join(shed) or 'no shed counters'}", flush=True)
            after = lone_latencies(http, one_body, headers, seconds=args.after)

    bound = 3 * baseline + 0.002
    print("lone latency after the burst, per second: median ms (requests)")
    for second in range(int(args.after)):
        inside = [x[1] for x in after if second <= x[0] < second + 1]
        if inside:
            print(f"  {second:>3}-{second + 1:<3} s: {statistics.median(inside) * 1000:8.2f} ms ({len(inside)})")
    errors = sum(1 for x in after if x[2] != 200)
    recovered = recovery_s(after, bound)
    print(f"recovery (sliding median of 10 within 3x baseline + 2 ms = {bound * 1000:.1f} ms): "
          f"{'never within ' + str(args.after) + ' s' if recovered is None else f'{recovered:.2f} s'}; "
          f"non-200 after the burst: {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
