"""Cutoff-to-published-prediction latency with the producer paced at ``--speed`` × real time.

    python -m bench.stream_latency --day 2013-07-02 --speed 100 --minutes 60

The days before ``--start`` (local time) are published as fast as the broker acks, so the processor
(a separate process, as deployed) holds the day's state; then ``--minutes`` of event time are replayed
at ``--speed`` with a clock tick each minute. A flight's cutoff passes, on the wall clock, when the
replay's clock reaches it: ``start + (cutoff − t0) / speed``; its latency is the prediction's
``published_at`` less that instant. Prints p50 / p99 / max over the flights whose cutoff falls in the
paced window, beside the processor's own histogram (from the moment it learnt a cutoff had passed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
import uuid

import _bootstrap  # the project on sys.path, the shared set-up


def main(argv=None) -> int:
    import pandas as pd

    from ml.flight_times import NEW_YORK
    from streaming.broker import EmbeddedServer
    from streaming.predictions import read_predictions
    from streaming.processor import reference_tables
    from streaming.replay import events_between, publish
    from streaming.state_store import StateStore
    from tests.serving_helpers import january_features, train_small_unit

    parser = argparse.ArgumentParser()
    parser.add_argument("--day", default="2013-07-02")
    parser.add_argument("--start", default="06:00", help="local time the paced window starts")
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--speed", type=float, default=100.0)
    args = parser.parse_args(argv)
    root = _bootstrap.scratch_folder("stream-latency-")
    unit_dir, _ = train_small_unit(january_features(6), root)
    _, airports = reference_tables()
    day = dt.date.fromisoformat(args.day)
    events = events_between(day - dt.timedelta(days=1), day, airports, ticks=True)
    t0 = int(pd.Timestamp(f"{args.day} {args.start}").tz_localize(NEW_YORK).tz_convert("UTC").value // 60_000_000_000)
    before = [e for e in events if e[0] < t0]
    window = [e for e in events if t0 <= e[0] < t0 + args.minutes]
    ns = f"latency-{uuid.uuid4().hex[:8]}"
    with EmbeddedServer(root / "nats") as server:
        asyncio.run(publish(server.url, before, None))
        process = _bootstrap.stream_processor(server.url, ns, unit_dir, idle_exit_s=5)
        store = StateStore(_bootstrap.redis_url(), ns)
        while (store.freshness().watermark_minute or 0) < before[-1][0]:  # caught up with the fast part
            time.sleep(0.2)
        started = time.time()
        asyncio.run(publish(server.url, window, args.speed))
        process.wait(120)
        predictions = read_predictions(server.url, args.day)
        store.flush_namespace()
    latencies = []
    for p in predictions:
        cutoff = int(p.cutoff.timestamp() // 60)
        if t0 < cutoff < t0 + args.minutes:
            passed = started + (cutoff - t0) * 60 / args.speed
            latencies.append(p.published_at.timestamp() - passed)
    latencies.sort()
    q = lambda f: latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1000  # noqa: E731
    print(f"{args.day} {args.start} + {args.minutes} min at {args.speed:g}x real time: {len(latencies)} flights "
          f"with a cutoff in the window; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"  cutoff-to-published latency p50 {q(.5):.0f} ms  p99 {q(.99):.0f} ms  max {latencies[-1] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
