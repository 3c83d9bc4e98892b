"""Micro-batching with load shedding, in place of BentoML's adaptive batcher.

BentoML's batcher (``CorkDispatcher``) decides how long to hold a request from the waits it observed
lately; after an overload those waits are long, so a lone request afterwards is held about as long,
and each such request teaches it the same wait again (measured: 2.7 ms before a 4-second burst,
~880 ms for the 30 s after it; ``bench/serve_overload.py``; BentoML PRs #3646, #3664 call the model
fragile). This batcher has nothing to learn: a batch leaves as soon as the model is free and takes
every request queued meanwhile (up to ``max_batch_rows`` flights), so batches grow with the load and
an idle service answers at once.

It sheds what it cannot serve in time (``max_wait_s``), judged by what it sees, not by a model of
costs: at the door, before a body is read, a request is refused while the oldest request still
waiting (being read, validated or queued) has waited more than half the bound, since a newcomer
would wait about as long as that; and a request that has waited the whole bound anyway is dropped
unscored. Both are 503s with ``Retry-After``, counted in ``shed``. Once nothing waits, everything
is admitted again: there is no state left over from the overload. One batch runs at a time, in a
worker thread (the event loop keeps reading requests meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class Arrival:
    """A request let in at the door; it counts as waiting until its batch starts or it has finished."""

    at: float = field(default_factory=time.monotonic)


ARRIVAL: contextvars.ContextVar[Arrival] = contextvars.ContextVar("arrival")
"""The current request's ``Arrival``, set at the door (``serving.middleware.LoadShedding``): the wait
bound covers reading and validating its body too, not only the queue."""


class Overloaded(Exception):
    """The request cannot be served within the wait bound; the caller should retry later."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(eq=False)
class _Job:
    rows: Sequence
    future: asyncio.Future
    arrival: Arrival


class MicroBatcher:
    """Merge concurrent requests into one call of ``score`` (rows in, one result per row out)."""

    def __init__(self, max_batch_rows: int = 256, max_wait_s: float = 1.0):
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_s
        self.shed = collections.Counter()
        """Requests refused, by reason: ``queue`` (at the door) and ``late`` (waited the whole bound)."""
        self.batches = 0
        self._score: Callable[[list], list] | None = None
        self._waiting: dict[Arrival, None] = {}  # insertion-ordered: the first is the oldest
        self._queue: collections.deque[_Job] = collections.deque()
        self._dispatcher: asyncio.Task | None = None

    def start(self, score: Callable[[list], list]) -> None:
        """Score with ``score`` from now on (a new service instance starts afresh: nothing waiting)."""
        self._score = score
        self._waiting.clear()
        self._queue.clear()
        self._dispatcher = None

    def oldest_wait_s(self) -> float:
        """How long the oldest request not yet being scored has waited (0 when none waits)."""
        if not self._waiting:
            return 0.0
        return time.monotonic() - next(iter(self._waiting)).at

    def arrive(self) -> Arrival | None:
        """At the door, before the body is read: an ``Arrival`` if the request can be served in time, else None."""
        if self.oldest_wait_s() > self.max_wait_s / 2:
            self.shed["queue"] += 1
            return None
        arrival = Arrival()
        self._waiting[arrival] = None
        return arrival

    def leave(self, arrival: Arrival) -> None:
        """The request's batch started, or the request finished: it no longer waits (idempotent)."""
        self._waiting.pop(arrival, None)

    async def submit(self, rows: Sequence) -> list:
        """The results for ``rows``, scored in a batch with whatever else is queued; ``Overloaded`` if not in time.

        Called without an ``Arrival`` (in-process use), the request arrives now, admitted unconditionally.
        """
        if self._score is None:
            raise RuntimeError("MicroBatcher.start(score) was not called")
        arrival = ARRIVAL.get(None)
        if arrival is None:
            arrival = Arrival()
            self._waiting[arrival] = None
        job = _Job(rows, asyncio.get_running_loop().create_future(), arrival)
        self._queue.append(job)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            return await job.future
        finally:
            self.leave(arrival)

    def _next_batch(self) -> list[_Job]:
        """Queued jobs up to ``max_batch_rows`` (a larger request goes alone, whole); late ones are shed."""
        batch, rows, now = [], 0, time.monotonic()
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_batch_rows):
            job = self._queue.popleft()
            self.leave(job.arrival)
            if job.future.done():  # the caller went away
                continue
            waited = now - job.arrival.at
            if waited > self.max_wait_s:
                self.shed["late"] += 1
                job.future.set_exception(Overloaded(f"waited {waited:.1f} s (bound {self.max_wait_s:g} s)", "late"))
                continue
            batch.append(job)
            rows += len(job.rows)
        return batch

    async def _dispatch(self) -> None:
        import anyio.to_thread

        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            rows = [row for job in batch for row in job.rows]
            self.batches += 1
            try:
                results = await anyio.to_thread.run_sync(self._score, rows)
            except Exception as error:  # every request of the batch gets the error; the loop goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in batch:
                if not job.future.done():
                    job.future.set_result(results[start : start + len(job.rows)])
                start += len(job.rows)
