"""Reading what the processor published: the predictions of a day from the ``PREDICTIONS`` stream.

The stream holds one message per flight (the broker drops a repeated flight id), so a day read here is
exact even after a processor crash, which the prediction log (best effort) is not.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from streaming import broker
from streaming.events import PREDICTIONS_SUBJECT_PREFIX, Prediction


async def _read(url: str, subject: str) -> list[Prediction]:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    import nats.errors

    nc = await broker.connect(url, "prediction-reader")
    try:
        js = nc.jetstream()
        await broker.ensure_streams(js)
        info = await js.stream_info(broker.PREDICTIONS_STREAM)
        last = info.state.last_seq
        out: list[Prediction] = []
        if info.state.messages == 0:
            return out
        reader = await js.pull_subscribe(subject, stream=broker.PREDICTIONS_STREAM, config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0))
        while True:
            try:
                msgs = await reader.fetch(5000, timeout=1)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                break
            out += [Prediction.model_validate_json(m.data) for m in msgs]
            if msgs[-1].metadata.sequence.stream >= last:
                break
        await reader.unsubscribe()
        return out
    finally:
        await nc.close()


def read_predictions(url: str, day: dt.date | str | None = None) -> list[Prediction]:
    """Every prediction published for flights of ``day`` (None: all days kept)."""
    subject = f"{PREDICTIONS_SUBJECT_PREFIX}.{day if isinstance(day, str) else day.isoformat()}.>" if day else \
        f"{PREDICTIONS_SUBJECT_PREFIX}.>"
    return asyncio.run(_read(url, subject))


async def consumer_state(url: str, durable: str = broker.PROCESSOR_DURABLE) -> dict:
    """Pending (undelivered) events and the ack floor of a processor's consumer."""
    nc = await broker.connect(url, "consumer-state")
    try:
        info = await nc.jetstream().consumer_info(broker.EVENTS_STREAM, durable)
        return {"pending": int(info.num_pending), "ack_pending": int(info.num_ack_pending),
                "ack_floor": int(info.ack_floor.stream_seq)}
    finally:
        await nc.close()
