"""The stream processor, observed: the predictions it published for a day, and whether it keeps up.

The processor (``streaming/``) runs outside Dagster and publishes one prediction per flight at the
flight's cutoff to the ``PREDICTIONS`` stream. Dagster never runs it: it reads what was published
(``streamed_predictions``, a daily partition in the lake) and warns when the processor falls behind
(``stream_consumer_keeps_up``). Neither is part of a job ``make run`` starts, and neither is automated:
without ``NATS_URL`` there is nothing to observe.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import service_code_version
from resources.stream import PROCESSOR_DURABLE, AirportStream

CONSUMER_CHECK = "stream_consumer_keeps_up"
MAX_PENDING_EVENTS = 5_000
"""More airport events than this waiting for the processor: it is behind."""
FRESHNESS_MINUTES = 15.0
"""No prediction published for longer than this: the processor (or its producer) has stalled."""
NOT_CONFIGURED = (
    "NATS_URL is not set: set it to the JetStream server the stream processor publishes to "
    "(e.g. nats://127.0.0.1:4222; docs/streaming.md)"
)


@dataclass(frozen=True)
class LagVerdict:
    passed: bool
    description: str


def consumer_lag_verdict(
    state: dict[str, Any] | None,
    newest_published_at: dt.datetime | None,
    now: dt.datetime,
    max_pending: int = MAX_PENDING_EVENTS,
    freshness: dt.timedelta = dt.timedelta(minutes=FRESHNESS_MINUTES),
) -> LagVerdict:
    """Whether the processor keeps up: its consumer exists, at most ``max_pending`` events wait for it,
    and the newest prediction is no older than ``freshness`` at ``now``. Every reason that fails is named.

    ``state``: the consumer's ``{"pending", "ack_pending", …}``, None when no such consumer exists.
    """
    if state is None:
        return LagVerdict(False, f"no processor has consumed the stream: the durable consumer "
                                 f"{PROCESSOR_DURABLE!r} does not exist (start `python -m streaming.processor`)")
    problems = []
    if state["pending"] > max_pending:
        problems.append(f"{state['pending']:,} events wait for the processor (more than {max_pending:,})")
    if newest_published_at is None:
        problems.append("no prediction has been published")
    else:
        age = now - newest_published_at
        if age > freshness:
            problems.append(f"the newest prediction is {_minutes(age)} old (more than {_minutes(freshness)})")
    if problems:
        return LagVerdict(False, "; ".join(problems))
    age_text = _minutes(now - newest_published_at)
    return LagVerdict(True, f"{state['pending']:,} events pending, {state['ack_pending']:,} awaiting ack; "
                            f"newest prediction {age_text} old")


def _minutes(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 60:.1f} min"


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
                                   dt.timedelta(minutes=config.freshness_minutes))
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
