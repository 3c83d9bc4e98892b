"""``POST /predict_flight``: a prediction from a flight key alone, with the features the stream processor kept.

A caller knows a flight's date, carrier, number and origin, not the airport's day so far. The
processor writes each flight's features at its cutoff to the live state (``streaming/state_store.py``);
this reads them (one Redis HGET) for the service to score with its own champion. The answers:

- 200: the flight's cutoff has passed (as of now, or of ``as_of`` in a replay): its features at the cutoff, scored.
- 425 Too Early: the flight is scheduled but its cutoff has not passed; the prediction exists from then on.
- 404: no such flight in the live state (wrong key, or a day the stream has not reached or has forgotten).
- 503 with ``Retry-After``: the state is stale (the processor wrote nothing for ``STREAM_MAX_STATE_AGE_S``)
  or has not reached ``as_of`` yet. Stale features are never served as current: they would silently
  say "on time" for a day the processor stopped following.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from streaming.events import FlightKey, at_minute, scheduled_msg_id
from streaming.state_store import StateStore


@dataclass(frozen=True)
class LookupAnswer:
    status: int
    message: str
    features: dict | None = None
    cutoff: dt.datetime | None = None
    retry_after_s: int | None = None


def look_up(store: StateStore, key: FlightKey, as_of: dt.datetime | None, max_age_s: float,
            now: float | None = None) -> LookupAnswer:
    """What the live state says of ``key`` (see the module's docstring for each answer)."""
    now = time.time() if now is None else now
    freshness = store.freshness()
    if freshness.updated_at is None:
        return LookupAnswer(503, "the live state is empty: no stream processor has written to it yet", retry_after_s=30)
    if as_of is None and now - freshness.updated_at > max_age_s:
        return LookupAnswer(503, f"the live state was last written {now - freshness.updated_at:,.0f} s ago "
                                 f"(more than {max_age_s:,.0f} s): the stream processor is behind or down",
                            retry_after_s=30)
    horizon = freshness.watermark_minute or 0
    if as_of is not None and as_of.timestamp() // 60 > horizon:
        return LookupAnswer(503, f"the live state has reached {at_minute(horizon).isoformat()}, not as_of "
                                 f"{as_of.isoformat()} yet", retry_after_s=1)
    day, flight_id = key.date.isoformat(), key.id()
    stored = store.prediction(day, flight_id)
    limit = horizon if as_of is None else int(as_of.timestamp() // 60)
    if stored is not None and stored.cutoff_minute <= limit:
        return LookupAnswer(200, "features at the flight's cutoff", stored.features, at_minute(stored.cutoff_minute))
    if stored is not None or store.has_event(day, scheduled_msg_id(flight_id)):
        return LookupAnswer(425, f"flight {flight_id} is scheduled but its cutoff (scheduled departure − 15 min) "
                                 "has not passed: its prediction is made then", retry_after_s=60)
    return LookupAnswer(404, f"flight {flight_id} is not in the live state: check the key (date, carrier, "
                             "flight number, origin), or the stream has not reached or has forgotten that day")
