"""The stream path against the batch path on the same days, side by side in one run.

    python -m bench.stream_bench --from 2013-07-01 --to 2013-07-07

Prints: events/s through broker → processor → store → predictions at ``--speed max`` (the processor a
separate process, as deployed; its peak RSS polled), the batch path's time for the same predictions
(features over the range + scoring) and the ratio, the store's size, and a flight lookup's latency in
Redis (HGET) beside JetStream's key-value store (the store choice, docs/streaming.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
import uuid

import _bootstrap  # the project on sys.path, the shared set-up


def _p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main(argv=None) -> int:
    import psutil

    from streaming import broker
    from streaming.broker import EmbeddedServer
    from streaming.processor import reference_tables
    from streaming.replay import events_between, publish
    from streaming.state_store import StateStore
    from tests.serving_helpers import january_features, train_small_unit
    from tests.streaming_helpers import batch_rows, stream_count

    parser = argparse.ArgumentParser()
    parser.add_argument("--from", dest="start", default="2013-07-01")
    parser.add_argument("--to", dest="end", default="2013-07-07")
    args = parser.parse_args(argv)
    root = _bootstrap.scratch_folder("stream-bench-")
    unit_dir, unit = train_small_unit(january_features(6), root)
    planes, airports = reference_tables()
    started = time.perf_counter()
    events = events_between(dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end), airports, False)
    build_s = time.perf_counter() - started
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    store = StateStore(_bootstrap.redis_url(), ns)
    with EmbeddedServer(root / "nats") as server:
        summary = asyncio.run(publish(server.url, events, None))
        started = time.perf_counter()
        process = _bootstrap.stream_processor(server.url, ns, unit_dir, idle_exit_s=2)
        peak = 0
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        stream_s = time.perf_counter() - started - 2.0
        predicted = stream_count(server.url, broker.PREDICTIONS_STREAM)
        size = store.size()
        keys = [k for k in store.client.hkeys(f"{ns}:features:{args.end}")][:2000]
        redis_latency = []
        for key in keys:
            t = time.perf_counter()
            store.client.hget(f"{ns}:features:{args.end}", key)
            redis_latency.append(time.perf_counter() - t)
        values = {k: store.client.hget(f"{ns}:features:{args.end}", k) for k in keys}

        async def kv_latency():
            nc = await broker.connect(server.url, "bench-kv")
            kv = await nc.jetstream().create_key_value(bucket="bench_features")
            for k, v in values.items():
                await kv.put(k.decode().replace("/", "."), v)
            out = []
            for k in values:
                t = time.perf_counter()
                await kv.get(k.decode().replace("/", "."))
                out.append(time.perf_counter() - t)
            await nc.close()
            return out

        kv = asyncio.run(kv_latency())
    store.flush_namespace()
    started = time.perf_counter()
    batch = batch_rows(args.start, args.end, unit, planes, airports)
    batch_s = time.perf_counter() - started
    load = os.getloadavg()[0]
    print(f"days {args.start}..{args.end}: {summary.events:,} events, {predicted:,} predictions "
          f"({len(batch):,} scheduled flights); load average {load:.2f} on {os.cpu_count()} cores")
    print(f"  events built by the producer       {build_s:8.1f} s")
    print(f"  published at max                   {summary.seconds:8.1f} s  {summary.events / summary.seconds:10,.0f} events/s")
    print(f"  processor (broker → store → preds) {stream_s:8.1f} s  {summary.events / stream_s:10,.0f} events/s")
    print(f"  batch path (features + scoring)    {batch_s:8.1f} s")
    print(f"  stream / batch                     {stream_s / batch_s:8.2f} ×")
    print(f"  processor peak RSS                 {peak / 2**20:8.0f} MiB")
    print(f"  store                              {size['keys']:8,} keys  {size['bytes'] / 2**20:6.1f} MiB")
    print(f"  lookup p50/p99: Redis HGET {_p(redis_latency, .5):.2f}/{_p(redis_latency, .99):.2f} ms, "
          f"JetStream KV get {_p(kv, .5):.2f}/{_p(kv, .99):.2f} ms ({len(keys)} keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
