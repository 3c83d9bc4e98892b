"""The stream processor: airport events in, live state in Redis, a prediction at every flight's cutoff.

    flightdelay stream-process [--origins EWR,JFK] [--unit-dir DIR --unit-digest SHA256]

One loop, per fetched batch (a durable pull consumer on ``AIRPORT``): decode each event (a bad one goes
to ``deadletter.airport`` with its reason), apply it to the live state (``streaming/live_state.py``),
write the batch to the store, then score the flights whose cutoff the watermark has passed, publish
their predictions (``Nats-Msg-Id`` per flight: a repeat is dropped by the broker), record them in the
store, append them to the prediction log, and only then ack the batch. A crash anywhere redelivers the
batch after ``ack_wait``; every step is idempotent, so a restart changes nothing but latency. A store
found empty (flushed, a new instance) is rebuilt from the stream up to the consumer's ack floor.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import hashlib
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
import orjson
import pandas as pd

from ml.features import FEATURE_COLUMNS
from streaming import broker, metrics
from streaming.events import (DEAD_LETTER_SUBJECT, EVENTS_SUBJECT_PREFIX, MSG_ID_HEADER, REASON_HEADER, Rejected,
                              TYPE_ORDER, at_minute, decode, prediction_message)
from streaming.live_state import LiveState
from streaming.state_store import StateStore, StoredPrediction

logger = logging.getLogger("flightdelay.stream")
FOLLOW_UP_S = 0.01
BROKER_AWAY = (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError,
               nats.errors.TimeoutError, asyncio.TimeoutError, nats.errors.ConnectionClosedError,
               nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
               nats.errors.OutboundBufferLimitError)
"""What a broker restarting or out of reach raises (a JetStream publish says "no responders" as
``NoStreamResponseError``): worth retrying. Anything else (a refused header, a wrong stream) is a fault."""


@dataclass
class ProcessorConfig:
    nats_url: str
    redis_url: str
    namespace: str = "flightdelay"
    durable: str = broker.PROCESSOR_DURABLE
    origins: frozenset[str] | None = None
    batch: int = 10_000
    ack_wait_s: float = 30.0
    allowed_lateness_minutes: int = 0
    prediction_log_url: str | None = None
    idle_exit_s: float | None = None
    """Exit after this long without an event (benches, tests); None: run until stopped."""
    lag_every_s: float = 2.0


async def ack_batch(last, within_s: float, stopping: asyncio.Event | None = None, retry_s: float = 0.5) -> bool:
    """Ack a batch by its last message (``AckPolicy.ALL``) and wait for the broker to confirm: the ack floor
    a rebuild reads must be this batch's end. A broker restarting answers no one for a while
    (``NoRespondersError``) or times out: retry for ``within_s`` (the consumer's ``ack_wait``), then leave the
    batch to be redelivered. Every step before the ack is idempotent, so a redelivery costs only time.
    True when the broker confirmed."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await last.ack_sync(timeout=min(10.0, within_s))
            return True
        except BROKER_AWAY as exc:
            if time.monotonic() >= deadline or (stopping is not None and stopping.is_set()):
                logger.warning("ack of stream seq %s not confirmed (%s); the batch will be redelivered",
                               last.metadata.sequence.stream, type(exc).__name__)
                return False
            logger.warning("ack not confirmed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(retry_s)


def durable_for(origins: frozenset[str] | None) -> str:
    """The durable consumer of a processor for ``origins``: ``processor``, or ``processor-EWR-JFK`` for a subset
    (each subset keeps its own position in the stream)."""
    return broker.PROCESSOR_DURABLE + ("-" + "-".join(sorted(origins)) if origins else "")


def feature_digest(values: list) -> str:
    """SHA-256 (first 16 hex) of a flight's feature values in ``FEATURE_COLUMNS`` order (NaN as null): equal
    digests, equal features."""
    return hashlib.sha256(orjson.dumps(values)).hexdigest()[:16]


class Processor:
    def __init__(self, config: ProcessorConfig, champion_source, planes: pd.DataFrame, airports: pd.DataFrame):
        self.config = config
        self.source = champion_source
        self.planes, self.airports = planes, airports
        self.store = StateStore(config.redis_url, config.namespace)
        self.state = self._fresh_state()
        self.epoch: str | None = None
        self.stopping = asyncio.Event()
        self.published = 0
        self.log = None
        if config.prediction_log_url:
            from serving.prediction_log import PredictionLog

            self.log = PredictionLog(config.prediction_log_url)

    def _fresh_state(self) -> LiveState:
        return LiveState(self.planes, self.airports, self.config.allowed_lateness_minutes, self.config.origins)

    async def run(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self.nc = await broker.connect(self.config.nats_url, f"stream-processor-{self.config.durable}")
        self.js = self.nc.jetstream()
        await broker.ensure_streams(self.js)
        consumer = ConsumerConfig(durable_name=self.config.durable, ack_policy=AckPolicy.ALL,
                                  ack_wait=self.config.ack_wait_s, deliver_policy=DeliverPolicy.ALL,
                                  max_ack_pending=-1, filter_subject=f"{EVENTS_SUBJECT_PREFIX}.>")
        self.sub = await self.js.pull_subscribe(f"{EVENTS_SUBJECT_PREFIX}.>", durable=self.config.durable,
                                                stream=broker.EVENTS_STREAM, config=consumer)
        await self._restore()
        # What is loaded by now (torch, pandas, the model, the restored state) lives as long as the process:
        # out of the collector's scans, and collections rarer (a pass over it cost 50-80 ms per batch).
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        idle_since = time.monotonic()
        next_lag = 0.0
        try:
            while not self.stopping.is_set():
                if self.store.epoch() != self.epoch:
                    logger.warning("the live state store lost its state: rebuilding from the stream")
                    await self._rebuild_from_stream()
                try:
                    msgs = await self._fetch()
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    msgs = []
                except Exception as exc:  # broker restarting: the client reconnects; try again shortly
                    logger.warning("fetch failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                if msgs:
                    await self._handle(msgs)
                    idle_since = time.monotonic()
                elif self.config.idle_exit_s is not None and time.monotonic() - idle_since > self.config.idle_exit_s:
                    break
                if time.monotonic() > next_lag:
                    next_lag = time.monotonic() + self.config.lag_every_s
                    await self._update_lag()
        finally:
            if self.log is not None:
                self.log.close()
            await self.nc.close()

    async def _fetch(self) -> list:
        """The next batch: wait for one event (up to 0.5 s), then take what else is ready, waiting at most
        ``FOLLOW_UP_S`` for it. One fetch of the whole batch would hold a quiet stream's event until its
        timeout: at 100× real time that was 200 ms of every cutoff's latency."""
        first = await self.sub.fetch(1, timeout=0.5)
        try:
            return first + await self.sub.fetch(self.config.batch - 1, timeout=FOLLOW_UP_S)
        except (asyncio.TimeoutError, nats.errors.TimeoutError):
            return first

    async def _handle(self, msgs) -> None:
        dead, applied = [], Counter()
        for msg in msgs:
            try:
                event = decode(msg.data)
                day = self.state.apply(event)
            except Rejected as rejected:
                dead.append((msg, rejected.reason))
                continue
            applied[event.type] += 1
            if day is not None:
                self.store.stage_event(day, event.msg_id(), msg.data)
        for kind, count in applied.items():
            metrics.EVENTS.labels(kind).inc(count)
        await self._publish([(DEAD_LETTER_SUBJECT, msg.data, {REASON_HEADER: reason[:500],
                                                              MSG_ID_HEADER: f"dead/{msg.metadata.sequence.stream}"})
                             for msg, reason in dead], stream=broker.DEAD_LETTER_STREAM)
        for msg, reason in dead:
            metrics.DEAD_LETTERS.labels(metrics.reason_kind(reason)).inc()
            logger.warning("dead letter (stream seq %s): %s", msg.metadata.sequence.stream, reason)
        if self.state.watermark is not None:
            self.store.stage_watermark(self.state.watermark)
        self.store.forget_days(self.state.expired_days())
        self.store.commit()
        await self._predict_due(learnt=time.monotonic())
        await ack_batch(msgs[-1], self.config.ack_wait_s, self.stopping)
        if self.state.watermark is not None:
            metrics.WATERMARK.set(self.state.watermark * 60)
        metrics.LAST_COMMIT.set(time.time())
        metrics.STATE_DAYS.set(len(self.state.days))
        metrics.STATE_EVENTS.set(self.state.event_count())

    async def _predict_due(self, learnt: float, publish: bool = True) -> None:
        due = self.state.due()
        if not due:
            return
        champion = self.source.current()
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(champion.version).set(1)
        features = self.state.features(due)
        started = time.perf_counter()
        scores = champion.unit.predict_proba(features).astype("float64")
        inference_ms = (time.perf_counter() - started) * 1000
        records = features[list(FEATURE_COLUMNS)].to_dict("records")
        published_at = dt.datetime.now(dt.timezone.utc)
        messages, stored = [], []
        for flight, record, score in zip(due, records, scores.tolist()):
            digest = feature_digest(list(record.values()))
            messages.append(prediction_message(flight.flight_id, at_minute(flight.cutoff), score, champion.version, digest,
                                               published_at))
            stored.append(StoredPrediction(features=record, cutoff_minute=flight.cutoff, delay_probability=score,
                                           model_version=champion.version, feature_digest=digest))
        if publish:
            await self._publish([(subject, payload, {MSG_ID_HEADER: msg_id}) for subject, payload, msg_id in messages])
            metrics.CUTOFF_TO_PUBLISH.observe(time.monotonic() - learnt)
            metrics.PREDICTIONS.inc(len(messages))
            self.published += len(messages)
        for flight, prediction in zip(due, stored):
            self.store.stage_prediction(flight.day, flight.flight_id, prediction)
            self.state.mark_published(flight.day, flight.flight_id)
        self.store.commit()
        if publish and self.log is not None:
            self.log.append(_log_rows(features, due, stored, messages, published_at, inference_ms))

    async def _publish(self, messages: list[tuple[str, bytes, dict[str, str]]], stream: str | None = None) -> None:
        """Publish ``(subject, payload, headers)`` and wait for every broker ack. What the broker did not
        acknowledge while away is published again (a repeat is dropped by its ``Nats-Msg-Id``); any other
        fault is raised."""
        pending = messages
        while pending:
            try:
                futures = [await self.js.publish_async(subject, payload, stream=stream, headers=dict(headers))
                           for subject, payload, headers in pending]
                results = await asyncio.gather(*(asyncio.wait_for(f, 10) for f in futures), return_exceptions=True)
            except BROKER_AWAY as away:
                results = [away] * len(pending)
            failed = [(message, r) for message, r in zip(pending, results) if isinstance(r, BaseException)]
            for _, fault in failed:
                if not isinstance(fault, BROKER_AWAY):
                    raise fault
            pending = [message for message, _ in failed]
            if pending:
                logger.warning("%d publishes not acknowledged (%s); retrying", len(pending), type(failed[0][1]).__name__)
                await asyncio.sleep(0.5)

    async def _restore(self) -> None:
        """Memory from the store (a restart), or the store from the stream (a lost store), or a fresh start."""
        self.epoch = self.store.epoch()
        if self.epoch is None:
            await self._rebuild_from_stream()
            return
        events = []
        for day in self.store.days():
            events += [decode(data) for data in self.store.events(day)]
        events.sort(key=lambda e: (e.minute, TYPE_ORDER[e.type]))
        for event in events:
            self.state.apply(event)
        for day in list(self.state.days):
            for flight_id in self.store.published(day):
                self.state.mark_published(day, flight_id)
        logger.info("restored %d events of %d days from the store", len(events), len(self.state.days))

    async def _rebuild_from_stream(self) -> None:
        """Replay the stream up to this consumer's ack floor into a fresh state and store; what was due by then was published."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self.state = self._fresh_state()
        info = await self.js.consumer_info(broker.EVENTS_STREAM, self.config.durable)
        floor = info.ack_floor.stream_seq
        replayed = 0
        if floor > 0:
            reader = await self.js.pull_subscribe(
                f"{EVENTS_SUBJECT_PREFIX}.>", stream=broker.EVENTS_STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                      inactive_threshold=30.0))
            done = False
            while not done:
                for msg in await reader.fetch(5000, timeout=5):
                    if msg.metadata.sequence.stream > floor:
                        done = True
                        break
                    try:
                        event = decode(msg.data)
                        day = self.state.apply(event)
                    except Rejected:
                        continue
                    if day is not None:
                        self.store.stage_event(day, event.msg_id(), msg.data)
                    replayed += 1
                    done = msg.metadata.sequence.stream >= floor
                self.store.commit()
            await reader.unsubscribe()
            self.state.expired_days()
            await self._predict_due(learnt=time.monotonic(), publish=False)
        if self.state.watermark is not None:
            self.store.stage_watermark(self.state.watermark)
            self.store.commit()
        self.epoch = self.store.start_epoch()
        if floor:
            logger.warning("live state rebuilt from the stream: %d events up to stream sequence %d", replayed, floor)
        else:
            logger.info("a fresh live state: nothing consumed yet")

    async def _update_lag(self) -> None:
        try:
            info = await self.js.consumer_info(broker.EVENTS_STREAM, self.config.durable)
            metrics.LAG.set(info.num_pending)
        except Exception:  # broker away: the next tick tries again
            pass


def _log_rows(features: pd.DataFrame, due, stored, messages, published_at, inference_ms: float) -> list[dict]:
    from ml.features import NUMERIC_FEATURES
    from serving.prediction_log import SCORE

    keys = features[["carrier", "flight", "origin", "dest", *NUMERIC_FEATURES]].to_dict("records")
    served_at = pd.Timestamp(published_at)
    return [{**row, "request_id": message[2], "date": flight.day, "flight": int(row["flight"]), "served_at": served_at,
             "model_version": prediction.model_version, SCORE: prediction.delay_probability,
             "inference_ms": inference_ms, "batch_size": len(due)}
            for row, flight, prediction, message in zip(keys, due, stored, messages)]


def reference_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Planes and airports, typed by their contracts, from the reference CSVs the landing zone receives."""
    from ml.contracts import AIRPORTS, PLANES
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    return (parse_frame(read_table("planes"), PLANES, "planes").frame,
            parse_frame(read_table("airports"), AIRPORTS, "airports").frame)


def main(argv: list[str] | None = None) -> int:
    from infra import settings

    parser = argparse.ArgumentParser(prog="flightdelay stream-process", description=__doc__.split("\n\n")[0])
    parser.add_argument("--origins", default="", help="comma-separated origins this replica predicts (default: all)")
    parser.add_argument("--durable", default=None, help="consumer name (default: processor[-ORIGINS])")
    parser.add_argument("--unit-dir", type=Path, help="a saved model unit to score with (default: BentoML's store)")
    parser.add_argument("--unit-digest", default="", help="the unit's SHA-256 (required with --unit-dir)")
    parser.add_argument("--model-version", default="pinned", help="the version published with --unit-dir's predictions")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--idle-exit-s", type=float, default=None, help="exit after this long without events")
    parser.add_argument("--batch", type=int, default=10_000, help="events fetched per batch (a paced stream delivers fewer)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    origins = frozenset(o.strip().upper() for o in args.origins.split(",") if o.strip()) or None
    stream = settings.stream()
    if not stream.nats_url:
        parser.error("NATS_URL is not set: point it at a JetStream server (make stream-demo starts one)")
    if args.unit_dir is not None:
        if not args.unit_digest:
            parser.error("--unit-dir needs --unit-digest (the unit is verified before it is loaded)")
        from streaming.champion import UnitFolder

        source = UnitFolder(args.unit_dir, args.unit_digest, args.model_version)
    else:
        from streaming.champion import BentoModelStore

        source = BentoModelStore(settings.serving().model_tag or "flight_delay:latest")
    durable = args.durable or durable_for(origins)
    config = ProcessorConfig(nats_url=stream.nats_url_value(), redis_url=stream.redis_url_value(), namespace=stream.namespace,
                             durable=durable, origins=origins, batch=args.batch, ack_wait_s=stream.ack_wait_s,
                             allowed_lateness_minutes=stream.allowed_lateness_minutes,
                             prediction_log_url=stream.prediction_log_url, idle_exit_s=args.idle_exit_s)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="0.0.0.0", registry=metrics.REGISTRY)
    planes, airports = reference_tables()
    processor = Processor(config, source, planes, airports)

    async def _run():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, processor.stopping.set)
        await processor.run()

    asyncio.run(_run())
    print(f"stream processor stopped: {processor.published} predictions published", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
