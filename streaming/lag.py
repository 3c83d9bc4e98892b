"""Whether the stream processor keeps up: a pure verdict over its consumer's state and its newest prediction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from streaming.broker import PROCESSOR_DURABLE

MAX_PENDING_EVENTS = 5_000
"""More airport events than this waiting for the processor: it is behind."""
FRESHNESS_MINUTES = 15.0
"""No prediction published for longer than this: the processor (or its producer) has stalled."""


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
    durable: str = PROCESSOR_DURABLE,
) -> LagVerdict:
    """Whether the processor keeps up: its consumer exists, at most ``max_pending`` events wait for it,
    and the newest prediction is no older than ``freshness`` at ``now``. Every reason that fails is named.

    ``state``: the consumer's ``{"pending", "ack_pending", …}``, None when no such consumer exists.
    """
    if state is None:
        return LagVerdict(False, f"no processor has consumed the stream: the durable consumer "
                                 f"{durable!r} does not exist (start `python -m streaming.processor`)")
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
