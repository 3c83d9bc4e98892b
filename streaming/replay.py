"""Publish 2013 to the airport stream as it happened: ``flightdelay stream-replay --from D --to D --speed N|max``.

Reads the same landing files the batch path ingests (``ml/reference_data.py``: the CSVs ``flightdelay
replay`` drops in the lake), turns each day into events (``streaming/day_events.py``) and publishes them
in event-time order, ``N`` times real time or as fast as the broker acks (``max``). Paced replays
also publish a clock tick each event minute, so the processor knows time passed on a quiet minute.
Every message carries an id from the event's identity: a replay repeated publishes nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from streaming import broker
from streaming.events import MSG_ID_HEADER, TYPE_ORDER, ClockTick, at_minute, encode, subject

WINDOW = 4000
"""Publishes in flight before waiting for the broker's acks."""


@dataclass
class ReplaySummary:
    by_type: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    republished: int = 0

    @property
    def events(self) -> int:
        return sum(self.by_type.values())

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds else 0.0
        return [f"published {self.events:,} events in {self.seconds:.1f} s ({rate:,.0f} events/s)",
                *(f"  {kind:<17} {count:>9,}" for kind, count in sorted(self.by_type.items()))]


def events_between(start: dt.date, end: dt.date, airports, ticks: bool) -> list[tuple[int, object]]:
    """Every event of the days ``start``..``end`` (schedules of ``start`` included), in event-time order."""
    from ml.reference_data import daily_csvs
    from streaming.day_events import day_events, ordered, read_csv_strings

    flights = {d.isoformat(): read_csv_strings(b) for d, b in daily_csvs("flights", start, end)}
    weather = {d.isoformat(): read_csv_strings(b) for d, b in daily_csvs("weather", start, end)}
    events = []
    for day in sorted(set(flights) | set(weather)):
        events += day_events(day, flights.get(day), weather.get(day), airports)
    if events and ticks:
        first, last = min(m for m, _, _ in events), max(m for m, _, _ in events)
        events += [(m, TYPE_ORDER["clock.tick"], ClockTick(event_time=at_minute(m)))
                   for m in range(first, last + 2)]
    elif events:
        last = max(m for m, _, _ in events) + 1
        events.append((last, TYPE_ORDER["clock.tick"], ClockTick(event_time=at_minute(last))))
    return ordered(events)


async def publish(url: str, events: list[tuple[int, object]], speed: float | None, progress=None,
                  extra: list[tuple[str, bytes, dict]] | None = None) -> ReplaySummary:
    """Publish ``events`` (``(minute, event)``, ordered) at ``speed`` × real time (None: as fast as acked)."""
    nc = await broker.connect(url, "stream-replay")
    js = nc.jetstream()
    await broker.ensure_streams(js)
    summary = ReplaySummary()
    started = time.monotonic()
    first = events[0][0] if events else 0
    window: list = []

    async def settle():
        results = await asyncio.gather(*(asyncio.wait_for(f, 15) for _, f in window), return_exceptions=True)
        failed = [item for (item, _), r in zip(window, results) if isinstance(r, BaseException)]
        window.clear()
        for subj, data, headers in failed:  # broker restarting: publish again until acked (deduplicated by id)
            while True:
                try:
                    await js.publish(subj, data, headers=headers, timeout=5)
                    summary.republished += 1
                    break
                except Exception:
                    await asyncio.sleep(0.5)

    for i, (minute, event) in enumerate(events):
        if speed is not None:
            due = started + (minute - first) * 60 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await settle()
                await asyncio.sleep(delay)
        item = (subject(event), encode(event), {MSG_ID_HEADER: event.msg_id()})
        try:
            window.append((item, await js.publish_async(*item[:2], headers=item[2])))
        except Exception:
            window.append((item, asyncio.get_running_loop().create_future()))
            window[-1][1].set_exception(ConnectionError("publish failed"))
        summary.by_type[event.type] += 1
        if len(window) >= WINDOW:
            await settle()
        if progress is not None and i % 1000 == 0:
            progress(i)
    for subj, data, headers in extra or []:
        window.append(((subj, data, headers), await js.publish_async(subj, data, headers=headers)))
    await settle()
    summary.seconds = time.monotonic() - started
    await nc.drain()
    return summary


def main(argv: list[str] | None = None) -> int:
    from infra import settings
    from streaming.processor import reference_tables

    parser = argparse.ArgumentParser(prog="flightdelay stream-replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--speed", default="max", help="N times real time, or max (default)")
    args = parser.parse_args(argv)
    if args.end < args.start:
        parser.error(f"--to {args.end} is before --from {args.start}")
    speed = None if args.speed == "max" else float(args.speed)
    url = settings.stream().nats_url_value()
    if not url:
        parser.error("NATS_URL is not set: point it at a JetStream server (make stream-demo starts one)")
    _, airports = reference_tables()
    events = events_between(args.start, args.end, airports, ticks=speed is not None)
    import click

    with click.progressbar(length=len(events), label="publishing", file=sys.stderr,
                           hidden=not sys.stderr.isatty()) as bar:
        done = [0]

        def step(i):
            bar.update(i - done[0])
            done[0] = i

        summary = asyncio.run(publish(url, events, speed, step))
        bar.update(len(events) - done[0])
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
