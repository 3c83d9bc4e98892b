"""The prediction log: every scored flight, appended in batches to ``predictions/date=…/…parquet``.

Requests only append rows to an in-memory buffer under a lock; a background thread writes a Parquet
file per flush (``flush_rows`` rows or ``flush_seconds``, and at shutdown), so storage latency never
reaches a response. Files are partitioned by the flight's scheduled date, the key delayed labels
and monitoring join on. ``url`` is a local folder or ``s3://bucket/prefix`` (s3fs), reached with the
lake's settings (endpoint, region, SSE: ``infra/settings.py``).
"""

from __future__ import annotations

import collections
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from infra import settings
from ml.features import NUMERIC_FEATURES
from infra.periodic_flush import PeriodicFlush
from infra.redaction import redact

logger = logging.getLogger(__name__)

PREDICTIONS_PREFIX = "predictions"
SCORE = "delay_probability"
LOG_DTYPES = {
    "request_id": "string", "date": "string", "carrier": "string", "flight": "Int64", "origin": "string",
    "dest": "string", **{c: "float64" for c in NUMERIC_FEATURES}, "served_at": "datetime64[ns, UTC]",
    "model_version": "string", SCORE: "float64", "inference_ms": "float64", "batch_size": "int64",
}
"""One schema for every prediction log file, whatever a request left out."""


def partition_key(day: str) -> str:
    """Key prefix (relative to the lake) of one day's prediction files."""
    return f"{PREDICTIONS_PREFIX}/date={day}/"


def _filesystem(url: str):
    """The file system and root of ``url``: S3 with the lake's endpoint, region and SSE, else a local folder."""
    import fsspec

    if url.startswith("s3://"):
        options = settings.lake().under(url).fsspec_options()
        return fsspec.filesystem("s3", **options), url[len("s3://") :]
    return fsspec.filesystem("file"), str(Path(url).resolve())


class PredictionLog(PeriodicFlush):
    """Buffered, append-only writer of prediction rows (thread-safe; call ``close`` to flush the rest).

    The buffer holds at most ``max_buffer_rows``: when storage is down or slower than the traffic,
    the oldest rows are dropped (the newest matter most to drift monitoring, and a request is never
    slowed or failed for the log's sake). Every dropped row is counted (``rows_dropped``, and
    ``on_drop(n)``, the service's Prometheus counter) and logged once per flush interval.
    """

    def __init__(self, url: str, flush_rows: int = 10_000, flush_seconds: float = 5.0, max_buffer_rows: int = 500_000,
                 on_drop: Callable[[int], None] | None = None):
        self.url = url
        self.flush_rows = flush_rows
        self.max_buffer_rows = max_buffer_rows
        self.flush_seconds = flush_seconds
        self.on_drop = on_drop
        self._fs, self._root = _filesystem(url)
        self._local = not url.startswith("s3://")  # local files appear whole: write aside, then rename
        self._rows: collections.deque[dict] = collections.deque(maxlen=max_buffer_rows)
        self._pending = 0
        self._lock = threading.Lock()
        self.files_written = 0
        self.rows_dropped = 0
        self._dropped_unreported = 0
        self._start_flushing("prediction log", logger)

    def append(self, rows: list[dict]) -> None:
        """Queue rows (one mapping per prediction); the frame is built off the request path, at flush.

        A full buffer drops its oldest rows to make room (counted, see the class).
        """
        with self._lock:
            overflow = len(self._rows) + len(rows) - self.max_buffer_rows
            self._rows.extend(rows)
            self._pending += len(rows)
            if overflow > 0:
                self._count_dropped(overflow)
            if self._pending >= self.flush_rows or self._closed.is_set():
                self._wake.set()
        if self._closed.is_set():  # after close nothing flushes in the background: write now
            self.flush()

    def _count_dropped(self, rows: int) -> None:
        """Called under the lock."""
        self.rows_dropped += rows
        self._dropped_unreported += rows
        if self.on_drop is not None:
            self.on_drop(rows)

    def _report_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped_unreported = self._dropped_unreported, 0
        if dropped:
            logger.error("prediction log: buffer full (%d rows), dropped the %d oldest rows (%d in all) for %s",
                         self.max_buffer_rows, dropped, self.rows_dropped, redact(self.url))

    def _take(self) -> pd.DataFrame | None:
        with self._lock:
            if not self._rows:
                return None
            rows, self._pending = list(self._rows), 0
            self._rows.clear()
        frame = pd.DataFrame.from_records(rows)
        return frame.astype({c: t for c, t in LOG_DTYPES.items() if c in frame.columns})

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written.

        Days whose write failed are kept for the next flush (only those: written days are not
        rewritten), ahead of the rows that arrived meanwhile, within the same cap.
        """
        frame = self._take()
        written, failed = 0, []
        for day, rows in ([] if frame is None else frame.groupby("date", sort=False)):
            try:
                self._write(str(day), rows)
                written += len(rows)
            except Exception as error:
                logger.error("prediction log: writing %d rows of %s to %s failed (%s); kept for the next flush",
                             len(rows), day, redact(self.url), redact(error))
                failed.append(rows)
        if failed:
            kept = pd.concat(failed).to_dict("records")
            with self._lock:
                newer = list(self._rows)
                overflow = len(kept) + len(newer) - self.max_buffer_rows
                if overflow > 0:
                    self._count_dropped(overflow)
                self._rows.clear()
                self._rows.extend(kept + newer)  # maxlen keeps the newest
                self._pending = len(self._rows)
        self._report_dropped()
        return written

    def _write(self, day: str, rows: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        rows.reset_index(drop=True).to_parquet(buffer, index=False)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        folder = f"{self._root}/date={day}"
        path = f"{folder}/{name}"
        if self._local:
            self._fs.makedirs(folder, exist_ok=True)
            partial = f"{folder}/.{name}.partial"
            self._fs.pipe_file(partial, buffer.getvalue())
            self._fs.mv(partial, path)
        else:
            self._fs.pipe_file(path, buffer.getvalue())
        self.files_written += 1



def read_prediction_log(url: str, days: Iterable[str] | None = None) -> pd.DataFrame:
    """All logged predictions of ``days`` (every day when None) as one frame; empty when none."""
    fs, root = _filesystem(url)
    if days is None:
        folders = [p for p in fs.glob(f"{root}/date=*") if fs.isdir(p)]
    else:
        folders = [f"{root}/date={d}" for d in days]
    frames = []
    for folder in folders:
        if not fs.exists(folder):
            continue
        for path in sorted(fs.glob(f"{folder}/*.parquet")):
            with fs.open(path, "rb") as handle:
                frames.append(pd.read_parquet(handle))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
