"""The airport stream as Dagster sees it: the predictions the stream processor published, and its lag.

Dagster observes the stream and never runs the processor: this resource only reads. What the broker
holds (streams, subjects, consumers) is known to ``streaming/`` (``streaming.broker``,
``streaming.predictions``); this resource is the one place Dagster code reaches it through.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg
from pydantic import Field

from infra import settings
from streaming.broker import PROCESSOR_DURABLE

PREDICTION_COLUMNS = (
    "date", "carrier", "flight", "origin", "cutoff", "delay_probability", "model_version", "feature_digest",
    "published_at",
)
"""The columns of a day's streamed predictions, one row per flight."""


def _nats_url_from_env() -> str | None:
    return settings.stream().nats_url_value()


class StreamNotConfigured(RuntimeError):
    """No broker to read from: ``NATS_URL`` is not set."""


class AirportStream(dg.ConfigurableResource):
    """The NATS JetStream server the stream processor consumes events from and publishes predictions to.

    ``nats_url`` is ``NATS_URL`` unless given (bound as ``dg.EnvVar`` when set: a URL may carry
    credentials). Unset, there is nothing to observe: reads raise ``StreamNotConfigured``; no embedded
    server is started here, since an empty one would only say that nothing was published.
    """

    nats_url: str | None = Field(default_factory=_nats_url_from_env)
    """``nats://host:4222`` of the JetStream server; ``NATS_URL`` unless given; None: not configured."""
    connect_timeout_s: float = 5.0
    """How long a read waits for the broker to accept a connection before it fails."""
    read_timeout_s: float = 60.0
    """The longest a consumer-state or freshness query may take."""

    @property
    def configured(self) -> bool:
        return bool(self.nats_url)

    def _reachable_url(self) -> str:
        """The URL, once one of its servers accepts a TCP connection within ``connect_timeout_s``.

        The broker's client (``streaming.broker.connect``) retries a refused first connection forever, as
        the long-running processor should; a Dagster run must fail instead, saying where it could not connect.
        """
        import socket
        from urllib.parse import urlsplit

        if not self.nats_url:
            raise StreamNotConfigured(
                "NATS_URL is not set: set it to the JetStream server the stream processor publishes to "
                "(e.g. nats://127.0.0.1:4222; docs/streaming.md)"
            )
        tried = []
        for server in self.nats_url.split(","):
            parts = urlsplit(server.strip() if "://" in server else f"nats://{server.strip()}")
            host, port = parts.hostname or "127.0.0.1", parts.port or 4222
            tried.append(f"{host}:{port}")  # never the URL itself: it may carry credentials
            try:
                socket.create_connection((host, port), timeout=self.connect_timeout_s).close()
                return self.nats_url
            except OSError:
                continue
        raise ConnectionError(f"no NATS server accepts connections at {', '.join(tried)} (NATS_URL); "
                              "is the broker running?")

    def predictions(self, day: dt.date | str):
        """The predictions published for flights of ``day``: a pandas DataFrame of ``PREDICTION_COLUMNS``, one row per flight.

        ``date`` is the flight's scheduled date as ``YYYY-MM-DD``, as in ``flight_features`` and
        ``batch_predictions``, so the three join on the flight's keys; times are UTC. The broker drops a
        repeated publish of a flight (its message id); should one still be kept (a republish after the
        duplicate window), the first published stays, as every consumer saw it first.
        """
        import pandas as pd

        from streaming.predictions import read_predictions

        url = self._reachable_url()
        rows = [
            {"date": p.flight.date.isoformat(), "carrier": p.flight.carrier, "flight": p.flight.flight,
             "origin": p.flight.origin, "cutoff": p.cutoff, "delay_probability": p.delay_probability,
             "model_version": p.model_version, "feature_digest": p.feature_digest, "published_at": p.published_at}
            for p in read_predictions(url, day)
        ]
        frame = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)).astype(
            {"date": "string", "carrier": "string", "flight": "int64", "origin": "string",
             "delay_probability": "float64", "model_version": "string", "feature_digest": "string"})
        for column in ("cutoff", "published_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        frame = frame.sort_values(["published_at", "origin", "carrier", "flight"], kind="stable")
        return frame.drop_duplicates(["date", "carrier", "flight", "origin"], keep="first").reset_index(drop=True)

    def consumer_state(self, durable: str = PROCESSOR_DURABLE) -> dict[str, Any] | None:
        """``{"pending", "ack_pending", "ack_floor"}`` of the processor's consumer; None when no such consumer exists.

        None means no processor has consumed the stream (or the events stream itself does not exist yet).
        """
        import asyncio

        from nats.js.errors import NotFoundError

        from streaming import predictions

        try:
            return asyncio.run(asyncio.wait_for(predictions.consumer_state(self._reachable_url(), durable),
                                                self.read_timeout_s))
        except NotFoundError:
            return None

    def newest_published_at(self) -> dt.datetime | None:
        """When the newest prediction on the stream (any day) was published; None when none is kept."""
        import asyncio

        return asyncio.run(asyncio.wait_for(_newest_published_at(self._reachable_url()), self.read_timeout_s))


async def _newest_published_at(url: str) -> dt.datetime | None:
    from nats.js.errors import NotFoundError

    from streaming import broker
    from streaming.events import Prediction

    nc = await broker.connect(url, "prediction-freshness")
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(broker.PREDICTIONS_STREAM)
        except NotFoundError:
            return None
        if info.state.messages == 0:
            return None
        last = await js.get_msg(broker.PREDICTIONS_STREAM, seq=info.state.last_seq)
        return Prediction.model_validate_json(last.data).published_at
    finally:
        await nc.close()
