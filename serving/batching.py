"""Micro-batching with admission control, in place of BentoML's adaptive batcher.

BentoML's batcher (``CorkDispatcher``) decides how long to hold a request from the waits it observed
lately; after an overload those waits are long, so a lone request afterwards is held about as long,
and each such request teaches it the same wait again (measured: 2.7 ms before a 4-second burst,
~880 ms for the 30 s after it; ``bench/serve_overload.py``; BentoML PRs #3646, #3664 call the model
fragile). This batcher has nothing to learn about waiting: a batch leaves as soon as the model is
free and takes every request queued meanwhile (up to ``max_batch_rows`` flights), so batches grow with
the load and an idle service answers at once.

It sheds only what it cannot serve in time (``max_wait_s``): a request is refused before anything
is done for it when the queue ahead would take longer than that to drain (estimated from measured
batch costs, ``expected_wait_s``), and dropped unscored if it has waited that long anyway. Both are
503s with ``Retry-After``, counted in ``shed``. One batch runs at a time, in its own thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived")
"""When the current request arrived (``time.monotonic``), set at the door (``serving.middleware.LoadShedding``):
the wait bound covers reading and validating the body too, not only the queue."""


class Overloaded(Exception):
    """The request cannot be served within the wait bound; the caller should retry later."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class _Job:
    rows: Sequence
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class BatchCosts:
    """``seconds(n) = per_call + per_row * n``, fitted on the last ``window`` batches (least squares).

    Used only to refuse work that could not finish in time, never to hold a request back.
    """

    def __init__(self, window: int = 64):
        self._samples: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)
        self.per_call = 0.0
        self.per_row = 0.0

    def add(self, rows: int, seconds: float) -> None:
        self._samples.append((rows, seconds))
        sizes = np.array([s[0] for s in self._samples], dtype=float)
        times = np.array([s[1] for s in self._samples], dtype=float)
        if len(self._samples) < 2 or np.ptp(sizes) == 0:
            self.per_call, self.per_row = 0.0, float(times.sum() / sizes.sum())
            return
        (per_row, per_call), *_ = np.linalg.lstsq(np.column_stack([sizes, np.ones_like(sizes)]), times, rcond=None)
        self.per_row, self.per_call = max(float(per_row), 0.0), max(float(per_call), 0.0)

    def seconds(self, rows: int, calls: int) -> float:
        return self.per_call * calls + self.per_row * rows


class MicroBatcher:
    """Merge concurrent requests into one call of ``score`` (rows in, one result per row out)."""

    def __init__(self, max_batch_rows: int = 256, max_wait_s: float = 1.0):
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_s
        self.costs = BatchCosts()
        self.shed = collections.Counter()
        """Requests refused, by reason: ``queue`` (at the door) and ``late`` (waited past the bound)."""
        self._score: Callable[[list], list] | None = None
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_rows = 0
        self._running_rows = 0
        self._dispatcher: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch")

    def start(self, score: Callable[[list], list]) -> None:
        """Score with ``score`` from now on (a new service instance starts afresh: nothing queued)."""
        self._score = score
        self._queue.clear()
        self._queued_rows = self._running_rows = 0
        self._dispatcher = None

    def expected_wait_s(self, rows: int = 0) -> float:
        """How long a request of ``rows`` arriving now would take to be answered, from measured costs."""
        ahead = self._queued_rows + self._running_rows
        if ahead == 0:
            return 0.0
        batches = -(-(ahead + rows) // self.max_batch_rows)
        return self.costs.seconds(ahead + rows, batches)

    def admits(self, rows: int = 0) -> bool:
        return self.expected_wait_s(rows) <= self.max_wait_s

    async def submit(self, rows: Sequence) -> list:
        """The results for ``rows``, scored in a batch with whatever else is queued; ``Overloaded`` if not in time."""
        if self._score is None:
            raise RuntimeError("MicroBatcher.start(score) was not called")
        if not self.admits(len(rows)):
            self.shed["queue"] += 1
            raise Overloaded(f"about {self.expected_wait_s(len(rows)):.1f} s of work queued ahead (bound {self.max_wait_s:g} s)", "queue")
        arrived = ARRIVED.get(time.monotonic())
        if time.monotonic() - arrived > self.max_wait_s:
            self.shed["late"] += 1
            raise Overloaded(f"waited {time.monotonic() - arrived:.1f} s before scoring (bound {self.max_wait_s:g} s)", "late")
        job = _Job(rows, asyncio.get_running_loop().create_future(), arrived)
        self._queue.append(job)
        self._queued_rows += len(rows)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        return await job.future

    def _next_batch(self) -> list[_Job]:
        """Queued jobs up to ``max_batch_rows`` (a larger request goes alone, whole); late ones are shed."""
        batch, rows, now = [], 0, time.monotonic()
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_batch_rows):
            job = self._queue.popleft()
            self._queued_rows -= len(job.rows)
            if job.future.done():
                continue
            if now - job.enqueued > self.max_wait_s:
                self.shed["late"] += 1
                job.future.set_exception(Overloaded(f"waited {now - job.enqueued:.1f} s (bound {self.max_wait_s:g} s)", "late"))
                continue
            batch.append(job)
            rows += len(job.rows)
        return batch

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            rows = [row for job in batch for row in job.rows]
            self._running_rows = len(rows)
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._score, rows)
            except Exception as error:  # every waiting request gets the error, the loop goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            finally:
                self._running_rows = 0
            self.costs.add(len(rows), time.perf_counter() - started)
            start = 0
            for job in batch:
                if not job.future.done():
                    job.future.set_result(results[start : start + len(job.rows)])
                start += len(job.rows)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
