"""A buffer's background writer: ``flush()`` every ``flush_seconds``, at once when woken, once more at close.

Shared by the prediction log and the audit log, whose requests only append to memory: storage latency
and storage failures never reach a response.
"""

from __future__ import annotations

import logging
import threading


class PeriodicFlush:
    """Mix-in: subclasses define ``flush()`` and ``flush_seconds``, and call ``_start_flushing`` last in ``__init__``.

    ``_wake.set()`` asks for a flush now; ``_closed`` is set once ``close`` has begun.
    """

    flush_seconds: float

    def _start_flushing(self, name: str, log: logging.Logger) -> None:
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flush_logger = log
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def flush(self):
        raise NotImplementedError

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the thread must outlive any one bad flush
                self._flush_logger.exception("%s: flush failed", self._thread.name)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
