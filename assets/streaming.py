"""The stream processor, observed: the predictions it published for a day, and whether it keeps up.

The processor (``streaming/``) runs outside Dagster and publishes one prediction per flight at the
flight's cutoff to the ``PREDICTIONS`` stream. Dagster never runs it: it reads what was published
(``streamed_predictions``, a daily partition in the lake) and warns when the processor falls behind
(``stream_consumer_keeps_up``). Neither is part of a job ``make run`` starts, and neither is automated:
without ``NATS_URL`` there is nothing to observe.
"""

import datetime as dt

import dagster as dg

from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import service_code_version
from resources.stream import AirportStream
from streaming.broker import PROCESSOR_DURABLE
from streaming.lag import FRESHNESS_MINUTES, MAX_PENDING_EVENTS, consumer_lag_verdict

CONSUMER_CHECK = "stream_consumer_keeps_up"
NOT_CONFIGURED = (
    "NATS_URL is not set: set it to the JetStream server the stream processor publishes to "
    "(e.g. nats://127.0.0.1:4222; docs/streaming.md)"
)


def _require(stream: AirportStream) -> None:
    if not stream.configured:
        raise dg.Failure(description=NOT_CONFIGURED, allow_retries=False)


@dg.asset(
    partitions_def=daily_partitions,
    group_name="streaming",
    kinds={"nats", "parquet"},
    code_version=service_code_version("streaming.processor"),  # what the processor computes, it publishes
    retry_policy=IO_RETRY,
)
def streamed_predictions(context: dg.AssetExecutionContext, stream: AirportStream):
    """The predictions the stream processor published for the day's flights: one per flight, at its cutoff.

    Read from the broker's `PREDICTIONS` stream (`prediction.<date>.<origin>`), which keeps one message
    per flight (a repeated publish, e.g. after a processor restart, is dropped by the broker by its
    message id). So this table is exact, unlike the prediction log, which is best effort and may miss or
    repeat rows across a crash. Columns: the flight's keys (date, carrier, flight, origin), cutoff,
    delay_probability, model_version, feature_digest, published_at (UTC). Needs `NATS_URL`; the stream
    keeps 35 days, so older days read back what it still holds.
    """
    _require(stream)
    day = context.partition_key
    frame = stream.predictions(day)
    versions = sorted(frame["model_version"].dropna().unique().tolist())
    mean = float(frame["delay_probability"].mean()) if len(frame) else None
    if not len(frame):
        context.log.warning(f"streamed_predictions {day}: nothing published for this day (yet)")
    return dg.Output(frame, metadata={
        "dagster/row_count": len(frame),
        "model_versions": dg.MetadataValue.json(versions),
        "mean_delay_probability": mean,
    })


class StreamLagConfig(dg.Config):
    max_pending: int = MAX_PENDING_EVENTS
    """Airport events waiting for the processor above which it is behind."""
    freshness_minutes: float = FRESHNESS_MINUTES
    """The newest prediction must be younger than this."""
    durable: str = PROCESSOR_DURABLE
    """The processor's durable consumer on the events stream."""


@dg.asset_check(
    asset=streamed_predictions,
    name=CONSUMER_CHECK,
    blocking=False,
    description=(f"The stream processor keeps up: at most {MAX_PENDING_EVENTS:,} events pending and a prediction "
                 f"published within {FRESHNESS_MINUTES:.0f} min (warns, never holds anything back)."),
)
def stream_consumer_keeps_up(config: StreamLagConfig, stream: AirportStream) -> dg.AssetCheckResult:
    _require(stream)
    state = stream.consumer_state(config.durable)
    newest = stream.newest_published_at()
    verdict = consumer_lag_verdict(state, newest, dt.datetime.now(dt.timezone.utc), config.max_pending,
                                   dt.timedelta(minutes=config.freshness_minutes), config.durable)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata={
            "pending": state["pending"] if state else None,
            "ack_pending": state["ack_pending"] if state else None,
            "newest_published_at": dg.MetadataValue.timestamp(newest) if newest else None,
            "max_pending": config.max_pending,
            "freshness_minutes": config.freshness_minutes,
        },
    )
