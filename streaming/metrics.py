"""What the processor shows on its metrics endpoint (Prometheus), and alerts read (deploy/monitoring)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
EVENTS = Counter("flight_delay_stream_events", "Events applied to the live state, by type", ["type"], registry=REGISTRY)
DEAD_LETTERS = Counter("flight_delay_stream_dead_letters", "Events sent to the dead-letter subject, by kind of reason",
                       ["reason"], registry=REGISTRY)
PREDICTIONS = Counter("flight_delay_stream_predictions", "Predictions published at flights' cutoffs", registry=REGISTRY)
LAG = Gauge("flight_delay_stream_consumer_lag_messages", "Events in the stream not yet delivered to this processor",
            registry=REGISTRY)
WATERMARK = Gauge("flight_delay_stream_watermark_timestamp_seconds", "Event time the live state has reached",
                  registry=REGISTRY)
LAST_COMMIT = Gauge("flight_delay_stream_last_commit_timestamp_seconds", "Wall time of the last state write",
                    registry=REGISTRY)
STATE_DAYS = Gauge("flight_delay_stream_state_days", "Days held in the live state", registry=REGISTRY)
STATE_EVENTS = Gauge("flight_delay_stream_state_events", "Events held in the live state", registry=REGISTRY)
CUTOFF_TO_PUBLISH = Histogram(
    "flight_delay_stream_cutoff_to_publish_seconds",
    "Wall seconds from the moment the processor learnt a cutoff had passed to the prediction's publication",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY)
MODEL_INFO = Gauge("flight_delay_stream_model_info", "1 for the model version the processor scores with",
                   ["model_version"], registry=REGISTRY)


def reason_kind(reason: str) -> str:
    """A bounded label for a dead-letter reason (the full reason travels with the message)."""
    for kind in ("not JSON", "not a JSON object", "unknown event type", "schema_version", "invalid", "implausibly",
                 "no flight.scheduled", "before its schedule", "time_hour"):
        if kind in reason:
            return kind.replace(" ", "_").replace(".", "_")
    return "other"
