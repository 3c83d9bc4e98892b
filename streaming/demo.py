"""Watch a day stream in: ``flightdelay stream-demo [--day 2013-07-02] [--speed 600]``.

Starts what ``NATS_URL`` does not give (an embedded ``nats-server`` with its store under ``DATA_DIR/nats``),
the stream processor (scoring with the newest verified model in BentoML's store: run ``make run`` first),
publishes the day before and the night as fast as the broker takes them, then the day from ``--start``
(local time) at ``--speed``× real time, and prints each prediction as it is published. Ctrl-C stops
the replay, the processor and the broker, in that order. Each demo has its own broker store and Redis
namespace, both dropped at the end (with ``NATS_URL`` set, the streams there keep what it published).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from zoneinfo import ZoneInfo

from infra import settings
from ml.flight_times import NEW_YORK as _ZONE
from streaming import broker
from streaming.events import PREDICTIONS_SUBJECT_PREFIX, Prediction

NEW_YORK = ZoneInfo(_ZONE)


async def _watch(url: str, events, speed: float, start_minute: int) -> None:
    from streaming.replay import publish

    nc = await broker.connect(url, "stream-demo")

    async def show(msg):
        p = Prediction.model_validate_json(msg.data)
        local = p.cutoff.astimezone(NEW_YORK)
        print(f"{local:%Y-%m-%d %H:%M} cutoff  {p.flight.carrier}{p.flight.flight:<5} {p.flight.origin}  "
              f"P(late) {p.delay_probability:.2f}  model v{p.model_version}", flush=True)

    await nc.subscribe(f"{PREDICTIONS_SUBJECT_PREFIX}.>", cb=show)
    await publish(url, [e for e in events if e[0] < start_minute], None)
    summary = await publish(url, [e for e in events if e[0] >= start_minute], speed)
    await asyncio.sleep(3)
    print("\n".join(summary.lines()), flush=True)
    await nc.close()


def main(argv: list[str] | None = None) -> int:
    from streaming.processor import reference_tables
    from streaming.replay import events_between

    parser = argparse.ArgumentParser(prog="flightdelay stream-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2013, 7, 2))
    parser.add_argument("--speed", type=float, default=600.0)
    parser.add_argument("--start", default="05:45", help="local time from which the day is paced (default 05:45)")
    args = parser.parse_args(argv)
    stream = settings.stream()
    run = uuid.uuid4().hex[:8]
    namespace = f"demo-{run}"  # a demo starts from nothing: its own broker store and live state, both dropped after
    with tempfile.TemporaryDirectory(prefix="nats-demo-") as store_dir, broker.broker_url(stream.nats_url_value(), Path(store_dir)) as url:
        env = {**os.environ, "NATS_URL": url, "STREAM_STATE_NAMESPACE": namespace, "STREAM_PREDICTION_LOG": "false"}
        processor = subprocess.Popen([sys.executable, "-m", "streaming.processor"], env=env, start_new_session=True)
        try:
            _, airports = reference_tables()
            events = events_between(args.day - dt.timedelta(days=1), args.day, airports, ticks=True)
            print(f"replaying {args.day - dt.timedelta(days=1)} and {args.day} ({len(events):,} events) through {url}: "
                  f"up to {args.start} at once, then {args.speed:g}× real time; Ctrl-C stops", flush=True)
            start = dt.datetime.combine(args.day, dt.time.fromisoformat(args.start), tzinfo=NEW_YORK)
            asyncio.run(_watch(url, events, args.speed, int(start.timestamp() // 60)))
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
        finally:
            processor.send_signal(signal.SIGTERM)
            try:
                processor.wait(15)
            except subprocess.TimeoutExpired:
                processor.kill()
            from streaming.state_store import StateStore

            StateStore(stream.redis_url_value(), namespace).flush_namespace()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
