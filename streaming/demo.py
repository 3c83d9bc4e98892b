"""Watch a day stream in: ``flightdelay stream-demo [--day 2013-07-02] [--speed 600]``.

Starts what ``NATS_URL`` does not give (an embedded ``nats-server`` with its store under ``DATA_DIR/nats``),
the stream processor (scoring with the newest verified model in BentoML's store: run ``make run`` first),
replays the day before and the day at ``--speed``× real time, and prints each prediction as it is
published. Ctrl-C stops the replay, the processor and the broker, in that order.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys

from zoneinfo import ZoneInfo

from ml import settings
from ml.flight_times import NEW_YORK as _ZONE
from streaming import broker
from streaming.events import PREDICTIONS_SUBJECT_PREFIX, Prediction

NEW_YORK = ZoneInfo(_ZONE)


async def _watch(url: str, events, speed: float) -> None:
    from streaming.replay import publish

    nc = await broker.connect(url, "stream-demo")

    async def show(msg):
        p = Prediction.model_validate_json(msg.data)
        local = p.cutoff.astimezone(NEW_YORK)
        print(f"{local:%Y-%m-%d %H:%M} cutoff  {p.flight.carrier}{p.flight.flight:<5} {p.flight.origin}  "
              f"P(late) {p.delay_probability:.2f}  model v{p.model_version}", flush=True)

    await nc.subscribe(f"{PREDICTIONS_SUBJECT_PREFIX}.>", cb=show)
    summary = await publish(url, events, speed)
    await asyncio.sleep(3)
    print("\n".join(summary.lines()), flush=True)
    await nc.close()


def main(argv: list[str] | None = None) -> int:
    from streaming.processor import reference_tables
    from streaming.replay import events_between

    parser = argparse.ArgumentParser(prog="flightdelay stream-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2013, 7, 2))
    parser.add_argument("--speed", type=float, default=600.0)
    args = parser.parse_args(argv)
    stream = settings.stream_settings()
    with broker.broker_url(stream.nats_url, settings.data_dir() / "nats") as url:
        env = {**os.environ, "NATS_URL": url}
        processor = subprocess.Popen([sys.executable, "-m", "streaming.processor"], env=env)
        try:
            _, airports = reference_tables()
            events = events_between(args.day - dt.timedelta(days=1), args.day, airports, ticks=True)
            print(f"replaying {args.day - dt.timedelta(days=1)} and {args.day} at {args.speed:g}× "
                  f"({len(events):,} events) through {url}; Ctrl-C stops", flush=True)
            asyncio.run(_watch(url, events, args.speed))
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
        finally:
            processor.send_signal(signal.SIGTERM)
            try:
                processor.wait(15)
            except subprocess.TimeoutExpired:
                processor.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
